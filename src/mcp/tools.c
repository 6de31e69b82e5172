/*
 * PAKE's MCP surface over the knowledge store: the tools (keeping the original agents' names
 * search_notes, get_note_by_id, notes_from_schema, plus update_note, delete_note, link_notes,
 * get_note_history), the note resources (pake://notes/{id} as Markdown with YAML front matter) and the
 * prompts summarize_note and research_brief.
 *
 * Validation reuses the REST parsers (pk_api_parse_note, pk_api_parse_query_json) so a tool accepts
 * exactly what the equivalent REST call accepts and runs the same guard; store calls go through
 * PK_STORE_CALL (bulkhead, breaker, retries) on a worker. A tool's failure is an isError result whose
 * text is the error message plus its field errors, so an agent can correct its call.
 */
#include "api/api.h"
#include "core/clock.h"
#include "core/id.h"
#include "mcp/mcp_internal.h"
#include "server/services.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------------- */

void pk_mcp_job_init(pk_job *j, pk_server *srv, pk_mcp_call *c)
{
    memset(j, 0, sizeof *j);
    j->srv = srv;
    snprintf(j->request_id, sizeof j->request_id, "%s", c->request_id[0] ? c->request_id : "mcp");
    snprintf(j->principal, sizeof j->principal, "%s", c->principal[0] ? c->principal : "mcp");
    j->deadline_ns = c->deadline_ns;
    j->op.request_id = j->request_id;
    j->op.principal = j->principal;
    j->op.deadline_ns = c->deadline_ns;
}

pk_err *pk_mcp_guard_strings(pk_req *r, int surface, const char *field, const cJSON *v)
{
    if (!r) return NULL;
    if (cJSON_IsString(v))
        return pk_services_guard(r, surface, field, v->valuestring, strlen(v->valuestring), NULL);
    for (const cJSON *c = (cJSON_IsObject(v) || cJSON_IsArray(v)) ? v->child : NULL; c; c = c->next) {
        pk_err *e = pk_mcp_guard_strings(r, surface, c->string ? c->string : field, c);
        if (e) return e;
    }
    return NULL;
}

void pk_mcp_tool_result(pk_buf *out, const char *json, size_t n)
{
    pk_buf_reserve(out, 2 * n + n / 4 + 96); /* the JSON twice, the text escaped: one allocation */
    pk_buf_puts(out, "{\"content\":[{\"type\":\"text\",\"text\":\"");
    pk_json_escape(out, json, n);
    pk_buf_puts(out, "\"}],\"structuredContent\":");
    pk_buf_append(out, json, n);
    pk_buf_puts(out, ",\"isError\":false}");
}

void pk_mcp_tool_error_result(pk_buf *out, const pk_err *e)
{
    pk_buf t = PK_BUF_INIT;
    pk_buf_printf(&t, "%s (%s)", e->message, e->code);
    for (size_t i = 0; i < e->nfields; i++)
        pk_buf_printf(&t, "%s%s: %s", i ? "; " : ": ", e->fields[i].field, e->fields[i].message);
    pk_buf_puts(out, "{\"content\":[{\"type\":\"text\",\"text\":\"");
    pk_json_escape(out, t.data, t.len);
    pk_buf_puts(out, "\"}],\"isError\":true}");
    pk_buf_free(&t);
}

/* Replies with the job's outcome: a tool result whose structuredContent is `structured` (and whose
 * text is the same JSON, for clients without structured output), or an isError result. */
static void reply_tool(pk_mcp_call *c, pk_job *j, const char *structured, size_t n)
{
    pk_buf res = PK_BUF_INIT;
    if (j->err)
        pk_mcp_tool_error_result(&res, j->err);
    else
        pk_mcp_tool_result(&res, structured, n);
    pk_mcp_call_reply(c, res.data, res.len);
    pk_buf_free(&res);
}

static bool get_id(const cJSON *args, const char *name, char out[37], pk_err **e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, name);
    if (!cJSON_IsString(v) || strlen(v->valuestring) != 36) {
        if (!*e) *e = pk_err_invalid("the arguments are invalid");
        pk_err_add_field(*e, name, "is required and must be a note id (UUID)");
        return false;
    }
    for (int i = 0; i < 36; i++) {
        char ch = v->valuestring[i];
        out[i] = (char)(ch >= 'A' && ch <= 'F' ? ch + 32 : ch);
    }
    out[36] = '\0';
    if (!pk_uuid_valid(out, 36)) {
        if (!*e) *e = pk_err_invalid("the arguments are invalid");
        pk_err_add_field(*e, name, "must be a note id (UUID)");
        return false;
    }
    return true;
}

static pk_err *only_known(const cJSON *args, const char *const *names)
{
    pk_err *e = NULL;
    for (const cJSON *c = args->child; c; c = c->next) {
        bool ok = false;
        for (int i = 0; names[i] && !ok; i++)
            ok = !strcmp(names[i], c->string);
        if (!ok) {
            if (!e) e = pk_err_invalid("the arguments are invalid");
            pk_err_add_field(e, c->string, "is not a known argument");
        }
    }
    return e;
}

/* A write through MCP: the same invalidation as a REST write (which also notifies MCP sessions). */
static void changed(pk_server *srv, const char *id)
{
    if (srv->svc)
        pk_services_note_changed(srv, id);
    else
        pk_mcp_note_changed(id, true);
}

