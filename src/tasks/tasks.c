/*
 * tasks.c: the task service of `pake serve` (see tasks.h for the model): worker threads over the
 * embedded queue, the handler registry, the note-change hook and the task metrics.
 *
 * Wake-ups: one mutex + condition variable + generation counter. Anything that makes work claimable in
 * this process (enqueue, retry, a note change) bumps the generation and broadcasts; an idle worker
 * waits only if the generation did not move since it last looked, so a wake-up between its empty
 * claim and its wait is never lost. Delayed tasks and expiring leases are covered by sleeping until
 * the queue's next_wakeup (capped at 250 ms, which also bounds the delay for tasks enqueued by another
 * process on the same file).
 *
 * A busy worker costs the queue one call per task: when the backend has complete_claim, a success is
 * recorded and the worker's next task claimed in the same call, and the loop runs that task without
 * another claim (it only waits after an empty claim). A task claimed that way just as the service
 * stops is released, uncounted.
 *
 * Cancellation of a running task reaches its worker two ways: in process, pk_tasks_cancel flags the
 * worker that runs it, so pk_task_check sees it at once; across processes, the heartbeat returns the
 * cancel_requested column.
 *
 * Note changes: the observer runs on an event-loop thread and must not block, so it only records the
 * note id in a small pending set; the next worker to wake enqueues note.embed for it, coalesced with a
 * pending embed of the same note (idempotency key with TTL 0).
 */
#include "tasks/tasks.h"
#include "tasks/tasks_internal.h"
#include "core/clock.h"
#include "core/id.h"
#include "core/log.h"
#include "foundation/metrics.h"
#include "foundation/trace.h"
#include "server/server.h"
#include "server/services.h"
#include "store/store_pg.h"
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#define PENDING_MAX 4096
#define MAX_WORKERS 64
#define WORKERS_SEEN_MS 60000 /* GET /v1/queues lists processes that beat within the last minute */

typedef struct worker {
    pk_tasks *t;
    pthread_t th;
    int index;
    char name[80];
    /* the running task (under t->mu) */
    char current[37];
    atomic_bool cancel;
    atomic_bool busy;
    int fast_wakeups; /* backend waits in a row that returned at once with nothing to claim */
} worker;

struct pk_task_ctx {
    pk_tasks *t;
    worker *w;
    const pk_task *task;
    int64_t deadline_mono;
    int64_t last_heartbeat_mono;
    int64_t heartbeat_every_ns;
    double progress;
    pk_task_check_result stop;
};

static int64_t wall_now(void)
{
    return pk_wall_ns();
}

/* ---- metrics -------------------------------------------------------------------------------- */

static void count(pk_tasks *t, const char *type, const char *event)
{
    pk_metric_counter_add(t->m_events, (const char *const[]){type, event}, 2, 1);
}

static void register_metrics(pk_tasks *t)
{
    pk_metrics *m = pk_services_metrics(t->srv);
    const char *te[] = {"type", "event"};
    t->m_events =
        pk_metrics_counter(m, "pake_tasks_total",
                           "Task events by type: enqueued, started, succeeded, failed, retried, dead, "
                           "cancelled, released, reclaimed, lease_lost.",
                           2, te);
    const char *ty[] = {"type"};
    t->m_wait = pk_metrics_histogram(m, "pake_task_wait_seconds", "Time from due to start of a task attempt.",
                                     1, ty, pk_metrics_latency_buckets, pk_metrics_latency_buckets_len);
    t->m_run = pk_metrics_histogram(m, "pake_task_run_seconds", "Run time of a task attempt.", 1, ty,
                                    pk_metrics_latency_buckets, pk_metrics_latency_buckets_len);
    const char *qp[] = {"queue", "priority"};
    t->m_depth =
        pk_metrics_gauge(m, "pake_task_queue_depth", "Claimable (due) tasks per queue and priority.", 2, qp);
    t->m_oldest = pk_metrics_gauge(m, "pake_task_queue_oldest_age_seconds",
                                   "Age of the oldest claimable task per queue and priority.", 2, qp);
    const char *st[] = {"state"};
    t->m_states = pk_metrics_gauge(m, "pake_tasks", "Tasks in the queue database by state.", 1, st);
    const char *wk[] = {"worker"};
    t->m_heartbeat = pk_metrics_gauge(m, "pake_task_worker_heartbeat_timestamp_seconds",
                                      "Last time each worker looked for work (Unix seconds).", 1, wk);
    t->m_busy = pk_metrics_gauge(m, "pake_task_workers_busy", "Workers running a task.", 0, NULL);
}

