/*
 * The request pipeline. For every request h2o hands us, on the loop thread:
 *   1. a pk_req is allocated in the request's pool (freed with it; its dispose hook detaches any
 *      outstanding offloaded job so a late result is dropped instead of touching freed memory);
 *   2. correlation: X-Request-ID (validated or generated) and W3C traceparent (continued or started);
 *   3. routing (exact, with parameters) -> 404 / 405 with Allow;
 *   4. the middleware chain, the same for every route: limits (body size, media type, JSON parse
 *      with depth and UTF-8 checks), auth hook (principal), rate limit, deadline;
 *   5. the handler, which either answers on the loop (cache hit, health) or offloads.
 * Every answer goes through respond_common, which adds the correlation headers, the rate-limit
 * headers, Server-Timing and deprecation headers, writes the access log and records metrics.
 */
#include "server/request.h"
#include "core/clock.h"
#include "core/fmt.h"
#include "core/id.h"
#include "core/log.h"
#include "core/utf8.h"
#include "foundation/trace.h"
#include "server/offload.h"
#include "server/services.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest accepted request head (method, target and header fields). */

const char *pk_route_class_name(pk_route_class c)
{
    static const char *const names[] = {"read", "write", "search", "mcp", "admin", "ops"};
    return (unsigned)c < PK_RC__COUNT ? names[c] : "unknown";
}

/* ---- correlation ---------------------------------------------------------------------------- */

/* X-Request-ID is kept when valid, else generated; traceparent is continued when valid (W3C rules
 * in foundation/trace.c), else a new trace starts. */
static void correlate(pk_req *r)
{
    size_t n = 0, tn = 0, sn = 0;
    const char *v = pk_req_header(r, "x-request-id", &n);
    pk_request_id_accept(v, v ? n : 0, r->request_id);
    const char *tp = pk_req_header(r, "traceparent", &tn);
    const char *ts = pk_req_header(r, "tracestate", &sn);
    pk_trace t;
    pk_trace_start(&t, tp, tp ? tn : 0, ts, ts ? sn : 0, 0);
    memcpy(r->trace_id, t.trace_id, sizeof r->trace_id);
    memcpy(r->span_id, t.span_id, sizeof r->span_id);
    memcpy(r->parent_span_id, t.parent_id, sizeof r->parent_span_id);
    r->sampled = pk_trace_sampled(&t);
}

/* ---- request accessors ---------------------------------------------------------------------- */

const char *pk_req_header(pk_req *r, const char *lower_name, size_t *len)
{
    const h2o_headers_t *hs = &r->h2o->headers;
    size_t nl = strlen(lower_name);
    for (size_t i = 0; i < hs->size; i++) {
        const h2o_header_t *h = &hs->entries[i];
        if (h->name->len == nl && h2o_lcstris(h->name->base, nl, lower_name, nl)) {
            if (len) *len = h->value.len;
            return h->value.base;
        }
    }
    return NULL;
}

void pk_req_add_header(pk_req *r, const char *name, const char *value, size_t len)
{
    /* h2o keeps pointers: the value must live as long as the request */
    h2o_iovec_t v = h2o_strdup(&r->h2o->pool, value, len);
    h2o_add_header_by_str(&r->h2o->pool, &r->h2o->res.headers, name, strlen(name), 0, NULL, v.base, v.len);
}

