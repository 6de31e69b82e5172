/*
 * queue: the task queue contract. Workers (src/tasks/) and the task API only see this header; the
 * embedded SQLite backend (queue_sqlite.c) and the Redis Streams backend (queue_redis.c) implement it
 * through the same vtable, with the same semantics, JSON and error codes.
 *
 * Model. A task is a unit of asynchronous work: a `type` naming its handler, a JSON `payload`, a
 * `queue` name and a `priority` (critical > high > normal > low). Its life:
 *
 *   enqueue ──▶ queued ─────────────── claim ──▶ running ── complete ──▶ succeeded
 *          └─▶ scheduled (not_before in the future; claimable once due)   │
 *                                                                        ├─ fail, attempts left ──▶ retrying
 *   retrying (not_before = now + full-jitter backoff; claimable once due) │   (then claimed again)
 *                                                                        ├─ fail, no attempts left ─▶ dead
 *                                                                        ├─ fail, not retryable ────▶ failed
 *                                                                        ├─ lease expired (reclaim) ─▶ queued
 *                                                                        │   or dead when attempts are spent
 *                                                                        ├─ cancel seen by the worker ─▶
 * cancelled └─ release (shutdown) ──▶ queued cancel: queued / scheduled / retrying ──▶ cancelled at once (it
 * never starts); running: the cancel is recorded and the worker is told at its next heartbeat; it then calls
 * `cancelled`. retry: dead / failed / cancelled ──▶ queued with attempts reset (the error history is kept).
 *
 * Claims and leases. `claim` picks the most urgent claimable task (priority, then due time, then
 * age), marks it running, counts the attempt and gives the claimer a lease until now + lease_ms
 * (lease_ms comes from the task's type, see pk_queue_config). The worker renews it with `heartbeat`;
 * every completion call names the worker and is refused (code "lease_lost", 409) unless that worker
 * still holds the task, so a worker whose lease expired and was reclaimed can never overwrite the
 * newer attempt's outcome. `reclaim_expired` turns expired leases (a crashed or stalled worker) back
 * into queued tasks (or dead ones, when that was the last attempt): at-least-once delivery, so
 * handlers must be idempotent.
 *
 * Idempotency. An enqueue with a key returns the existing task (and *created = false) when a task
 * with the same key has not started yet, or was created less than idem_ttl_ms ago; otherwise a new
 * task is made. TTL 0 therefore means "coalesce with a pending duplicate only".
 *
 * Output. Tasks leave the queue as JSON text (the bytes the API serves):
 *   {"id":"<uuidv7>","type":"noop","queue":"default","priority":"normal","state":"queued",
 *    "payload":{..},"attempts":0,"max_attempts":3,"idempotency_key":null,"not_before":"<rfc3339>",
 *    "timeout_ms":30000,"lease_ms":30000,"trace_context":null,"progress":0,"cancel_requested":false,
 *    "result":null,"error":null,"errors":[{"attempt":1,"at":"..","error":".."}],
 *    "created_at":"..","started_at":null,"finished_at":null,"updated_at":".."}
 *
 * Errors (pk_err codes): "not_found" 404, "conflict" 409 (cancel of a finished task, retry of a task
 * that is not dead/failed/cancelled), "lease_lost" 409, "validation_failed" 422 (bad cursor, bad
 * input), "queue_error" 500/503 (SQLite or Redis; 503 and retryable for busy, I/O or connection errors).
 *
 * Threading. A pk_queue is shared by all threads; every function is thread-safe and BLOCKING (file
 * I/O): call it from workers, the offload pool or the CLI, never from an event-loop thread. Times are
 * wall-clock nanoseconds from the configured clock (a fake one in tests).
 */
#ifndef PAKE_QUEUE_QUEUE_H
#define PAKE_QUEUE_QUEUE_H
#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pk_queue pk_queue;

