/*
 * store_common: the parts of the store that do not depend on a database engine.
 *
 * Input is canonicalised once, on the write path: tags, metadata and the guard verdict are parsed
 * with cJSON and re-serialised compactly, so that the bytes in the database are exactly the bytes a
 * read puts in the response (reads never parse JSON). Cursors are opaque to clients but carry the
 * sort they were made for, so a cursor replayed against another sort is a clear 422 rather than a
 * silently wrong page. Search text never reaches FTS5 syntax: every term is emitted as a quoted
 * string, which makes operators, column filters and NEAR() unreachable from user input.
 */
#include "store/store_internal.h"
#include "core/clock.h"
#include "core/json.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const PK_NOTE_STATUSES[] = {"draft", "active", "archived", NULL};
const char *const PK_NOTE_VERIFICATIONS[] = {"pending", "verified", "disputed", "rejected", NULL};

void pk_page_free(pk_page *p)
{
    pk_buf_free(&p->items);
    free(p->next_cursor);
    p->next_cursor = NULL;
    p->count = 0;
}

bool pk_note_enum_valid(const char *const *allowed, const char *v)
{
    if (!v) return false;
    for (; *allowed; allowed++)
        if (strcmp(*allowed, v) == 0) return true;
    return false;
}

bool pk_link_type_valid(const char *t)
{
    size_t n = t ? strlen(t) : 0;
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
    }
    return true;
}

void pk_note_canon_free(pk_note_canon *c)
{
    free(c->tags_json);
    for (size_t i = 0; i < c->ntags; i++)
        free(c->tags[i]);
    free(c->tags);
    free(c->metadata_json);
    free(c->guard_json);
    memset(c, 0, sizeof *c);
}

static cJSON *parse_or_null(const char *json)
{
    cJSON *v = NULL;
    pk_err *e = pk_json_parse(json, strlen(json), PK_JSON_MAX_DEPTH_DEFAULT, &v);
    if (e) {
        pk_err_free(e);
        return NULL;
    }
    return v;
}

static char *compact(const cJSON *v)
{
    pk_buf b = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &b);
    pk_jw_cjson(&w, v);
    return pk_buf_steal(&b, NULL);
}

static void check_tags(const char *json, pk_note_canon *out, pk_err **e)
{
    cJSON *arr = json ? parse_or_null(json) : NULL;
    if (!cJSON_IsArray(arr)) {
        pk_err_add_field(*e, "tags", "must be an array of strings");
        cJSON_Delete(arr);
        return;
    }
    cJSON *uniq = cJSON_CreateArray();
    size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
    out->tags = calloc(n ? n : 1, sizeof *out->tags);
    if (!out->tags || !uniq) abort();
    for (cJSON *t = arr->child; t; t = t->next, i++) {
        if (!cJSON_IsString(t) || !t->valuestring[0]) {
            pk_err_add_field(*e, "tags", "tags[%zu] must be a non-empty string", i);
            continue;
        }
        bool dup = false;
        for (size_t k = 0; k < out->ntags && !dup; k++)
            dup = strcmp(out->tags[k], t->valuestring) == 0;
        if (dup) continue;
        out->tags[out->ntags++] = strdup(t->valuestring);
        cJSON_AddItemToArray(uniq, cJSON_CreateString(t->valuestring));
    }
    out->tags_json = compact(uniq);
    cJSON_Delete(uniq);
    cJSON_Delete(arr);
}

static void check_object(const char *field, const char *json, bool nullable, char **canon, pk_err **e)
{
    if (!json) {
        if (!nullable) pk_err_add_field(*e, field, "must be an object, not null");
        return;
    }
    cJSON *v = parse_or_null(json);
    if (!cJSON_IsObject(v))
        pk_err_add_field(*e, field, "must be a JSON object");
    else
        *canon = compact(v);
    cJSON_Delete(v);
}

static void need_text(const char *field, const char *v, bool nonempty, pk_err **e)
{
    if (!v)
        pk_err_add_field(*e, field, "must be a string, not null");
    else if (nonempty && !v[0])
        pk_err_add_field(*e, field, "must not be empty");
}

static void check_enum(const char *field, const char *v, const char *const *allowed, pk_err **e)
{
    if (pk_note_enum_valid(allowed, v)) return;
    pk_buf list = PK_BUF_INIT;
    for (const char *const *a = allowed; *a; a++)
        pk_buf_printf(&list, "%s%s", a == allowed ? "" : ", ", *a);
    pk_err_add_field(*e, field, "must be one of: %s", list.data);
    pk_buf_free(&list);
}