h2o_iovec_t pk_req_param(pk_req *r, const char *name)
{
    /* parameters are numbered in pattern order */
    const char *p = r->route->pattern;
    int idx = 0;
    size_t nl = strlen(name);
    while ((p = strchr(p, '{'))) {
        if (!strncmp(p + 1, name, nl) && p[1 + nl] == '}')
            return idx < r->nparams ? r->params[idx] : h2o_iovec_init(NULL, 0);
        idx++;
        p++;
    }
    return h2o_iovec_init(NULL, 0);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static const char *decode_component(pk_req *r, const char *s, size_t n, bool *bad)
{
    char *out = h2o_mem_alloc_pool(&r->h2o->pool, n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+')
            out[o++] = ' ';
        else if (s[i] == '%') {
            if (i + 2 >= n) {
                *bad = true;
                return NULL;
            }
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0) {
                *bad = true;
                return NULL;
            }
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else
            out[o++] = s[i];
    }
    out[o] = '\0';
    if (!pk_utf8_valid(out, o) || memchr(out, '\0', o)) {
        *bad = true;
        return NULL;
    }
    return out;
}

bool pk_req_query_pair(pk_req *r, size_t *cursor, h2o_iovec_t *key, const char **value, bool *bad)
{
    h2o_req_t *req = r->h2o;
    if (req->query_at == SIZE_MAX) return false;
    const char *q = req->path.base + req->query_at + 1;
    size_t qlen = req->path.len - req->query_at - 1;
    while (*cursor < qlen) {
        size_t i = *cursor, end = i;
        while (end < qlen && q[end] != '&')
            end++;
        *cursor = end + 1;
        if (end == i) continue; /* "a=1&&b=2" */
        const char *eq = memchr(q + i, '=', end - i);
        *key = h2o_iovec_init(q + i, eq ? (size_t)(eq - (q + i)) : end - i);
        const char *v = eq ? eq + 1 : q + end;
        *value = decode_component(r, v, (size_t)(q + end - v), bad);
        return true;
    }
    return false;
}

const char *pk_req_query_next(pk_req *r, const char *name, size_t *cursor, bool *bad)
{
    size_t nl = strlen(name);
    h2o_iovec_t k;
    const char *v;
    bool b = false;
    while (pk_req_query_pair(r, cursor, &k, &v, &b)) {
        if (k.len == nl && !memcmp(k.base, name, nl)) {
            *bad = b;
            return v;
        }
        b = false;
    }
    return NULL;
}

const char *pk_req_query(pk_req *r, const char *name, bool *bad)
{
    size_t c = 0;
    return pk_req_query_next(r, name, &c, bad);
}

int64_t pk_req_remaining_ns(pk_req *r)
{
    return r->deadline_ns - pk_mono_ns();
}

/* ---- responses ------------------------------------------------------------------------------- */

static void access_log(pk_req *r, int status, int64_t dur_ns)
{
    if (!r->srv->cfg.access_log) return;
    pk_log_level lvl = status >= 500 ? PK_LOG_ERROR : PK_LOG_INFO;
    if (r->route && (r->route->flags & PK_ROUTE_NO_LOG) && status < 400) lvl = PK_LOG_DEBUG;
    if (!pk_log_enabled(lvl)) return;
    pk_buf f = PK_BUF_INIT;
    pk_buf_puts(&f, "\"method\":\"");
    pk_json_escape(&f, r->h2o->method.base, r->h2o->method.len);
    pk_buf_printf(&f, "\",\"route\":\"%s\",\"status\":%d,\"duration_ms\":%.3f,\"principal\":\"",
                  r->route ? r->route->pattern : "(unmatched)", status, (double)dur_ns / 1e6);
    pk_json_escape(&f, r->principal, strlen(r->principal));
    pk_buf_putc(&f, '"');
    pk_log_ctx ctx = {r->request_id, r->trace_id, r->span_id};
    pk_log_write(lvl, &ctx, f.data, "request");
    pk_buf_free(&f);
}

static void add_common_headers(pk_req *r)
{
    pk_req_add_header(r, "x-request-id", r->request_id, strlen(r->request_id));
    char tp[64], *p = tp;
    p = pk_fmt_str(p, "00-");
    p = pk_fmt_str(p, r->trace_id);
    *p++ = '-';
    p = pk_fmt_str(p, r->span_id);
    p = pk_fmt_str(p, r->sampled ? "-01" : "-00");
    pk_req_add_header(r, "traceparent", tp, (size_t)(p - tp));
    int n;
    if (r->ratelimit_policy[0]) {
        pk_req_add_header(r, "ratelimit-policy", r->ratelimit_policy, strlen(r->ratelimit_policy));
        pk_req_add_header(r, "ratelimit", r->ratelimit, strlen(r->ratelimit));
    }
    char st[160];
    int64_t total = pk_mono_ns() - r->start_ns;
    p = pk_fmt_ms3(pk_fmt_str(st, "total;dur="), total);
    if (r->cache_state) p = pk_fmt_str(pk_fmt_str(p, ", cache;desc="), r->cache_state);
    if (r->store_ns) p = pk_fmt_ms3(pk_fmt_str(p, ", store;dur="), r->store_ns);
    pk_req_add_header(r, "server-timing", st, (size_t)(p - st));
    if (r->route && (r->route->flags & PK_ROUTE_DEPRECATED)) {
        /* RFC 9745: the date the compatibility routes were deprecated (2026-11-25), as a structured date */
        pk_req_add_header(r, "deprecation", "@1795564800", 11);
        char link[200];
        n = snprintf(link, sizeof link, "<%s>; rel=\"successor-version\"",
                     r->successor ? r->successor : r->route->successor);
        pk_req_add_header(r, "link", link, (size_t)n);
    }
}

static void finish(pk_req *r, int status)
{
    r->responded = true;
    r->status = status;
    int64_t dur = pk_mono_ns() - r->start_ns;
    access_log(r, status, dur);
    pk_services_observe(r, status, dur);
    atomic_fetch_sub(&r->srv->inflight, 1);
}

void pk_respond_raw(pk_req *r, int status, const char *content_type, const char *body, size_t len)
{
    if (r->responded) return;
    h2o_req_t *req = r->h2o;
    req->res.status = status;
    req->res.reason = pk_err_title(status);
    if (status == 200)
        req->res.reason = "OK";
    else if (status == 201)
        req->res.reason = "Created";
    else if (status == 204)
        req->res.reason = "No Content";
    add_common_headers(r);
    if (content_type)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                       strlen(content_type));
    finish(r, status);
    if (status == 204 || status == 304) {
        static h2o_generator_t gen = {NULL, NULL};
        h2o_start_response(req, &gen);
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
        return;
    }
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

void pk_respond_empty(pk_req *r, int status)
{
    pk_respond_raw(r, status, NULL, "", 0);
}

static void write_meta(pk_buf *b, pk_req *r, const char *meta_extra)
{
    pk_buf_puts(b, ",\"meta\":{\"request_id\":\"");
    pk_buf_puts(b, r->request_id); /* validated: [A-Za-z0-9._:-] only */
    pk_buf_puts(b, "\",\"trace_id\":\"");
    pk_buf_puts(b, r->trace_id);
    pk_buf_puts(b, "\",\"api_version\":\"v1\"");
    if (meta_extra && *meta_extra) {
        pk_buf_putc(b, ',');
        pk_buf_puts(b, meta_extra);
    }
    pk_buf_puts(b, "}}");
}

void pk_respond_data(pk_req *r, int status, const char *data_json, size_t len, const char *meta_extra)
{
    pk_buf b = PK_BUF_INIT;
    pk_buf_reserve(&b, len + 160);
    pk_buf_puts(&b, "{\"data\":");
    pk_buf_append(&b, data_json, len);
    write_meta(&b, r, meta_extra);
    pk_respond_raw(r, status, "application/json", b.data, b.len);
    pk_buf_free(&b);
}

void pk_respond_error(pk_req *r, pk_err *e)
{
    if (r->responded) {
        pk_err_free(e);
        return;
    }
    if (e->status == 405 && e->extra_json == NULL) {
        /* Allow header is added by the caller through pk_req_add_header */
    }
    if (e->retry_after_s > 0) {
        char ra[16];
        int n = snprintf(ra, sizeof ra, "%d", e->retry_after_s);
        pk_req_add_header(r, "retry-after", ra, (size_t)n);
    }
    pk_buf b = PK_BUF_INIT;
    pk_buf inst = PK_BUF_INIT;
    pk_buf_append(&inst, r->h2o->path.base,
                  r->h2o->query_at == SIZE_MAX ? r->h2o->path.len : r->h2o->query_at);
    pk_problem_render(&b, e, inst.data, r->request_id, r->trace_id);
    if (e->status >= 500) {
        pk_log_ctx ctx = {r->request_id, r->trace_id, r->span_id};
        pk_buf f = PK_BUF_INIT;
        pk_buf_printf(&f, "\"code\":\"%s\",\"status\":%d", e->code, e->status);
        if (e->cause) {
            pk_buf_puts(&f, ",\"cause\":\"");
            pk_json_escape(&f, e->cause->message, strlen(e->cause->message));
            pk_buf_putc(&f, '"');
        }
        pk_log_write(e->status == 500 ? PK_LOG_ERROR : PK_LOG_WARN, &ctx, f.data, "%s", e->message);
        pk_buf_free(&f);
    }
    pk_respond_raw(r, e->status, "application/problem+json", b.data, b.len);
    pk_buf_free(&b);
    pk_buf_free(&inst);
    pk_err_free(e);
}

/* Starts a streamed answer (Server-Sent Events): the status line and headers go out now, with the same
 * correlation, rate-limit and timing headers as any answer, and the request counts as answered (access
 * log, metrics); the caller then writes the body with h2o_send through `gen` on this loop thread. */
void pk_respond_stream_start(pk_req *r, int status, const char *content_type, h2o_generator_t *gen)
{
    if (r->responded) return;
    h2o_req_t *req = r->h2o;
    req->res.status = status;
    req->res.reason = status == 200 ? "OK" : pk_err_title(status);
    add_common_headers(r);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                   strlen(content_type));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    finish(r, status);
    h2o_start_response(req, gen);
}

