/*
 * REST v1 note handlers. Each handler validates on the loop thread, then offloads one work function
 * that calls the store (through the store's bulkhead and breaker) and leaves the answer in the job.
 *
 * ETags are derived from the note version ("\"<version>\""): PATCH and DELETE honour If-Match (412 on
 * mismatch), GET honours If-None-Match (304). POSTs honour Idempotency-Key: the first response is kept
 * for --idempotency-ttl-s and replayed (Idempotent-Replayed: true); the same key with another body is
 * 422; a duplicate while the first is still running is 409.
 */
#include "api/api.h"
#include "core/clock.h"
#include "core/fmt.h"
#include "core/id.h"
#include "server/services.h"
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct note_job {
    char id[37];
    char id2[37];
    int64_t if_version; /* -1 = none */
    pk_note_fields f;
    pk_query_args *qa;
    /* links */
    char *link_type;
    double strength;
    char *link_metadata;
    /* idempotency */
    char *idem_key;
    char idem_hash[65];
    bool replayed;
    int64_t version;
    uint64_t cache_ticket;
} note_job;

static void note_job_free(void *p)
{
    note_job *d = p;
    pk_note_fields_free(&d->f);
    if (d->qa) pk_query_args_free_void(d->qa);
    free(d->link_type);
    free(d->link_metadata);
    free(d->idem_key);
    free(d);
}

/* "\"<version>\"" into out (at least 24 bytes); returns the length. */
static size_t format_etag(char *out, int64_t version)
{
    char *p = out;
    *p++ = '"';
    p = pk_fmt_i64(p, version);
    *p++ = '"';
    *p = '\0';
    return (size_t)(p - out);
}

static void set_etag(pk_job *j, int64_t version)
{
    format_etag(j->etag, version);
}

/* Reads the version back out of the note JSON the store produced (the last member). */
static int64_t version_of(const pk_buf *b)
{
    const char *p = b->data ? strstr(b->data, "\"version\":") : NULL;
    const char *last = NULL;
    while (p) {
        last = p;
        p = strstr(p + 1, "\"version\":");
    }
    return last ? strtoll(last + 10, NULL, 10) : 0;
}

/* If-Match: "*", "N" or W/"N" (weak tags never match for writes, RFC 9110 strong comparison). */
static pk_err *parse_if_match(pk_req *r, int64_t *out)
{
    *out = -1;
    size_t n;
    const char *v = pk_req_header(r, "if-match", &n);
    if (!v) return NULL;
    if (n == 1 && v[0] == '*') return NULL;
    if (n >= 3 && v[0] == '"' && v[n - 1] == '"') {
        char *end;
        long long x = strtoll(v + 1, &end, 10);
        if (end == v + n - 1 && x > 0) {
            *out = x;
            return NULL;
        }
    }
    /* Matches no version: 412. Not 0: the store reads if_version == 0 as "unconditional", so a weak
     * or malformed tag used to turn into an unconditional write. */
    *out = INT64_MAX;
    return NULL;
}

/* ---- idempotency ---------------------------------------------------------------------------- */

static pk_err *idem_prepare(pk_req *r, note_job *d)
{
    size_t n;
    const char *k = pk_req_header(r, "idempotency-key", &n);
    if (!k) return NULL;
    if (n == 0 || n > 255) return pk_err_bad_request("Idempotency-Key must be 1 to 255 characters");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)k[i] < 0x21 || (unsigned char)k[i] > 0x7e)
            return pk_err_bad_request("Idempotency-Key must be visible ASCII");
    pk_buf key = PK_BUF_INIT;
    pk_buf_printf(&key, "%s %s ", r->route->method, r->route->pattern);
    pk_buf_append(&key, k, n);
    d->idem_key = pk_buf_steal(&key, NULL);
    unsigned char md[SHA256_DIGEST_LENGTH];
    pk_buf msg = PK_BUF_INIT;
    pk_buf_append(&msg, r->h2o->path_normalized.base, r->h2o->path_normalized.len);
    pk_buf_putc(&msg, '\n');
    if (r->h2o->entity.base) pk_buf_append(&msg, r->h2o->entity.base, r->h2o->entity.len);
    EVP_Digest(msg.data, msg.len, md, NULL, EVP_sha256(), NULL);
    pk_buf_free(&msg);
    pk_hex(md, sizeof md, d->idem_hash);
    return NULL;
}