/* Refreshes the queue gauges (a worker does it about once a second). */
static void refresh_gauges(pk_tasks *t)
{
    pk_queue_stats s = {0};
    pk_err *e = t->q->ops->stats(t->q, &s);
    if (e) {
        pk_err_free(e);
        return;
    }
    int64_t totals[PK_TASK__STATES] = {0};
    for (size_t i = 0; i < s.nrows; i++) {
        const char *lv[] = {s.rows[i].queue, pk_task_priority_name(s.rows[i].priority)};
        pk_metric_gauge_set(t->m_depth, lv, 2, (double)s.rows[i].ready);
        pk_metric_gauge_set(t->m_oldest, lv, 2,
                            s.rows[i].oldest_ready_ns ? (double)(s.now_ns - s.rows[i].oldest_ready_ns) / 1e9
                                                      : 0);
        for (int k = 0; k < PK_TASK__STATES; k++)
            totals[k] += s.rows[i].counts[k];
    }
    for (int k = 0; k < PK_TASK__STATES; k++)
        pk_metric_gauge_set(t->m_states, (const char *const[]){pk_task_state_name(k)}, 1, (double)totals[k]);
    int busy = 0;
    for (int i = 0; i < t->nworkers; i++)
        busy += atomic_load(&t->workers[i].busy);
    pk_metric_gauge_set(t->m_busy, NULL, 0, busy);
    pk_queue_stats_free(&s);
}

/* ---- handler registry ----------------------------------------------------------------------- */

static void register_handler(pk_tasks *t, const char *type, pk_task_handler fn)
{
    t->handlers[t->nhandlers].type = type;
    t->handlers[t->nhandlers++].fn = fn;
    size_t l = strlen(t->type_list);
    snprintf(t->type_list + l, sizeof t->type_list - l, "%s%s", l ? ", " : "", type);
}

static pk_task_handler find_handler(pk_tasks *t, const char *type)
{
    for (int i = 0; i < t->nhandlers; i++)
        if (!strcmp(t->handlers[i].type, type)) return t->handlers[i].fn;
    return NULL;
}

bool pk_tasks_type_known(pk_tasks *t, const char *type)
{
    return find_handler(t, type) != NULL;
}

const char *pk_tasks_type_list(pk_tasks *t)
{
    return t->type_list;
}

pk_queue *pk_tasks_queue(pk_tasks *t)
{
    return t->q;
}

struct pk_server *pk_task_ctx_server(pk_task_ctx *c)
{
    return c->t->srv;
}

pk_tasks *pk_task_ctx_tasks(pk_task_ctx *c)
{
    return c->t;
}

const char *pk_task_ctx_worker(pk_task_ctx *c)
{
    return c->w->name;
}

/* ---- wake-ups, pending note changes ---------------------------------------------------------- */

