/*
 * The MCP dispatcher: sessions, JSON-RPC message handling, lifecycle and the methods of the protocol.
 *
 * A message is validated and routed on the thread that received it. Methods that need no blocking work
 * (initialize, ping, lists of static tables, logging/setLevel, completion, subscriptions, fixture tools)
 * are answered inline; those that touch the store become a pk_mcp_call whose work the transport runs on
 * a worker. The dispatcher never blocks and never knows which transport carries a session: it talks to
 * it through pk_mcp_transport (send a message, run work, close a stream).
 *
 * Lifecycle: before `initialize` only initialize and ping are accepted; initialize negotiates the
 * revision (the client's when supported, else the latest) and records the client's capabilities.
 * Batches (JSON arrays) exist only in 2025-03-26; the transports check the negotiated revision.
 */
#include "core/clock.h"
#include "core/id.h"
#include "core/log.h"
#include "foundation/metrics.h"
#include "mcp/mcp_internal.h"
#include "server/services.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const VERSIONS[] = {"2025-11-25", "2025-06-18", "2025-03-26"};
const char *const pk_mcp_log_levels[] = {"debug",    "info",  "notice",    "warning", "error",
                                         "critical", "alert", "emergency", NULL};
#define LIST_PAGE 50
#define MAX_SESSIONS_DEFAULT 1000
#define SESSION_IDLE_S_DEFAULT 3600

typedef struct mcp_outbound {
    struct mcp_outbound *next;
    uint64_t id;
    bool done, ok;
    pk_buf result;
} mcp_outbound;

static pk_mcp_hub g_hub;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void hub_once(void)
{
    pthread_mutex_init(&g_hub.mu, NULL);
}

static void on_note_changed(void *ud, const char *id)
{
    pk_mcp_note_changed(id, true);
}

void pk_mcp_init(pk_server *srv, bool fixtures)
{
    pthread_once(&g_once, hub_once);
    g_hub.srv = srv;
    g_hub.fixtures = fixtures;
    g_hub.max_sessions = MAX_SESSIONS_DEFAULT;
    g_hub.session_idle_ns = (int64_t)SESSION_IDLE_S_DEFAULT * 1000000000;
    if (srv && srv->svc && !g_hub.m_requests) {
        pk_metrics *m = pk_services_metrics(srv);
        const char *l[] = {"method", "tool", "outcome"};
        g_hub.m_requests = pk_metrics_counter(m, "pake_mcp_requests_total",
                                              "MCP requests answered, by method and tool.", 3, l);
        g_hub.m_duration = pk_metrics_histogram(m, "pake_mcp_request_duration_seconds",
                                                "MCP request duration, by method and tool.", 2, l,
                                                pk_metrics_latency_buckets, pk_metrics_latency_buckets_len);
        pk_services_on_note_changed(srv, on_note_changed, NULL);
    }
}

pk_mcp_hub *pk_mcp_hub_get(void)
{
    pthread_once(&g_once, hub_once);
    return &g_hub;
}

bool pk_mcp_version_supported(const char *v)
{
    for (size_t i = 0; i < sizeof VERSIONS / sizeof *VERSIONS; i++)
        if (!strcmp(v, VERSIONS[i])) return true;
    return false;
}

/* ---- sessions --------------------------------------------------------------------------------- */