/* ---- offload --------------------------------------------------------------------------------- */

static void job_free(pk_job *j)
{
    if (j->free_data) j->free_data(j->data);
    pk_buf_free(&j->body);
    free(j->meta_extra);
    pk_err_free(j->err);
    free(j);
}

static void on_deadline(h2o_timeout_entry_t *entry)
{
    pk_job *j = H2O_STRUCT_FROM_MEMBER(pk_job, deadline_entry, entry);
    pk_req *r = j->req;
    j->abandoned = true;
    if (!r) return;
    j->req = NULL;
    r->job = NULL;
    pk_respond_error(r, pk_err_new("deadline_exceeded", 504,
                                   "the request did not complete within its %d ms deadline",
                                   pk_services_deadline_ms(r->srv, r->route->cls)));
}

void pk_request_job_returned(pk_job *j)
{
    if (h2o_timeout_is_linked(&j->deadline_entry)) h2o_timeout_unlink(&j->deadline_entry);
    pk_req *r = j->req;
    if (r) {
        r->job = NULL;
        r->store_ns += j->store_ns;
        if (j->cache_state) r->cache_state = j->cache_state;
        j->done(r, j);
    }
    job_free(j);
}

void pk_job_respond(pk_req *r, pk_job *j)
{
    if (j->err) {
        pk_err *e = j->err;
        j->err = NULL;
        pk_respond_error(r, e);
        return;
    }
    if (j->etag[0]) pk_req_add_header(r, "etag", j->etag, strlen(j->etag));
    if (j->location[0]) pk_req_add_header(r, "location", j->location, strlen(j->location));
    if (j->status == 204) {
        pk_respond_empty(r, 204);
    } else if (j->raw_content_type) {
        pk_respond_raw(r, j->status, j->raw_content_type, j->body.data ? j->body.data : "", j->body.len);
    } else {
        pk_respond_data(r, j->status ? j->status : 200, j->body.data ? j->body.data : "null",
                        j->body.data ? j->body.len : 4, j->meta_extra);
    }
}