typedef enum {
    PK_TASK_QUEUED,
    PK_TASK_SCHEDULED,
    PK_TASK_RUNNING,
    PK_TASK_SUCCEEDED,
    PK_TASK_FAILED,
    PK_TASK_RETRYING,
    PK_TASK_DEAD,
    PK_TASK_CANCELLED,
    PK_TASK__STATES
} pk_task_state;
const char *pk_task_state_name(pk_task_state s);
int pk_task_state_parse(const char *s); /* -1 when unknown */

typedef enum { PK_PRIO_CRITICAL, PK_PRIO_HIGH, PK_PRIO_NORMAL, PK_PRIO_LOW, PK_PRIO__COUNT } pk_task_priority;
const char *pk_task_priority_name(int p);
int pk_task_priority_parse(const char *s); /* -1 when unknown */

#define PK_TASK_TYPE_MAX 64
#define PK_TASK_QUEUE_MAX 64

/* What enqueue needs. Strings are borrowed for the call; zero values take the defaults. */
typedef struct pk_task_input {
    const char *type;            /* required: 1..64 chars of [a-z0-9_.-] */
    const char *queue;           /* default "default"; same alphabet */
    const char *payload_json;    /* a JSON object, already validated; NULL = {} */
    int priority;                /* pk_task_priority; default normal (callers set it explicitly) */
    int max_attempts;            /* 0 = config default */
    int64_t timeout_ms;          /* run time limit of one attempt; 0 = config default */
    int64_t not_before_ns;       /* wall ns; 0 = now */
    const char *idempotency_key; /* NULL = none */
    int64_t idem_ttl_ms;         /* see "Idempotency" above */
    const char *trace_context;   /* W3C traceparent of the enqueuing request, or NULL */
} pk_task_input;

/* A claimed task, as a worker needs it. Strings are owned (pk_task_free). */
typedef struct pk_task {
    char id[37];
    char *type, *queue, *payload_json, *trace_context;
    int priority;
    int attempts; /* including this one */
    int max_attempts;
    int64_t timeout_ms, lease_ms;
    int64_t created_ns, not_before_ns, started_ns;
} pk_task;
void pk_task_free(pk_task *t);

typedef struct pk_task_filter {
    int state;        /* -1 = any */
    const char *type; /* NULL = any */
    const char *queue;
    int limit;          /* 1..100 */
    const char *cursor; /* from a previous page; NULL = first (newest first) */
} pk_task_filter;

typedef struct pk_task_page {
    pk_buf items; /* JSON array */
    char *next_cursor;
    size_t count;
} pk_task_page;
void pk_task_page_free(pk_task_page *p);

/* Limits per task type, shared by every worker of the queue (all processes, all machines with the
 * Redis backend): at most `concurrency` attempts running at once and at most `rate_per_s` starts per
 * second (GCRA with `burst`). A claim never hands out a task whose type is at its limit; such tasks
 * stay queued (or are deferred to the time the limit allows) and are claimed later. 0 = unlimited. */
typedef struct pk_queue_type_limit {
    const char *type;
    int concurrency;
    double rate_per_s;
    int burst; /* 0 = 1 */
} pk_queue_type_limit;

/* Default of pk_queue_config.group_inflight. */
#define PK_QUEUE_GROUP_INFLIGHT 1

/* A lease per task type (the reclaim idle time). */
typedef struct pk_queue_type_lease {
    const char *type;
    int64_t lease_ms;
} pk_queue_type_lease;