static void session_free(pk_mcp_session *s)
{
    if (s->tx && s->tx->free_state) s->tx->free_state(s);
    for (int i = 0; i < s->nsubs; i++)
        free(s->subs[i]);
    while (s->outbound) {
        mcp_outbound *o = s->outbound;
        s->outbound = o->next;
        pk_buf_free(&o->result);
        free(o);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

/* Ends sessions idle for longer than the limit (table mutex held). Sessions with calls in flight or a
 * transport holding them (refs > 1) are not idle. */
static void expire_idle_locked(int64_t now)
{
    pk_mcp_session **pp = &g_hub.sessions;
    while (*pp) {
        pk_mcp_session *s = *pp;
        if (s->refs == 1 && now - s->last_active_ns > g_hub.session_idle_ns) {
            *pp = s->next;
            s->ended = true;
            g_hub.nsessions--;
            session_free(s);
            continue;
        }
        pp = &s->next;
    }
}

pk_mcp_session *pk_mcp_session_create(const pk_mcp_transport *tx, void *tx_state)
{
    pk_mcp_hub *h = pk_mcp_hub_get();
    pthread_mutex_lock(&h->mu);
    int64_t now = pk_mono_ns();
    if (h->nsessions >= h->max_sessions) expire_idle_locked(now);
    if (h->nsessions >= h->max_sessions) {
        pthread_mutex_unlock(&h->mu);
        return NULL;
    }
    pk_mcp_session *s = calloc(1, sizeof *s);
    unsigned char rnd[32];
    pk_random_bytes(rnd, sizeof rnd);
    pk_hex(rnd, sizeof rnd, s->id);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->tx = tx;
    s->tx_state = tx_state;
    s->refs = 2; /* the table's and the caller's */
    s->last_active_ns = now;
    s->log_level = 1; /* info */
    snprintf(s->version, sizeof s->version, "%s", PK_MCP_LATEST_VERSION);
    s->next = h->sessions;
    h->sessions = s;
    h->nsessions++;
    pthread_mutex_unlock(&h->mu);
    return s;
}

pk_mcp_session *pk_mcp_session_find(const char *id, size_t n)
{
    pk_mcp_hub *h = pk_mcp_hub_get();
    pthread_mutex_lock(&h->mu);
    pk_mcp_session *s = h->sessions;
    for (; s; s = s->next)
        if (strlen(s->id) == n && !memcmp(s->id, id, n)) break;
    if (s) {
        s->refs++;
        s->last_active_ns = pk_mono_ns();
    }
    pthread_mutex_unlock(&h->mu);
    return s;
}

void pk_mcp_session_ref(pk_mcp_session *s)
{
    pthread_mutex_lock(&g_hub.mu);
    s->refs++;
    pthread_mutex_unlock(&g_hub.mu);
}

void pk_mcp_session_unref(pk_mcp_session *s)
{
    pthread_mutex_lock(&g_hub.mu);
    bool last = --s->refs == 0;
    if (!last) s->last_active_ns = pk_mono_ns();
    pthread_mutex_unlock(&g_hub.mu);
    if (last) session_free(s);
}

void pk_mcp_session_end(pk_mcp_session *s)
{
    pthread_mutex_lock(&g_hub.mu);
    bool was = s->ended;
    if (!was) {
        s->ended = true;
        for (pk_mcp_session **pp = &g_hub.sessions; *pp; pp = &(*pp)->next)
            if (*pp == s) {
                *pp = s->next;
                g_hub.nsessions--;
                break;
            }
    }
    pthread_mutex_unlock(&g_hub.mu);
    if (was) return;
    pthread_mutex_lock(&s->mu);
    for (pk_mcp_call *c = s->inflight; c; c = c->next)
        atomic_store(&c->cancelled, true);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pk_mcp_session_unref(s); /* the table's reference */
}

void pk_mcp_each_session(void (*fn)(pk_mcp_session *s, void *ud), void *ud)
{
    pk_mcp_hub *h = pk_mcp_hub_get();
    pthread_mutex_lock(&h->mu);
    for (pk_mcp_session *s = h->sessions; s; s = s->next)
        fn(s, ud);
    pthread_mutex_unlock(&h->mu);
}

void pk_mcp_shutdown(void)
{
    pk_mcp_hub *h = pk_mcp_hub_get();
    for (;;) {
        pthread_mutex_lock(&h->mu);
        pk_mcp_session *s = h->sessions;
        if (s) s->refs++;
        pthread_mutex_unlock(&h->mu);
        if (!s) break;
        pk_mcp_session_end(s);
        pk_mcp_session_unref(s);
    }
}

/* ---- JSON-RPC output -------------------------------------------------------------------------- */

void pk_mcp_write_result(pk_buf *out, const char *id_json, const char *result_json, size_t n)
{
    pk_buf_puts(out, "{\"jsonrpc\":\"2.0\",\"id\":");
    pk_buf_puts(out, id_json ? id_json : "null");
    pk_buf_puts(out, ",\"result\":");
    pk_buf_append(out, result_json, n);
    pk_buf_putc(out, '}');
}

void pk_mcp_write_error(pk_buf *out, const char *id_json, int code, const char *message,
                        const char *data_json)
{
    pk_buf_puts(out, "{\"jsonrpc\":\"2.0\",\"id\":");
    pk_buf_puts(out, id_json ? id_json : "null");
    pk_buf_printf(out, ",\"error\":{\"code\":%d,\"message\":\"", code);
    pk_json_escape(out, message, strlen(message));
    pk_buf_putc(out, '"');
    if (data_json) {
        pk_buf_puts(out, ",\"data\":");
        pk_buf_puts(out, data_json);
    }
    pk_buf_puts(out, "}}");
}

static char *json_text(const cJSON *v)
{
    pk_buf b = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &b);
    pk_jw_cjson(&w, v);
    return pk_buf_steal(&b, NULL);
}

static void metrics_observe(const char *method, const char *tool, const char *outcome, int64_t start_ns)
{
    if (!g_hub.m_requests) return;
    const char *l[] = {method, tool, outcome};
    pk_metric_counter_add(g_hub.m_requests, l, 3, 1);
    pk_metric_histogram_observe(g_hub.m_duration, l, 2, (double)(pk_mono_ns() - start_ns) / 1e9);
}

/* ---- calls ------------------------------------------------------------------------------------ */

static pk_mcp_call *call_new(pk_mcp_session *s, const cJSON *id, const char *method, const cJSON *params)
{
    pk_mcp_call *c = calloc(1, sizeof *c);
    c->s = s;
    c->id_json = json_text(id);
    snprintf(c->method, sizeof c->method, "%s", method);
    c->params = params ? cJSON_Duplicate(params, true) : NULL;
    const cJSON *meta = params ? cJSON_GetObjectItemCaseSensitive(params, "_meta") : NULL;
    const cJSON *pt = meta ? cJSON_GetObjectItemCaseSensitive(meta, "progressToken") : NULL;
    if (pt && (cJSON_IsString(pt) || cJSON_IsNumber(pt))) c->progress = json_text(pt);
    c->may_stream = true;
    c->start_ns = pk_mono_ns();
    int dl = g_hub.srv && g_hub.srv->svc ? pk_services_deadline_ms(g_hub.srv, PK_RC_MCP) : 10000;
    c->deadline_ns = c->start_ns + (int64_t)dl * 1000000;
    atomic_init(&c->cancelled, false);
    return c;
}

static void call_free(pk_mcp_call *c)
{
    if (c->free_data) c->free_data(c->data);
    cJSON_Delete(c->params);
    free(c->id_json);
    free(c->progress);
    free(c);
}

bool pk_mcp_call_cancelled(pk_mcp_call *c)
{
    return atomic_load(&c->cancelled);
}

static void call_send(pk_mcp_call *c, pk_buf *msg, bool final)
{
    c->s->tx->send(c->s, c, msg->data, msg->len, final);
}

void pk_mcp_call_reply(pk_mcp_call *c, const char *result_json, size_t n)
{
    if (c->replied) return;
    c->replied = true;
    bool cancelled = pk_mcp_call_cancelled(c);
    metrics_observe(c->method, c->tool, cancelled ? "cancelled" : "ok", c->start_ns);
    pk_buf b = PK_BUF_INIT;
    /* a cancelled request is not answered (the client forgot it); the transport still learns the
     * call is over through an empty final message */
    if (!cancelled) pk_mcp_write_result(&b, c->id_json, result_json, n);
    call_send(c, &b, true);
    pk_buf_free(&b);
}

void pk_mcp_call_error(pk_mcp_call *c, int code, const char *message, const char *data_json)
{
    if (c->replied) return;
    c->replied = true;
    bool cancelled = pk_mcp_call_cancelled(c);
    metrics_observe(c->method, c->tool, cancelled ? "cancelled" : "error", c->start_ns);
    pk_buf b = PK_BUF_INIT;
    if (!cancelled) pk_mcp_write_error(&b, c->id_json, code, message, data_json);
    call_send(c, &b, true);
    pk_buf_free(&b);
}

static void register_call(pk_mcp_call *c)
{
    pk_mcp_session *s = c->s;
    pk_mcp_session_ref(s);
    pthread_mutex_lock(&s->mu);
    c->next = s->inflight;
    s->inflight = c;
    s->ninflight++;
    pthread_mutex_unlock(&s->mu);
}

void pk_mcp_call_finish(pk_mcp_call *c)
{
    pk_mcp_session *s = c->s;
    if (!c->replied) pk_mcp_call_error(c, -32603, "the request ended without a result", NULL);
    pthread_mutex_lock(&s->mu);
    for (pk_mcp_call **pp = &s->inflight; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            s->ninflight--;
            break;
        }
    pthread_mutex_unlock(&s->mu);
    call_free(c);
    pk_mcp_session_unref(s);
}

void pk_mcp_call_start(pk_mcp_call *c)
{
    if (!c->s->tx->run(c->s, c)) {
        pk_mcp_call_error(c, -32000, "the server is overloaded; try again shortly", NULL);
        pk_mcp_call_finish(c);
    }
}

bool pk_mcp_call_sleep(pk_mcp_call *c, int ms)
{
    for (int t = 0; t < ms; t += 10) {
        if (pk_mcp_call_cancelled(c)) return false;
        usleep(10000);
    }
    return !pk_mcp_call_cancelled(c);
}

void pk_mcp_call_progress(pk_mcp_call *c, double progress, double total, const char *message)
{
    if (!c->progress || pk_mcp_call_cancelled(c)) return;
    pk_buf b = PK_BUF_INIT;
    pk_buf_printf(
        &b,
        "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":%s,"
        "\"progress\":%.17g,\"total\":%.17g",
        c->progress, progress, total);
    if (message) {
        pk_buf_puts(&b, ",\"message\":\"");
        pk_json_escape(&b, message, strlen(message));
        pk_buf_putc(&b, '"');
    }
    pk_buf_puts(&b, "}}");
    call_send(c, &b, false);
    pk_buf_free(&b);
}

static int level_index(const char *l)
{
    for (int i = 0; pk_mcp_log_levels[i]; i++)
        if (!strcmp(pk_mcp_log_levels[i], l)) return i;
    return -1;
}

void pk_mcp_log(pk_mcp_session *s, pk_mcp_call *c, const char *level, const char *logger,
                const char *data_json)
{
    pthread_mutex_lock(&s->mu);
    int min = s->log_level;
    pthread_mutex_unlock(&s->mu);
    if (level_index(level) < min) return;
    pk_buf b = PK_BUF_INIT;
    pk_buf_printf(
        &b, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"%s\"", level);
    if (logger) pk_buf_printf(&b, ",\"logger\":\"%s\"", logger);
    pk_buf_printf(&b, ",\"data\":%s}}", data_json);
    s->tx->send(s, c, b.data, b.len, false);
    pk_buf_free(&b);
}

bool pk_mcp_call_ask(pk_mcp_call *c, const char *method, const char *params_json, int timeout_ms,
                     pk_buf *result)
{
    pk_mcp_session *s = c->s;
    mcp_outbound *o = calloc(1, sizeof *o);
    pthread_mutex_lock(&s->mu);
    o->id = ++s->next_out_id;
    o->next = s->outbound;
    s->outbound = o;
    pthread_mutex_unlock(&s->mu);
    pk_buf b = PK_BUF_INIT;
    pk_buf_printf(&b, "{\"jsonrpc\":\"2.0\",\"id\":\"srv-%llu\",\"method\":\"%s\",\"params\":%s}",
                  (unsigned long long)o->id, method, params_json);
    call_send(c, &b, false);
    pk_buf_free(&b);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    while (!o->done && rc == 0 && !pk_mcp_call_cancelled(c) &&
           !(g_hub.srv && atomic_load(&g_hub.srv->stopping))) {
        /* wake up regularly to notice cancellation and shutdown */
        struct timespec step;
        clock_gettime(CLOCK_REALTIME, &step);
        step.tv_nsec += 100000000;
        if (step.tv_nsec >= 1000000000) step.tv_sec++, step.tv_nsec -= 1000000000;
        if (step.tv_sec > until.tv_sec || (step.tv_sec == until.tv_sec && step.tv_nsec > until.tv_nsec))
            step = until;
        rc = pthread_cond_timedwait(&s->cv, &s->mu, &step);
        if (rc != 0) {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            if (now.tv_sec < until.tv_sec || (now.tv_sec == until.tv_sec && now.tv_nsec < until.tv_nsec))
                rc = 0;
        }
    }
    bool ok = o->done && o->ok;
    if (o->done)
        pk_buf_append(result, o->result.data ? o->result.data : "", o->result.len);
    else
        pk_buf_puts(result, pk_mcp_call_cancelled(c) ? "cancelled" : "the client did not answer in time");
    for (mcp_outbound **pp = &s->outbound; *pp; pp = &(*pp)->next)
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    pthread_mutex_unlock(&s->mu);
    pk_buf_free(&o->result);
    free(o);
    return ok;
}

/* A response from the client to one of our requests. */
static void handle_response(pk_mcp_session *s, const cJSON *msg)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "id");
    if (!cJSON_IsString(id) || strncmp(id->valuestring, "srv-", 4)) return;
    uint64_t n = strtoull(id->valuestring + 4, NULL, 10);
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(msg, "result");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(msg, "error");
    pthread_mutex_lock(&s->mu);
    for (mcp_outbound *o = s->outbound; o; o = o->next)
        if (o->id == n && !o->done) {
            o->done = true;
            o->ok = res != NULL;
            char *t = json_text(res ? res : err);
            pk_buf_puts(&o->result, t);
            free(t);
            pthread_cond_broadcast(&s->cv);
            break;
        }
    pthread_mutex_unlock(&s->mu);
}