static bool offload_job(pk_req *r, pk_work_fn work, pk_work_many_fn work_many, pk_done_fn done, void *data,
                        void (*free_data)(void *))
{
    pk_job *j = calloc(1, sizeof *j);
    j->work_many = work_many;
    j->req = r;
    j->loop = r->loop;
    j->srv = r->srv;
    j->work = work;
    j->done = done ? done : pk_job_respond;
    j->data = data;
    j->free_data = free_data;
    snprintf(j->request_id, sizeof j->request_id, "%s", r->request_id);
    snprintf(j->principal, sizeof j->principal, "%s", r->principal);
    j->deadline_ns = r->deadline_ns;
    j->enqueued_ns = pk_mono_ns();
    j->op.request_id = j->request_id;
    j->op.principal = j->principal;
    j->op.deadline_ns = r->deadline_ns;
    j->deadline_entry.cb = on_deadline;
    if (!pk_offload_pool_submit(r->srv->pool, j)) {
        j->req = NULL;
        job_free(j);
        pk_err *e =
            atomic_load(&r->srv->stopping)
                ? pk_err_new("shutting_down", 503, "the server is shutting down; retry on another instance")
                : pk_err_new("overloaded", 503, "the server is overloaded; try again shortly");
        e->retry_after_s = 1;
        pk_respond_error(r, e);
        return false;
    }
    r->job = j;
    h2o_timeout_link(r->loop->evloop, &r->loop->deadline_timeouts[r->route->cls], &j->deadline_entry);
    return true;
}

