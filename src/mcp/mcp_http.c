/*
 * Streamable HTTP transport of MCP at /mcp (POST, GET, DELETE), served by the event loops.
 *
 * Streams. Every message the server sends travels on a stream of its session: the answer to a POST
 * (with the notifications and server->client requests related to it) or the standalone GET stream
 * (stream 0: notifications not tied to a request). A stream keeps its SSE events in an ordered log;
 * event ids are "<stream>-<seq>", so a client that reconnects with Last-Event-ID gets exactly the events
 * of that stream after that one: nothing is sent on two streams and nothing is replayed across streams.
 * A POST whose answer needs no worker is answered inline as application/json; one that runs work is
 * answered as an SSE stream when the client accepts it (priming event first), else as JSON once done.
 * Batches (2025-03-26 only) are answered as one JSON array.
 *
 * Threads. Stream state lives in the session, under its mutex. A consumer (the h2o request that is
 * currently reading a stream) belongs to the loop thread that accepted it; workers never touch it:
 * they append to the log and post a wake-up to the consumer's loop (a pk_job without request, whose
 * cleanup runs on that loop), which writes with h2o_send and continues from the generator's proceed
 * callback. Nothing blocks a loop.
 *
 * Security: Origin and Host must name an allowed host (default localhost, 127.0.0.1, [::1], any port;
 * --mcp-allowed-origins) or the request is 403, which stops DNS rebinding; MCP-Protocol-Version must be
 * a supported revision (400); session ids are 256 random bits in hex; an unknown or ended session is 404.
 */
#include "core/clock.h"
#include "core/log.h"
#include "mcp/mcp_internal.h"
#include "server/loop.h"
#include "server/offload.h"
#include "server/services.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STREAMS_KEPT 32
#define MAX_EVENTS_PER_STREAM 1024

typedef struct consumer consumer;

typedef struct mcp_stream {
    struct mcp_stream *next;
    unsigned num;
    bool json_mode; /* answered as application/json (or an array for a batch) */
    bool batch;
    int pending; /* calls whose final answer has not been appended yet */
    bool ended;  /* nothing more will be appended */
    /* SSE event log: events [base_seq, next_seq) are kept, ev[i] has seq base_seq + i */
    pk_buf *ev;
    size_t nev, cap;
    uint64_t base_seq, next_seq, delivered; /* delivered: next seq not yet handed to any consumer */
    /* JSON mode */
    pk_buf json;
    int njson;
    consumer *c;
} mcp_stream;

typedef struct http_state {
    mcp_stream *streams; /* includes the GET stream (num 0) once used */
    unsigned next_num;
} http_state;

struct consumer {
    h2o_generator_t gen; /* must be first */
    pk_req *r;
    pk_loop *loop;
    pk_mcp_session *s;
    mcp_stream *st;
    uint64_t next_seq;
    bool sending, finished, close_requested, wake_queued;
    pk_buf inflight;
};

static __thread pk_loop *tl_loop;

/* ---- stream log (session mutex held) ---------------------------------------------------------- */

static http_state *state(pk_mcp_session *s)
{
    return s->tx_state;
}

static mcp_stream *stream_new(pk_mcp_session *s, bool json_mode)
{
    http_state *h = state(s);
    /* keep a bounded number of finished streams for resumption */
    int n = 0;
    for (mcp_stream *x = h->streams; x; x = x->next)
        n++;
    for (mcp_stream **pp = &h->streams; *pp && n >= MAX_STREAMS_KEPT;) {
        mcp_stream *x = *pp;
        if (x->num != 0 && x->ended && !x->c && x->pending == 0) {
            *pp = x->next;
            for (size_t i = 0; i < x->nev; i++)
                pk_buf_free(&x->ev[i]);
            free(x->ev);
            pk_buf_free(&x->json);
            free(x);
            n--;
            continue;
        }
        pp = &x->next;
    }
    mcp_stream *st = calloc(1, sizeof *st);
    st->num = ++h->next_num;
    st->json_mode = json_mode;
    /* append at the tail: pruning then drops the oldest first */
    mcp_stream **pp = &h->streams;
    while (*pp)
        pp = &(*pp)->next;
    *pp = st;
    return st;
}

static mcp_stream *get_stream(pk_mcp_session *s)
{
    http_state *h = state(s);
    for (mcp_stream *x = h->streams; x; x = x->next)
        if (x->num == 0) return x;
    mcp_stream *st = calloc(1, sizeof *st);
    st->next = h->streams;
    h->streams = st;
    return st;
}