/* ---- notifications from the store side -------------------------------------------------------- */

typedef struct changed_ctx {
    char uri[64];
    bool list;
    pk_mcp_session *hits[64];
    int n;
} changed_ctx;

static void collect(pk_mcp_session *s, void *ud)
{
    changed_ctx *x = ud;
    if (x->n >= (int)(sizeof x->hits / sizeof *x->hits) || !s->initialize_seen) return;
    s->refs++; /* table mutex held by pk_mcp_each_session */
    x->hits[x->n++] = s;
}

static void notify_session(pk_mcp_session *s, const changed_ctx *x)
{
    pthread_mutex_lock(&s->mu);
    bool sub = false;
    for (int i = 0; i < s->nsubs && !sub; i++)
        sub = !strcmp(s->subs[i], x->uri);
    pthread_mutex_unlock(&s->mu);
    pk_buf b = PK_BUF_INIT;
    if (sub) {
        pk_buf_printf(
            &b,
            "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/updated\",\"params\":{\"uri\":"
            "\"%s\"}}",
            x->uri);
        s->tx->send(s, NULL, b.data, b.len, false);
    }
    if (x->list) {
        pk_buf_reset(&b);
        pk_buf_puts(&b, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/list_changed\"}");
        s->tx->send(s, NULL, b.data, b.len, false);
    }
    pk_buf_free(&b);
}