bool pk_offload(pk_req *r, pk_work_fn work, pk_done_fn done, void *data, void (*free_data)(void *))
{
    return offload_job(r, work, NULL, done, data, free_data);
}

bool pk_offload_many(pk_req *r, pk_work_many_fn work_many, pk_done_fn done, void *data,
                     void (*free_data)(void *))
{
    return offload_job(r, NULL, work_many, done, data, free_data);
}

/* ---- middleware chain ------------------------------------------------------------------------ */

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* True when an object of the tree (depth bounded by --json-max-depth) repeats a member name. */
static bool has_duplicate_keys(const cJSON *v)
{
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) return false;
    size_t n = 0;
    for (const cJSON *c = v->child; c; c = c->next) {
        if (has_duplicate_keys(c)) return true;
        n++;
    }
    if (!cJSON_IsObject(v) || n < 2) return false;
    const char *small[16];
    const char **keys = n <= 16 ? small : malloc(n * sizeof *keys);
    size_t i = 0;
    for (const cJSON *c = v->child; c; c = c->next)
        keys[i++] = c->string;
    qsort(keys, n, sizeof *keys, cmp_key);
    bool dup = false;
    for (i = 1; i < n && !dup; i++)
        dup = !strcmp(keys[i - 1], keys[i]);
    if (keys != small) free(keys);
    return dup;
}

/* Checks cJSON cannot do for us, on a body that already parsed:
 *  - "\u0000" escapes: cJSON decodes them into C strings, which silently truncated the text at the
 *    NUL ({"title":"a\u0000b"} was stored as "a"). The body is valid JSON here, so every backslash
 *    starts an escape pair and a left-to-right scan that skips pairs finds exactly the escapes.
 *  - duplicate member names: cJSON keeps both and lookups return the first, so two parsers could
 *    read different documents from the same bytes (RFC 8259 leaves it undefined); refused. */
static pk_err *json_strict(const char *data, size_t len, const cJSON *root)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (data[i] != '\\') continue;
        if (data[i + 1] == 'u' && i + 5 < len && !memcmp(data + i + 2, "0000", 4))
            return pk_err_new("malformed_json", 400,
                              "JSON strings must not contain NUL characters (\\u0000)");
        i++;
    }
    if (has_duplicate_keys(root))
        return pk_err_new("malformed_json", 400, "a JSON object repeats a member name");
    return NULL;
}

