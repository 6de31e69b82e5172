/*
 * Input validation shared by the handlers. Everything a client sends is checked here, on the loop
 * thread, before any store call: types, lengths, enums, unknown fields (rejected, so a typo never
 * silently drops data), and the security guard over every user string.
 */
#include "api/api.h"
#include "core/clock.h"
#include "core/id.h"
#include "core/utf8.h"
#include "server/services.h"
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TITLE_CHARS 500
#define MAX_TYPE_CHARS 64
#define MAX_TAG_CHARS 64
#define MAX_TAGS 64
#define MAX_URI_BYTES 2048
#define MAX_METADATA_BYTES 65536

static const char *const READ_ONLY[] = {"id", "version", "created_at", "updated_at", "guard"};
static const char *const NOTE_FIELDS[] = {
    "title",    "content",          "type",       "status",     "verification_status", "source_uri", "tags",
    "metadata", "confidence_score", "ai_summary", "human_notes"};

void pk_note_fields_free(pk_note_fields *f)
{
    free(f->tags_json);
    free(f->metadata_json);
    free(f->guard_json);
    for (int i = 0; i < f->nstrs; i++)
        free(f->strs[i]);
    memset(f, 0, sizeof *f);
}

void pk_note_fields_free_void(void *p)
{
    pk_note_fields_free(p);
    free(p);
}

static const char *keep(pk_note_fields *f, const char *s)
{
    char *c = strdup(s);
    f->strs[f->nstrs++] = c;
    return c;
}

static bool in_list(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s, list[i])) return true;
    return false;
}

/* Adds the guard's verdict on `text` to the accumulated flag (worst wins). */
static pk_err *guard_field(pk_req *r, int surface, const char *field, const char *text, pk_buf *flag)
{
    return pk_api_guard(r, surface, field, text, strlen(text), flag);
}

static void str_field(pk_err **ve, const cJSON *v, const char *name, bool nullable, size_t max_chars,
                      const char **out, bool *present)
{
    *present = false;
    if (!v) return;
    *present = true;
    if (cJSON_IsNull(v)) {
        if (!nullable) {
            if (!*ve) *ve = pk_err_invalid("the request has invalid fields");
            pk_err_add_field(*ve, name, "must not be null");
        }
        *out = NULL;
        return;
    }
    if (!cJSON_IsString(v)) {
        if (!*ve) *ve = pk_err_invalid("the request has invalid fields");
        pk_err_add_field(*ve, name, "must be a string");
        return;
    }
    size_t chars = pk_utf8_count(v->valuestring, strlen(v->valuestring));
    if (max_chars && chars > max_chars) {
        if (!*ve) *ve = pk_err_invalid("the request has invalid fields");
        pk_err_add_field(*ve, name, "must be at most %zu characters", max_chars);
        return;
    }
    *out = v->valuestring;
}

static void fail(pk_err **ve, const char *field, const char *msg)
{
    if (!*ve) *ve = pk_err_invalid("the request has invalid fields");
    pk_err_add_field(*ve, field, "%s", msg);
}

static bool valid_type(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_' || *s == '-' ||
              *s == '.'))
            return false;
    return true;
}