/* Returns true when the job is answered already (replay, mismatch, in progress, error). */
static bool idem_begin(pk_job *j, note_job *d)
{
    if (!d->idem_key) return false;
    pk_idem_state st;
    int status = 0;
    PK_STORE_CALL(j, j->srv->store->ops->idem_begin(j->srv->store, &j->op, d->idem_key, d->idem_hash, &st,
                                                    &status, &j->body));
    if (j->err) return true;
    switch (st) {
    case PK_IDEM_NEW:
        return false;
    case PK_IDEM_REPLAY:
        j->status = status;
        d->replayed = true;
        d->version = version_of(&j->body);
        return true;
    case PK_IDEM_MISMATCH:
        j->err = pk_err_new("idempotency_key_reused", 422,
                            "this Idempotency-Key was used with a different request body");
        return true;
    case PK_IDEM_IN_PROGRESS:
        j->err = pk_err_new("idempotency_in_progress", 409,
                            "a request with this Idempotency-Key is still being processed");
        j->err->retry_after_s = 1;
        return true;
    }
    return false;
}

static void idem_end(pk_job *j, note_job *d)
{
    if (!d->idem_key) return;
    pk_err *e;
    if (j->err && j->err->status >= 500)
        e = j->srv->store->ops->idem_abort(j->srv->store, &j->op, d->idem_key);
    else if (j->err) {
        /* client errors are not remembered: the key stays free for a corrected retry */
        e = j->srv->store->ops->idem_abort(j->srv->store, &j->op, d->idem_key);
    } else
        e = j->srv->store->ops->idem_finish(j->srv->store, &j->op, d->idem_key, j->status,
                                            j->body.data ? j->body.data : "", j->body.len);
    pk_err_free(e);
}

static void idem_done(pk_req *r, pk_job *j)
{
    note_job *d = j->data;
    if (d->replayed) pk_req_add_header(r, "idempotent-replayed", "true", 4);
    if (!j->err && d->version) set_etag(j, d->version);
    pk_job_respond(r, j);
    if (!j->err) pk_services_note_changed_req(r, d->id, true);
}

/* ---- create ---------------------------------------------------------------------------------- */

static void work_create(pk_job *j)
{
    note_job *d = j->data;
    if (idem_begin(j, d)) return;
    PK_STORE_CALL(j, pk_store_note_create(j->srv->store, &j->op, &d->f.in, &j->body));
    if (!j->err) {
        j->status = 201;
        d->version = version_of(&j->body);
        const char *idp = strstr(j->body.data, "\"id\":\"");
        if (idp) {
            memcpy(d->id, idp + 6, 36);
            d->id[36] = '\0';
        }
    }
    idem_end(j, d);
}

static void create_done(pk_req *r, pk_job *j)
{
    note_job *d = j->data;
    if (!j->err && j->body.data) {
        const char *idp = strstr(j->body.data, "\"id\":\"");
        if (idp) {
            memcpy(d->id, idp + 6, 36);
            d->id[36] = '\0';
            snprintf(j->location, sizeof j->location, "/v1/notes/%s", d->id);
        }
    }
    idem_done(r, j);
}

void pk_api_note_create_from(pk_req *r, const cJSON *obj)
{
    note_job *d = calloc(1, sizeof *d);
    pk_err *e = pk_api_parse_note(r, obj, true, &d->f);
    if (!e) e = idem_prepare(r, d);
    if (e) {
        note_job_free(d);
        pk_respond_error(r, e);
        return;
    }
    pk_offload(r, work_create, create_done, d, note_job_free);
}

void pk_api_note_create(pk_req *r)
{
    pk_api_note_create_from(r, r->json);
}

/* ---- get ------------------------------------------------------------------------------------- */

static void work_get(pk_job *j)
{
    note_job *d = j->data;
    int64_t version = 0;
    pk_l2_ticket l2; /* L2 (Redis) between L1 and the store; a no-op without --redis-url */
    if (pk_services_l2_get_note(j, d->id, &j->body, &version, &l2)) {
        d->version = version;
        set_etag(j, version);
        j->cache_state = "l2";
        return;
    }
    PK_STORE_CALL(j, pk_store_note_get(j->srv->store, &j->op, d->id, &j->body, &version));
    if (!j->err) pk_services_l2_put_note(j, d->id, &j->body, version, &l2);
    d->version = version;
    if (!j->err) set_etag(j, version);
}

static bool not_modified(pk_req *r, int64_t version)
{
    size_t n;
    const char *inm = pk_req_header(r, "if-none-match", &n);
    if (!inm) return false;
    char tag[32];
    int tl = (int)format_etag(tag, version);
    if (n == 1 && inm[0] == '*') return true;
    for (size_t i = 0; i + (size_t)tl <= n; i++)
        if (!memcmp(inm + i, tag, (size_t)tl)) return true;
    return false;
}