static void note_id_of(const pk_buf *b, char id[37])
{
    id[0] = '\0';
    const char *p = b->data ? strstr(b->data, "\"id\":\"") : NULL;
    if (p && strlen(p + 6) >= 36) {
        memcpy(id, p + 6, 36);
        id[36] = '\0';
    }
}

/* ---- search_notes ----------------------------------------------------------------------------- */

typedef enum { MODE_FULLTEXT, MODE_SEMANTIC, MODE_HYBRID } search_mode;
static const char *const MODE_NAMES[] = {"fulltext", "semantic", "hybrid"};

typedef struct search_args {
    pk_query_args *qa;
    search_mode mode;
    pk_buf key; /* L1 query-cache key (empty when the cache is off) */
} search_args;

static void search_args_free(void *p)
{
    search_args *a = p;
    pk_query_args_free_void(a->qa);
    pk_buf_free(&a->key);
    free(a);
}

/* semantic / hybrid: the REST ranking (pk_api_vector_search_run), one page. */
static void search_vector_work(pk_mcp_call *c, pk_job *j)
{
    search_args *sa = c->data;
    pk_buf notes = PK_BUF_INIT, s = PK_BUF_INIT;
    int count = 0;
    const char *index = "";
    pk_api_vector_search_run(j, sa->qa->q.text, sa->qa->q.limit, sa->mode == MODE_HYBRID, &notes, &count,
                             &index);
    if (!j->err) {
        pk_buf_printf(&s, "{\"count\":%d,\"notes\":", count);
        pk_buf_append(&s, notes.data, notes.len);
        pk_buf_printf(&s, ",\"next_cursor\":null,\"mode\":\"%s\",\"vector_index\":\"%s\"}",
                      MODE_NAMES[sa->mode], index);
    }
    reply_tool(c, j, s.data, s.len);
    pk_buf_free(&notes);
    pk_buf_free(&s);
}

static void search_work(pk_mcp_call *c, pk_job *j)
{
    search_args *sa = c->data;
    if (sa->mode != MODE_FULLTEXT) return search_vector_work(c, j);
    pk_query_args *qa = sa->qa;
    pk_page pg = {0};
    PK_STORE_CALL(j, pk_store_note_search(j->srv->store, &j->op, &qa->q, &pg));
    pk_buf s = PK_BUF_INIT;
    if (!j->err) {
        pk_buf_printf(&s, "{\"count\":%zu,\"notes\":", pg.count);
        pk_buf_append(&s, pg.items.data ? pg.items.data : "[]", pg.items.data ? pg.items.len : 2);
        pk_buf_puts(&s, ",\"next_cursor\":");
        if (pg.next_cursor) {
            pk_buf_putc(&s, '"');
            pk_json_escape(&s, pg.next_cursor, strlen(pg.next_cursor));
            pk_buf_putc(&s, '"');
        } else
            pk_buf_puts(&s, "null");
        pk_buf_putc(&s, '}');
        /* the key embeds the write generation of prepare time: a write since then makes it unreachable */
        if (sa->key.len) pk_services_cache_query_put(j->srv, &sa->key, "", s.data, s.len);
    }
    pk_page_free(&pg);
    reply_tool(c, j, s.data, s.len);
    pk_buf_free(&s);
}

/* `mode` (fulltext default | semantic | hybrid). The vector modes take only query and limit, as
 * GET /v1/search?mode=semantic|hybrid does. */
static pk_err *search_mode_of(const cJSON *args, search_mode *mode)
{
    *mode = MODE_FULLTEXT;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(args, "mode");
    if (!m || cJSON_IsNull(m)) return NULL;
    for (int i = 0; cJSON_IsString(m) && i < 3; i++)
        if (!strcmp(m->valuestring, MODE_NAMES[i])) *mode = (search_mode)i;
    if (!cJSON_IsString(m) || (*mode == MODE_FULLTEXT && strcmp(m->valuestring, "fulltext"))) {
        pk_err *e = pk_err_invalid("the arguments are invalid");
        pk_err_add_field(e, "mode", "must be one of fulltext, semantic, hybrid");
        return e;
    }
    if (*mode == MODE_FULLTEXT) return NULL;
    pk_err *e = NULL;
    for (const cJSON *c = args->child; c; c = c->next) {
        if (!strcmp(c->string, "query") || !strcmp(c->string, "limit") || !strcmp(c->string, "mode") ||
            cJSON_IsNull(c))
            continue;
        if (!e) e = pk_err_invalid("the arguments are invalid");
        pk_err_add_field(e, c->string,
                         "is not supported with mode=semantic or mode=hybrid (only query and limit)");
    }
    return e;
}