pk_err *pk_api_parse_note(pk_req *r, const cJSON *obj, bool create, pk_note_fields *f)
{
    memset(f, 0, sizeof *f);
    if (!cJSON_IsObject(obj)) return pk_err_invalid("the request body must be a JSON object");
    pk_err *ve = NULL;
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (in_list(c->string, READ_ONLY, sizeof READ_ONLY / sizeof *READ_ONLY))
            fail(&ve, c->string, "is read-only");
        else if (!in_list(c->string, NOTE_FIELDS, sizeof NOTE_FIELDS / sizeof *NOTE_FIELDS))
            fail(&ve, c->string, "is not a known field");
    }
    pk_note_input *in = &f->in;
    const char *s = NULL;
    bool present;
    struct {
        const char *name;
        unsigned bit;
        bool nullable;
        size_t max;
        const char **dst;
    } strs[] = {
        {"title", PK_NF_TITLE, false, MAX_TITLE_CHARS, &in->title},
        {"content", PK_NF_CONTENT, false, 0, &in->content},
        {"type", PK_NF_TYPE, false, MAX_TYPE_CHARS, &in->type},
        {"status", PK_NF_STATUS, false, 16, &in->status},
        {"verification_status", PK_NF_VERIFICATION, false, 16, &in->verification_status},
        {"source_uri", PK_NF_SOURCE_URI, true, MAX_URI_BYTES, &in->source_uri},
        {"ai_summary", PK_NF_AI_SUMMARY, true, 0, &in->ai_summary},
        {"human_notes", PK_NF_HUMAN_NOTES, true, 0, &in->human_notes},
    };
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
        s = NULL;
        str_field(&ve, cJSON_GetObjectItemCaseSensitive(obj, strs[i].name), strs[i].name, strs[i].nullable,
                  strs[i].max, &s, &present);
        if (!present) continue;
        in->set |= strs[i].bit;
        *strs[i].dst = s ? keep(f, s) : NULL;
    }
    if ((in->set & PK_NF_TITLE) && in->title && !*in->title) fail(&ve, "title", "must not be empty");
    if (create && !(in->set & PK_NF_TITLE)) fail(&ve, "title", "is required");
    if ((in->set & PK_NF_TYPE) && in->type && !valid_type(in->type))
        fail(&ve, "type", "must be lower-case letters, digits, '_', '-' or '.'");
    if ((in->set & PK_NF_STATUS) && in->status && strcmp(in->status, "draft") &&
        strcmp(in->status, "active") && strcmp(in->status, "archived"))
        fail(&ve, "status", "must be one of draft, active, archived");
    if ((in->set & PK_NF_VERIFICATION) && in->verification_status &&
        strcmp(in->verification_status, "pending") && strcmp(in->verification_status, "verified") &&
        strcmp(in->verification_status, "rejected"))
        fail(&ve, "verification_status", "must be one of pending, verified, rejected");

    const cJSON *cs = cJSON_GetObjectItemCaseSensitive(obj, "confidence_score");
    if (cs) {
        if (!cJSON_IsNumber(cs) || !isfinite(cs->valuedouble) || cs->valuedouble < 0 || cs->valuedouble > 1)
            fail(&ve, "confidence_score", "must be a number between 0 and 1");
        else {
            in->set |= PK_NF_CONFIDENCE;
            in->confidence_score = cs->valuedouble;
        }
    }
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(obj, "tags");
    if (tags) {
        if (!cJSON_IsArray(tags))
            fail(&ve, "tags", "must be an array of strings");
        else if (cJSON_GetArraySize(tags) > MAX_TAGS)
            fail(&ve, "tags", "must have at most 64 tags");
        else {
            pk_buf b = PK_BUF_INIT;
            pk_jw w;
            pk_jw_init(&w, &b);
            pk_jw_arr_open(&w);
            int i = 0;
            for (const cJSON *t = tags->child; t; t = t->next, i++) {
                char fname[32];
                snprintf(fname, sizeof fname, "tags[%d]", i);
                if (!cJSON_IsString(t) || !*t->valuestring) {
                    fail(&ve, fname, "must be a non-empty string");
                    continue;
                }
                if (pk_utf8_count(t->valuestring, strlen(t->valuestring)) > MAX_TAG_CHARS) {
                    fail(&ve, fname, "must be at most 64 characters");
                    continue;
                }
                bool dup = false;
                for (const cJSON *u = tags->child; u != t; u = u->next)
                    if (cJSON_IsString(u) && !strcmp(u->valuestring, t->valuestring)) dup = true;
                if (!dup) pk_jw_str(&w, t->valuestring);
            }
            pk_jw_arr_close(&w);
            in->set |= PK_NF_TAGS;
            f->tags_json = pk_buf_steal(&b, NULL);
            in->tags_json = f->tags_json;
        }
    }
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    if (md) {
        if (!cJSON_IsObject(md))
            fail(&ve, "metadata", "must be a JSON object");
        else {
            pk_buf b = PK_BUF_INIT;
            pk_jw w;
            pk_jw_init(&w, &b);
            pk_jw_cjson(&w, md);
            if (b.len > MAX_METADATA_BYTES) {
                fail(&ve, "metadata", "must serialise to at most 65536 bytes");
                pk_buf_free(&b);
            } else {
                in->set |= PK_NF_METADATA;
                f->metadata_json = pk_buf_steal(&b, NULL);
                in->metadata_json = f->metadata_json;
            }
        }
    }
    if (ve) {
        pk_note_fields_free(f);
        return ve;
    }
    /* the guard sees every user string; content is its own surface (stored knowledge may legitimately
     * discuss attacks), the short fields another */
    pk_buf flag = PK_BUF_INIT;
    pk_err *ge = NULL;
    if (in->title) ge = guard_field(r, PK_SURFACE_NOTE_FIELD, "title", in->title, &flag);
    if (!ge && in->content) ge = guard_field(r, PK_SURFACE_NOTE_CONTENT, "content", in->content, &flag);
    if (!ge && in->ai_summary)
        ge = guard_field(r, PK_SURFACE_NOTE_CONTENT, "ai_summary", in->ai_summary, &flag);
    if (!ge && in->human_notes)
        ge = guard_field(r, PK_SURFACE_NOTE_CONTENT, "human_notes", in->human_notes, &flag);
    if (!ge && in->source_uri)
        ge = guard_field(r, PK_SURFACE_NOTE_FIELD, "source_uri", in->source_uri, &flag);
    if (!ge && tags && cJSON_IsArray(tags))
        for (const cJSON *t = tags->child; t && !ge; t = t->next)
            ge = guard_field(r, PK_SURFACE_NOTE_FIELD, "tags", t->valuestring, &flag);
    if (!ge && md) {
        /* metadata values at any depth */
        const cJSON *stack[64];
        int sp = 0;
        stack[sp++] = md;
        while (sp && !ge) {
            const cJSON *v = stack[--sp];
            for (const cJSON *c = v->child; c && !ge; c = c->next) {
                if (cJSON_IsString(c))
                    ge = guard_field(r, PK_SURFACE_NOTE_FIELD, "metadata", c->valuestring, &flag);
                else if ((cJSON_IsObject(c) || cJSON_IsArray(c)) && sp < 64)
                    stack[sp++] = c;
                if (!ge && c->string)
                    ge = guard_field(r, PK_SURFACE_NOTE_FIELD, "metadata", c->string, &flag);
            }
        }
    }
    if (ge) {
        pk_buf_free(&flag);
        pk_note_fields_free(f);
        return ge;
    }
    if (flag.len) {
        in->set |= PK_NF_GUARD;
        f->guard_json = pk_buf_steal(&flag, NULL);
        in->guard_json = f->guard_json;
    } else if (!create && (in->set & (PK_NF_TITLE | PK_NF_CONTENT))) {
        /* a patch that rewrote the text clears a stale flag */
        in->set |= PK_NF_GUARD;
        in->guard_json = NULL;
    }
    pk_buf_free(&flag);
    return NULL;
}