static pk_err *stage_limits(pk_req *r)
{
    h2o_req_t *req = r->h2o;
    if (req->entity.base && req->entity.len > (size_t)r->srv->cfg.max_body_bytes)
        return pk_err_new("payload_too_large", 413, "request body is larger than %lld bytes",
                          (long long)r->srv->cfg.max_body_bytes);
    if (!(r->route->flags & PK_ROUTE_JSON_BODY)) return NULL;
    size_t n;
    const char *ct = pk_req_header(r, "content-type", &n);
    if (!ct || n < 16 || !h2o_lcstris(ct, 16, "application/json", 16) ||
        (n > 16 && ct[16] != ';' && ct[16] != ' '))
        return pk_err_new("unsupported_media_type", 415,
                          "this endpoint accepts application/json request bodies");
    pk_err *e = pk_json_parse(req->entity.base ? req->entity.base : "",
                              req->entity.base ? req->entity.len : 0, r->srv->cfg.json_max_depth, &r->json);
    if (!e) e = json_strict(req->entity.base, req->entity.base ? req->entity.len : 0, r->json);
    return e;
}

/* Auth hook: no API keys yet, the principal is the client address. */
static pk_err *stage_auth(pk_req *r)
{
    struct sockaddr_storage ss;
    socklen_t sl = r->h2o->conn->callbacks->get_peername(r->h2o->conn, (struct sockaddr *)&ss);
    char host[64] = "unknown";
    if (sl) h2o_socket_getnumerichost((struct sockaddr *)&ss, sl, host);
    memcpy(r->principal, "ip:", 3);
    memcpy(r->principal + 3, host, strnlen(host, sizeof host - 1) + 1);
    return NULL;
}

static pk_err *stage_deadline(pk_req *r)
{
    r->deadline_ns = r->start_ns + (int64_t)pk_services_deadline_ms(r->srv, r->route->cls) * 1000000;
    return NULL;
}

const char pk_chain_suspended_ = 0;

typedef pk_err *(*stage_fn)(pk_req *r);
/* The chain every route passes, in order. */
static const stage_fn CHAIN[] = {stage_auth, pk_services_ratelimit, stage_limits, stage_deadline};

static void run_chain(pk_req *r, size_t from);

static void on_req_dispose(void *p)
{
    pk_req *r = p;
    if (r->job) {
        r->job->req = NULL;
        r->job = NULL;
    }
    if (r->json) cJSON_Delete(r->json);
    if (!r->responded) atomic_fetch_sub(&r->srv->inflight, 1);
}

void pk_request_dispatch(pk_loop *l, h2o_req_t *req)
{
    pk_req *r = h2o_mem_alloc_shared(&req->pool, sizeof *r, on_req_dispose);
    memset(r, 0, sizeof *r);
    r->h2o = req;
    r->loop = l;
    r->srv = l->srv;
    r->start_ns = pk_mono_ns();
    atomic_fetch_add(&r->srv->inflight, 1);
    correlate(r);
    /* h2o itself only refuses request heads above H2O_MAX_REQLEN (~417 KB); headers larger than
     * --max-header-bytes are refused here, before any routing or parsing work. */
    size_t hbytes = req->method.len + req->path.len;
    for (size_t i = 0; i < req->headers.size; i++)
        hbytes += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 4;
    if (hbytes > (size_t)r->srv->cfg.max_header_bytes) {
        pk_respond_error(r, pk_err_new("header_too_large", 431, "request headers are larger than %d bytes",
                                       r->srv->cfg.max_header_bytes));
        return;
    }
    char allow[128];
    const char *path = req->path_normalized.base;
    size_t plen = req->path_normalized.len;
    r->route = pk_route_match(req->method.base, req->method.len, path, plen, r->params, &r->nparams, allow,
                              sizeof allow);
    if (!r->route) {
        if (allow[0]) {
            pk_req_add_header(r, "allow", allow, strlen(allow));
            pk_respond_error(r, pk_err_new("method_not_allowed", 405,
                                           "method %.*s is not allowed here; allowed: %s",
                                           (int)req->method.len, req->method.base, allow));
        } else {
            pk_respond_error(r, pk_err_new("route_not_found", 404, "no route matches %.*s", (int)plen, path));
        }
        return;
    }
    run_chain(r, 0);
}

/* Runs the chain from stage `from`, then the handler. A stage that offloads its decision (the Redis
 * rate limiter) returns PK_CHAIN_SUSPENDED; its job's `done` calls pk_request_resume on the loop. */