void pk_mcp_note_changed(const char *id, bool created_or_deleted)
{
    if (!id || !*id) return;
    changed_ctx x = {.list = created_or_deleted};
    snprintf(x.uri, sizeof x.uri, "pake://notes/%s", id);
    for (;;) {
        x.n = 0;
        pk_mcp_each_session(collect, &x);
        for (int i = 0; i < x.n; i++) {
            notify_session(x.hits[i], &x);
            pk_mcp_session_unref(x.hits[i]);
        }
        break;
    }
}

/* ---- pagination of static tables ------------------------------------------------------------- */

/* Cursor of a static list: "<kind>.<offset>" (opaque to clients). */
static bool page_start(const cJSON *params, const char *kind, size_t *off)
{
    *off = 0;
    const cJSON *cur = params ? cJSON_GetObjectItemCaseSensitive(params, "cursor") : NULL;
    if (!cur || cJSON_IsNull(cur)) return true;
    if (!cJSON_IsString(cur)) return false;
    size_t kl = strlen(kind);
    const char *v = cur->valuestring;
    if (strncmp(v, kind, kl) || v[kl] != '.') return false;
    char *end;
    unsigned long long o = strtoull(v + kl + 1, &end, 10);
    if (*end || end == v + kl + 1 || o > 100000) return false;
    *off = (size_t)o;
    return true;
}

static void page_end(pk_jw *w, const char *kind, size_t next, size_t total)
{
    if (next >= total) return;
    char b[48];
    snprintf(b, sizeof b, "%s.%zu", kind, next);
    pk_jw_key(w, "nextCursor");
    pk_jw_str(w, b);
}

/* ---- method handlers -------------------------------------------------------------------------- */

typedef struct ctx {
    pk_mcp_session *s;
    const cJSON *id;
    char *id_json;
    const cJSON *params;
    pk_req *r;
    pk_buf *out;
    pk_mcp_call **call;
    const char *method;
} ctx;

static pk_mcp_outcome rpc_error(ctx *x, int code, const char *msg)
{
    pk_mcp_write_error(x->out, x->id_json, code, msg, NULL);
    return PK_MCP_ANSWERED;
}

static pk_mcp_outcome rpc_result(ctx *x, const char *json, size_t n)
{
    pk_mcp_write_result(x->out, x->id_json, json, n);
    return PK_MCP_ANSWERED;
}

