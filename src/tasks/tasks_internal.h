/*
 * tasks_internal: the task service's state, shared by tasks.c (workers), handlers.c (the built-in
 * task types) and embeddings.c (the embeddings table). Not for use outside src/tasks/.
 */
#ifndef PAKE_TASKS_INTERNAL_H
#define PAKE_TASKS_INTERNAL_H
#include "tasks/tasks.h"
#include <pthread.h>
#include <stdatomic.h>

struct worker;
struct pk_metric_family;
typedef struct pk_workflows pk_workflows;

struct pk_tasks {
    struct pk_server *srv;
    pk_tasks_config cfg;
    pk_queue *q;  /* the configured backend */
    pk_queue *sq; /* the SQLite file that holds the embeddings: q itself, or DATA_DIR/queue.db */
    pk_queue_type_limit *limits;
    size_t nlimits;
    char *limits_buf;
    pk_vecstore *vs; /* note embeddings (embeddings.c over sq, or store/vecstore_pg.c) */
    pk_queue_type_lease leases[16];
    char lease_types[16][PK_TASK_TYPE_MAX + 1];
    int nleases;
    struct {
        const char *type;
        pk_task_handler fn;
    } handlers[16];
    int nhandlers;
    char type_list[256];
    /* workers */
    struct worker *workers;
    _Atomic int64_t *last_seen; /* wall ns, per worker */
    int nworkers;
    pthread_t hook_thread; /* with 0 workers: enqueues the note.embed tasks that note changes ask for */
    bool hook_running;
    bool started;
    atomic_bool stopping;
    _Atomic int64_t stop_deadline_mono;
    _Atomic int64_t last_reclaim_mono;
    atomic_bool waiter;                        /* an idle worker is blocked in q->ops->wait */
    _Atomic int64_t last_warn_mono;            /* throttles the "claim failed" warnings */
    pk_queue_worker_info self;                 /* this process in the worker registry */
    int64_t last_beat_mono;                    /* the worker that won the reclaim slot */
    int64_t last_gauges_mono, last_purge_mono; /* the worker that won the reclaim slot */
    /* wake-ups and pending note changes (under mu) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t gen;
    char (*pending)[37];
    int npending;
    uint64_t pending_dropped;
    pk_workflows *wf; /* workflow.c: NULL without --workflows */
    /* metrics */
    struct pk_metric_family *m_events, *m_wait, *m_run, *m_depth, *m_oldest, *m_states, *m_heartbeat, *m_busy;
};

/* handlers.c */
pk_err *pk_task_noop(pk_task_ctx *c, const pk_task *t, const cJSON *payload, pk_buf *result);
pk_err *pk_task_note_summarize(pk_task_ctx *c, const pk_task *t, const cJSON *payload, pk_buf *result);
pk_err *pk_task_note_embed(pk_task_ctx *c, const pk_task *t, const cJSON *payload, pk_buf *result);
/* embeddings.c: the embedded vecstore over the queue's SQLite file (q must outlive it). */
pk_err *pk_vecstore_open_queue(pk_queue *q, pk_vecstore **out);
/* workflow.c (docs/n8n.md): init registers the "n8n" breaker, metrics and the trigger observer
 * (nothing without --workflows); drain enqueues the triggers of recorded note changes (workers). */
pk_err *pk_task_workflow_trigger(pk_task_ctx *c, const pk_task *t, const cJSON *payload, pk_buf *result);
pk_err *pk_workflows_init(pk_tasks *t);
void pk_workflows_drain(pk_tasks *t);
void pk_workflows_dispose(pk_tasks *t);
#endif