static pk_err *search_prepare(pk_mcp_call *c, const cJSON *args, pk_req *r, pk_buf *result)
{
    static const char *const K[] = {"query", "type",   "status", "tags", "min_confidence",
                                    "limit", "cursor", "mode",   NULL};
    pk_err *e = only_known(args, K);
    search_mode mode = MODE_FULLTEXT;
    if (!e) e = search_mode_of(args, &mode);
    if (e) return e;
    /* the filters parser knows no `mode`: it reads a copy without it */
    cJSON *filters = cJSON_Duplicate(args, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(filters, "mode");
    pk_query_args *qa = malloc(sizeof *qa);
    e = pk_api_parse_query_json(r, filters, qa);
    cJSON_Delete(filters);
    if (e) {
        pk_query_args_free_void(qa);
        return e;
    }
    search_args *sa = calloc(1, sizeof *sa);
    sa->qa = qa;
    sa->mode = mode;
    c->data = sa;
    c->free_data = search_args_free;
    c->work = search_work;
    /* the same L1 query cache as GET /v1/search: a repeated search is answered without a worker (not
     * for the vector modes: embeddings change after the note writes that the cache key follows) */
    if (mode == MODE_FULLTEXT && r && r->srv && r->srv->svc) {
        pk_buf canon = PK_BUF_INIT;
        pk_jw w;
        pk_jw_init(&w, &canon);
        pk_jw_cjson(&w, args);
        pk_services_cached_note hit;
        if (pk_services_cache_query_key_for(r->srv, "mcp.search_notes", canon.data, canon.len, &sa->key) &&
            pk_services_cache_query_get(r->srv, &sa->key, &hit)) {
            size_t ml = strlen(hit.data);
            const char *data = hit.data + ml + 1;
            size_t dl = hit.len - ml - 1;
            pk_mcp_tool_result(result, data, dl);
            pk_services_cache_note_release(&hit);
            c->work = NULL;
        }
        pk_buf_free(&canon);
    }
    return NULL;
}

/* ---- get_note_by_id --------------------------------------------------------------------------- */

static void get_work(pk_mcp_call *c, pk_job *j)
{
    int64_t version = 0;
    PK_STORE_CALL(j, pk_store_note_get(j->srv->store, &j->op, (const char *)c->data, &j->body, &version));
    reply_tool(c, j, j->body.data, j->body.len);
}

static pk_err *get_prepare(pk_mcp_call *c, const cJSON *args, pk_req *r, pk_buf *result)
{
    static const char *const K[] = {"id", NULL};
    pk_err *e = only_known(args, K);
    char id[37];
    get_id(args, "id", id, &e);
    if (e) return e;
    /* an L1 hit is answered without a worker */
    pk_services_cached_note hit;
    if (r && r->srv->svc && pk_services_cache_lookup_note(r->srv, id, &hit)) {
        if (hit.missing)
            e = pk_err_not_found("no note with id '%s'", id);
        else
            pk_mcp_tool_result(result, hit.data, hit.len);
        pk_services_cache_note_release(&hit);
        return e;
    }
    c->data = strdup(id);
    c->free_data = free;
    c->work = get_work;
    return NULL;
}

/* ---- notes_from_schema / update_note ---------------------------------------------------------- */

typedef struct write_args {
    char id[37];
    int64_t if_version;
    pk_note_fields f;
} write_args;

static void write_args_free(void *p)
{
    write_args *w = p;
    pk_note_fields_free(&w->f);
    free(w);
}

static void create_work(pk_mcp_call *c, pk_job *j)
{
    write_args *w = c->data;
    PK_STORE_CALL(j, pk_store_note_create(j->srv->store, &j->op, &w->f.in, &j->body));
    if (!j->err) {
        char id[37];
        note_id_of(&j->body, id);
        changed(j->srv, id);
    }
    reply_tool(c, j, j->body.data, j->body.len);
}

static pk_err *create_prepare(pk_mcp_call *c, const cJSON *args, pk_req *r, pk_buf *result)
{
    write_args *w = calloc(1, sizeof *w);
    pk_err *e = pk_api_parse_note(r, args, true, &w->f);
    if (e) {
        write_args_free(w);
        return e;
    }
    c->data = w;
    c->free_data = write_args_free;
    c->work = create_work;
    return NULL;
}

static void update_work(pk_mcp_call *c, pk_job *j)
{
    write_args *w = c->data;
    PK_STORE_CALL(j, pk_store_note_update(j->srv->store, &j->op, w->id, w->if_version, &w->f.in, &j->body));
    if (!j->err || pk_err_is(j->err, "not_found")) changed(j->srv, w->id);
    reply_tool(c, j, j->body.data, j->body.len);
}

static pk_err *if_version_arg(const cJSON *args, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, "if_version");
    *out = 0;
    if (!v || cJSON_IsNull(v)) return NULL;
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 1 && v->valuedouble <= 9e15) ||
        v->valuedouble != (double)(int64_t)v->valuedouble) {
        pk_err *e = pk_err_invalid("the arguments are invalid");
        pk_err_add_field(e, "if_version", "must be a positive integer (the note's current version)");
        return e;
    }
    *out = (int64_t)v->valuedouble;
    return NULL;
}

static pk_err *update_prepare(pk_mcp_call *c, const cJSON *args, pk_req *r, pk_buf *result)
{
    write_args *w = calloc(1, sizeof *w);
    pk_err *e = NULL;
    get_id(args, "id", w->id, &e);
    if (!e) e = if_version_arg(args, &w->if_version);
    if (!e) {
        cJSON *fields = cJSON_Duplicate(args, true);
        cJSON_DeleteItemFromObjectCaseSensitive(fields, "id");
        cJSON_DeleteItemFromObjectCaseSensitive(fields, "if_version");
        e = pk_api_parse_note(r, fields, false, &w->f);
        cJSON_Delete(fields);
        if (!e && w->f.in.set == 0) e = pk_err_invalid("the update changes nothing: give at least one field");
    }
    if (e) {
        write_args_free(w);
        return e;
    }
    c->data = w;
    c->free_data = write_args_free;
    c->work = update_work;
    return NULL;
}