static mcp_stream *find_stream(pk_mcp_session *s, unsigned num)
{
    for (mcp_stream *x = state(s)->streams; x; x = x->next)
        if (x->num == num) return x;
    return NULL;
}

static void append_event(mcp_stream *st, const char *json, size_t n)
{
    if (st->nev == MAX_EVENTS_PER_STREAM) { /* drop the oldest (no longer resumable from before it) */
        pk_buf_free(&st->ev[0]);
        memmove(st->ev, st->ev + 1, (st->nev - 1) * sizeof *st->ev);
        st->nev--;
        st->base_seq++;
    }
    if (st->nev == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 8;
        st->ev = realloc(st->ev, st->cap * sizeof *st->ev);
    }
    pk_buf *e = &st->ev[st->nev++];
    memset(e, 0, sizeof *e);
    uint64_t seq = st->next_seq++;
    pk_buf_printf(e, "id: %u-%llu\n", st->num, (unsigned long long)seq);
    if (n == 0)
        pk_buf_puts(e, "retry: 1000\ndata: \n\n"); /* priming event */
    else {
        pk_buf_puts(e, "event: message\ndata: ");
        pk_buf_append(e, json, n);
        pk_buf_puts(e, "\n\n");
    }
}

/* ---- consumers (loop thread of the consumer) -------------------------------------------------- */

static void flush(consumer *c);

typedef struct wake_msg {
    pk_mcp_session *s;
    pk_loop *loop;
} wake_msg;

static void on_wake(void *p)
{
    wake_msg *w = p;
    consumer *todo[16];
    int n = 0;
    pthread_mutex_lock(&w->s->mu);
    for (mcp_stream *x = state(w->s)->streams; x && n < 16; x = x->next)
        if (x->c && x->c->loop == w->loop && x->c->wake_queued) {
            x->c->wake_queued = false;
            todo[n++] = x->c;
        }
    pthread_mutex_unlock(&w->s->mu);
    for (int i = 0; i < n; i++)
        flush(todo[i]);
    pk_mcp_session_unref(w->s);
    free(w);
}

/* Asks the consumer's loop to write what is new (session mutex held). */
static wake_msg *wake_locked(pk_mcp_session *s, mcp_stream *st)
{
    consumer *c = st->c;
    if (!c || c->wake_queued) return NULL;
    c->wake_queued = true;
    wake_msg *w = calloc(1, sizeof *w);
    w->s = s;
    w->loop = c->loop;
    return w;
}

static void wake_post(wake_msg *w)
{
    if (!w) return;
    pk_mcp_session_ref(w->s);
    pk_job *j = calloc(1, sizeof *j);
    j->loop = w->loop;
    j->data = w;
    j->free_data = on_wake; /* runs on the loop when the job is returned (it has no request) */
    pk_loop_post(w->loop, j);
}

static void remove_stream_locked(pk_mcp_session *s, mcp_stream *st)
{
    for (mcp_stream **pp = &state(s)->streams; *pp; pp = &(*pp)->next)
        if (*pp == st) {
            *pp = st->next;
            break;
        }
    for (size_t i = 0; i < st->nev; i++)
        pk_buf_free(&st->ev[i]);
    free(st->ev);
    pk_buf_free(&st->json);
    free(st);
}

static void on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    consumer *c = (consumer *)g;
    c->sending = false;
    pk_buf_reset(&c->inflight);
    flush(c);
}

static void on_stop(h2o_generator_t *g, h2o_req_t *req) {}