void pk_tasks_wake(pk_tasks *t)
{
    pthread_mutex_lock(&t->mu);
    t->gen++;
    /* Without worker threads (`pake serve --workers 0`) only the hook thread waits on cv, for note
     * changes (on_note_changed signals those itself) or the stop: waking it for every enqueue would
     * cost a context switch per API call for nothing. */
    if (t->nworkers || atomic_load(&t->stopping)) pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void on_note_changed(void *ud, const char *id)
{
    pk_tasks *t = ud;
    if (!t->cfg.auto_embed || !id || strlen(id) != 36) return;
    pthread_mutex_lock(&t->mu);
    bool dup = false;
    for (int i = 0; i < t->npending && !dup; i++)
        dup = !memcmp(t->pending[i], id, 37);
    if (!dup && t->npending < PENDING_MAX)
        memcpy(t->pending[t->npending++], id, 37);
    else if (!dup)
        t->pending_dropped++; /* the embed is lost until the note changes again; counted, not blocking */
    t->gen++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void drain_pending(pk_tasks *t)
{
    for (;;) {
        char id[37];
        pthread_mutex_lock(&t->mu);
        if (!t->npending) {
            pthread_mutex_unlock(&t->mu);
            return;
        }
        memcpy(id, t->pending[--t->npending], 37);
        pthread_mutex_unlock(&t->mu);
        char payload[64], key[64];
        snprintf(payload, sizeof payload, "{\"note_id\":\"%s\"}", id);
        snprintf(key, sizeof key, "auto:note.embed:%s", id);
        pk_task_input in = {.type = "note.embed",
                            .payload_json = payload,
                            .priority = PK_PRIO_LOW,
                            .idempotency_key = key,
                            .idem_ttl_ms = 0};
        pk_err *e = pk_tasks_enqueue(t, &in, NULL, NULL);
        if (e) {
            pk_log_warn("cannot enqueue note.embed for %s: %s", id, e->message);
            pk_err_free(e);
        }
    }
}

/* ---- queue operations with metrics ------------------------------------------------------------ */

pk_err *pk_tasks_enqueue(pk_tasks *t, const pk_task_input *in, pk_buf *out, bool *created)
{
    bool made = false;
    pk_err *e = t->q->ops->enqueue(t->q, in, out, &made, NULL);
    if (!e && made) {
        count(t, in->type, "enqueued");
        pk_tasks_wake(t);
    }
    if (created) *created = made;
    return e;
}

void pk_tasks_enqueue_each(pk_tasks *t, const pk_task_input *in, size_t n, pk_buf *out, bool *created,
                           pk_err **err)
{
    char(*ids)[37] = calloc(n ? n : 1, sizeof *ids);
    pk_queue_enqueue_each(t->q, in, n, out, created, ids, err);
    free(ids);
    bool any = false;
    for (size_t i = 0; i < n; i++)
        if (!err[i] && created[i]) {
            count(t, in[i].type, "enqueued");
            any = true;
        }
    if (any) pk_tasks_wake(t);
}

pk_err *pk_tasks_enqueue_batch(pk_tasks *t, const pk_task_input *in, size_t n, pk_buf *out, bool *created)
{
    for (size_t i = 0; i < n; i++)
        created[i] = false;
    pk_err *e = pk_queue_enqueue_batch(t->q, in, n, out, created);
    bool any = false;
    for (size_t i = 0; i < n; i++)
        if (created[i]) {
            count(t, in[i].type, "enqueued");
            any = true;
        }
    if (any) pk_tasks_wake(t);
    return e;
}

pk_err *pk_tasks_cancel(pk_tasks *t, const char *id, pk_buf *out, pk_task_state *state)
{
    pk_task_state st = PK_TASK_QUEUED;
    pk_err *e = t->q->ops->cancel(t->q, id, out, &st);
    if (e) return e;
    if (st == PK_TASK_RUNNING) {
        pthread_mutex_lock(&t->mu);
        for (int i = 0; i < t->nworkers; i++)
            if (!strcmp(t->workers[i].current, id)) atomic_store(&t->workers[i].cancel, true);
        pthread_mutex_unlock(&t->mu);
    } else if (st == PK_TASK_CANCELLED) {
        char type[PK_TASK_TYPE_MAX + 1] = "_unknown";
        const char *p = out && out->data ? strstr(out->data, "\"type\":\"") : NULL;
        if (p) sscanf(p + 8, "%64[a-z0-9_.-]", type);
        count(t, type, "cancelled");
    }
    if (state) *state = st;
    return NULL;
}

pk_err *pk_tasks_retry(pk_tasks *t, const char *id, pk_buf *out)
{
    pk_err *e = t->q->ops->retry(t->q, id, out);
    if (!e) pk_tasks_wake(t);
    return e;
}

static void worker_info_json(pk_jw *w, const pk_queue_worker_info *p, int64_t now_ns)
{
    char ts[PK_RFC3339_LEN];
    pk_jw_obj_open(w);
    pk_jw_key(w, "name");
    pk_jw_str(w, p->name);
    pk_jw_key(w, "kind");
    pk_jw_str(w, p->kind);
    pk_jw_key(w, "host");
    pk_jw_str(w, p->host);
    pk_jw_key(w, "pid");
    pk_jw_int(w, p->pid);
    pk_jw_key(w, "threads");
    pk_jw_int(w, p->threads);
    pk_jw_key(w, "busy");
    pk_jw_int(w, p->busy);
    pk_jw_key(w, "started_at");
    pk_rfc3339(p->started_ns, ts);
    pk_jw_str(w, ts);
    pk_jw_key(w, "last_seen");
    pk_rfc3339(p->last_seen_ns, ts);
    pk_jw_str(w, ts);
    pk_jw_key(w, "age_ms");
    pk_jw_int(w, now_ns > p->last_seen_ns ? (now_ns - p->last_seen_ns) / 1000000 : 0);
    pk_jw_obj_close(w);
}

pk_err *pk_tasks_queues_json(pk_tasks *t, pk_buf *out)
{
    pk_queue_stats s = {0};
    pk_err *e = t->q->ops->stats(t->q, &s);
    if (e) return e;
    pk_jw w;
    pk_jw_init(&w, out);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "backend");
    pk_jw_str(&w, t->q->backend);
    pk_jw_key(&w, "queues");
    pk_jw_arr_open(&w);
    for (size_t i = 0; i < s.nrows; i++) {
        const pk_queue_stats_row *r = &s.rows[i];
        pk_jw_obj_open(&w);
        pk_jw_key(&w, "queue");
        pk_jw_str(&w, r->queue);
        pk_jw_key(&w, "priority");
        pk_jw_str(&w, pk_task_priority_name(r->priority));
        pk_jw_key(&w, "depth");
        pk_jw_int(&w, r->ready);
        pk_jw_key(&w, "oldest_age_ms");
        pk_jw_int(&w, r->oldest_ready_ns ? (s.now_ns - r->oldest_ready_ns) / 1000000 : 0);
        pk_jw_key(&w, "in_flight");
        pk_jw_int(&w, r->counts[PK_TASK_RUNNING]);
        pk_jw_key(&w, "dead_letters");
        pk_jw_int(&w, r->counts[PK_TASK_DEAD]);
        pk_jw_key(&w, "states");
        pk_jw_obj_open(&w);
        for (int k = 0; k < PK_TASK__STATES; k++) {
            pk_jw_key(&w, pk_task_state_name(k));
            pk_jw_int(&w, r->counts[k]);
        }
        pk_jw_obj_close(&w);
        pk_jw_obj_close(&w);
    }
    pk_jw_arr_close(&w);
    pk_jw_key(&w, "workers");
    pk_jw_arr_open(&w);
    for (int i = 0; i < t->nworkers; i++) {
        pk_jw_obj_open(&w);
        pk_jw_key(&w, "id");
        pk_jw_str(&w, t->workers[i].name);
        pk_jw_key(&w, "busy");
        pk_jw_bool(&w, atomic_load(&t->workers[i].busy));
        pk_jw_key(&w, "last_seen");
        char ts[PK_RFC3339_LEN];
        pk_rfc3339(atomic_load(&t->last_seen[i]), ts);
        pk_jw_str(&w, ts);
        pk_jw_obj_close(&w);
    }
    pk_jw_arr_close(&w);
    pk_queue_worker_info *seen = NULL;
    size_t nseen = 0;
    if (t->q->ops->workers_seen) {
        e = t->q->ops->workers_seen(t->q, WORKERS_SEEN_MS, &seen, &nseen);
        if (e) {
            pk_buf_free(out);
            pk_queue_stats_free(&s);
            return e;
        }
        pk_jw_key(&w, "workers_seen");
        pk_jw_arr_open(&w);
        for (size_t i = 0; i < nseen; i++)
            worker_info_json(&w, &seen[i], s.now_ns);
        pk_jw_arr_close(&w);
        free(seen);
    }
    pk_jw_obj_close(&w);
    pk_queue_stats_free(&s);
    return NULL;
}

/* ---- the cooperative check (heartbeat, cancel, timeout, shutdown) --------------------------------- */

pk_task_check_result pk_task_check(pk_task_ctx *c, double progress)
{
    if (c->stop) return c->stop;
    if (progress >= 0) c->progress = progress;
    int64_t now = pk_mono_ns();
    if (atomic_load(&c->w->cancel)) return c->stop = PK_TASK_STOP_CANCELLED;
    if (atomic_load(&c->t->stopping) && now >= atomic_load(&c->t->stop_deadline_mono))
        return c->stop = PK_TASK_STOP_SHUTDOWN;
    if (now >= c->deadline_mono) return c->stop = PK_TASK_STOP_TIMEOUT;
    if (now - c->last_heartbeat_mono >= c->heartbeat_every_ns) {
        bool cancel = false;
        pk_err *e = c->t->q->ops->heartbeat(c->t->q, c->task->id, c->w->name, c->progress, &cancel);
        c->last_heartbeat_mono = now;
        if (e) {
            bool lost = pk_err_is(e, "lease_lost");
            pk_err_free(e);
            if (lost) return c->stop = PK_TASK_STOP_LEASE_LOST;
        } else if (cancel)
            return c->stop = PK_TASK_STOP_CANCELLED;
    }
    return PK_TASK_GO;
}

/* ---- running one task ------------------------------------------------------------------------ */

static void log_ctx_for(const pk_task *task, pk_log_ctx *ctx, char trace_id[33], char span_id[17])
{
    ctx->request_id = task->id;
    ctx->trace_id = NULL;
    ctx->span_id = NULL;
    pk_traceparent tp;
    if (task->trace_context &&
        pk_traceparent_parse(task->trace_context, strlen(task->trace_context), &tp) == 0) {
        pk_hex(tp.trace_id, sizeof tp.trace_id, trace_id);
        pk_hex(&(uint64_t){pk_rand64()}, 8, span_id); /* the worker's own span in the same trace */
        ctx->trace_id = trace_id;
        ctx->span_id = span_id;
    }
}

/* Runs one claimed task and records its outcome. When `next` is given, the backend can complete and
 * claim in one call (complete_claim) and the worker is not stopping, a success also claims the
 * worker's next task into *next (next->id[0] == 0: none claimed; the caller claims as usual). */
static void run_task(worker *w, pk_task *task, pk_task *next)
{
    pk_tasks *t = w->t;
    int64_t started_wall = wall_now();
    int64_t due = task->not_before_ns > task->created_ns ? task->not_before_ns : task->created_ns;
    pk_metric_histogram_observe(t->m_wait, (const char *const[]){task->type}, 1,
                                started_wall > due ? (double)(started_wall - due) / 1e9 : 0);
    count(t, task->type, "started");
    pthread_mutex_lock(&t->mu);
    memcpy(w->current, task->id, 37);
    atomic_store(&w->cancel, false);
    pthread_mutex_unlock(&t->mu);
    atomic_store(&w->busy, true);

    char trace_id[33], span_id[17];
    pk_log_ctx lc;
    log_ctx_for(task, &lc, trace_id, span_id);
    if (pk_log_enabled(PK_LOG_DEBUG))
        pk_log_write(PK_LOG_DEBUG, &lc, NULL, "task %s (%s) attempt %d started on %s", task->id, task->type,
                     task->attempts, w->name);

    int64_t t0 = pk_mono_ns();
    pk_task_ctx c = {.t = t,
                     .w = w,
                     .task = task,
                     .deadline_mono = t0 + task->timeout_ms * 1000000,
                     .last_heartbeat_mono = t0,
                     .heartbeat_every_ns = task->lease_ms * 1000000 / 3,
                     .progress = -1};
    pk_buf result = PK_BUF_INIT;
    pk_err *err = NULL;
    pk_task_handler fn = find_handler(t, task->type);
    cJSON *payload = NULL;
    if (!fn)
        err = pk_err_invalid("unknown task type '%s'", task->type);
    else if ((err = pk_json_parse(task->payload_json, strlen(task->payload_json), 64, &payload)))
        err->retryable = false;
    else
        err = fn(&c, task, payload, &result);
    cJSON_Delete(payload);
    pk_task_check_result stop = c.stop; /* a handler that finished its work wins over a late cancel */
    pk_metric_histogram_observe(t->m_run, (const char *const[]){task->type}, 1,
                                (double)(pk_mono_ns() - t0) / 1e9);

    pk_err *qe = NULL;
    const char *event = NULL;
    if (stop == PK_TASK_STOP_CANCELLED) {
        qe = t->q->ops->cancelled(t->q, task->id, w->name);
        event = "cancelled";
    } else if (stop == PK_TASK_STOP_SHUTDOWN) {
        qe = t->q->ops->release(t->q, task->id, w->name);
        event = "released";
    } else if (stop == PK_TASK_STOP_LEASE_LOST) {
        event = "lease_lost";
    } else if (err || stop == PK_TASK_STOP_TIMEOUT) {
        char msg[512];
        bool retryable = true;
        if (stop == PK_TASK_STOP_TIMEOUT)
            snprintf(msg, sizeof msg, "timeout: ran past %lld ms", (long long)task->timeout_ms);
        else {
            snprintf(msg, sizeof msg, "%s: %s", err->code, err->message ? err->message : "");
            retryable = err->retryable;
        }
        pk_task_state st = PK_TASK_FAILED;
        qe = t->q->ops->fail(t->q, task->id, w->name, msg, retryable, &st);
        event = st == PK_TASK_RETRYING ? "retried" : st == PK_TASK_DEAD ? "dead" : "failed";
        if (!qe)
            pk_log_write(st == PK_TASK_RETRYING ? PK_LOG_INFO : PK_LOG_WARN, &lc, NULL,
                         "task %s (%s) attempt %d failed (%s): %s", task->id, task->type, task->attempts,
                         pk_task_state_name(st), msg);
    } else if (next && t->q->ops->complete_claim && !atomic_load(&t->stopping)) {
        qe = t->q->ops->complete_claim(t->q, task->id, w->name, result.len ? result.data : NULL, NULL, 0,
                                       next);
        event = "succeeded";
    } else {
        qe = t->q->ops->complete(t->q, task->id, w->name, result.len ? result.data : NULL);
        event = "succeeded";
    }
    if (qe) {
        if (pk_err_is(qe, "lease_lost")) event = "lease_lost";
        pk_log_write(PK_LOG_WARN, &lc, NULL, "task %s: cannot record the outcome: %s", task->id, qe->message);
        pk_err_free(qe);
    }
    if (event) count(t, task->type, event);
    pk_err_free(err);
    pk_buf_free(&result);
    pthread_mutex_lock(&t->mu);
    w->current[0] = '\0';
    atomic_store(&w->cancel, false);
    pthread_mutex_unlock(&t->mu);
    atomic_store(&w->busy, false);
}

/* ---- the worker loop ------------------------------------------------------------------------- */

/* Logs a queue failure at most once every 5 s per process (an outage would otherwise log a line per
 * worker per retry); the count of suppressed lines goes into the next one. */
static void warn_throttled(pk_tasks *t, const char *who, const char *what, const pk_err *e)
{
    static atomic_int suppressed;
    int64_t now = pk_mono_ns(), last = atomic_load(&t->last_warn_mono);
    if (last && now - last < 5000000000LL) {
        atomic_fetch_add(&suppressed, 1);
        return;
    }
    if (!atomic_compare_exchange_strong(&t->last_warn_mono, &last, now)) return;
    pk_log_warn("%s: %s failed: %s (%d similar lines suppressed)", who, what, e->message,
                atomic_exchange(&suppressed, 0));
}

/* Renews this process's entry in the queue's worker registry. */
static void beat(pk_tasks *t)
{
    if (!t->q->ops->worker_beat) return;
    pk_queue_worker_info w = t->self;
    w.busy = 0;
    for (int i = 0; i < t->nworkers; i++)
        w.busy += atomic_load(&t->workers[i].busy);
    pk_err *e = t->q->ops->worker_beat(t->q, &w);
    if (e) warn_throttled(t, w.name, "worker registry beat", e);
    pk_err_free(e);
}

static void maintenance(pk_tasks *t)
{
    int64_t now = pk_mono_ns();
    int64_t last = atomic_load(&t->last_reclaim_mono);
    if (now - last < 200000000LL || !atomic_compare_exchange_strong(&t->last_reclaim_mono, &last, now))
        return;
    int n = 0;
    pk_err *e = t->q->ops->reclaim_expired(t->q, &n);
    if (e) {
        warn_throttled(t, t->self.name, "reclaim of expired task leases", e);
        pk_err_free(e);
    } else if (n > 0) {
        pk_log_info("reclaimed %d task(s) whose lease expired", n);
        pk_metric_counter_add(t->m_events, (const char *const[]){"_any", "reclaimed"}, 2, (uint64_t)n);
    }
    if (now - t->last_gauges_mono >= 1000000000LL) {
        t->last_gauges_mono = now;
        refresh_gauges(t);
    }
    if (now - t->last_beat_mono >= 1000000000LL) {
        t->last_beat_mono = now;
        beat(t);
    }
    if (now - t->last_purge_mono >= 3600LL * 1000000000LL) {
        t->last_purge_mono = now;
        pk_err_free(t->q->ops->purge(t->q, &n));
    }
}

/* Sleeps on the condition variable until `until` (wall ns), a wake-up or shutdown. */
static void cond_wait_until(pk_tasks *t, uint64_t seen_gen, int64_t until)
{
    struct timespec ts = {.tv_sec = until / 1000000000LL, .tv_nsec = until % 1000000000LL};
    pthread_mutex_lock(&t->mu);
    while (t->gen == seen_gen && !atomic_load(&t->stopping) && t->npending == 0)
        if (pthread_cond_timedwait(&t->cv, &t->mu, &ts) == ETIMEDOUT) break;
    pthread_mutex_unlock(&t->mu);
}

/* Blocks in the backend's wait op (one idle worker per process at a time; the others sleep on the
 * condition variable) and wakes the others when it returns, so work enqueued by another process
 * starts at once. Returns false when another worker already waits or the wait failed; *fast says the
 * wait returned in under 5 ms. */
static bool backend_wait(worker *w, int64_t timeout_ms, bool *fast)
{
    pk_tasks *t = w->t;
    bool expected = false;
    if (!atomic_compare_exchange_strong(&t->waiter, &expected, true)) return false;
    int64_t t0 = pk_mono_ns();
    pk_err *e = t->q->ops->wait(t->q, timeout_ms);
    *fast = pk_mono_ns() - t0 < 5000000;
    atomic_store(&t->waiter, false);
    if (e) {
        warn_throttled(t, w->name, "queue wait", e);
        pk_err_free(e);
        return false;
    }
    pk_tasks_wake(t);
    return true;
}

static void idle_wait(worker *w, uint64_t seen_gen)
{
    pk_tasks *t = w->t;
    int64_t next = INT64_MAX;
    pk_err *e = t->q->ops->next_wakeup(t->q, &next);
    pk_err_free(e);
    int64_t now = wall_now();
    int64_t until = now + 250000000LL;
    if (next < until)
        until = next > now ? next : now + 10000000LL; /* due or expired: the claim or the
                                                       next reclaim (every 200 ms) takes it */
    /* A wait that returns at once although the claim found nothing (work held back by a limit, or
     * taken by another process first) must not become a busy loop: after two in a row, sleep. */
    if (t->q->ops->wait && w->fast_wakeups < 2 && !atomic_load(&t->stopping)) {
        bool fast = false;
        pthread_mutex_lock(&t->mu);
        bool quiet = t->gen == seen_gen && t->npending == 0;
        pthread_mutex_unlock(&t->mu);
        if (quiet && backend_wait(w, (until - now) / 1000000 + 1, &fast)) {
            w->fast_wakeups = fast ? w->fast_wakeups + 1 : 0;
            return;
        }
    }
    w->fast_wakeups = 0;
    cond_wait_until(t, seen_gen, until);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pk_tasks *t = w->t;
    pk_task next = {0}; /* claimed together with the previous completion (complete_claim) */
    while (!atomic_load(&t->stopping)) {
        pthread_mutex_lock(&t->mu);
        uint64_t gen = t->gen;
        pthread_mutex_unlock(&t->mu);
        atomic_store(&t->last_seen[w->index], wall_now());
        pk_metric_gauge_set(t->m_heartbeat, (const char *const[]){w->name}, 1, (double)wall_now() / 1e9);
        drain_pending(t);
        pk_workflows_drain(t);
        maintenance(t);
        pk_task task;
        if (next.id[0]) { /* busy: no claim call, no wait */
            task = next;
            next = (pk_task){0};
        } else {
            pk_err *e = t->q->ops->claim(t->q, w->name, NULL, 0, &task);
            if (e) {
                warn_throttled(t, w->name, "claim", e);
                pk_err_free(e);
                cond_wait_until(t, gen, wall_now() + 100000000LL);
                continue;
            }
        }
        if (task.id[0]) {
            w->fast_wakeups = 0;
            run_task(w, &task, &next);
            pk_task_free(&task);
            continue;
        }
        idle_wait(w, gen);
    }
    if (next.id[0]) { /* claimed just as the service began to stop: hand it back, uncounted */
        pk_err *e = t->q->ops->release(t->q, next.id, w->name);
        if (e) warn_throttled(t, w->name, "release", e);
        pk_err_free(e);
        count(t, next.type, "released");
        pk_task_free(&next);
    }
    return NULL;
}

/* With no worker threads (`pake serve --workers 0`, the workers run elsewhere) nobody would turn note
 * changes into note.embed tasks: this thread does only that. */
static void *hook_main(void *arg)
{
    pk_tasks *t = arg;
    for (;;) {
        pthread_mutex_lock(&t->mu);
        while (t->npending == 0 && !atomic_load(&t->stopping))
            pthread_cond_wait(&t->cv, &t->mu);
        bool stop = atomic_load(&t->stopping);
        pthread_mutex_unlock(&t->mu);
        if (stop) return NULL;
        drain_pending(t);
    }
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static pk_err *parse_leases(pk_tasks *t, const char *spec)
{
    if (!spec || !*spec) return NULL;
    char *copy = strdup(spec), *save = NULL;
    pk_err *e = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && !e; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        char *end = NULL;
        long ms = eq ? strtol(eq + 1, &end, 10) : 0;
        if (!eq || !end || *end || ms <= 0 || t->nleases == (int)(sizeof t->leases / sizeof t->leases[0])) {
            e = pk_err_new("bad_config", 2, "--task-leases: expected TYPE=MS[,TYPE=MS...], got '%s'", spec);
            break;
        }
        *eq = '\0';
        snprintf(t->lease_types[t->nleases], sizeof t->lease_types[0], "%s", tok);
        t->leases[t->nleases] = (pk_queue_type_lease){t->lease_types[t->nleases], ms};
        t->nleases++;
    }
    free(copy);
    return e;
}

/* Embeddings next to the notes: in PostgreSQL with the PostgreSQL store (shared by every process),
 * else in the queue's SQLite file. One start-up line says which and what it means. */
static pk_err *open_vectors(pk_tasks *t, struct pk_server *s)
{
    pk_err *e;
    if (pk_store_is_pg(s->store)) {
        pk_vecstore_pg_config vc = {.index_dims = t->cfg.embed_dims ? t->cfg.embed_dims : PK_EMBED_DIMS,
                                    .hnsw_m = t->cfg.hnsw_m,
                                    .hnsw_ef_construction = t->cfg.hnsw_ef_construction,
                                    .hnsw_ef_search = t->cfg.hnsw_ef_search};
        e = pk_vecstore_open_pg(s->store, &vc, &t->vs);
    } else {
        e = pk_vecstore_open_queue(t->sq, &t->vs);
    }
    if (e) return e;
    if (!strcmp(t->vs->backend, "postgres") && strcmp(t->vs->index, "pgvector-hnsw"))
        pk_log_warn("vector search without pgvector: %s", t->vs->detail);
    else
        pk_log_info("vector search: %s (%s): %s", t->vs->index, t->vs->backend, t->vs->detail);
    return NULL;
}

pk_vecstore *pk_tasks_vectors(pk_tasks *t)
{
    return t->vs;
}

/* The queue of the configured backend in t->q, and the SQLite file of the embeddings in t->sq. */
static pk_err *open_queues(pk_tasks *t, struct pk_server *s, const pk_tasks_config *cfg)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/queue.db", s->cfg.data_dir);
    if (mkdir(s->cfg.data_dir, 0700) != 0 && errno != EEXIST)
        return pk_err_new("bad_config", 2, "cannot create the data directory '%s'", s->cfg.data_dir);
    pk_queue_config qc = {.path = path,
                          .default_max_attempts = cfg->max_attempts,
                          .default_timeout_ms = cfg->timeout_ms,
                          .default_lease_ms = cfg->lease_ms,
                          .leases = t->leases,
                          .nleases = (size_t)t->nleases,
                          .retry_base_ms = cfg->retry_base_ms,
                          .retry_cap_ms = cfg->retry_cap_ms,
                          .limits = t->limits,
                          .nlimits = t->nlimits};
    bool redis = cfg->backend && !strcmp(cfg->backend, "redis");
    if (!redis) {
        pk_err *e = pk_queue_open_sqlite(&qc, &t->q);
        t->sq = t->q;
        return e;
    }
    qc.redis = pk_services_redis_pool(s);
    qc.redis_prefix = s->cfg.redis_prefix;
    qc.no_group_commit = cfg->no_group_commit;
    qc.group_inflight = cfg->group_inflight;
    qc.group_gather_us = cfg->group_gather_us;
    if (!qc.redis) return pk_err_new("bad_config", 2, "--queue-backend redis needs --redis-url");
    pk_err *e = pk_queue_open_redis(&qc, &t->q);
    if (e) return e;
    /* the embeddings stay in the SQLite file; its own task table is unused */
    pk_queue_config ec = {.path = path};
    return pk_queue_open_sqlite(&ec, &t->sq);
}

