/*
 * tasks: asynchronous work, in `pake serve` (threads next to the HTTP server) and in `pake worker`
 * (threads only). pk_tasks owns the queue (src/queue/: DATA_DIR/queue.db, or Redis Streams with
 * --queue-backend redis through the services' Redis pool), N worker threads, the task handlers (noop,
 * note.summarize, note.embed), the embeddings they produce (always in DATA_DIR/queue.db) and the task
 * metrics.
 *
 * Workers. Each worker loops: enqueue the note.embed tasks that note changes asked for, reclaim
 * expired leases (at most every 200 ms, whichever worker gets there; that worker also beats the
 * queue's worker registry once a second), claim the most urgent task and run its handler; when
 * nothing is claimable it sleeps until the queue's next wake-up time (a due delayed task or an
 * expiring lease, at most 250 ms) or until an in-process enqueue, retry or note change wakes it. With
 * a backend that has a `wait` op (Redis), one idle worker per process blocks in it instead and wakes
 * the others when it returns, so work enqueued by any process starts at once. Handlers are synchronous
 * and cooperative: they call pk_task_check() between steps,
 * which renews the lease every lease/3 (the heartbeat), and tells them to stop when the task was
 * cancelled, ran past its timeout or shutdown's deadline passed. A handler that blocks without
 * checking loses its lease and the task is reclaimed: at-least-once, so handlers are idempotent.
 *
 * Limits (--task-limits) are handed to the backend, which enforces them for every process on the queue.
 *
 * Shutdown (pk_tasks_stop): workers stop claiming at once; running tasks may finish until the
 * deadline, after which pk_task_check() answers PK_TASK_STOP_SHUTDOWN and the worker releases the
 * task back to the queue (the attempt is not counted); the process then leaves the worker registry.
 *
 * Ownership and threads: one pk_tasks per server, created before serving (it registers a note-change
 * observer and metric families), started after the listeners are up, stopped after the server has
 * drained. The functions below are thread-safe; the ones that touch the queue are BLOCKING (offload
 * pool or worker threads only), the observer and pk_tasks_wake are not.
 */
#ifndef PAKE_TASKS_TASKS_H
#define PAKE_TASKS_TASKS_H
#include "core/buf.h"
#include "core/err.h"
#include "core/json.h"
#include "queue/queue.h"
#include "store/vecstore.h"
#include <stdbool.h>
#include <stdint.h>

struct pk_server;
typedef struct pk_tasks pk_tasks;
typedef struct pk_task_ctx pk_task_ctx;

#define PK_EMBED_DIMS 384
#define PK_EMBED_MODEL "pake-hash-384-v1"

/* What pk_task_check tells a handler. */
typedef enum {
    PK_TASK_GO = 0,
    PK_TASK_STOP_CANCELLED,
    PK_TASK_STOP_TIMEOUT,
    PK_TASK_STOP_SHUTDOWN,
    PK_TASK_STOP_LEASE_LOST,
} pk_task_check_result;

/* A handler runs one attempt. It returns NULL (success; `result` may hold a JSON value, else null is
 * stored) or an error (err->retryable decides retry vs failed). It must call pk_task_check between
 * steps and return promptly (any error) when that says stop. */
typedef pk_err *(*pk_task_handler)(pk_task_ctx *c, const pk_task *t, const cJSON *payload, pk_buf *result);

pk_task_check_result pk_task_check(pk_task_ctx *c, double progress);
struct pk_server *pk_task_ctx_server(pk_task_ctx *c);
pk_tasks *pk_task_ctx_tasks(pk_task_ctx *c);
/* The name of the worker thread running the task ("<registry name>-w<i>"). */
const char *pk_task_ctx_worker(pk_task_ctx *c);