typedef struct pk_queue_config {
    const char *path;                /* database file (the SQLite backend); ":memory:" for tests */
    const pk_clock *clock;           /* wall ns; NULL = real time */
    double (*unit_random)(void *ud); /* [0,1) for backoff jitter; NULL = pk_rand_unit */
    void *random_ud;
    int default_max_attempts;          /* default 3 */
    int64_t default_timeout_ms;        /* default 30000 */
    int64_t default_lease_ms;          /* default 30000 */
    const pk_queue_type_lease *leases; /* per-type overrides */
    size_t nleases;
    int64_t retry_base_ms;    /* full-jitter backoff: uniform in [0, min(cap, base * 2^(attempt-1))) */
    int64_t retry_cap_ms;     /* defaults 1000 and 60000 */
    int64_t keep_finished_ms; /* finished tasks older than this are purged by `purge`; default 7 days */
    const pk_queue_type_limit *limits; /* per-type shared limits (see above) */
    size_t nlimits;
    /* Redis backend only: the client pool (not owned) and the key prefix (default "pake:"). */
    struct pk_redis *redis;
    const char *redis_prefix;
    /* Redis backend: false (default) = group commit: concurrent enqueues of this process go to Redis as
     * one script call, and so do its worker threads' concurrent claims and complete_claims (each caller
     * still gets its own result or error); true = one script call per operation. */
    bool no_group_commit;
    /* Redis backend, group commit: most group calls of one kind (enqueues; claims and complete_claims)
     * a process has in flight at once, each on its own pooled connection: while one is in flight the
     * next group forms and is sent. 0 = PK_QUEUE_GROUP_INFLIGHT; 1 = one at a time. */
    int group_inflight;
    /* Redis backend, group commit of claims: when fewer callers wait than the last group held (their
     * tasks were short and they are on their way back), the leader waits up to this many microseconds
     * for them before sending, so fewer, larger calls carry the same work. 0 = never waits. */
    int64_t group_gather_us;
} pk_queue_config;

/* Per (queue, priority) numbers for GET /v1/queues. */
typedef struct pk_queue_stats_row {
    char queue[PK_TASK_QUEUE_MAX + 1];
    int priority;
    int64_t counts[PK_TASK__STATES];
    int64_t ready;           /* queued, or scheduled/retrying and due */
    int64_t oldest_ready_ns; /* created (or due) time of the oldest ready task; 0 = none */
} pk_queue_stats_row;

typedef struct pk_queue_stats {
    pk_queue_stats_row *rows;
    size_t nrows;
    int64_t now_ns;
} pk_queue_stats;
void pk_queue_stats_free(pk_queue_stats *s);
/* For backends: the row of (queue, prio), appended (zeroed) when missing; and the rows sorted by queue,
 * then priority. */
pk_queue_stats_row *pk_queue_stats_row_for(pk_queue_stats *s, const char *queue, int prio);
void pk_queue_stats_sort(pk_queue_stats *s);

/* A process that runs workers, as the queue's worker registry knows it (GET /v1/queues "workers_seen").
 * Each such process beats about once a second; the registry is shared by every process on the queue
 * (a table in the SQLite file, a sorted set scored by last-seen time plus a hash in Redis). */
typedef struct pk_queue_worker_info {
    char name[64]; /* unique per process: "<host>-<pid>" unless named (--worker-name) */
    char host[64]; /* gethostname() */
    char kind[16]; /* "serve" (threads in `pake serve`) or "worker" (`pake worker`) */
    int pid;
    int threads;        /* worker threads in the process */
    int busy;           /* of which running a task at the last beat */
    int64_t started_ns; /* wall ns */
    int64_t last_seen_ns;
} pk_queue_worker_info;

/* Entries not seen for this long are dropped from the registry by the next beat of any process. */
#define PK_QUEUE_WORKER_FORGET_MS 3600000LL