/* ---- delete_note ------------------------------------------------------------------------------ */

static void delete_work(pk_mcp_call *c, pk_job *j)
{
    write_args *w = c->data;
    PK_STORE_CALL(j, pk_store_note_delete(j->srv->store, &j->op, w->id, w->if_version));
    if (!j->err || pk_err_is(j->err, "not_found")) changed(j->srv, w->id);
    pk_buf s = PK_BUF_INIT;
    pk_buf_printf(&s, "{\"deleted\":true,\"id\":\"%s\"}", w->id);
    reply_tool(c, j, s.data, s.len);
    pk_buf_free(&s);
}

static pk_err *delete_prepare(pk_mcp_call *c, const cJSON *args, pk_req *r, pk_buf *result)
{
    static const char *const K[] = {"id", "if_version", NULL};
    write_args *w = calloc(1, sizeof *w);
    pk_err *e = only_known(args, K);
    get_id(args, "id", w->id, &e);
    if (!e) e = if_version_arg(args, &w->if_version);
    if (e) {
        write_args_free(w);
        return e;
    }
    c->data = w;
    c->free_data = write_args_free;
    c->work = delete_work;
    return NULL;
}

/* ---- link_notes ------------------------------------------------------------------------------- */

typedef struct link_args {
    char src[37], dst[37];
    char *type, *metadata;
    double strength;
} link_args;

static void link_args_free(void *p)
{
    link_args *l = p;
    free(l->type);
    free(l->metadata);
    free(l);
}

static void link_work(pk_mcp_call *c, pk_job *j)
{
    link_args *l = c->data;
    PK_STORE_CALL(j, pk_store_link_create(j->srv->store, &j->op, l->src, l->dst, l->type, l->strength,
                                          l->metadata, &j->body));
    if (!j->err) changed(j->srv, l->src);
    reply_tool(c, j, j->body.data, j->body.len);
}

static pk_err *link_prepare(pk_mcp_call *c, const cJSON *args, pk_req *r, pk_buf *result)
{
    static const char *const K[] = {"source_id", "target_id", "type", "strength", "metadata", NULL};
    link_args *l = calloc(1, sizeof *l);
    pk_err *e = only_known(args, K);
    get_id(args, "source_id", l->src, &e);
    get_id(args, "target_id", l->dst, &e);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(args, "type");
    if (ty && (!cJSON_IsString(ty) || !*ty->valuestring || strlen(ty->valuestring) > 64)) {
        if (!e) e = pk_err_invalid("the arguments are invalid");
        pk_err_add_field(e, "type", "must be a string of 1 to 64 characters");
    }
    l->type = strdup(cJSON_IsString(ty) ? ty->valuestring : "related");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(args, "strength");
    l->strength = 0.5;
    if (st && (!cJSON_IsNumber(st) || st->valuedouble < 0 || st->valuedouble > 1)) {
        if (!e) e = pk_err_invalid("the arguments are invalid");
        pk_err_add_field(e, "strength", "must be a number between 0 and 1");
    } else if (st)
        l->strength = st->valuedouble;
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(args, "metadata");
    if (md && !cJSON_IsObject(md)) {
        if (!e) e = pk_err_invalid("the arguments are invalid");
        pk_err_add_field(e, "metadata", "must be an object");
    } else if (md) {
        pk_buf b = PK_BUF_INIT;
        pk_jw w;
        pk_jw_init(&w, &b);
        pk_jw_cjson(&w, md);
        l->metadata = pk_buf_steal(&b, NULL);
    }
    if (!e) e = pk_mcp_guard_strings(r, PK_SURFACE_NOTE_FIELD, "type", ty);
    if (!e) e = pk_mcp_guard_strings(r, PK_SURFACE_NOTE_FIELD, "metadata", md);
    if (e) {
        link_args_free(l);
        return e;
    }
    c->data = l;
    c->free_data = link_args_free;
    c->work = link_work;
    return NULL;
}

/* ---- get_note_history ------------------------------------------------------------------------- */

static void history_work(pk_mcp_call *c, pk_job *j)
{
    PK_STORE_CALL(j, pk_store_note_history(j->srv->store, &j->op, (const char *)c->data, &j->body));
    reply_tool(c, j, j->body.data, j->body.len);
}

static pk_err *history_prepare(pk_mcp_call *c, const cJSON *args, pk_req *r, pk_buf *result)
{
    static const char *const K[] = {"id", NULL};
    pk_err *e = only_known(args, K);
    char id[37];
    get_id(args, "id", id, &e);
    if (e) return e;
    c->data = strdup(id);
    c->free_data = free;
    c->work = history_work;
    return NULL;
}

/* ---- the tool table --------------------------------------------------------------------------- */