static pk_mcp_outcome m_initialize(ctx *x)
{
    const cJSON *pv = x->params ? cJSON_GetObjectItemCaseSensitive(x->params, "protocolVersion") : NULL;
    const cJSON *caps = x->params ? cJSON_GetObjectItemCaseSensitive(x->params, "capabilities") : NULL;
    if (!cJSON_IsString(pv) || (caps && !cJSON_IsObject(caps)))
        return rpc_error(x, -32602,
                         "initialize needs params.protocolVersion (string) and capabilities (object)");
    pk_mcp_session *s = x->s;
    pthread_mutex_lock(&s->mu);
    snprintf(s->version, sizeof s->version, "%s",
             pk_mcp_version_supported(pv->valuestring) ? pv->valuestring : PK_MCP_LATEST_VERSION);
    s->cap_sampling = caps && cJSON_GetObjectItemCaseSensitive(caps, "sampling");
    s->cap_elicitation = caps && cJSON_GetObjectItemCaseSensitive(caps, "elicitation");
    s->initialize_seen = true;
    char version[16];
    memcpy(version, s->version, sizeof version);
    pthread_mutex_unlock(&s->mu);
    pk_buf b = PK_BUF_INIT;
    pk_buf_printf(
        &b,
        "{\"protocolVersion\":\"%s\",\"capabilities\":{\"tools\":{\"listChanged\":false},"
        "\"resources\":{\"subscribe\":true,\"listChanged\":true},\"prompts\":{\"listChanged\":false},"
        "\"logging\":{},\"completions\":{}},"
        "\"serverInfo\":{\"name\":\"pake\",\"title\":\"PAKE knowledge engine\",\"version\":\"%s\"},"
        "\"instructions\":\"PAKE is a knowledge base of notes. Use search_notes to find notes, "
        "get_note_by_id or the pake://notes/{id} resources to read them, notes_from_schema to "
        "create one, update_note, link_notes and delete_note to change them.\"}",
        version, PAKE_VERSION);
    rpc_result(x, b.data, b.len);
    pk_buf_free(&b);
    return PK_MCP_ANSWERED;
}

static void write_tool(pk_jw *w, const mcp_tool *t)
{
    pk_jw_obj_open(w);
    pk_jw_key(w, "name");
    pk_jw_str(w, t->name);
    if (t->title) {
        pk_jw_key(w, "title");
        pk_jw_str(w, t->title);
    }
    pk_jw_key(w, "description");
    pk_jw_str(w, t->description);
    pk_jw_key(w, "inputSchema");
    pk_jw_raw(w, t->input_schema, strlen(t->input_schema));
    if (t->output_schema) {
        pk_jw_key(w, "outputSchema");
        pk_jw_raw(w, t->output_schema, strlen(t->output_schema));
    }
    if (t->annotations) {
        pk_jw_key(w, "annotations");
        pk_jw_raw(w, t->annotations, strlen(t->annotations));
    }
    pk_jw_obj_close(w);
}

static size_t ntools(void)
{
    return pk_mcp_tools_count + (g_hub.fixtures ? pk_mcp_fixture_tools_count : 0);
}
static const mcp_tool *tool_at(size_t i)
{
    return i < pk_mcp_tools_count ? &pk_mcp_tools[i] : &pk_mcp_fixture_tools[i - pk_mcp_tools_count];
}
static size_t nprompts(void)
{
    return pk_mcp_prompts_count + (g_hub.fixtures ? pk_mcp_fixture_prompts_count : 0);
}
static const mcp_prompt *prompt_at(size_t i)
{
    return i < pk_mcp_prompts_count ? &pk_mcp_prompts[i] : &pk_mcp_fixture_prompts[i - pk_mcp_prompts_count];
}

static pk_mcp_outcome m_tools_list(ctx *x)
{
    size_t off;
    if (!page_start(x->params, "tools", &off)) return rpc_error(x, -32602, "invalid cursor");
    pk_buf b = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &b);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "tools");
    pk_jw_arr_open(&w);
    size_t n = ntools(), i = off;
    for (; i < n && i < off + LIST_PAGE; i++)
        write_tool(&w, tool_at(i));
    pk_jw_arr_close(&w);
    page_end(&w, "tools", i, n);
    pk_jw_obj_close(&w);
    rpc_result(x, b.data, b.len);
    pk_buf_free(&b);
    return PK_MCP_ANSWERED;
}

static pk_mcp_outcome m_prompts_list(ctx *x)
{
    size_t off;
    if (!page_start(x->params, "prompts", &off)) return rpc_error(x, -32602, "invalid cursor");
    pk_buf b = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &b);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "prompts");
    pk_jw_arr_open(&w);
    size_t n = nprompts(), i = off;
    for (; i < n && i < off + LIST_PAGE; i++) {
        const mcp_prompt *p = prompt_at(i);
        pk_jw_obj_open(&w);
        pk_jw_key(&w, "name");
        pk_jw_str(&w, p->name);
        if (p->title) {
            pk_jw_key(&w, "title");
            pk_jw_str(&w, p->title);
        }
        pk_jw_key(&w, "description");
        pk_jw_str(&w, p->description);
        pk_jw_key(&w, "arguments");
        pk_jw_raw(&w, p->arguments, strlen(p->arguments));
        pk_jw_obj_close(&w);
    }
    pk_jw_arr_close(&w);
    page_end(&w, "prompts", i, n);
    pk_jw_obj_close(&w);
    rpc_result(x, b.data, b.len);
    pk_buf_free(&b);
    return PK_MCP_ANSWERED;
}

static pk_mcp_outcome m_templates_list(ctx *x)
{
    size_t off;
    if (!page_start(x->params, "templates", &off)) return rpc_error(x, -32602, "invalid cursor");
    static const char *const T[] = {
        "{\"uriTemplate\":\"pake://notes/{id}\",\"name\":\"note\",\"title\":\"PAKE "
        "note\",\"description\":\"A note "
        "of the knowledge base as Markdown with YAML front matter (id: the note's UUID).\",\"mimeType\":"
        "\"text/markdown\"}",
        "{\"uriTemplate\":\"test://template/{id}/"
        "data\",\"name\":\"template-data\",\"description\":\"Conformance "
        "fixture: data for an id.\",\"mimeType\":\"application/json\"}"};
    size_t n = g_hub.fixtures ? 2 : 1, i = off;
    pk_buf b = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &b);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "resourceTemplates");
    pk_jw_arr_open(&w);
    for (; i < n && i < off + LIST_PAGE; i++)
        pk_jw_raw(&w, T[i], strlen(T[i]));
    pk_jw_arr_close(&w);
    page_end(&w, "templates", i, n);
    pk_jw_obj_close(&w);
    rpc_result(x, b.data, b.len);
    pk_buf_free(&b);
    return PK_MCP_ANSWERED;
}