typedef struct pk_tasks_config {
    int workers;                  /* threads; 0 = none (API still enqueues) */
    int max_attempts;             /* default max attempts */
    int64_t timeout_ms, lease_ms; /* defaults per task */
    const char *leases;           /* per-type leases: "note.embed=60000,noop=5000" */
    int64_t retry_base_ms, retry_cap_ms;
    bool auto_embed; /* enqueue note.embed when a note is created or changed */
    /* embeddings storage (store/vecstore.h): with the PostgreSQL store the vectors live there, with an
     * HNSW index of embed_dims dimensions when pgvector is installed; else the queue's SQLite file */
    int embed_dims; /* 0 = PK_EMBED_DIMS */
    int hnsw_m, hnsw_ef_construction, hnsw_ef_search;
    const char *backend;  /* "sqlite" (NULL) or "redis": the process's Redis pool and --redis-prefix */
    const char *limits;   /* per-type limits, pk_queue_limits_parse grammar (NULL = none) */
    bool no_group_commit; /* Redis backend: one script call per operation (pk_queue_config) */
    int group_inflight;   /* Redis backend: group calls in flight per kind (pk_queue_config; 0 = default) */
    int group_gather_us;  /* Redis backend: claim group gather wait (pk_queue_config; 0 = none) */
    const char *kind;     /* "serve" (NULL) or "worker": how the worker registry shows this process */
    const char *name;     /* registry name of this process; NULL or empty = HOST-PID */
} pk_tasks_config;

/* Opens the configured queue (DATA_DIR/queue.db, or Redis Streams through the services' Redis pool;
 * DATA_DIR/queue.db then still holds the embeddings), registers handlers, metrics and the note
 * observer, and publishes itself through pk_services_set_tasks. Does not start workers. Errors:
 * "bad_config" (leases, limits, data directory), the backend's open errors. */
pk_err *pk_tasks_init(struct pk_server *s, const pk_tasks_config *cfg, pk_tasks **out);
void pk_tasks_start(pk_tasks *t);
/* Stops claiming, lets running tasks finish until deadline_ms from now, releases the rest, joins. */
void pk_tasks_stop(pk_tasks *t, int64_t deadline_ms);
void pk_tasks_dispose(pk_tasks *t);

pk_queue *pk_tasks_queue(pk_tasks *t);
bool pk_tasks_type_known(pk_tasks *t, const char *type);
/* Comma-separated registered types, for error messages (static storage of t). */
const char *pk_tasks_type_list(pk_tasks *t);
/* Validates a workflow.trigger payload given to POST /v1/tasks: {"workflow": a configured name, and
 * exactly one of "data": {...} or "note_id": UUID}. 422 validation_failed otherwise. Any thread. */
pk_err *pk_tasks_workflow_check(pk_tasks *t, const cJSON *payload);
/* Wakes idle workers (any thread, never blocks for long). */
void pk_tasks_wake(pk_tasks *t);

/* Queue operations with their metrics and worker wake-ups (blocking). */
pk_err *pk_tasks_enqueue(pk_tasks *t, const pk_task_input *in, pk_buf *out, bool *created);
/* n independent enqueues (pk_queue_enqueue_each: one Redis call for all), each with its own out[i],
 * created[i] and err[i]; metrics and wake-ups as pk_tasks_enqueue. */
void pk_tasks_enqueue_each(pk_tasks *t, const pk_task_input *in, size_t n, pk_buf *out, bool *created,
                           pk_err **err);
/* n inputs in one queue call (pk_queue_enqueue_batch): out = JSON array of the n tasks, created[n]. */
pk_err *pk_tasks_enqueue_batch(pk_tasks *t, const pk_task_input *in, size_t n, pk_buf *out, bool *created);
pk_err *pk_tasks_cancel(pk_tasks *t, const char *id, pk_buf *out, pk_task_state *state);
pk_err *pk_tasks_retry(pk_tasks *t, const char *id, pk_buf *out);
/* GET /v1/queues body (blocking). */
pk_err *pk_tasks_queues_json(pk_tasks *t, pk_buf *out);

/* ---- built-in AI operations (pure functions, any thread) ---- */
/* Deterministic local embedder: signed feature hashing of words, word bigrams and character
 * trigrams into PK_EMBED_DIMS dimensions, L2-normalised (all zero for text without words). */
void pk_embed_text(const char *text, size_t len, float out[PK_EMBED_DIMS]);
/* Extractive summary: the top-ranked sentences (word frequency, position), in document order, at
 * most max_sentences and about max_chars. Appends to out; returns the number of sentences kept. */
int pk_summarize(const char *text, size_t len, int max_sentences, size_t max_chars, pk_buf *out);

/* ---- embeddings ---- */
/* Where note vectors are stored and searched (owned by t; see store/vecstore.h for the calls, which are
 * blocking). vs->index says "pgvector-hnsw" or "exact-scan", vs->detail explains. */
pk_vecstore *pk_tasks_vectors(pk_tasks *t);
#endif