static void close_queues(pk_tasks *t)
{
    if (t->sq && t->sq != t->q) pk_queue_close(t->sq);
    if (t->q) pk_queue_close(t->q);
    t->sq = t->q = NULL;
}

/* This process in the worker registry: HOST-PID unless named. */
static void init_self(pk_tasks *t, const pk_tasks_config *cfg)
{
    pk_queue_worker_info *w = &t->self;
    if (gethostname(w->host, sizeof w->host) != 0 || !w->host[0]) snprintf(w->host, sizeof w->host, "pake");
    w->host[sizeof w->host - 1] = '\0';
    w->pid = (int)getpid();
    if (cfg->name && *cfg->name)
        snprintf(w->name, sizeof w->name, "%s", cfg->name);
    else
        snprintf(w->name, sizeof w->name, "%.40s-%d", w->host, w->pid);
    snprintf(w->kind, sizeof w->kind, "%s", cfg->kind && *cfg->kind ? cfg->kind : "serve");
    w->started_ns = wall_now();
}

pk_err *pk_tasks_init(struct pk_server *s, const pk_tasks_config *cfg, pk_tasks **out)
{
    pk_tasks *t = calloc(1, sizeof *t);
    t->srv = s;
    t->cfg = *cfg;
    t->cfg.leases = t->cfg.limits = t->cfg.backend = t->cfg.kind = t->cfg.name = NULL; /* borrowed */
    if (t->cfg.workers > MAX_WORKERS) t->cfg.workers = MAX_WORKERS;
    init_self(t, cfg);
    pk_err *e = parse_leases(t, cfg->leases);
    if (!e) e = pk_queue_limits_parse(cfg->limits, &t->limits, &t->nlimits, &t->limits_buf);
    if (!e) e = open_queues(t, s, cfg);
    if (!e) e = open_vectors(t, s);
    if (e) {
        close_queues(t);
        free(t->limits);
        free(t->limits_buf);
        free(t);
        return e;
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    t->pending = calloc(PENDING_MAX, sizeof *t->pending);
    register_metrics(t);
    register_handler(t, "noop", pk_task_noop);
    register_handler(t, "note.summarize", pk_task_note_summarize);
    register_handler(t, "note.embed", pk_task_note_embed);
    register_handler(t, "workflow.trigger", pk_task_workflow_trigger);
    if ((e = pk_workflows_init(t))) {
        pk_tasks_dispose(t);
        return e;
    }
    pk_services_on_note_changed(s, on_note_changed, t);
    pk_services_set_tasks(s, t);
    *out = t;
    return NULL;
}

void pk_tasks_start(pk_tasks *t)
{
    int n = t->cfg.workers;
    t->workers = calloc((size_t)(n ? n : 1), sizeof *t->workers);
    t->last_seen = calloc((size_t)(n ? n : 1), sizeof *t->last_seen);
    for (int i = 0; i < n; i++) {
        worker *w = &t->workers[i];
        w->t = t;
        w->index = i;
        snprintf(w->name, sizeof w->name, "%s-w%d", t->self.name, i);
        atomic_store(&t->last_seen[i], wall_now());
    }
    t->nworkers = n;
    for (int i = 0; i < n; i++)
        pthread_create(&t->workers[i].th, NULL, worker_main, &t->workers[i]);
    t->started = true;
    t->self.threads = n;
    if (!n && t->cfg.auto_embed) t->hook_running = pthread_create(&t->hook_thread, NULL, hook_main, t) == 0;
    if (n) {
        beat(t);
        pk_log_info("task workers started: %d (queue %s, registered as %s)", n, t->q->backend, t->self.name);
    }
}

void pk_tasks_stop(pk_tasks *t, int64_t deadline_ms)
{
    if (!t || !t->started) return;
    atomic_store(&t->stop_deadline_mono, pk_mono_ns() + deadline_ms * 1000000);
    atomic_store(&t->stopping, true);
    pk_tasks_wake(t);
    for (int i = 0; i < t->nworkers; i++)
        pthread_join(t->workers[i].th, NULL);
    if (t->hook_running) pthread_join(t->hook_thread, NULL);
    t->hook_running = false;
    t->started = false;
    if (t->nworkers && t->q->ops->worker_leave) {
        pk_err *e = t->q->ops->worker_leave(t->q, t->self.name);
        if (e) pk_log_warn("cannot leave the worker registry: %s", e->message);
        pk_err_free(e);
    }
}

void pk_tasks_dispose(pk_tasks *t)
{
    if (!t) return;
    pk_tasks_stop(t, 0);
    pk_services_set_tasks(t->srv, NULL);
    pk_vecstore_close(t->vs);
    close_queues(t);
    free(t->limits);
    free(t->limits_buf);
    pk_workflows_dispose(t);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t->workers);
    free(t->last_seen);
    free(t->pending);
    free(t);
}