static pk_mcp_call *make_call(ctx *x)
{
    pk_mcp_call *c = call_new(x->s, x->id, x->method, x->params);
    if (x->r) {
        snprintf(c->principal, sizeof c->principal, "%s", x->r->principal);
        snprintf(c->request_id, sizeof c->request_id, "%s", x->r->request_id);
    }
    return c;
}

static pk_mcp_outcome go_async(ctx *x, pk_mcp_call *c)
{
    register_call(c);
    *x->call = c;
    return PK_MCP_ASYNC;
}

/* resources/list: the fixture resources (first page only) and then the notes, newest first, with the
 * store's keyset cursor. */
static pk_mcp_outcome m_resources_list(ctx *x)
{
    const cJSON *cur = x->params ? cJSON_GetObjectItemCaseSensitive(x->params, "cursor") : NULL;
    if (cur && !cJSON_IsNull(cur) && (!cJSON_IsString(cur) || strncmp(cur->valuestring, "n.", 2)))
        return rpc_error(x, -32602, "invalid cursor");
    pk_mcp_call *c = make_call(x);
    c->work = pk_mcp_notes_list_work;
    return go_async(x, c);
}

static bool fixture_resource_read(const char *uri, pk_buf *contents)
{
    if (!g_hub.fixtures) return false;
    for (size_t i = 0; i < pk_mcp_fixture_resources_count; i++) {
        const mcp_resource *f = &pk_mcp_fixture_resources[i];
        if (strcmp(f->uri, uri)) continue;
        pk_jw w;
        pk_jw_init(&w, contents);
        pk_jw_obj_open(&w);
        pk_jw_key(&w, "contents");
        pk_jw_arr_open(&w);
        pk_jw_obj_open(&w);
        pk_jw_key(&w, "uri");
        pk_jw_str(&w, f->uri);
        pk_jw_key(&w, "mimeType");
        pk_jw_str(&w, f->mime);
        pk_jw_key(&w, f->text ? "text" : "blob");
        pk_jw_str(&w, f->text ? f->text : f->blob);
        pk_jw_obj_close(&w);
        pk_jw_arr_close(&w);
        pk_jw_obj_close(&w);
        return true;
    }
    return pk_mcp_fixture_template_read(uri, contents);
}

static pk_mcp_outcome m_resources_read(ctx *x)
{
    const cJSON *uri = x->params ? cJSON_GetObjectItemCaseSensitive(x->params, "uri") : NULL;
    if (!cJSON_IsString(uri)) return rpc_error(x, -32602, "resources/read needs params.uri (string)");
    pk_buf b = PK_BUF_INIT;
    if (fixture_resource_read(uri->valuestring, &b)) {
        rpc_result(x, b.data, b.len);
        pk_buf_free(&b);
        return PK_MCP_ANSWERED;
    }
    pk_buf_free(&b);
    char id[37];
    if (!pk_mcp_note_uri(uri->valuestring, id)) {
        pk_buf_printf(&b, "{\"uri\":\"");
        pk_json_escape(&b, uri->valuestring, strlen(uri->valuestring));
        pk_buf_puts(&b, "\"}");
        pk_mcp_write_error(x->out, x->id_json, -32002, "resource not found", b.data);
        pk_buf_free(&b);
        return PK_MCP_ANSWERED;
    }
    pk_mcp_call *c = make_call(x);
    c->data = strdup(id);
    c->free_data = free;
    c->work = pk_mcp_note_read_work;
    return go_async(x, c);
}

static pk_mcp_outcome m_subscribe(ctx *x, bool on)
{
    const cJSON *uri = x->params ? cJSON_GetObjectItemCaseSensitive(x->params, "uri") : NULL;
    if (!cJSON_IsString(uri) || !*uri->valuestring || strlen(uri->valuestring) > 512)
        return rpc_error(x, -32602, "params.uri must be a resource URI");
    pk_mcp_session *s = x->s;
    pthread_mutex_lock(&s->mu);
    int at = -1;
    for (int i = 0; i < s->nsubs; i++)
        if (!strcmp(s->subs[i], uri->valuestring)) at = i;
    bool full = false;
    if (on && at < 0) {
        if (s->nsubs < PK_MCP_MAX_SUBSCRIPTIONS)
            s->subs[s->nsubs++] = strdup(uri->valuestring);
        else
            full = true;
    } else if (!on && at >= 0) {
        free(s->subs[at]);
        s->subs[at] = s->subs[--s->nsubs];
    }
    pthread_mutex_unlock(&s->mu);
    if (full) return rpc_error(x, -32602, "too many subscriptions in this session (max 256)");
    return rpc_result(x, "{}", 2);
}

static pk_mcp_outcome m_set_level(ctx *x)
{
    const cJSON *l = x->params ? cJSON_GetObjectItemCaseSensitive(x->params, "level") : NULL;
    int i = cJSON_IsString(l) ? level_index(l->valuestring) : -1;
    if (i < 0)
        return rpc_error(x, -32602,
                         "params.level must be one of debug, info, notice, warning, error, "
                         "critical, alert, emergency");
    pthread_mutex_lock(&x->s->mu);
    x->s->log_level = i;
    pthread_mutex_unlock(&x->s->mu);
    return rpc_result(x, "{}", 2);
}