pk_err *pk_api_note_id(pk_req *r, const char *param, char out[37])
{
    h2o_iovec_t v = pk_req_param(r, param);
    if (v.base && v.len == 36) {
        for (size_t i = 0; i < 36; i++)
            out[i] = (char)tolower((unsigned char)v.base[i]);
        out[36] = '\0';
        if (pk_uuid_valid(out, 36)) return NULL;
    }
    return pk_err_new("not_found", 404,
                      /* same code as the store's not_found */ "no note with id '%.*s' (note ids are UUIDs)",
                      (int)(v.len > 64 ? 64 : v.len), v.base ? v.base : "");
}

/* ---- list/search filters --------------------------------------------------------------------- */

void pk_query_args_free_void(void *p)
{
    pk_query_args *a = p;
    free(a->text);
    for (size_t i = 0; i < a->q.ntags_all; i++)
        free(a->tags_all[i]);
    for (size_t i = 0; i < a->q.ntags_any; i++)
        free(a->tags_any[i]);
    free(a->tags_all);
    free(a->tags_any);
    free((char *)a->q.type);
    free((char *)a->q.status);
    free((char *)a->q.verification_status);
    free((char *)a->q.cursor);
    free(a);
}

static char **split_list(const char *s, size_t *n)
{
    size_t cap = 4;
    char **out = malloc(cap * sizeof *out);
    *n = 0;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        while (len && *p == ' ')
            p++, len--;
        while (len && p[len - 1] == ' ')
            len--;
        if (len) {
            if (*n == cap) out = realloc(out, (cap *= 2) * sizeof *out);
            out[(*n)++] = pk_strndup(p, len);
        }
        if (!e) break;
        p = e + 1;
    }
    return out;
}