#define NOTE_SCHEMA                                                                                          \
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"title\":{\"type\":\"string\"},"     \
    "\"content\":{\"type\":\"string\"},\"type\":{\"type\":\"string\"},\"status\":{\"type\":\"string\"},"     \
    "\"verification_status\":{\"type\":\"string\"},\"source_uri\":{\"type\":[\"string\",\"null\"]},"         \
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"metadata\":{\"type\":\"object\"},"      \
    "\"confidence_score\":{\"type\":\"number\"},\"ai_summary\":{\"type\":[\"string\",\"null\"]},"            \
    "\"human_notes\":{\"type\":[\"string\",\"null\"]},\"guard\":{\"type\":[\"object\",\"null\"]},"           \
    "\"created_at\":{\"type\":\"string\"},\"updated_at\":{\"type\":\"string\"},\"version\":{\"type\":"       \
    "\"integer\"}},\"required\":[\"id\",\"title\",\"version\"]}"

#define NOTE_FIELDS                                                                                          \
    "\"title\":{\"type\":\"string\",\"description\":\"Title (required on create)\"},"                        \
    "\"content\":{\"type\":\"string\",\"description\":\"Markdown body\"},"                                   \
    "\"type\":{\"type\":\"string\",\"description\":\"Note type, e.g. note, insight, decision\"},"            \
    "\"status\":{\"type\":\"string\",\"enum\":[\"draft\",\"active\",\"archived\"]},"                         \
    "\"verification_status\":{\"type\":\"string\",\"enum\":[\"pending\",\"verified\",\"disputed\","          \
    "\"rejected\"]},"                                                                                        \
    "\"source_uri\":{\"type\":[\"string\",\"null\"]},"                                                       \
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},"                                         \
    "\"metadata\":{\"type\":\"object\"},"                                                                    \
    "\"confidence_score\":{\"type\":\"number\",\"minimum\":0,\"maximum\":1},"                                \
    "\"ai_summary\":{\"type\":[\"string\",\"null\"]},"                                                       \
    "\"human_notes\":{\"type\":[\"string\",\"null\"]}"

const mcp_tool pk_mcp_tools[] = {
    {"search_notes", "Search notes",
     "Search over the knowledge base. mode=fulltext (default): BM25 ranking, quoted phrases allowed, "
     "optional "
     "filters, notes with a snippet; pass next_cursor back as cursor for the next page. mode=semantic: "
     "nearest "
     "notes by embedding (cosine score); mode=hybrid: both rankings fused (reciprocal rank fusion); these "
     "two "
     "take only query and limit and return one page.",
     "{\"type\":\"object\",\"properties\":{\"query\":{\"type\":\"string\",\"description\":\"Words to search "
     "for\"},\"type\":{\"type\":\"string\"},\"status\":{\"type\":\"string\",\"enum\":[\"draft\",\"active\","
     "\"archived\"]},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"description\":\"Notes "
     "must "
     "carry all these "
     "tags\"},\"min_confidence\":{\"type\":\"number\",\"minimum\":0,\"maximum\":1},\"limit\":{"
     "\"type\":\"integer\",\"minimum\":1,\"maximum\":100,\"default\":20},\"cursor\":{\"type\":[\"string\","
     "\"null\"]},\"mode\":{\"type\":\"string\",\"enum\":[\"fulltext\",\"semantic\",\"hybrid\"],\"default\":"
     "\"fulltext\",\"description\":\"fulltext: words (BM25, filters, pages); semantic: meaning (embeddings); "
     "hybrid: both fused. semantic and hybrid take only query and limit\"}},\"required\":[\"query\"],"
     "\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"count\":{\"type\":\"integer\"},\"notes\":{\"type\":\"array\","
     "\"items\":{\"type\":\"object\"}},\"next_cursor\":{\"type\":[\"string\",\"null\"]},\"mode\":{\"type\":"
     "\"string\",\"enum\":[\"semantic\",\"hybrid\"]},\"vector_index\":{\"type\":\"string\",\"enum\":["
     "\"pgvector-hnsw\",\"exact-scan\"]}},\"required\":[\"count\",\"notes\",\"next_cursor\"]}",
     "{\"title\":\"Search notes\",\"readOnlyHint\":true,\"destructiveHint\":false,\"idempotentHint\":true,"
     "\"openWorldHint\":false}",
     search_prepare, true},
    {"get_note_by_id", "Get a note", "Reads one note by its id (UUID).",
     "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"description\":\"The note's UUID\"}},"
     "\"required\":[\"id\"],\"additionalProperties\":false}",
     NOTE_SCHEMA,
     "{\"title\":\"Get a note\",\"readOnlyHint\":true,\"destructiveHint\":false,\"idempotentHint\":true,"
     "\"openWorldHint\":false}",
     get_prepare, true},
    {"notes_from_schema", "Create a note",
     "Creates a note from structured fields (title required; content is Markdown). Returns the stored note "
     "with its id and version.",
     "{\"type\":\"object\",\"properties\":{" NOTE_FIELDS
     "},\"required\":[\"title\"],\"additionalProperties\":"
     "false}",
     NOTE_SCHEMA,
     "{\"title\":\"Create a note\",\"readOnlyHint\":false,\"destructiveHint\":false,\"idempotentHint\":false,"
     "\"openWorldHint\":false}",
     create_prepare, true},
    {"update_note", "Update a note",
     "Changes the given fields of a note. With if_version the update only applies when the note is still at "
     "that version (optimistic concurrency).",
     "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"if_version\":{\"type\":\"integer\","
     "\"minimum\":1}," NOTE_FIELDS "},\"required\":[\"id\"],\"additionalProperties\":false}",
     NOTE_SCHEMA,
     "{\"title\":\"Update a note\",\"readOnlyHint\":false,\"destructiveHint\":true,\"idempotentHint\":true,"
     "\"openWorldHint\":false}",
     update_prepare, true},
    {"delete_note", "Delete a note", "Deletes a note (its history is kept).",
     "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"if_version\":{\"type\":\"integer\","
     "\"minimum\":1}},\"required\":[\"id\"],\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"deleted\":{\"type\":\"boolean\"},\"id\":{\"type\":\"string\"}},"
     "\"required\":[\"deleted\",\"id\"]}",
     "{\"title\":\"Delete a note\",\"readOnlyHint\":false,\"destructiveHint\":true,\"idempotentHint\":true,"
     "\"openWorldHint\":false}",
     delete_prepare, true},
    {"link_notes", "Link two notes",
     "Creates a typed, directed link from source_id to target_id (type: 1-64 chars of a-z 0-9 _ -, default "
     "related; strength 0..1, default 0.5).",
     "{\"type\":\"object\",\"properties\":{\"source_id\":{\"type\":\"string\"},\"target_id\":{\"type\":"
     "\"string\"},\"type\":{\"type\":\"string\",\"default\":\"related\"},\"strength\":{\"type\":\"number\","
     "\"minimum\":0,\"maximum\":1},\"metadata\":{\"type\":\"object\"}},\"required\":[\"source_id\","
     "\"target_id\"],\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"source_id\":{\"type\":\"string\"},"
     "\"target_id\":{\"type\":\"string\"},\"type\":{\"type\":\"string\"},\"strength\":{\"type\":\"number\"},"
     "\"metadata\":{\"type\":\"object\"},\"created_at\":{\"type\":\"string\"}},\"required\":[\"id\","
     "\"source_id\",\"target_id\",\"type\"]}",
     "{\"title\":\"Link two "
     "notes\",\"readOnlyHint\":false,\"destructiveHint\":false,\"idempotentHint\":false,"
     "\"openWorldHint\":false}",
     link_prepare, true},
    {"get_note_history", "Note history",
     "The audit trail of a note (create, updates, delete with the fields changed) and its confidence "
     "history.",
     "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"}},\"required\":[\"id\"],"
     "\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"note_id\":{\"type\":\"string\"},\"events\":{\"type\":\"array\"},"
     "\"confidence_history\":{\"type\":\"array\"}},\"required\":[\"note_id\",\"events\"]}",
     "{\"title\":\"Note history\",\"readOnlyHint\":true,\"destructiveHint\":false,\"idempotentHint\":true,"
     "\"openWorldHint\":false}",
     history_prepare, true},
};
const size_t pk_mcp_tools_count = sizeof pk_mcp_tools / sizeof pk_mcp_tools[0];

