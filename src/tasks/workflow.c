/*
 * workflow.c: the workflow.trigger task type and the note-event triggers (docs/n8n.md).
 *
 *   workflow.trigger  {"workflow": NAME, "data": {...}}        event "manual" with the given data
 *                     {"workflow": NAME, "note_id": UUID}      event "manual" with the note
 *                     {"workflow": NAME, "event": "note.created"|"note.updated", "note_id": UUID,
 *                      "version": N}                           (enqueued by the triggers below)
 *
 * One attempt = one signed POST to the workflow's URL (net/webhook.h for the signature):
 *   {"event":..,"workflow":..,"note":{..}|"data":{..},"task_id":..,"attempt":n,"sent_at":"<rfc3339>"}
 * with headers X-Pake-Timestamp, X-Pake-Signature, X-Pake-Event, X-Pake-Delivery (the task id, the
 * same for every attempt: receivers deduplicate on it) and traceparent (the task's trace, a new span).
 * The note is read when the attempt runs, so a delivery carries the note as it is then.
 *
 * Outcomes: 2xx delivered; transport errors, 5xx and 429 are retryable (the task queue retries with
 * full-jitter backoff and dead-letters after max attempts, keeping every attempt's error); any other
 * status fails the task at once (n8n answers 404 for a webhook whose workflow is not active: retrying
 * will not help). The "n8n" circuit breaker sees transport errors and 5xx as failures, everything else
 * as success or ignored; while it is open an attempt fails at once (retryable) without a network call,
 * so a down n8n costs no worker time, only attempts.
 *
 * Triggers (--workflow-triggers): a note-change observer runs on the event-loop thread of the write
 * and must not block, so it only records (note id, the writing request's traceparent, created?) in a
 * small pending set, like the embed observer in tasks.c; a worker then reads the note (its version
 * tells created from updated when the change came without a request, e.g. over MCP) and enqueues one
 * workflow.trigger per subscribed workflow, with the idempotency key
 * "workflow:NAME:EVENT:NOTE:VERSION" so repeated notifications of one version deliver once. Changes
 * made through an inbound hook (POST /v1/hooks/{name}) trigger nothing: a workflow that writes back
 * would otherwise trigger itself forever.
 */
#include "core/clock.h"
#include "core/id.h"
#include "core/log.h"
#include "foundation/breaker.h"
#include "foundation/metrics.h"
#include "foundation/trace.h"
#include "net/httpc.h"
#include "net/webhook.h"
#include "server/server.h"
#include "server/services.h"
#include "tasks/tasks_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WF_PENDING_MAX 1024

typedef struct wf_pending {
    char id[37];
    char traceparent[PK_TRACEPARENT_LEN]; /* "" = none */
    bool created;
} wf_pending;

struct pk_workflows {
    pk_tasks *t;
    const pk_webhook_config *wc;
    pk_breaker *breaker; /* owned by the services' registry */
    pthread_mutex_t mu;
    wf_pending *pending;
    int npending;
    uint64_t dropped;
    pk_metric_family *m_deliveries, *m_duration, *m_triggered;
};

static bool has_triggers(const pk_workflows *wf)
{
    for (int e = 0; e < PK_WEBHOOK__EVENTS; e++)
        if (wf->wc->subscribers[e]) return true;
    return false;
}

/* ---- trigger observer (loop thread: never blocks) --------------------------------------------- */

static void on_note_changed(void *ud, const char *id)
{
    pk_workflows *wf = ud;
    if (!id || strlen(id) != 36) return;
    bool created = false;
    pk_req *r = pk_services_note_change_req(&created);
    if (r && r->route && !strncmp(r->route->pattern, "/v1/hooks/", 10)) return; /* no loops */
    char tp[PK_TRACEPARENT_LEN] = "";
    if (r) snprintf(tp, sizeof tp, "00-%s-%s-%02x", r->trace_id, r->span_id, r->sampled ? 1 : 0);
    pthread_mutex_lock(&wf->mu);
    int i = 0;
    while (i < wf->npending && memcmp(wf->pending[i].id, id, 37))
        i++;
    if (i < wf->npending) {
        wf->pending[i].created |= created; /* coalesced: the delivery reads the latest note anyway */
    } else if (wf->npending < WF_PENDING_MAX) {
        wf_pending *p = &wf->pending[wf->npending++];
        memcpy(p->id, id, 37);
        memcpy(p->traceparent, tp, sizeof tp);
        p->created = created;
    } else
        wf->dropped++;
    pthread_mutex_unlock(&wf->mu);
    pk_tasks_wake(wf->t);
}