static void append_list(char ***list, size_t *n, const char *v)
{
    size_t m = 0;
    char **more = split_list(v, &m);
    *list = realloc(*list, (*n + m + 1) * sizeof **list);
    memcpy(*list + *n, more, m * sizeof *more);
    *n += m;
    free(more);
}

static const char *const QUERY_PARAMS[] = {"q",
                                           "type",
                                           "status",
                                           "verification_status",
                                           "tags",
                                           "tags_any",
                                           "min_confidence",
                                           "created_after",
                                           "created_before",
                                           "updated_after",
                                           "updated_before",
                                           "flagged",
                                           "sort",
                                           "order",
                                           "limit",
                                           "cursor"};

/* One setter for both the query-string and JSON forms; `v` is the textual value. */
static void set_filter(pk_err **ve, pk_query_args *a, const char *k, const char *v, bool search)
{
    pk_note_query *q = &a->q;
    char *end;
    if (!strcmp(k, "q")) {
        free(a->text);
        a->text = strdup(v);
    } else if (!strcmp(k, "type")) {
        free((char *)q->type);
        q->type = strdup(v);
    } else if (!strcmp(k, "status")) {
        if (strcmp(v, "draft") && strcmp(v, "active") && strcmp(v, "archived"))
            return fail(ve, k, "must be one of draft, active, archived");
        free((char *)q->status);
        q->status = strdup(v);
    } else if (!strcmp(k, "verification_status")) {
        if (strcmp(v, "pending") && strcmp(v, "verified") && strcmp(v, "rejected"))
            return fail(ve, k, "must be one of pending, verified, rejected");
        free((char *)q->verification_status);
        q->verification_status = strdup(v);
    } else if (!strcmp(k, "tags")) { /* repeated parameters add up: tags=a&tags=b == tags=a,b */
        append_list(&a->tags_all, &q->ntags_all, v);
        q->tags_all = (const char *const *)a->tags_all;
    } else if (!strcmp(k, "tags_any")) {
        append_list(&a->tags_any, &q->ntags_any, v);
        q->tags_any = (const char *const *)a->tags_any;
    } else if (!strcmp(k, "min_confidence")) {
        double d = strtod(v, &end);
        if (end == v || *end || !(d >= 0 && d <= 1)) return fail(ve, k, "must be a number between 0 and 1");
        q->has_min_confidence = true;
        q->min_confidence = d;
    } else if (!strncmp(k, "created_", 8) || !strncmp(k, "updated_", 8)) {
        int64_t t;
        /* int64 nanoseconds cover the years 1678..2261 only; pk_rfc3339_parse does not check and its
         * multiplication overflows (signed overflow: UB) for later years, so refuse them here */
        int year = (int)strtol(v, NULL, 10);
        if (strlen(v) < 4 || year < 1678 || year > 2261)
            return fail(ve, k, "must be an RFC 3339 timestamp between the years 1678 and 2261");
        if (pk_rfc3339_parse(v, &t)) return fail(ve, k, "must be an RFC 3339 timestamp");
        if (!strcmp(k, "created_after"))
            q->created_after = t;
        else if (!strcmp(k, "created_before"))
            q->created_before = t;
        else if (!strcmp(k, "updated_after"))
            q->updated_after = t;
        else
            q->updated_before = t;
    } else if (!strcmp(k, "flagged")) {
        if (!strcmp(v, "true"))
            q->flagged = 1;
        else if (!strcmp(v, "false"))
            q->flagged = 0;
        else
            return fail(ve, k, "must be true or false");
    } else if (!strcmp(k, "sort")) {
        if (!strcmp(v, "created_at"))
            q->sort = PK_SORT_CREATED;
        else if (!strcmp(v, "updated_at"))
            q->sort = PK_SORT_UPDATED;
        else if (!strcmp(v, "title"))
            q->sort = PK_SORT_TITLE;
        else if (!strcmp(v, "confidence_score"))
            q->sort = PK_SORT_CONFIDENCE;
        else if (!strcmp(v, "relevance") && search)
            q->sort = PK_SORT_RELEVANCE;
        else
            return fail(ve, k,
                        search ? "must be one of relevance, created_at, updated_at, title, confidence_score"
                               : "must be one of created_at, updated_at, title, confidence_score");
    } else if (!strcmp(k, "order")) {
        if (!strcmp(v, "asc"))
            q->ascending = true;
        else if (!strcmp(v, "desc"))
            q->ascending = false;
        else
            return fail(ve, k, "must be asc or desc");
    } else if (!strcmp(k, "limit")) {
        long l = strtol(v, &end, 10);
        if (end == v || *end || l < 1 || l > 100) return fail(ve, k, "must be an integer from 1 to 100");
        q->limit = (int)l;
    } else if (!strcmp(k, "cursor")) {
        free((char *)q->cursor);
        q->cursor = strdup(v);
    }
}