pk_err *pk_note_input_check(const pk_note_input *in, bool create, pk_note_canon *out)
{
    memset(out, 0, sizeof *out);
    pk_err *e = pk_err_invalid("the note has invalid fields");
    unsigned set = in->set;
    if (create && !(set & PK_NF_TITLE)) pk_err_add_field(e, "title", "is required");
    if (set & PK_NF_TITLE) need_text("title", in->title, true, &e);
    if (set & PK_NF_CONTENT) need_text("content", in->content, false, &e);
    if (set & PK_NF_TYPE) need_text("type", in->type, true, &e);
    if (set & PK_NF_STATUS) check_enum("status", in->status, PK_NOTE_STATUSES, &e);
    if (set & PK_NF_VERIFICATION)
        check_enum("verification_status", in->verification_status, PK_NOTE_VERIFICATIONS, &e);
    if ((set & PK_NF_CONFIDENCE) &&
        !(isfinite(in->confidence_score) && in->confidence_score >= 0.0 && in->confidence_score <= 1.0))
        pk_err_add_field(e, "confidence_score", "must be a number between 0 and 1");
    if (set & PK_NF_TAGS) check_tags(in->tags_json, out, &e);
    if (set & PK_NF_METADATA) check_object("metadata", in->metadata_json, false, &out->metadata_json, &e);
    if ((set & PK_NF_GUARD) && in->guard_json) {
        check_object("guard", in->guard_json, true, &out->guard_json, &e);
        cJSON *g = out->guard_json ? parse_or_null(out->guard_json) : NULL;
        out->flagged = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "flagged"));
        cJSON_Delete(g);
    }
    if (e->nfields == 0) {
        pk_err_free(e);
        return NULL;
    }
    pk_note_canon_free(out);
    return e;
}

/* ---- cursors ---- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void b64url_encode(const unsigned char *p, size_t n, pk_buf *out)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        pk_buf_putc(out, B64[(v >> 18) & 63]);
        pk_buf_putc(out, B64[(v >> 12) & 63]);
        if (i + 1 < n) pk_buf_putc(out, B64[(v >> 6) & 63]);
        if (i + 2 < n) pk_buf_putc(out, B64[v & 63]);
    }
}

static int b64_val(char c)
{
    const char *p = c ? strchr(B64, c) : NULL;
    return p ? (int)(p - B64) : -1;
}

static bool b64url_decode(const char *s, pk_buf *out)
{
    size_t n = strlen(s);
    if (n % 4 == 1) return false;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        size_t k = 0;
        for (; k < 4 && i + k < n; k++) {
            int d = b64_val(s[i + k]);
            if (d < 0) return false;
            v |= (uint32_t)d << (18 - 6 * k);
        }
        pk_buf_putc(out, (char)(v >> 16));
        if (k > 2) pk_buf_putc(out, (char)(v >> 8));
        if (k > 3) pk_buf_putc(out, (char)v);
    }
    return true;
}

char *pk_cursor_encode(const char *kind, int64_t seq, const char *value)
{
    pk_buf raw = PK_BUF_INIT, out = PK_BUF_INIT;
    pk_buf_printf(&raw, "%s|%lld|%s", kind, (long long)seq, value ? value : "");
    b64url_encode((const unsigned char *)raw.data, raw.len, &out);
    pk_buf_free(&raw);
    return pk_buf_steal(&out, NULL);
}

static pk_err *bad_cursor(const char *why)
{
    pk_err *e = pk_err_invalid("the cursor is not valid for this query");
    pk_err_add_field(e, "cursor", "%s", why);
    return e;
}

pk_err *pk_cursor_decode(const char *token, const char *kind, int64_t *seq, char **value)
{
    *value = NULL;
    pk_buf raw = PK_BUF_INIT;
    if (!token || strlen(token) > 4096 || !b64url_decode(token, &raw) || raw.len == 0) {
        pk_buf_free(&raw);
        return bad_cursor("is malformed");
    }
    pk_err *e = NULL;
    char *bar1 = memchr(raw.data, '|', raw.len);
    char *bar2 = bar1 ? memchr(bar1 + 1, '|', raw.len - (size_t)(bar1 + 1 - raw.data)) : NULL;
    if (!bar2 || memchr(raw.data, '\0', raw.len)) {
        e = bad_cursor("is malformed");
    } else if ((size_t)(bar1 - raw.data) != strlen(kind) || memcmp(raw.data, kind, strlen(kind)) != 0) {
        e = bad_cursor("was issued for a different sort order");
    } else {
        *bar2 = '\0';
        char *end = NULL;
        long long v = strtoll(bar1 + 1, &end, 10);
        if (end == bar1 + 1 || *end || v < 0) {
            e = bad_cursor("is malformed");
        } else {
            *seq = v;
            *value = strdup(bar2 + 1);
        }
    }
    pk_buf_free(&raw);
    return e;
}

/* ---- search text ---- */

static bool searchable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80 || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return true;
    }
    return false;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static void emit_term(pk_buf *out, const char *s, size_t n, bool prefix)
{
    if (out->len) pk_buf_putc(out, ' ');
    pk_buf_putc(out, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') pk_buf_putc(out, '"'); /* FTS5 escapes a quote by doubling it */
        pk_buf_putc(out, s[i]);
    }
    pk_buf_putc(out, '"');
    if (prefix) pk_buf_putc(out, '*');
}