typedef struct pk_queue_ops {
    void (*close)(pk_queue *q);
    pk_err *(*enqueue)(pk_queue *q, const pk_task_input *in, pk_buf *out, bool *created, char id[37]);
    /* Optional (NULL: pk_queue_enqueue_batch enqueues one by one). The n inputs in order, as n enqueues
     * would (a later input with an earlier one's idempotency key is a replay of it), in one call: out
     * gets a JSON array of the n task documents (the new task, or the existing one on a replay),
     * created[i] says which (out is appended to). The Redis backend checks every input first and runs
     * the batch as one script; the fallback stops at the first failure, leaving the inputs before it
     * enqueued (callers validate first; retrying with idempotency keys is safe either way). */
    pk_err *(*enqueue_batch)(pk_queue *q, const pk_task_input *in, size_t n, pk_buf *out, bool *created);
    /* Optional (NULL: pk_queue_enqueue_each enqueues one by one). n independent enqueues, each with its
     * own result as if n callers had called enqueue one after the other: out[i] (the task document),
     * created[i], id[i] and err[i] (NULL on success; one input's failure is its own). The Redis backend
     * runs them in one script call, as its group commit does for concurrent callers: for a caller that
     * already holds several requests (the server's task creations, pk_offload_many). */
    void (*enqueue_each)(pk_queue *q, const pk_task_input *in, size_t n, pk_buf *out, bool *created,
                         char (*id)[37], pk_err **err);
    pk_err *(*get)(pk_queue *q, const char *id, pk_buf *out);
    pk_err *(*list)(pk_queue *q, const pk_task_filter *f, pk_task_page *out);
    /* Claims one task of any type (types == NULL) or of the listed types. *out->id[0] == 0: none. */
    pk_err *(*claim)(pk_queue *q, const char *worker, const char *const *types, size_t ntypes, pk_task *out);
    /* Renews the lease and records progress (< 0: unchanged); *cancel says a cancel was requested. */
    pk_err *(*heartbeat)(pk_queue *q, const char *id, const char *worker, double progress, bool *cancel);
    pk_err *(*complete)(pk_queue *q, const char *id, const char *worker, const char *result_json);
    /* Optional (NULL: complete, then claim). complete(), then, only when that succeeded, claim() for
     * the same worker in the same round trip: the busy worker's loop costs one call per task. On an
     * error (lease_lost included) nothing was claimed; *next->id == 0 also when there was nothing to
     * claim or the claim part failed (the caller's next plain claim then reports the failure). */
    pk_err *(*complete_claim)(pk_queue *q, const char *id, const char *worker, const char *result_json,
                              const char *const *types, size_t ntypes, pk_task *next);
    /* A failed attempt: retrying (with backoff), dead (attempts spent) or failed (not retryable). The
     * new state is returned in *state. */
    pk_err *(*fail)(pk_queue *q, const char *id, const char *worker, const char *error, bool retryable,
                    pk_task_state *state);
    pk_err *(*cancelled)(pk_queue *q, const char *id, const char *worker); /* running → cancelled */
    pk_err *(*release)(pk_queue *q, const char *id, const char *worker);   /* running → queued, uncounted */
    pk_err *(*cancel)(pk_queue *q, const char *id, pk_buf *out, pk_task_state *state);
    pk_err *(*retry)(pk_queue *q, const char *id, pk_buf *out);
    /* Expired leases → queued (or dead). *n = how many. */
    pk_err *(*reclaim_expired)(pk_queue *q, int *n);
    /* Earliest time something may become claimable (a due scheduled/retrying task or an expiring
     * lease); INT64_MAX when nothing is pending. */
    pk_err *(*next_wakeup)(pk_queue *q, int64_t *at_ns);
    pk_err *(*stats)(pk_queue *q, pk_queue_stats *out);
    pk_err *(*purge)(pk_queue *q, int *n); /* deletes finished tasks older than keep_finished_ms */
    /* Optional (NULL: callers poll next_wakeup). Blocks up to timeout_ms until a task may be
     * claimable (e.g. XREADGROUP BLOCK on Redis, so workers in other processes wake at once). */
    pk_err *(*wait)(pk_queue *q, int64_t timeout_ms);
    /* Worker registry, optional (NULL: the backend keeps none; GET /v1/queues then lists the local
     * workers only). worker_beat upserts w with last_seen = now (w->last_seen_ns is ignored) and drops
     * entries older than PK_QUEUE_WORKER_FORGET_MS; worker_leave removes a process that stops cleanly;
     * workers_seen lists the processes seen within max_age_ms, most recent first (*out is malloc'd,
     * free() it; *n may be 0 with *out NULL). */
    pk_err *(*worker_beat)(pk_queue *q, const pk_queue_worker_info *w);
    pk_err *(*worker_leave)(pk_queue *q, const char *name);
    pk_err *(*workers_seen)(pk_queue *q, int64_t max_age_ms, pk_queue_worker_info **out, size_t *n);
} pk_queue_ops;