static pk_err *finish_query(pk_req *r, pk_err *ve, bool search, pk_query_args *a)
{
    if (!ve && search) {
        if (!a->text || !*a->text)
            fail(&ve, "q", "is required and must not be empty");
        else if (strlen(a->text) > 1000)
            fail(&ve, "q", "must be at most 1000 bytes");
    }
    if (!ve && a->text) {
        pk_err *ge = pk_api_guard(r, PK_SURFACE_SEARCH_QUERY, "q", a->text, strlen(a->text), NULL);
        if (ge) return ge;
    }
    if (!ve)
        for (size_t i = 0; i < a->q.ntags_all + a->q.ntags_any && !ve; i++) {
            const char *t = i < a->q.ntags_all ? a->tags_all[i] : a->tags_any[i - a->q.ntags_all];
            pk_err *ge = pk_api_guard(r, PK_SURFACE_SEARCH_QUERY, "tags", t, strlen(t), NULL);
            if (ge) return ge;
        }
    a->q.text = a->text;
    if (!a->q.limit) a->q.limit = 20;
    return ve;
}

void pk_api_printable(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) *s = '?';
}

pk_err *pk_api_parse_query(pk_req *r, bool search, pk_query_args *a)
{
    memset(a, 0, sizeof *a);
    a->q.flagged = -1;
    pk_err *ve = NULL;
    size_t cur = 0;
    h2o_iovec_t k;
    const char *v;
    bool bad = false;
    for (; pk_req_query_pair(r, &cur, &k, &v, &bad); bad = false) {
        char key[32];
        snprintf(key, sizeof key, "%.*s", (int)(k.len < 31 ? k.len : 31), k.base);
        if (search && !strcmp(key, "mode")) continue; /* checked by pk_api_search (fulltext here) */
        bool known = k.len < 31 && in_list(key, QUERY_PARAMS, sizeof QUERY_PARAMS / sizeof *QUERY_PARAMS) &&
                     (search || strcmp(key, "q"));
        if (!known) {
            char fname[64];
            snprintf(fname, sizeof fname, "%.*s", (int)(k.len < 60 ? k.len : 60), k.base);
            pk_api_printable(fname);
            fail(&ve, fname, "is not a known query parameter");
        } else if (bad) {
            fail(&ve, key, "is not valid percent-encoded UTF-8");
        } else {
            set_filter(&ve, a, key, v, search);
        }
    }
    return finish_query(r, ve, search, a);
}