/* ---- note resources --------------------------------------------------------------------------- */

bool pk_mcp_note_uri(const char *uri, char id[37])
{
    static const char P[] = "pake://notes/";
    if (strncmp(uri, P, sizeof P - 1) || strlen(uri) != sizeof P - 1 + 36) return false;
    memcpy(id, uri + sizeof P - 1, 36);
    id[36] = '\0';
    for (int i = 0; i < 36; i++)
        if (id[i] >= 'A' && id[i] <= 'F') id[i] = (char)(id[i] + 32);
    return pk_uuid_valid(id, 36);
}

static void yaml_str(pk_buf *out, const char *key, const cJSON *v)
{
    if (!v || cJSON_IsNull(v)) return;
    pk_buf_printf(out, "%s: ", key);
    if (cJSON_IsString(v)) {
        pk_buf_putc(out, '"');
        pk_json_escape(out, v->valuestring, strlen(v->valuestring));
        pk_buf_puts(out, "\"\n");
    } else {
        pk_jw w;
        pk_jw_init(&w, out);
        pk_jw_cjson(&w, v);
        pk_buf_putc(out, '\n');
    }
}

void pk_mcp_note_markdown(const cJSON *note, pk_buf *out)
{
    static const char *const KEYS[] = {"id",
                                       "title",
                                       "type",
                                       "status",
                                       "verification_status",
                                       "tags",
                                       "confidence_score",
                                       "source_uri",
                                       "created_at",
                                       "updated_at",
                                       "version",
                                       NULL};
    pk_buf_puts(out, "---\n");
    for (int i = 0; KEYS[i]; i++)
        yaml_str(out, KEYS[i], cJSON_GetObjectItemCaseSensitive(note, KEYS[i]));
    pk_buf_puts(out, "---\n\n# ");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(note, "title");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(note, "content");
    if (cJSON_IsString(t)) pk_buf_puts(out, t->valuestring);
    pk_buf_puts(out, "\n\n");
    if (cJSON_IsString(c)) pk_buf_puts(out, c->valuestring);
    if (out->len && out->data[out->len - 1] != '\n') pk_buf_putc(out, '\n');
}