/* completion/complete: argument values that start with the typed prefix. */
static pk_mcp_outcome m_complete(ctx *x)
{
    const cJSON *ref = x->params ? cJSON_GetObjectItemCaseSensitive(x->params, "ref") : NULL;
    const cJSON *arg = x->params ? cJSON_GetObjectItemCaseSensitive(x->params, "argument") : NULL;
    const cJSON *rt = ref ? cJSON_GetObjectItemCaseSensitive(ref, "type") : NULL;
    const cJSON *an = arg ? cJSON_GetObjectItemCaseSensitive(arg, "name") : NULL;
    const cJSON *av = arg ? cJSON_GetObjectItemCaseSensitive(arg, "value") : NULL;
    if (!cJSON_IsString(rt) || !cJSON_IsString(an) || !cJSON_IsString(av))
        return rpc_error(x, -32602, "completion/complete needs ref.type, argument.name and argument.value");
    static const char *const TOPICS[] = {"architecture", "decisions", "incidents",
                                         "research",     "security",  NULL};
    static const char *const FIX[] = {"paris", "park", "party", NULL};
    const char *const *cands = NULL;
    if (!strcmp(rt->valuestring, "ref/prompt")) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(ref, "name");
        if (!cJSON_IsString(nm)) return rpc_error(x, -32602, "ref.name is required for ref/prompt");
        bool known = false;
        for (size_t i = 0; i < nprompts(); i++)
            known |= !strcmp(prompt_at(i)->name, nm->valuestring);
        if (!known) return rpc_error(x, -32602, "unknown prompt");
        if (!strcmp(nm->valuestring, "research_brief") && !strcmp(an->valuestring, "topic")) cands = TOPICS;
        if (!strcmp(nm->valuestring, "test_prompt_with_arguments")) cands = FIX;
    } else if (strcmp(rt->valuestring, "ref/resource"))
        return rpc_error(x, -32602, "ref.type must be ref/prompt or ref/resource");
    pk_buf b = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &b);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "completion");
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "values");
    pk_jw_arr_open(&w);
    int n = 0;
    for (int i = 0; cands && cands[i]; i++)
        if (!strncmp(cands[i], av->valuestring, strlen(av->valuestring))) {
            pk_jw_str(&w, cands[i]);
            n++;
        }
    pk_jw_arr_close(&w);
    pk_jw_key(&w, "total");
    pk_jw_int(&w, n);
    pk_jw_key(&w, "hasMore");
    pk_jw_bool(&w, false);
    pk_jw_obj_close(&w);
    pk_jw_obj_close(&w);
    rpc_result(x, b.data, b.len);
    pk_buf_free(&b);
    return PK_MCP_ANSWERED;
}

static const mcp_tool *find_tool(const char *name)
{
    for (size_t i = 0; i < ntools(); i++)
        if (!strcmp(tool_at(i)->name, name)) return tool_at(i);
    return NULL;
}

static pk_mcp_outcome m_tools_call(ctx *x)
{
    const cJSON *name = x->params ? cJSON_GetObjectItemCaseSensitive(x->params, "name") : NULL;
    const cJSON *args = x->params ? cJSON_GetObjectItemCaseSensitive(x->params, "arguments") : NULL;
    if (!cJSON_IsString(name)) return rpc_error(x, -32602, "tools/call needs params.name (string)");
    if (args && !cJSON_IsNull(args) && !cJSON_IsObject(args))
        return rpc_error(x, -32602, "params.arguments must be an object");
    const mcp_tool *t = find_tool(name->valuestring);
    if (!t) {
        pk_buf m = PK_BUF_INIT;
        pk_buf_puts(&m, "unknown tool: ");
        pk_buf_append(&m, name->valuestring, strnlen(name->valuestring, 64));
        rpc_error(x, -32602, m.data);
        pk_buf_free(&m);
        return PK_MCP_ANSWERED;
    }
    cJSON *empty = cJSON_CreateObject();
    const cJSON *a = cJSON_IsObject(args) ? args : empty;
    pk_mcp_call *c = make_call(x);
    snprintf(c->tool, sizeof c->tool, "%s", t->name);
    c->may_stream = !t->result_only || c->progress;
    pk_buf res = PK_BUF_INIT;
    pk_err *e = pk_mcp_guard_strings(x->r, PK_SURFACE_TOOL_ARGUMENT, "arguments", a);
    if (!e) e = t->prepare(c, a, x->r, &res);
    cJSON_Delete(empty);
    if (!e && c->work) return go_async(x, c);
    if (e) {
        pk_buf_reset(&res);
        pk_mcp_tool_error_result(&res, e);
        pk_err_free(e);
    }
    metrics_observe(c->method, c->tool, e ? "tool_error" : "ok", c->start_ns);
    rpc_result(x, res.data, res.len);
    pk_buf_free(&res);
    call_free(c);
    return PK_MCP_ANSWERED;
}

static pk_mcp_outcome m_prompts_get(ctx *x)
{
    const cJSON *name = x->params ? cJSON_GetObjectItemCaseSensitive(x->params, "name") : NULL;
    const cJSON *args = x->params ? cJSON_GetObjectItemCaseSensitive(x->params, "arguments") : NULL;
    if (!cJSON_IsString(name)) return rpc_error(x, -32602, "prompts/get needs params.name (string)");
    if (args && !cJSON_IsNull(args) && !cJSON_IsObject(args))
        return rpc_error(x, -32602, "params.arguments must be an object");
    const mcp_prompt *p = NULL;
    for (size_t i = 0; i < nprompts() && !p; i++)
        if (!strcmp(prompt_at(i)->name, name->valuestring)) p = prompt_at(i);
    if (!p) return rpc_error(x, -32602, "unknown prompt");
    for (const cJSON *v = cJSON_IsObject(args) ? args->child : NULL; v; v = v->next)
        if (!cJSON_IsString(v)) return rpc_error(x, -32602, "prompt arguments must be strings");
    cJSON *empty = cJSON_CreateObject();
    const cJSON *a = cJSON_IsObject(args) ? args : empty;
    pk_mcp_call *c = make_call(x);
    pk_buf res = PK_BUF_INIT;
    pk_err *e = pk_mcp_guard_strings(x->r, PK_SURFACE_PROMPT_ARGUMENT, "arguments", a);
    if (!e) e = p->get(c, a, x->r, &res);
    cJSON_Delete(empty);
    if (!e && c->work) {
        pk_buf_free(&res);
        return go_async(x, c);
    }
    if (e)
        rpc_error(x, -32602, e->message);
    else
        rpc_result(x, res.data, res.len);
    pk_err_free(e);
    pk_buf_free(&res);
    call_free(c);
    return PK_MCP_ANSWERED;
}