static pk_op_ctx op_for(const char *request_id, int64_t timeout_ms)
{
    return (pk_op_ctx){
        .request_id = request_id, .principal = "task", .deadline_ns = pk_mono_ns() + timeout_ms * 1000000};
}

static void enqueue_for(pk_workflows *wf, const wf_pending *p, int64_t version)
{
    pk_webhook_event ev = p->created || version == 1 ? PK_WEBHOOK_NOTE_CREATED : PK_WEBHOOK_NOTE_UPDATED;
    uint64_t subs = wf->wc->subscribers[ev];
    pk_server *s = wf->t->srv;
    for (size_t i = 0; i < wf->wc->nworkflows; i++) {
        if (!(subs & (1ull << i))) continue;
        const char *name = wf->wc->workflows[i].name;
        pk_buf payload = PK_BUF_INIT, key = PK_BUF_INIT;
        pk_buf_printf(&payload, "{\"workflow\":\"%s\",\"event\":\"%s\",\"note_id\":\"%s\",\"version\":%lld}",
                      name, pk_webhook_event_name(ev), p->id, (long long)version);
        pk_buf_printf(&key, "workflow:%s:%s:%s:%lld", name, pk_webhook_event_name(ev), p->id,
                      (long long)version);
        pk_task_input in = {.type = "workflow.trigger",
                            .payload_json = payload.data,
                            .priority = PK_PRIO_NORMAL,
                            .idempotency_key = key.data,
                            .idem_ttl_ms = (int64_t)s->cfg.idempotency_ttl_s * 1000,
                            .trace_context = p->traceparent[0] ? p->traceparent : NULL};
        bool created = false;
        pk_err *e = pk_tasks_enqueue(wf->t, &in, NULL, &created);
        if (e) {
            pk_log_warn("workflow %s: cannot enqueue the %s trigger of note %s: %s", name,
                        pk_webhook_event_name(ev), p->id, e->message);
            pk_err_free(e);
        } else if (created)
            pk_metric_counter_add(wf->m_triggered, (const char *const[]){name, pk_webhook_event_name(ev)}, 2,
                                  1);
        pk_buf_free(&payload);
        pk_buf_free(&key);
    }
}