static void write_contents(pk_buf *out, const char *uri, const pk_buf *note_json)
{
    cJSON *n = cJSON_ParseWithLength(note_json->data, note_json->len);
    pk_buf md = PK_BUF_INIT;
    pk_mcp_note_markdown(n, &md);
    cJSON_Delete(n);
    pk_jw w;
    pk_jw_init(&w, out);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "uri");
    pk_jw_str(&w, uri);
    pk_jw_key(&w, "mimeType");
    pk_jw_str(&w, "text/markdown");
    pk_jw_key(&w, "text");
    pk_jw_strn(&w, md.data, md.len);
    pk_jw_obj_close(&w);
    pk_buf_free(&md);
}

void pk_mcp_note_read_work(pk_mcp_call *c, pk_job *j)
{
    const char *id = c->data;
    int64_t version = 0;
    PK_STORE_CALL(j, pk_store_note_get(j->srv->store, &j->op, id, &j->body, &version));
    if (j->err) {
        if (pk_err_is(j->err, "not_found")) {
            char data[80];
            snprintf(data, sizeof data, "{\"uri\":\"pake://notes/%s\"}", id);
            pk_mcp_call_error(c, -32002, "resource not found", data);
        } else
            pk_mcp_call_error(c, -32603, j->err->message, NULL);
        return;
    }
    char uri[64];
    snprintf(uri, sizeof uri, "pake://notes/%s", id);
    pk_buf out = PK_BUF_INIT;
    pk_buf_puts(&out, "{\"contents\":[");
    write_contents(&out, uri, &j->body);
    pk_buf_puts(&out, "]}");
    pk_mcp_call_reply(c, out.data, out.len);
    pk_buf_free(&out);
}

static void resource_entry(pk_jw *w, const cJSON *note)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(note, "id");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(note, "title");
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(note, "type");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(note, "status");
    if (!cJSON_IsString(id)) return;
    char uri[64];
    snprintf(uri, sizeof uri, "pake://notes/%s", id->valuestring);
    pk_jw_obj_open(w);
    pk_jw_key(w, "uri");
    pk_jw_str(w, uri);
    pk_jw_key(w, "name");
    pk_jw_str(w, cJSON_IsString(t) ? t->valuestring : id->valuestring);
    pk_jw_key(w, "title");
    pk_jw_str(w, cJSON_IsString(t) ? t->valuestring : id->valuestring);
    char d[160];
    snprintf(d, sizeof d, "PAKE %s (%s)", cJSON_IsString(ty) ? ty->valuestring : "note",
             cJSON_IsString(st) ? st->valuestring : "active");
    pk_jw_key(w, "description");
    pk_jw_str(w, d);
    pk_jw_key(w, "mimeType");
    pk_jw_str(w, "text/markdown");
    pk_jw_obj_close(w);
}

void pk_mcp_notes_list_work(pk_mcp_call *c, pk_job *j)
{
    const cJSON *cur = c->params ? cJSON_GetObjectItemCaseSensitive(c->params, "cursor") : NULL;
    const char *store_cursor = cJSON_IsString(cur) ? cur->valuestring + 2 : NULL;
    pk_note_query q = {
        .flagged = -1, .limit = 50, .cursor = store_cursor && *store_cursor ? store_cursor : NULL};
    pk_page pg = {0};
    PK_STORE_CALL(j, pk_store_note_list(j->srv->store, &j->op, &q, &pg));
    if (j->err) {
        if (j->err->status == 422)
            pk_mcp_call_error(c, -32602, "invalid cursor", NULL);
        else
            pk_mcp_call_error(c, -32603, j->err->message, NULL);
        pk_page_free(&pg);
        return;
    }
    pk_buf out = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &out);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "resources");
    pk_jw_arr_open(&w);
    if (!store_cursor && pk_mcp_hub_get()->fixtures)
        for (size_t i = 0; i < pk_mcp_fixture_resources_count; i++) {
            const mcp_resource *f = &pk_mcp_fixture_resources[i];
            pk_jw_obj_open(&w);
            pk_jw_key(&w, "uri");
            pk_jw_str(&w, f->uri);
            pk_jw_key(&w, "name");
            pk_jw_str(&w, f->name);
            pk_jw_key(&w, "description");
            pk_jw_str(&w, f->description);
            pk_jw_key(&w, "mimeType");
            pk_jw_str(&w, f->mime);
            pk_jw_obj_close(&w);
        }
    cJSON *items =
        cJSON_ParseWithLength(pg.items.data ? pg.items.data : "[]", pg.items.data ? pg.items.len : 2);
    for (const cJSON *n = items ? items->child : NULL; n; n = n->next)
        resource_entry(&w, n);
    cJSON_Delete(items);
    pk_jw_arr_close(&w);
    if (pg.next_cursor) {
        pk_buf nc = PK_BUF_INIT;
        pk_buf_printf(&nc, "n.%s", pg.next_cursor);
        pk_jw_key(&w, "nextCursor");
        pk_jw_str(&w, nc.data);
        pk_buf_free(&nc);
    }
    pk_jw_obj_close(&w);
    pk_page_free(&pg);
    pk_mcp_call_reply(c, out.data, out.len);
    pk_buf_free(&out);
}

/* ---- prompts ---------------------------------------------------------------------------------- */