/* Writes what the consumer has not seen yet; ends the response when its stream is over. */
static void flush(consumer *c)
{
    if (c->sending || c->finished) return;
    pk_mcp_session *s = c->s;
    bool final = false, json_done = false, empty = false;
    pk_buf body = PK_BUF_INIT;
    pthread_mutex_lock(&s->mu);
    mcp_stream *st = c->st;
    if (!st) {
        final = true;
    } else if (st->json_mode) {
        if (st->pending == 0) {
            json_done = true;
            empty = st->njson == 0;
            if (st->batch) {
                pk_buf_putc(&body, '[');
                pk_buf_append(&body, st->json.data ? st->json.data : "", st->json.len);
                pk_buf_putc(&body, ']');
            } else { /* one answer: take the stream's bytes (the stream goes away below) */
                body = st->json;
                st->json = (pk_buf)PK_BUF_INIT;
            }
            st->c = NULL;
            c->st = NULL;
            remove_stream_locked(s, st);
        }
    } else {
        if (c->next_seq < st->base_seq) c->next_seq = st->base_seq;
        for (uint64_t q = c->next_seq; q < st->next_seq; q++) {
            pk_buf *e = &st->ev[q - st->base_seq];
            pk_buf_append(&c->inflight, e->data, e->len);
        }
        c->next_seq = st->next_seq;
        if (st->delivered < c->next_seq) st->delivered = c->next_seq;
        if (c->close_requested || (st->ended && st->pending == 0)) {
            final = true;
            st->c = NULL;
            c->st = NULL;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (json_done) {
        c->finished = true;
        if (empty)
            pk_respond_empty(c->r, 202);
        else
            pk_respond_raw(c->r, 200, "application/json", body.data, body.len);
        pk_buf_free(&body);
        return;
    }
    pk_buf_free(&body);
    if (!c->inflight.len && !final) return;
    c->sending = !final;
    c->finished = final;
    h2o_iovec_t v = h2o_iovec_init(c->inflight.data ? c->inflight.data : "", c->inflight.len);
    h2o_send(c->r->h2o, &v, 1, final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void consumer_dispose(void *p)
{
    consumer *c = p;
    pthread_mutex_lock(&c->s->mu);
    if (c->st && c->st->c == c) c->st->c = NULL;
    pthread_mutex_unlock(&c->s->mu);
    pk_buf_free(&c->inflight);
    pk_mcp_session_unref(c->s);
}

static consumer *consumer_new(pk_req *r, pk_mcp_session *s)
{
    consumer *c = h2o_mem_alloc_shared(&r->h2o->pool, sizeof *c, consumer_dispose);
    memset(c, 0, sizeof *c);
    c->gen.proceed = on_proceed;
    c->gen.stop = on_stop;
    c->r = r;
    c->loop = r->loop;
    pk_mcp_session_ref(s);
    c->s = s;
    return c;
}

static void add_session_header(pk_req *r, pk_mcp_session *s)
{
    pk_req_add_header(r, "mcp-session-id", s->id, strlen(s->id));
}

static void start_sse(consumer *c)
{
    add_session_header(c->r, c->s);
    pk_respond_stream_start(c->r, 200, "text/event-stream", &c->gen);
}

/* ---- transport ops (any thread) --------------------------------------------------------------- */

static void tx_send(pk_mcp_session *s, pk_mcp_call *call, const char *json, size_t n, bool final)
{
    pthread_mutex_lock(&s->mu);
    if (!state(s)) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    mcp_stream *st = call ? call->tx : NULL;
    if (st && final) {
        if (st->json_mode) {
            if (n) {
                if (st->njson++) pk_buf_putc(&st->json, ',');
                pk_buf_append(&st->json, json, n);
            }
        } else if (n)
            append_event(st, json, n);
        if (--st->pending == 0) st->ended = true;
        call->tx = NULL;
    } else if (n) {
        /* related messages go on the call's SSE stream; otherwise on the GET stream */
        if (!st || st->json_mode || st->ended) st = get_stream(s);
        append_event(st, json, n);
    }
    wake_msg *w = st ? wake_locked(s, st) : NULL;
    pthread_mutex_unlock(&s->mu);
    wake_post(w);
}

static void http_work(pk_job *j)
{
    pk_mcp_call *c = j->data;
    j->data = NULL;
    c->work(c, j);
    pk_mcp_call_finish(c);
}

static bool tx_run(pk_mcp_session *s, pk_mcp_call *c)
{
    pk_mcp_hub *h = pk_mcp_hub_get();
    pk_job *j = calloc(1, sizeof *j);
    pk_mcp_job_init(j, h->srv, c);
    j->deadline_ns = 0; /* the pool must not skip it: the call answers itself (op deadline still applies) */
    j->loop = tl_loop;
    j->work = http_work;
    j->data = c;
    if (!pk_offload_pool_submit(h->srv->pool, j)) {
        free(j);
        return false;
    }
    return true;
}

static void tx_disconnect(pk_mcp_session *s, pk_mcp_call *call)
{
    pthread_mutex_lock(&s->mu);
    mcp_stream *st = call->tx;
    wake_msg *w = NULL;
    if (st && st->c && !st->json_mode) {
        st->c->close_requested = true;
        w = wake_locked(s, st);
    }
    pthread_mutex_unlock(&s->mu);
    wake_post(w);
}

static void tx_free_state(pk_mcp_session *s)
{
    http_state *h = state(s);
    if (!h) return;
    while (h->streams)
        remove_stream_locked(s, h->streams);
    free(h);
    s->tx_state = NULL;
}

static const pk_mcp_transport HTTP_TX = {tx_send, tx_run, tx_disconnect, tx_free_state};

/* ---- request checks --------------------------------------------------------------------------- */

static void rpc_http_error(pk_req *r, int status, int code, const char *msg)
{
    pk_buf b = PK_BUF_INIT;
    pk_mcp_write_error(&b, NULL, code, msg, NULL);
    pk_respond_raw(r, status, "application/json", b.data, b.len);
    pk_buf_free(&b);
}

/* host[:port] (or [v6]:port) -> the host part */
static size_t host_part(const char *h, size_t n)
{
    if (n && h[0] == '[') {
        const char *e = memchr(h, ']', n);
        return e ? (size_t)(e - h) + 1 : n;
    }
    const char *colon = memchr(h, ':', n);
    return colon ? (size_t)(colon - h) : n;
}

/* True when host (without port) is in the comma-separated allow-list ("*" allows any). Entries may
 * carry a port ("example.com:8443"), which must then match too. */
static bool host_allowed(const char *list, const char *h, size_t n)
{
    size_t hn = host_part(h, n);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        while (len && *p == ' ')
            p++, len--;
        while (len && p[len - 1] == ' ')
            len--;
        if (len == 1 && *p == '*') return true;
        size_t ehost = host_part(p, len);
        bool entry_port = ehost < len;
        if (entry_port ? (len == n && !strncasecmp(p, h, n)) : (ehost == hn && !strncasecmp(p, h, hn)))
            return true;
        p = e ? e + 1 : NULL;
    }
    return false;
}

static bool origin_ok(pk_req *r)
{
    const char *list = r->srv->cfg.mcp_allowed_origins;
    size_t n;
    const char *host = pk_req_header(r, "host", &n);
    if (!host && r->h2o->authority.base) host = r->h2o->authority.base, n = r->h2o->authority.len;
    if (!host || !host_allowed(list, host, n)) return false;
    const char *o = pk_req_header(r, "origin", &n);
    if (!o) return true; /* not a browser */
    const char *sep = n > 3 ? strstr(o, "://") : NULL;
    if (!sep || sep >= o + n) return false;
    const char *oh = sep + 3;
    return host_allowed(list, oh, (size_t)(o + n - oh));
}

static bool accepts(pk_req *r, const char *type)
{
    size_t n;
    const char *a = pk_req_header(r, "accept", &n);
    if (!a) return false;
    size_t tl = strlen(type);
    for (size_t i = 0; i + tl <= n; i++)
        if (!strncasecmp(a + i, type, tl)) return true;
    return false;
}

/* Common checks; answers and returns false when the request is refused. */
static bool check_common(pk_req *r)
{
    if (!origin_ok(r)) {
        rpc_http_error(r, 403, -32000, "Forbidden: Origin or Host is not allowed (DNS rebinding protection)");
        return false;
    }
    size_t n;
    const char *v = pk_req_header(r, "mcp-protocol-version", &n);
    if (v) {
        char ver[16];
        snprintf(ver, sizeof ver, "%.*s", (int)(n < 15 ? n : 15), v);
        if (n > 15 || !pk_mcp_version_supported(ver)) {
            rpc_http_error(r, 400, -32000, "Bad Request: unsupported MCP-Protocol-Version");
            return false;
        }
    }
    return true;
}

/* The session named by Mcp-Session-Id: answers 400 (missing) or 404 (unknown, ended) itself. */
static pk_mcp_session *session_of(pk_req *r)
{
    size_t n;
    const char *id = pk_req_header(r, "mcp-session-id", &n);
    if (!id) {
        rpc_http_error(r, 400, -32000, "Bad Request: Mcp-Session-Id header is required");
        return NULL;
    }
    pk_mcp_session *s = pk_mcp_session_find(id, n);
    if (!s) rpc_http_error(r, 404, -32001, "Session not found");
    return s;
}

/* ---- POST ------------------------------------------------------------------------------------- */

static bool is_initialize(const cJSON *m)
{
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(m, "method");
    return cJSON_IsObject(m) && cJSON_IsString(method) && !strcmp(method->valuestring, "initialize");
}

static void post_single(pk_req *r, pk_mcp_session *s, const cJSON *msg, bool initialize)
{
    pk_buf out = PK_BUF_INIT;
    pk_mcp_call *call = NULL;
    pk_mcp_outcome oc = pk_mcp_handle(s, msg, r, &out, &call);
    if (initialize) {
        pthread_mutex_lock(&s->mu);
        bool ok = s->initialize_seen;
        pthread_mutex_unlock(&s->mu);
        if (ok)
            add_session_header(r, s);
        else
            pk_mcp_session_end(s); /* a failed initialize leaves no session behind */
    }
    if (oc == PK_MCP_HANDLED) {
        pk_respond_empty(r, 202);
    } else if (oc == PK_MCP_ANSWERED) {
        pk_respond_raw(r, 200, "application/json", out.data, out.len);
    } else {
        bool sse = call->may_stream && accepts(r, "text/event-stream");
        consumer *c = consumer_new(r, s);
        pthread_mutex_lock(&s->mu);
        mcp_stream *st = stream_new(s, !sse);
        st->pending = 1;
        st->c = c;
        c->st = st;
        call->tx = st;
        if (sse) append_event(st, NULL, 0);
        pthread_mutex_unlock(&s->mu);
        if (sse) start_sse(c);
        tl_loop = r->loop;
        pk_mcp_call_start(call);
        flush(c);
    }
    pk_buf_free(&out);
}

static void post_batch(pk_req *r, pk_mcp_session *s, const cJSON *arr)
{
    pthread_mutex_lock(&s->mu);
    bool allowed = !strcmp(s->version, "2025-03-26");
    pthread_mutex_unlock(&s->mu);
    if (!allowed || !arr->child) {
        rpc_http_error(r, 400, -32600,
                       allowed ? "an empty batch is invalid"
                               : "JSON-RPC batches are not supported in this revision");
        return;
    }
    pk_buf out = PK_BUF_INIT;
    pk_mcp_call *calls[64];
    int ncalls = 0, nanswers = 0;
    for (const cJSON *m = arr->child; m; m = m->next) {
        pk_buf one = PK_BUF_INIT;
        pk_mcp_call *call = NULL;
        pk_mcp_outcome oc;
        if (is_initialize(m)) {
            pk_mcp_write_error(&one, NULL, -32600, "initialize must not be part of a batch", NULL);
            oc = PK_MCP_ANSWERED;
        } else if (ncalls == 64) {
            pk_mcp_write_error(&one, NULL, -32000, "too many requests in one batch", NULL);
            oc = PK_MCP_ANSWERED;
        } else
            oc = pk_mcp_handle(s, m, r, &one, &call);
        if (oc == PK_MCP_ANSWERED) {
            if (nanswers++) pk_buf_putc(&out, ',');
            pk_buf_append(&out, one.data, one.len);
        } else if (oc == PK_MCP_ASYNC)
            calls[ncalls++] = call;
        pk_buf_free(&one);
    }
    if (ncalls == 0) {
        if (nanswers) {
            pk_buf b = PK_BUF_INIT;
            pk_buf_putc(&b, '[');
            pk_buf_append(&b, out.data, out.len);
            pk_buf_putc(&b, ']');
            pk_respond_raw(r, 200, "application/json", b.data, b.len);
            pk_buf_free(&b);
        } else
            pk_respond_empty(r, 202);
        pk_buf_free(&out);
        return;
    }
    consumer *c = consumer_new(r, s);
    pthread_mutex_lock(&s->mu);
    mcp_stream *st = stream_new(s, true);
    st->batch = true;
    st->pending = ncalls;
    st->njson = nanswers;
    pk_buf_append(&st->json, out.data ? out.data : "", out.len);
    st->c = c;
    c->st = st;
    for (int i = 0; i < ncalls; i++)
        calls[i]->tx = st;
    pthread_mutex_unlock(&s->mu);
    pk_buf_free(&out);
    tl_loop = r->loop;
    for (int i = 0; i < ncalls; i++)
        pk_mcp_call_start(calls[i]);
    flush(c);
}

void pk_mcp_http_post(pk_req *r)
{
    if (!check_common(r)) return;
    size_t n;
    const char *ct = pk_req_header(r, "content-type", &n);
    if (!ct || n < 16 || strncasecmp(ct, "application/json", 16)) {
        rpc_http_error(r, 415, -32000, "Unsupported Media Type: POST bodies must be application/json");
        return;
    }
    if (!accepts(r, "application/json") && !accepts(r, "text/event-stream") && !accepts(r, "*/*")) {
        rpc_http_error(r, 406, -32000, "Not Acceptable: accept application/json and text/event-stream");
        return;
    }
    h2o_req_t *req = r->h2o;
    cJSON *body = NULL;
    pk_err *e = pk_json_parse(req->entity.base ? req->entity.base : "",
                              req->entity.base ? req->entity.len : 0, r->srv->cfg.json_max_depth, &body);
    if (e) {
        rpc_http_error(r, 400, -32700, "Parse error: the body is not valid JSON");
        pk_err_free(e);
        return;
    }
    pk_mcp_session *s = NULL;
    size_t sl;
    bool init = is_initialize(body) && !pk_req_header(r, "mcp-session-id", &sl);
    if (init) {
        s = pk_mcp_session_create(&HTTP_TX, NULL);
        if (!s) {
            rpc_http_error(r, 503, -32000, "too many MCP sessions; try again later");
            cJSON_Delete(body);
            return;
        }
        s->tx_state = calloc(1, sizeof(http_state));
    } else
        s = session_of(r);
    if (s) {
        if (cJSON_IsArray(body))
            post_batch(r, s, body);
        else
            post_single(r, s, body, init);
        pk_mcp_session_unref(s);
    }
    cJSON_Delete(body);
}

/* ---- GET: the standalone stream, or the resumption of any stream ------------------------------ */

void pk_mcp_http_get(pk_req *r)
{
    if (!check_common(r)) return;
    if (!accepts(r, "text/event-stream")) {
        rpc_http_error(r, 406, -32000, "Not Acceptable: GET /mcp serves text/event-stream");
        return;
    }
    pk_mcp_session *s = session_of(r);
    if (!s) return;
    size_t n;
    const char *last = pk_req_header(r, "last-event-id", &n);
    unsigned num = 0;
    unsigned long long seq = 0;
    bool resume = false;
    if (last) {
        char buf[48];
        snprintf(buf, sizeof buf, "%.*s", (int)(n < 47 ? n : 47), last);
        char *e1, *e2;
        num = (unsigned)strtoul(buf, &e1, 10);
        if (*e1 != '-' || (seq = strtoull(e1 + 1, &e2, 10), *e2)) {
            rpc_http_error(r, 400, -32000, "Bad Request: malformed Last-Event-ID");
            pk_mcp_session_unref(s);
            return;
        }
        resume = true;
    }
    consumer *c = consumer_new(r, s);
    pthread_mutex_lock(&s->mu);
    mcp_stream *st = resume ? find_stream(s, num) : get_stream(s);
    int status = 0;
    if (!st)
        status = 404;
    else if (st->c)
        status = 409;
    else {
        st->c = c;
        c->st = st;
        c->next_seq = resume ? seq + 1 : st->delivered;
    }
    pthread_mutex_unlock(&s->mu);
    pk_mcp_session_unref(s);
    if (status == 404) {
        rpc_http_error(r, 404, -32000, "Not Found: no stream for this Last-Event-ID");
        return;
    }
    if (status == 409) {
        rpc_http_error(r, 409, -32000, "Conflict: this stream is already open on another connection");
        return;
    }
    start_sse(c);
    flush(c);
}

/* ---- DELETE ----------------------------------------------------------------------------------- */

typedef struct end_ctx {
    wake_msg *w[MAX_STREAMS_KEPT + 1];
    int n;
} end_ctx;

void pk_mcp_http_delete(pk_req *r)
{
    if (!check_common(r)) return;
    pk_mcp_session *s = session_of(r);
    if (!s) return;
    pk_mcp_session_end(s);
    /* open streams end: detach their consumers and let their loops finish the responses */
    end_ctx x = {.n = 0};
    pthread_mutex_lock(&s->mu);
    for (mcp_stream *st = state(s)->streams; st && x.n < MAX_STREAMS_KEPT + 1; st = st->next)
        if (st->c && !st->json_mode) {
            st->ended = true;
            st->pending = 0;
            x.w[x.n] = wake_locked(s, st);
            if (x.w[x.n]) x.n++;
        }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < x.n; i++)
        wake_post(x.w[i]);
    pk_mcp_session_unref(s);
    pk_respond_empty(r, 204);
}