void pk_workflows_drain(pk_tasks *t)
{
    pk_workflows *wf = t->wf;
    if (!wf) return;
    for (;;) {
        wf_pending p;
        pthread_mutex_lock(&wf->mu);
        if (!wf->npending) {
            pthread_mutex_unlock(&wf->mu);
            return;
        }
        p = wf->pending[0]; /* oldest first: events of different notes keep their order */
        memmove(wf->pending, wf->pending + 1, sizeof *wf->pending * (size_t)--wf->npending);
        pthread_mutex_unlock(&wf->mu);
        pk_op_ctx op = op_for(p.id, 10000);
        pk_buf note = PK_BUF_INIT;
        int64_t version = 0;
        pk_err *e = pk_store_note_get(t->srv->store, &op, p.id, &note, &version);
        pk_buf_free(&note);
        if (e) {
            if (!pk_err_is(e, "not_found")) /* a deleted note has nothing to deliver */
                pk_log_warn("workflow triggers: cannot read note %s: %s", p.id, e->message);
            pk_err_free(e);
            continue;
        }
        enqueue_for(wf, &p, version);
    }
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

pk_err *pk_workflows_init(pk_tasks *t)
{
    pk_server *s = t->srv;
    const pk_webhook_config *wc = s->cfg.webhooks;
    if (!wc || !wc->nworkflows) return NULL;
    pk_workflows *wf = calloc(1, sizeof *wf);
    wf->t = t;
    wf->wc = wc;
    pk_breaker_config bc;
    pk_breaker_config_init(&bc, "n8n");
    bc.window_size = 20;
    bc.minimum_calls = s->cfg.workflow_breaker_min_calls;
    bc.failure_rate_threshold = 50;
    bc.slow_call_duration_ns = (int64_t)s->cfg.workflow_timeout_ms * 1000000;
    bc.wait_in_open_ns = (int64_t)s->cfg.workflow_breaker_wait_ms * 1000000;
    bc.permitted_calls_in_half_open = 1;
    pk_err *e = pk_services_breaker_add(s, &bc, &wf->breaker);
    if (e) {
        free(wf);
        return e;
    }
    pthread_mutex_init(&wf->mu, NULL);
    wf->pending = calloc(WF_PENDING_MAX, sizeof *wf->pending);
    pk_metrics *m = pk_services_metrics(s);
    const char *wo[] = {"workflow", "outcome"};
    wf->m_deliveries = pk_metrics_counter(m, "pake_workflow_deliveries_total",
                                          "Workflow webhook attempts by workflow and outcome: delivered, "
                                          "retryable, failed, breaker_open.",
                                          2, wo);
    const char *w1[] = {"workflow"};
    wf->m_duration =
        pk_metrics_histogram(m, "pake_workflow_delivery_seconds", "Duration of workflow webhook calls.", 1,
                             w1, pk_metrics_latency_buckets, pk_metrics_latency_buckets_len);
    const char *we[] = {"workflow", "event"};
    wf->m_triggered = pk_metrics_counter(m, "pake_workflow_triggers_total",
                                         "workflow.trigger tasks enqueued by note events.", 2, we);
    if (has_triggers(wf)) pk_services_on_note_changed(s, on_note_changed, wf);
    t->wf = wf;
    return NULL;
}

void pk_workflows_dispose(pk_tasks *t)
{
    pk_workflows *wf = t->wf;
    if (!wf) return;
    pthread_mutex_destroy(&wf->mu);
    free(wf->pending);
    free(wf);
    t->wf = NULL;
}

/* ---- payload validation (POST /v1/tasks) ----------------------------------------------------- */

static pk_err *check_payload(const pk_webhook_config *wc, const cJSON *p, bool internal)
{
    if (!cJSON_IsObject(p)) return pk_err_invalid("workflow.trigger needs a payload object");
    pk_err *ve = NULL;
#define FAIL(field, ...)                                                                                     \
    do {                                                                                                     \
        if (!ve) ve = pk_err_invalid("the workflow.trigger payload is invalid");                             \
        pk_err_add_field(ve, field, __VA_ARGS__);                                                            \
    } while (0)
    for (const cJSON *c = p->child; c; c = c->next)
        if (strcmp(c->string, "workflow") && strcmp(c->string, "data") && strcmp(c->string, "note_id") &&
            (!internal || (strcmp(c->string, "event") && strcmp(c->string, "version")))) {
            char field[96];
            snprintf(field, sizeof field, "payload.%.80s", c->string);
            FAIL(field, "is not a known field (workflow, data, note_id)");
        }
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(p, "workflow");
    if (!cJSON_IsString(w))
        FAIL("payload.workflow", "is required: the name of a configured workflow");
    else if (!wc || !pk_webhook_config_workflow(wc, w->valuestring)) {
        char names[512];
        if (wc)
            pk_webhook_config_workflow_names(wc, names, sizeof names);
        else
            snprintf(names, sizeof names, "(none configured)");
        FAIL("payload.workflow", "is not a configured workflow (configured: %s)", names);
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(p, "data");
    const cJSON *nid = cJSON_GetObjectItemCaseSensitive(p, "note_id");
    if (!data == !nid)
        FAIL("payload", "give exactly one of data (an object) or note_id");
    else if (data && !cJSON_IsObject(data))
        FAIL("payload.data", "must be a JSON object");
    else if (nid && (!cJSON_IsString(nid) || !pk_uuid_valid(nid->valuestring, strlen(nid->valuestring))))
        FAIL("payload.note_id", "must be a note id (UUID)");
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(p, "event");
    if (ev && (!cJSON_IsString(ev) || !nid ||
               (strcmp(ev->valuestring, "note.created") && strcmp(ev->valuestring, "note.updated"))))
        FAIL("payload.event", "must be note.created or note.updated, with note_id");
#undef FAIL
    return ve;
}

pk_err *pk_tasks_workflow_check(pk_tasks *t, const cJSON *payload)
{
    return check_payload(t->srv->cfg.webhooks, payload, false);
}

/* ---- one delivery ---------------------------------------------------------------------------- */

static pk_err *stopped(pk_task_check_result r)
{
    return r == PK_TASK_STOP_CANCELLED ? pk_err_new("cancelled", 409, "the task was cancelled")
           : r == PK_TASK_STOP_TIMEOUT ? pk_err_new("deadline_exceeded", 504, "the task ran past its timeout")
                                       : pk_err_new("stopped", 503, "the worker is stopping");
}

/* The start of a response body for an error message: printable ASCII only, at most 160 bytes. */
static void excerpt(const pk_buf *b, char out[164])
{
    size_t n = b->len < 160 ? b->len : 160, i = 0;
    for (; i < n; i++) {
        unsigned char ch = (unsigned char)b->data[i];
        out[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : ' ';
    }
    if (b->len > 160) out[i++] = '.', out[i++] = '.', out[i++] = '.';
    out[i] = '\0';
}

static void count(pk_workflows *wf, const char *workflow, const char *outcome)
{
    pk_metric_counter_add(wf->m_deliveries, (const char *const[]){workflow, outcome}, 2, 1);
}

/* Builds the request body; *skip when a note event's note is gone (nothing to deliver). */
static pk_err *build_body(pk_task_ctx *c, const pk_task *t, const cJSON *payload, const char *workflow,
                          const char *event, pk_buf *body, bool *skip)
{
    const cJSON *nid = cJSON_GetObjectItemCaseSensitive(payload, "note_id");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(payload, "data");
    pk_buf note = PK_BUF_INIT;
    if (nid) {
        pk_op_ctx op = op_for(t->id, t->timeout_ms);
        int64_t version = 0;
        pk_err *e = pk_store_note_get(pk_task_ctx_server(c)->store, &op, nid->valuestring, &note, &version);
        if (e && pk_err_is(e, "not_found") && strcmp(event, "manual")) {
            pk_err_free(e);
            *skip = true;
            return NULL;
        }
        if (e) {
            if (pk_err_is(e, "not_found")) e->retryable = false;
            return e;
        }
    }
    char at[PK_RFC3339_LEN];
    pk_rfc3339(pk_wall_ns(), at);
    pk_jw w;
    pk_jw_init(&w, body);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "event");
    pk_jw_str(&w, event);
    pk_jw_key(&w, "workflow");
    pk_jw_str(&w, workflow);
    if (nid) {
        pk_jw_key(&w, "note");
        pk_jw_raw(&w, note.data, note.len);
    } else {
        pk_jw_key(&w, "data");
        pk_jw_cjson(&w, data);
    }
    pk_jw_key(&w, "task_id");
    pk_jw_str(&w, t->id);
    pk_jw_key(&w, "attempt");
    pk_jw_int(&w, t->attempts);
    pk_jw_key(&w, "sent_at");
    pk_jw_str(&w, at);
    pk_jw_obj_close(&w);
    pk_buf_free(&note);
    return NULL;
}

/* Maps the HTTP answer to the task outcome and the breaker outcome. */
static pk_err *classify(const char *workflow, const pk_httpc_resp *resp, pk_breaker_outcome *bo)
{
    long st = resp->status;
    if (st >= 200 && st < 300) {
        *bo = PK_OUTCOME_SUCCESS;
        return NULL;
    }
    char ex[164];
    excerpt(&resp->body, ex);
    pk_err *e;
    if (st >= 500) {
        *bo = PK_OUTCOME_FAILURE;
        e = pk_err_new("upstream_error", 502, "workflow '%s' answered %ld: %s", workflow, st, ex);
        e->retryable = true;
    } else if (st == 429) {
        *bo = PK_OUTCOME_IGNORED;
        e = pk_err_new("upstream_rate_limited", 429, "workflow '%s' answered 429 (retry after %lld ms): %s",
                       workflow, (long long)resp->retry_after_ms, ex);
        e->retryable = true;
    } else {
        *bo = PK_OUTCOME_IGNORED;
        e = pk_err_new("upstream_rejected", 502, "workflow '%s' answered %ld (not retried): %s", workflow, st,
                       ex);
        e->retryable = false;
    }
    return e;
}

pk_err *pk_task_workflow_trigger(pk_task_ctx *c, const pk_task *t, const cJSON *payload, pk_buf *result)
{
    pk_tasks *ts = pk_task_ctx_tasks(c);
    pk_workflows *wf = ts->wf;
    pk_server *s = pk_task_ctx_server(c);
    pk_err *e = check_payload(s->cfg.webhooks, payload, true);
    if (!e && !wf) e = pk_err_invalid("no workflows are configured (--workflows)");
    if (e) {
        e->retryable = false;
        return e;
    }
    const char *name = cJSON_GetObjectItemCaseSensitive(payload, "workflow")->valuestring;
    const pk_webhook_workflow *w = pk_webhook_config_workflow(wf->wc, name);
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(payload, "event");
    const char *event = ev ? ev->valuestring : "manual";

    pk_buf body = PK_BUF_INIT;
    bool skip = false;
    if ((e = build_body(c, t, payload, name, event, &body, &skip))) return e;
    if (skip) {
        pk_buf_printf(result, "{\"workflow\":\"%s\",\"event\":\"%s\",\"skipped\":\"the note was deleted\"}",
                      name, event);
        return NULL;
    }
    pk_task_check_result r = pk_task_check(c, 0.2);
    if (r) {
        pk_buf_free(&body);
        return stopped(r);
    }
    pk_breaker_permit permit;
    if (!pk_breaker_allow(wf->breaker, &permit)) {
        pk_buf_free(&body);
        count(wf, name, "breaker_open");
        e = pk_err_new("upstream_unavailable", 503,
                       "the n8n circuit breaker is open: not calling workflow '%s' (retry in %lld ms)", name,
                       (long long)permit.retry_after_ms);
        e->retryable = true;
        return e;
    }

    /* signature, trace and delivery headers */
    int64_t ts_s = pk_wall_ns() / 1000000000LL;
    char hex[PK_WEBHOOK_HEX], sig[72], h_sig[96], h_ts[48], h_ev[64], h_id[64], h_tp[80];
    pk_webhook_sign(w->secret, strlen(w->secret), ts_s, body.data, body.len, hex);
    pk_webhook_signature_header(hex, sig);
    pk_trace tr;
    pk_trace_start(&tr, t->trace_context, t->trace_context ? strlen(t->trace_context) : 0, NULL, 0,
                   PK_TRACE_FLAG_SAMPLED);
    char tp[PK_TRACEPARENT_LEN];
    pk_trace_format(&tr, tp);
    snprintf(h_sig, sizeof h_sig, "X-Pake-Signature: %s", sig);
    snprintf(h_ts, sizeof h_ts, "X-Pake-Timestamp: %lld", (long long)ts_s);
    snprintf(h_ev, sizeof h_ev, "X-Pake-Event: %s", event);
    snprintf(h_id, sizeof h_id, "X-Pake-Delivery: %s", t->id);
    snprintf(h_tp, sizeof h_tp, "traceparent: %s", tp);
    const char *headers[] = {"Content-Type: application/json", h_sig, h_ts, h_ev, h_id, h_tp};
    pk_httpc_req req = {.method = "POST",
                        .url = w->url,
                        .headers = headers,
                        .nheaders = sizeof headers / sizeof *headers,
                        .body = body.data,
                        .body_len = body.len,
                        .timeout_ms = s->cfg.workflow_timeout_ms,
                        .deadline_ns = pk_mono_ns() + t->timeout_ms * 1000000,
                        .max_response_bytes = 1 << 20};
    pk_httpc_resp resp;
    int64_t t0 = pk_mono_ns();
    e = pk_httpc_do(&req, &resp);
    int64_t dt = pk_mono_ns() - t0;
    pk_buf_free(&body);
    pk_metric_histogram_observe(wf->m_duration, (const char *const[]){name}, 1, (double)dt / 1e9);
    pk_breaker_outcome bo = PK_OUTCOME_FAILURE;
    if (e)
        e = pk_err_wrap(e, e->code, e->status, "workflow '%s': %s", name, e->message);
    else
        e = classify(name, &resp, &bo);
    if (e && e->cause) e->retryable = e->cause->retryable;
    pk_breaker_record(wf->breaker, &permit, bo, dt);
    count(wf, name, !e ? "delivered" : e->retryable ? "retryable" : "failed");
    if (!e) {
        pk_jw jw;
        pk_jw_init(&jw, result);
        pk_jw_obj_open(&jw);
        pk_jw_key(&jw, "workflow");
        pk_jw_str(&jw, name);
        pk_jw_key(&jw, "event");
        pk_jw_str(&jw, event);
        pk_jw_key(&jw, "status");
        pk_jw_int(&jw, resp.status);
        pk_jw_key(&jw, "attempt");
        pk_jw_int(&jw, t->attempts);
        pk_jw_key(&jw, "duration_ms");
        pk_jw_num(&jw, (double)dt / 1e6);
        pk_jw_obj_close(&jw);
    }
    pk_httpc_resp_free(&resp);
    return e;
}