static void summarize_work(pk_mcp_call *c, pk_job *j)
{
    const char *id = c->data;
    int64_t version = 0;
    PK_STORE_CALL(j, pk_store_note_get(j->srv->store, &j->op, id, &j->body, &version));
    if (j->err) {
        pk_mcp_call_error(c, -32602,
                          pk_err_is(j->err, "not_found") ? "no note with this id" : j->err->message, NULL);
        return;
    }
    char uri[64];
    snprintf(uri, sizeof uri, "pake://notes/%s", id);
    pk_buf out = PK_BUF_INIT;
    pk_buf_puts(&out,
                "{\"description\":\"Summarize one PAKE note\",\"messages\":[{\"role\":\"user\",\"content\":"
                "{\"type\":\"resource\",\"resource\":");
    write_contents(&out, uri, &j->body);
    pk_buf_puts(&out,
                "}},{\"role\":\"user\",\"content\":{\"type\":\"text\",\"text\":\"Summarize the note above in "
                "three to five sentences. Keep its claims, say how confident the note is (its "
                "confidence_score and verification_status) and list open questions.\"}}]}");
    pk_mcp_call_reply(c, out.data, out.len);
    pk_buf_free(&out);
}

static pk_err *summarize_get(pk_mcp_call *c, const cJSON *args, pk_req *r, pk_buf *result)
{
    static const char *const K[] = {"id", NULL};
    pk_err *e = only_known(args, K);
    char id[37];
    get_id(args, "id", id, &e);
    if (e) return e;
    c->data = strdup(id);
    c->free_data = free;
    c->work = summarize_work;
    return NULL;
}

static void brief_work(pk_mcp_call *c, pk_job *j)
{
    pk_query_args *qa = c->data;
    pk_page pg = {0};
    PK_STORE_CALL(j, pk_store_note_search(j->srv->store, &j->op, &qa->q, &pg));
    if (j->err) {
        pk_mcp_call_error(c, j->err->status == 422 ? -32602 : -32603, j->err->message, NULL);
        pk_page_free(&pg);
        return;
    }
    pk_buf text = PK_BUF_INIT;
    pk_buf_printf(&text,
                  "Write a research brief on \"%s\" from the knowledge base notes below. Cite notes by "
                  "their URI, separate verified facts from pending or disputed ones, and end with the "
                  "gaps worth researching next.\n\n",
                  qa->text);
    cJSON *items =
        cJSON_ParseWithLength(pg.items.data ? pg.items.data : "[]", pg.items.data ? pg.items.len : 2);
    int n = 0;
    for (const cJSON *it = items ? items->child : NULL; it; it = it->next, n++) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "title");
        const cJSON *sn = cJSON_GetObjectItemCaseSensitive(it, "snippet");
        const cJSON *cs = cJSON_GetObjectItemCaseSensitive(it, "confidence_score");
        const cJSON *vs = cJSON_GetObjectItemCaseSensitive(it, "verification_status");
        pk_buf_printf(&text, "- pake://notes/%s \"%s\" (confidence %.2f, %s): %s\n",
                      cJSON_IsString(id) ? id->valuestring : "?", cJSON_IsString(t) ? t->valuestring : "",
                      cJSON_IsNumber(cs) ? cs->valuedouble : 0.0,
                      cJSON_IsString(vs) ? vs->valuestring : "pending",
                      cJSON_IsString(sn) ? sn->valuestring : "");
    }
    if (n == 0) pk_buf_puts(&text, "(no notes match this topic yet: say so and propose what to collect)\n");
    cJSON_Delete(items);
    pk_page_free(&pg);
    pk_buf out = PK_BUF_INIT;
    pk_buf_puts(&out, "{\"description\":\"Research brief from PAKE notes\",\"messages\":[{\"role\":\"user\","
                      "\"content\":{\"type\":\"text\",\"text\":\"");
    pk_json_escape(&out, text.data, text.len);
    pk_buf_puts(&out, "\"}}]}");
    pk_mcp_call_reply(c, out.data, out.len);
    pk_buf_free(&out);
    pk_buf_free(&text);
}

static pk_err *brief_get(pk_mcp_call *c, const cJSON *args, pk_req *r, pk_buf *result)
{
    static const char *const K[] = {"topic", NULL};
    pk_err *e = only_known(args, K);
    if (e) return e;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(args, "topic");
    if (!cJSON_IsString(t) || !*t->valuestring) return pk_err_invalid("argument topic is required");
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "query", t->valuestring);
    cJSON_AddNumberToObject(q, "limit", 10);
    pk_query_args *qa = malloc(sizeof *qa);
    e = pk_api_parse_query_json(r, q, qa);
    cJSON_Delete(q);
    if (e) {
        pk_query_args_free_void(qa);
        return e;
    }
    c->data = qa;
    c->free_data = pk_query_args_free_void;
    c->work = brief_work;
    return NULL;
}

const mcp_prompt pk_mcp_prompts[] = {
    {"summarize_note", "Summarize a note", "Asks for a short summary of one note, embedded as a resource.",
     "[{\"name\":\"id\",\"description\":\"The note's UUID\",\"required\":true}]", summarize_get},
    {"research_brief", "Research brief",
     "Asks for a research brief on a topic, built from the notes that match it (top 10 by relevance).",
     "[{\"name\":\"topic\",\"description\":\"What the brief is about (search words)\",\"required\":true}]",
     brief_get},
};
const size_t pk_mcp_prompts_count = sizeof pk_mcp_prompts / sizeof pk_mcp_prompts[0];