static void get_done(pk_req *r, pk_job *j)
{
    note_job *d = j->data;
    if (!j->err)
        pk_services_cache_note(r->srv, d->id, d->version, j->body.data, j->body.len, d->cache_ticket);
    else if (pk_err_is(j->err, "not_found"))
        pk_services_cache_note_missing(r->srv, d->id, d->cache_ticket);
    if (!j->err && not_modified(r, d->version)) {
        pk_req_add_header(r, "etag", j->etag, strlen(j->etag));
        pk_respond_empty(r, 304);
        return;
    }
    pk_job_respond(r, j);
}

void pk_api_note_get_id(pk_req *r, const char *id)
{
    /* fast path: an L1 hit is answered on the loop without offloading */
    pk_services_cached_note hit;
    if (pk_services_cache_lookup_note(r->srv, id, &hit)) {
        r->cache_state = "hit";
        if (hit.missing) {
            pk_services_cache_note_release(&hit);
            pk_respond_error(r, pk_err_not_found("no note with id '%s'", id));
            return;
        }
        char etag[40];
        pk_req_add_header(r, "etag", etag, format_etag(etag, hit.version));
        if (not_modified(r, hit.version))
            pk_respond_empty(r, 304);
        else
            pk_respond_data(r, 200, hit.data, hit.len, NULL);
        pk_services_cache_note_release(&hit);
        return;
    }
    r->cache_state = "miss";
    note_job *d = calloc(1, sizeof *d);
    memcpy(d->id, id, 37);
    d->cache_ticket = pk_services_cache_ticket(r->srv, id, 36);
    pk_offload(r, work_get, get_done, d, note_job_free);
}

void pk_api_note_get(pk_req *r)
{
    char id[37];
    pk_err *e = pk_api_note_id(r, "id", id);
    if (e) return pk_respond_error(r, e);
    pk_api_note_get_id(r, id);
}

/* ---- patch / delete -------------------------------------------------------------------------- */

static void work_patch(pk_job *j)
{
    note_job *d = j->data;
    PK_STORE_CALL(j, pk_store_note_update(j->srv->store, &j->op, d->id, d->if_version, &d->f.in, &j->body));
    if (!j->err) {
        j->status = 200;
        d->version = version_of(&j->body);
        set_etag(j, d->version);
    }
}

static void write_done(pk_req *r, pk_job *j)
{
    note_job *d = j->data;
    /* invalidate before answering: once the client sees the ack, no read on this instance is stale */
    if (!j->err || pk_err_is(j->err, "not_found")) pk_services_note_changed_req(r, d->id, false);
    pk_job_respond(r, j);
}

void pk_api_note_patch(pk_req *r)
{
    char id[37];
    pk_err *e = pk_api_note_id(r, "id", id);
    if (e) return pk_respond_error(r, e);
    pk_api_note_patch_from(r, id, r->json);
}

void pk_api_note_patch_from(pk_req *r, const char *id, const cJSON *obj)
{
    note_job *d = calloc(1, sizeof *d);
    memcpy(d->id, id, 37);
    pk_err *e = parse_if_match(r, &d->if_version);
    if (!e) e = pk_api_parse_note(r, obj, false, &d->f);
    if (!e && d->f.in.set == 0) e = pk_err_invalid("the patch changes nothing: give at least one field");
    if (e) {
        note_job_free(d);
        return pk_respond_error(r, e);
    }
    pk_offload(r, work_patch, write_done, d, note_job_free);
}

static void work_delete(pk_job *j)
{
    note_job *d = j->data;
    PK_STORE_CALL(j, pk_store_note_delete(j->srv->store, &j->op, d->id, d->if_version));
    if (!j->err) j->status = 204;
}

void pk_api_note_delete(pk_req *r)
{
    note_job *d = calloc(1, sizeof *d);
    pk_err *e = pk_api_note_id(r, "id", d->id);
    if (!e) e = parse_if_match(r, &d->if_version);
    if (e) {
        note_job_free(d);
        return pk_respond_error(r, e);
    }
    pk_offload(r, work_delete, write_done, d, note_job_free);
}

/* ---- list / search --------------------------------------------------------------------------- */