struct pk_queue {
    const pk_queue_ops *ops;
    const char *backend; /* "sqlite" or "redis" */
};

pk_err *pk_queue_open_sqlite(const pk_queue_config *cfg, pk_queue **out);
/* Redis Streams backend (queue_redis.c): cfg->redis and cfg->redis_prefix are required. */
pk_err *pk_queue_open_redis(const pk_queue_config *cfg, pk_queue **out);
/* Parses "type=concurrency:N;rate:R/s;burst:B,type2=..." into limits (strings point into a copy
 * owned by *buf; free both with free()). Errors: "bad_config" naming the bad part. */
pk_err *pk_queue_limits_parse(const char *spec, pk_queue_type_limit **limits, size_t *n, char **buf);
/* The backend's SQLite handle access for modules that keep derived data in the same file
 * (embeddings, src/tasks/): runs fn(db, ud) under the queue's connection lock. Only for a queue opened
 * with pk_queue_open_sqlite (any other backend: "queue_error" 500). */
struct sqlite3;
pk_err *pk_queue_sqlite_with_db(pk_queue *q, pk_err *(*fn)(struct sqlite3 *db, void *ud), void *ud);

/* For backends: fills cfg's zero values with the documented defaults (wall clock, pk_rand_unit, 3
 * attempts, 30 s timeout and lease, backoff 1 s .. 60 s, finished tasks kept 7 days). */
void pk_queue_config_defaults(pk_queue_config *cfg);
/* The lease of a type under cfg (default when no override). */
int64_t pk_queue_lease_for(const pk_queue_config *cfg, const char *type);
/* Validates a type or queue name: 1..64 chars of [a-z0-9_.-]. */
bool pk_queue_name_valid(const char *s);

static inline void pk_queue_close(pk_queue *q)
{
    q->ops->close(q);
}

/* enqueue_each with the fallback (enqueue one by one). */
static inline void pk_queue_enqueue_each(pk_queue *q, const pk_task_input *in, size_t n, pk_buf *out,
                                         bool *created, char (*id)[37], pk_err **err)
{
    if (q->ops->enqueue_each) return q->ops->enqueue_each(q, in, n, out, created, id, err);
    for (size_t i = 0; i < n; i++)
        err[i] = q->ops->enqueue(q, &in[i], &out[i], &created[i], id[i]);
}

/* enqueue_batch with the fallback (enqueue one by one into the same array). */
static inline pk_err *pk_queue_enqueue_batch(pk_queue *q, const pk_task_input *in, size_t n, pk_buf *out,
                                             bool *created)
{
    if (q->ops->enqueue_batch) return q->ops->enqueue_batch(q, in, n, out, created);
    pk_buf_putc(out, '[');
    for (size_t i = 0; i < n; i++) {
        if (i) pk_buf_putc(out, ',');
        pk_err *e = q->ops->enqueue(q, &in[i], out, &created[i], NULL);
        if (e) return e;
    }
    pk_buf_putc(out, ']');
    return NULL;
}

/* complete_claim with the fallback for backends without it (complete, then claim; a failed claim is
 * dropped, next left empty): the same semantics whichever backend. */
static inline pk_err *pk_queue_complete_claim(pk_queue *q, const char *id, const char *worker,
                                              const char *result_json, const char *const *types,
                                              size_t ntypes, pk_task *next)
{
    if (q->ops->complete_claim)
        return q->ops->complete_claim(q, id, worker, result_json, types, ntypes, next);
    *next = (pk_task){0};
    pk_err *e = q->ops->complete(q, id, worker, result_json);
    if (e) return e;
    e = q->ops->claim(q, worker, types, ntypes, next);
    if (e) {
        pk_err_free(e);
        pk_task_free(next);
        *next = (pk_task){0};
    }
    return NULL;
}
#endif