static void run_chain(pk_req *r, size_t from)
{
    for (size_t i = from; i < sizeof CHAIN / sizeof CHAIN[0]; i++) {
        pk_err *e = CHAIN[i](r);
        if (e == PK_CHAIN_SUSPENDED) {
            r->chain_next = (unsigned char)(i + 1);
            return;
        }
        if (e) {
            pk_respond_error(r, e);
            return;
        }
    }
    r->route->handler(r);
}

void pk_request_resume(pk_req *r)
{
    run_chain(r, r->chain_next);
}

/* ---- h2o's own errors as problem+json -------------------------------------------------------- */

typedef struct rewrite_ostream {
    h2o_ostream_t super;
    h2o_iovec_t body;
} rewrite_ostream;

static void rewrite_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n,
                            h2o_send_state_t state)
{
    rewrite_ostream *o = (rewrite_ostream *)self;
    if (h2o_send_state_is_in_progress(state)) {
        h2o_ostream_send_next(self, req, NULL, 0, state);
        return;
    }
    h2o_ostream_send_next(self, req, &o->body, 1, state);
}

static void problem_on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    ssize_t ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    bool plain = ct != -1 && req->res.headers.entries[ct].value.len >= 10 &&
                 !memcmp(req->res.headers.entries[ct].value.base, "text/plain", 10);
    if (req->res.status < 400 || !plain) {
        h2o_setup_next_ostream(req, slot);
        return;
    }
    /* The same correlation as our own answers: the client's X-Request-ID when valid, its traceparent
     * continued; both values are copied into the request pool because h2o keeps header pointers
     * until the response is written (after this function returns). */
    char rid[PK_REQUEST_ID_MAX + 1];
    ssize_t hi = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    pk_request_id_accept(hi != -1 ? req->headers.entries[hi].value.base : NULL,
                         hi != -1 ? req->headers.entries[hi].value.len : 0, rid);
    ssize_t ti = h2o_find_header_by_str(&req->headers, H2O_STRLIT("traceparent"), -1);
    pk_trace t;
    pk_trace_start(&t, ti != -1 ? req->headers.entries[ti].value.base : NULL,
                   ti != -1 ? req->headers.entries[ti].value.len : 0, NULL, 0, 0);
    char tp[PK_TRACEPARENT_LEN];
    pk_trace_format(&t, tp);
    const char *code = req->res.status == 413 ? "payload_too_large" : "http_error";
    pk_err *e = pk_err_new(code, req->res.status, "%s", req->res.reason ? req->res.reason : "error");
    pk_buf inst = PK_BUF_INIT;
    if (req->path.base)
        pk_buf_append(&inst, req->path.base, req->query_at == SIZE_MAX ? req->path.len : req->query_at);
    pk_buf b = PK_BUF_INIT;
    pk_problem_render(&b, e, inst.data ? inst.data : "", rid, t.trace_id);
    pk_err_free(e);
    pk_buf_free(&inst);
    h2o_iovec_t body = h2o_strdup(&req->pool, b.data, b.len);
    pk_buf_free(&b);
    req->res.headers.entries[ct].value = h2o_iovec_init(H2O_STRLIT("application/problem+json"));
    h2o_iovec_t rv = h2o_strdup(&req->pool, rid, strlen(rid));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, rv.base,
                          rv.len);
    h2o_iovec_t tv = h2o_strdup(&req->pool, tp, strlen(tp));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("traceparent"), 0, NULL, tv.base, tv.len);
    req->res.content_length = body.len;
    rewrite_ostream *o = (rewrite_ostream *)h2o_add_ostream(req, sizeof *o, slot);
    o->body = body;
    o->super.do_send = rewrite_do_send;
    slot = &o->super.next;
    h2o_setup_next_ostream(req, slot);
}

void pk_problem_filter_register(h2o_pathconf_t *path)
{
    h2o_filter_t *f = h2o_create_filter(path, sizeof *f);
    f->on_setup_ostream = problem_on_setup_ostream;
}