static void page_to_job(pk_job *j, pk_page *pg, const pk_note_query *q)
{
    pk_buf_free(&j->body);
    j->body = pg->items;
    memset(&pg->items, 0, sizeof pg->items);
    pk_buf m = PK_BUF_INIT;
    pk_buf_printf(&m, "\"pagination\":{\"limit\":%d,\"count\":%zu,\"next_cursor\":", q->limit, pg->count);
    if (pg->next_cursor) {
        pk_buf_putc(&m, '"');
        pk_json_escape(&m, pg->next_cursor, strlen(pg->next_cursor));
        pk_buf_putc(&m, '"');
    } else
        pk_buf_puts(&m, "null");
    pk_buf_putc(&m, '}');
    j->meta_extra = pk_buf_steal(&m, NULL);
    j->status = 200;
}

/* Query pages are cached by (write generation, route, query): answered on the loop on a hit. */
typedef struct query_job {
    pk_query_args *qa;
    pk_buf key;
} query_job;

static void query_job_free(void *p)
{
    query_job *q = p;
    pk_query_args_free_void(q->qa);
    pk_buf_free(&q->key);
    free(q);
}

static bool query_from_cache(pk_req *r, query_job *q)
{
    if (!pk_services_cache_query_key(r->srv, r, &q->key)) return false;
    pk_services_cached_note hit;
    if (!pk_services_cache_query_get(r->srv, &q->key, &hit)) {
        r->cache_state = "miss";
        return false;
    }
    r->cache_state = "hit";
    size_t ml = strlen(hit.data);
    pk_respond_data(r, 200, hit.data + ml + 1, hit.len - ml - 1, hit.data);
    pk_services_cache_note_release(&hit);
    return true;
}

static void query_done(pk_req *r, pk_job *j)
{
    query_job *q = j->data;
    if (!j->err && q->key.len)
        pk_services_cache_query_put(r->srv, &q->key, j->meta_extra, j->body.data, j->body.len);
    pk_job_respond(r, j);
}

static void work_list(pk_job *j)
{
    pk_query_args *qa = ((query_job *)j->data)->qa;
    pk_page pg = {0};
    PK_STORE_CALL(j, pk_store_note_list(j->srv->store, &j->op, &qa->q, &pg));
    if (!j->err) page_to_job(j, &pg, &qa->q);
    pk_page_free(&pg);
}

static void work_search(pk_job *j)
{
    pk_query_args *qa = ((query_job *)j->data)->qa;
    pk_page pg = {0};
    PK_STORE_CALL(j, pk_store_note_search(j->srv->store, &j->op, &qa->q, &pg));
    if (!j->err) page_to_job(j, &pg, &qa->q);
    pk_page_free(&pg);
}

void pk_api_note_list(pk_req *r)
{
    pk_query_args *qa = malloc(sizeof *qa);
    pk_err *e = pk_api_parse_query(r, false, qa);
    if (e) {
        pk_query_args_free_void(qa);
        return pk_respond_error(r, e);
    }
    query_job *q = calloc(1, sizeof *q);
    q->qa = qa;
    if (query_from_cache(r, q)) return query_job_free(q);
    pk_offload(r, work_list, query_done, q, query_job_free);
}

void pk_api_search_with(pk_req *r, pk_query_args *qa)
{
    query_job *q = calloc(1, sizeof *q);
    q->qa = qa;
    if (query_from_cache(r, q)) return query_job_free(q);
    pk_offload(r, work_search, query_done, q, query_job_free);
}

void pk_api_search(pk_req *r)
{
    bool bad = false;
    const char *mode = pk_req_query(r, "mode", &bad);
    if (mode && strcmp(mode, "fulltext")) {
        if (!strcmp(mode, "semantic") || !strcmp(mode, "hybrid"))
            return pk_api_search_vector(r, !strcmp(mode, "hybrid"));
        pk_err *e = pk_err_invalid("the request has invalid query parameters");
        pk_err_add_field(e, "mode", "must be one of fulltext, semantic, hybrid");
        return pk_respond_error(r, e);
    }
    pk_query_args *qa = malloc(sizeof *qa);
    pk_err *e = pk_api_parse_query(r, true, qa);
    if (e) {
        pk_query_args_free_void(qa);
        return pk_respond_error(r, e);
    }
    pk_api_search_with(r, qa);
}

/* ---- links, history -------------------------------------------------------------------------- */

static void work_link_create(pk_job *j)
{
    note_job *d = j->data;
    if (idem_begin(j, d)) return;
    PK_STORE_CALL(j, pk_store_link_create(j->srv->store, &j->op, d->id, d->id2, d->link_type, d->strength,
                                          d->link_metadata, &j->body));
    if (!j->err) j->status = 201;
    idem_end(j, d);
}