pk_err *pk_api_parse_query_json(pk_req *r, const cJSON *obj, pk_query_args *a)
{
    memset(a, 0, sizeof *a);
    a->q.flagged = -1;
    pk_err *ve = NULL;
    if (!cJSON_IsObject(obj)) return pk_err_invalid("the request body must be a JSON object");
    for (const cJSON *c = obj->child; c; c = c->next) {
        const char *k = c->string;
        /* null means "not given" (agents send "cursor": null for the first page); unknown names are
         * still rejected */
        if (cJSON_IsNull(c) && (in_list(k, QUERY_PARAMS, sizeof QUERY_PARAMS / sizeof *QUERY_PARAMS) ||
                                !strcmp(k, "query") || !strcmp(k, "filters")))
            continue;
        if (!strcmp(k, "query")) k = "q";
        char buf[64];
        const char *v = NULL;
        if (!strcmp(k, "tags") || !strcmp(k, "tags_any")) {
            if (cJSON_IsArray(c)) {
                pk_buf b = PK_BUF_INIT;
                for (const cJSON *t = c->child; t; t = t->next)
                    if (cJSON_IsString(t)) {
                        if (b.len) pk_buf_putc(&b, ',');
                        pk_buf_puts(&b, t->valuestring);
                    }
                set_filter(&ve, a, k, b.data ? b.data : "", true);
                pk_buf_free(&b);
                continue;
            }
        }
        if (cJSON_IsString(c))
            v = c->valuestring;
        else if (cJSON_IsNumber(c)) {
            snprintf(buf, sizeof buf, "%.17g", c->valuedouble);
            v = buf;
        } else if (cJSON_IsBool(c))
            v = cJSON_IsTrue(c) ? "true" : "false";
        if (!in_list(k, QUERY_PARAMS, sizeof QUERY_PARAMS / sizeof *QUERY_PARAMS) && strcmp(k, "filters"))
            fail(&ve, c->string, "is not a known field");
        else if (!strcmp(k, "filters")) {
            if (!cJSON_IsObject(c))
                fail(&ve, "filters", "must be an object");
            else
                for (const cJSON *f = c->child; f; f = f->next) {
                    const char *fv = NULL;
                    if (cJSON_IsNull(f) &&
                        in_list(f->string, QUERY_PARAMS, sizeof QUERY_PARAMS / sizeof *QUERY_PARAMS))
                        continue; /* null filter: not given */
                    char fb[64];
                    if (cJSON_IsString(f))
                        fv = f->valuestring;
                    else if (cJSON_IsNumber(f)) {
                        snprintf(fb, sizeof fb, "%.17g", f->valuedouble);
                        fv = fb;
                    } else if (cJSON_IsBool(f))
                        fv = cJSON_IsTrue(f) ? "true" : "false";
                    if (!in_list(f->string, QUERY_PARAMS, sizeof QUERY_PARAMS / sizeof *QUERY_PARAMS) ||
                        !strcmp(f->string, "q"))
                        fail(&ve, f->string, "is not a known filter");
                    else if (cJSON_IsArray(f) &&
                             (!strcmp(f->string, "tags") || !strcmp(f->string, "tags_any"))) {
                        pk_buf b = PK_BUF_INIT;
                        for (const cJSON *t = f->child; t; t = t->next)
                            if (cJSON_IsString(t)) {
                                if (b.len) pk_buf_putc(&b, ',');
                                pk_buf_puts(&b, t->valuestring);
                            }
                        set_filter(&ve, a, f->string, b.data ? b.data : "", true);
                        pk_buf_free(&b);
                    } else if (!fv)
                        fail(&ve, f->string, "has the wrong type");
                    else
                        set_filter(&ve, a, f->string, fv, true);
                }
        } else if (!v)
            fail(&ve, c->string, "has the wrong type");
        else
            set_filter(&ve, a, k, v, true);
    }
    return finish_query(r, ve, true, a);
}

pk_err *pk_api_guard(pk_req *r, int surface, const char *field, const char *text, size_t len,
                     pk_buf *flag_json)
{
    /* notes written through an inbound hook are screened on the hook's own surface (its own policy) */
    if (r->route && r->route->handler == pk_api_hook &&
        (surface == PK_SURFACE_NOTE_CONTENT || surface == PK_SURFACE_NOTE_FIELD))
        surface = PK_SURFACE_WEBHOOK;
    return pk_services_guard(r, surface, field, text, len, flag_json);
}