pk_err *pk_search_terms(const char *text, pk_search_term *terms, size_t *nterms)
{
    size_t n = 0;
    const char *p = text ? text : "";
    while (*p) {
        if (is_space(*p)) {
            p++;
            continue;
        }
        const char *start, *end;
        bool prefix = false, phrase = false;
        if (*p == '"') {
            phrase = true;
            start = ++p;
            while (*p && *p != '"')
                p++;
            end = p;
            if (*p) p++; /* an unclosed quote ends the phrase at the end of the text */
        } else {
            start = p;
            while (*p && !is_space(*p) && *p != '"')
                p++;
            end = p;
            while (end > start && end[-1] == '*') {
                end--;
                prefix = true;
            }
        }
        if (!searchable(start, (size_t)(end - start))) continue;
        if (n == PK_SEARCH_TERMS_MAX) {
            pk_err *e = pk_err_invalid("the search query is too long");
            pk_err_add_field(e, "q", "has more than %d words or phrases", PK_SEARCH_TERMS_MAX);
            return e;
        }
        terms[n++] = (pk_search_term){start, (size_t)(end - start), phrase, prefix};
    }
    if (n == 0) {
        pk_err *e = pk_err_invalid("the search query has no searchable words");
        pk_err_add_field(e, "q", "must contain at least one word");
        return e;
    }
    *nterms = n;
    return NULL;
}

pk_err *pk_fts5_query(const char *text, pk_buf *out)
{
    pk_search_term t[PK_SEARCH_TERMS_MAX];
    size_t n = 0;
    pk_err *e = pk_search_terms(text, t, &n);
    if (e) return e;
    pk_buf q = PK_BUF_INIT;
    for (size_t i = 0; i < n; i++)
        emit_term(&q, t[i].text, t[i].len, t[i].prefix);
    pk_buf_append(out, q.data, q.len);
    pk_buf_free(&q);
    return NULL;
}

/* One link as JSON (the shape documented in store.h); shared by every backend. */
void pk_store_link_json(pk_jw *w, const char *id, const char *src, const char *dst, const char *type,
                        double strength, const char *meta, size_t meta_len, int64_t created)
{
    char ts[PK_RFC3339_LEN];
    pk_rfc3339(created, ts);
    pk_jw_obj_open(w);
    pk_jw_key(w, "id");
    pk_jw_str(w, id);
    pk_jw_key(w, "source_id");
    pk_jw_str(w, src);
    pk_jw_key(w, "target_id");
    pk_jw_str(w, dst);
    pk_jw_key(w, "type");
    pk_jw_str(w, type);
    pk_jw_key(w, "strength");
    pk_jw_num(w, strength);
    pk_jw_key(w, "metadata");
    pk_jw_raw(w, meta, meta_len);
    pk_jw_key(w, "created_at");
    pk_jw_str(w, ts);
    pk_jw_obj_close(w);
}

/* ---- list and search queries ---- */

#define QUERY_TAGS_MAX 20

pk_err *pk_note_query_invalid(const char *field, const char *msg)
{
    pk_err *e = pk_err_invalid("the query has invalid parameters");
    pk_err_add_field(e, field, "%s", msg);
    return e;
}

pk_err *pk_note_query_prepare(const pk_note_query *q, bool search, pk_sort_key *key, char kind[3])
{
    memset(kind, 0, 3);
    pk_sort_key k = q->sort;
    if (k == PK_SORT_DEFAULT) k = search ? PK_SORT_RELEVANCE : PK_SORT_CREATED;
    *key = k;
    switch (k) {
    case PK_SORT_CREATED:
        kind[0] = 'c';
        break;
    case PK_SORT_UPDATED:
        kind[0] = 'u';
        break;
    case PK_SORT_TITLE:
        kind[0] = 't';
        break;
    case PK_SORT_CONFIDENCE:
        kind[0] = 'f';
        break;
    case PK_SORT_RELEVANCE:
        if (!search) return pk_note_query_invalid("sort", "relevance applies to searches only");
        kind[0] = 'r';
        break;
    default:
        return pk_note_query_invalid("sort", "unknown sort key");
    }
    if (k != PK_SORT_RELEVANCE) kind[1] = q->ascending ? '+' : '-';
    if (q->status && !pk_note_enum_valid(PK_NOTE_STATUSES, q->status))
        return pk_note_query_invalid("status", "must be one of: draft, active, archived");
    if (q->verification_status && !pk_note_enum_valid(PK_NOTE_VERIFICATIONS, q->verification_status))
        return pk_note_query_invalid("verification_status",
                                     "must be one of: pending, verified, disputed, rejected");
    if (q->has_min_confidence && !(q->min_confidence >= 0.0 && q->min_confidence <= 1.0))
        return pk_note_query_invalid("min_confidence", "must be a number between 0 and 1");
    if (q->ntags_all > QUERY_TAGS_MAX || q->ntags_any > QUERY_TAGS_MAX)
        return pk_note_query_invalid("tags", "at most 20 tags per filter");
    return NULL;
}