static void m_cancelled(pk_mcp_session *s, const cJSON *params)
{
    const cJSON *rid = params ? cJSON_GetObjectItemCaseSensitive(params, "requestId") : NULL;
    if (!rid || !(cJSON_IsString(rid) || cJSON_IsNumber(rid))) return;
    char *want = json_text(rid);
    pthread_mutex_lock(&s->mu);
    for (pk_mcp_call *c = s->inflight; c; c = c->next)
        if (!strcmp(c->id_json, want) && strcmp(c->method, "initialize")) atomic_store(&c->cancelled, true);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    free(want);
}

/* ---- the entry point -------------------------------------------------------------------------- */

static bool valid_id(const cJSON *id)
{
    if (cJSON_IsString(id)) return true;
    /* integers only, within the exactly representable range (the cast is undefined outside it) */
    return cJSON_IsNumber(id) && id->valuedouble >= -9007199254740991.0 &&
           id->valuedouble <= 9007199254740991.0 && id->valuedouble == (double)(int64_t)id->valuedouble;
}

pk_mcp_outcome pk_mcp_handle(pk_mcp_session *s, const cJSON *msg, pk_req *r, pk_buf *out, pk_mcp_call **call)
{
    *call = NULL;
    int64_t t0 = pk_mono_ns();
    if (!cJSON_IsObject(msg)) {
        pk_mcp_write_error(out, NULL, -32600, "a JSON-RPC message must be an object", NULL);
        return PK_MCP_ANSWERED;
    }
    const cJSON *jv = cJSON_GetObjectItemCaseSensitive(msg, "jsonrpc");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "id");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(msg, "method");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(msg, "params");
    bool has_id = id != NULL;
    char *id_json = has_id && valid_id(id) ? json_text(id) : NULL;
    ctx x = {s, id,  id_json, params,
             r, out, call,    method && cJSON_IsString(method) ? method->valuestring : ""};
    pk_mcp_outcome oc = PK_MCP_HANDLED;
    if (!cJSON_IsString(jv) || strcmp(jv->valuestring, "2.0")) {
        oc = rpc_error(&x, -32600, "jsonrpc must be \"2.0\"");
        goto done;
    }
    if (!method) {
        /* a response to one of our requests */
        if (has_id && (cJSON_GetObjectItemCaseSensitive(msg, "result") ||
                       cJSON_GetObjectItemCaseSensitive(msg, "error")))
            handle_response(s, msg);
        else
            oc = rpc_error(&x, -32600, "a message needs a method, or a result or error");
        goto done;
    }
    if (!cJSON_IsString(method) || (has_id && !id_json) || (params && !cJSON_IsObject(params))) {
        oc = rpc_error(&x, -32600,
                       "invalid request: method must be a string, id a string or integer, params "
                       "an object");
        goto done;
    }
    const char *m = method->valuestring;
    if (!has_id) { /* notifications never get an answer */
        if (!strcmp(m, "notifications/initialized")) {
            pthread_mutex_lock(&s->mu);
            s->initialized = true;
            pthread_mutex_unlock(&s->mu);
        } else if (!strcmp(m, "notifications/cancelled"))
            m_cancelled(s, params);
        goto done;
    }
    pthread_mutex_lock(&s->mu);
    bool init_seen = s->initialize_seen;
    int inflight = s->ninflight;
    pthread_mutex_unlock(&s->mu);
    if (!strcmp(m, "initialize")) {
        oc = m_initialize(&x);
        goto done;
    }
    if (!strcmp(m, "ping")) {
        oc = rpc_result(&x, "{}", 2);
        goto done;
    }
    if (!init_seen) {
        oc = rpc_error(&x, -32600, "the session is not initialized: send initialize first");
        goto done;
    }
    if (inflight >= PK_MCP_MAX_INFLIGHT) {
        oc = rpc_error(&x, -32000, "too many requests in flight in this session");
        goto done;
    }
    if (!strcmp(m, "tools/list"))
        oc = m_tools_list(&x);
    else if (!strcmp(m, "tools/call"))
        oc = m_tools_call(&x);
    else if (!strcmp(m, "resources/list"))
        oc = m_resources_list(&x);
    else if (!strcmp(m, "resources/templates/list"))
        oc = m_templates_list(&x);
    else if (!strcmp(m, "resources/read"))
        oc = m_resources_read(&x);
    else if (!strcmp(m, "resources/subscribe"))
        oc = m_subscribe(&x, true);
    else if (!strcmp(m, "resources/unsubscribe"))
        oc = m_subscribe(&x, false);
    else if (!strcmp(m, "prompts/list"))
        oc = m_prompts_list(&x);
    else if (!strcmp(m, "prompts/get"))
        oc = m_prompts_get(&x);
    else if (!strcmp(m, "logging/setLevel"))
        oc = m_set_level(&x);
    else if (!strcmp(m, "completion/complete"))
        oc = m_complete(&x);
    else
        oc = rpc_error(&x, -32601, "method not found");
done:
    if (oc == PK_MCP_ANSWERED && strcmp(x.method, "tools/call"))
        metrics_observe(*x.method ? x.method : "invalid", "", "answered", t0);
    free(id_json);
    return oc;
}