void pk_api_link_create(pk_req *r)
{
    note_job *d = calloc(1, sizeof *d);
    pk_err *e = pk_api_note_id(r, "id", d->id);
    const cJSON *o = r->json;
    if (!e && !cJSON_IsObject(o)) e = pk_err_invalid("the request body must be a JSON object");
    if (!e) {
        pk_err *ve = NULL;
        for (const cJSON *c = o->child; c; c = c->next)
            if (strcmp(c->string, "target_id") && strcmp(c->string, "type") &&
                strcmp(c->string, "strength") && strcmp(c->string, "metadata")) {
                if (!ve) ve = pk_err_invalid("the request has invalid fields");
                pk_err_add_field(ve, c->string, "is not a known field");
            }
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "target_id");
        if (!cJSON_IsString(t) || strlen(t->valuestring) != 36) {
            if (!ve) ve = pk_err_invalid("the request has invalid fields");
            pk_err_add_field(ve, "target_id", "is required and must be a note id (UUID)");
        } else {
            for (int i = 0; i < 36; i++)
                d->id2[i] =
                    (char)((t->valuestring[i] >= 'A' && t->valuestring[i] <= 'F') ? t->valuestring[i] + 32
                                                                                  : t->valuestring[i]);
            if (!pk_uuid_valid(d->id2, 36)) {
                if (!ve) ve = pk_err_invalid("the request has invalid fields");
                pk_err_add_field(ve, "target_id", "must be a note id (UUID)");
            }
        }
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
        if (ty && (!cJSON_IsString(ty) || !*ty->valuestring || strlen(ty->valuestring) > 64)) {
            if (!ve) ve = pk_err_invalid("the request has invalid fields");
            pk_err_add_field(ve, "type", "must be a string of 1 to 64 characters");
        }
        d->link_type = strdup(ty && cJSON_IsString(ty) ? ty->valuestring : "related");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "strength");
        d->strength = 0.5;
        if (st) {
            if (!cJSON_IsNumber(st) || st->valuedouble < 0 || st->valuedouble > 1) {
                if (!ve) ve = pk_err_invalid("the request has invalid fields");
                pk_err_add_field(ve, "strength", "must be a number between 0 and 1");
            } else
                d->strength = st->valuedouble;
        }
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
        if (md && !cJSON_IsObject(md)) {
            if (!ve) ve = pk_err_invalid("the request has invalid fields");
            pk_err_add_field(ve, "metadata", "must be a JSON object");
        } else if (md) {
            pk_buf b = PK_BUF_INIT;
            pk_jw w;
            pk_jw_init(&w, &b);
            pk_jw_cjson(&w, md);
            d->link_metadata = pk_buf_steal(&b, NULL);
        }
        e = ve;
        if (!e) e = pk_api_guard(r, PK_SURFACE_NOTE_FIELD, "type", d->link_type, strlen(d->link_type), NULL);
        if (!e && md) {
            for (const cJSON *c = md->child; c && !e; c = c->next)
                if (cJSON_IsString(c))
                    e = pk_api_guard(r, PK_SURFACE_NOTE_FIELD, "metadata", c->valuestring,
                                     strlen(c->valuestring), NULL);
        }
    }
    if (!e) e = idem_prepare(r, d);
    if (e) {
        note_job_free(d);
        return pk_respond_error(r, e);
    }
    pk_offload(r, work_link_create, NULL, d, note_job_free);
}

static void work_link_list(pk_job *j)
{
    note_job *d = j->data;
    PK_STORE_CALL(j, pk_store_link_list(j->srv->store, &j->op, d->id, &j->body));
    j->status = 200;
}

void pk_api_link_list(pk_req *r)
{
    note_job *d = calloc(1, sizeof *d);
    pk_err *e = pk_api_note_id(r, "id", d->id);
    if (e) {
        note_job_free(d);
        return pk_respond_error(r, e);
    }
    pk_offload(r, work_link_list, NULL, d, note_job_free);
}

static void work_history(pk_job *j)
{
    note_job *d = j->data;
    PK_STORE_CALL(j, pk_store_note_history(j->srv->store, &j->op, d->id, &j->body));
    j->status = 200;
}

void pk_api_note_history(pk_req *r)
{
    note_job *d = calloc(1, sizeof *d);
    pk_err *e = pk_api_note_id(r, "id", d->id);
    if (e) {
        note_job_free(d);
        return pk_respond_error(r, e);
    }
    pk_offload(r, work_history, NULL, d, note_job_free);
}
