/*
 * offload: a fixed pool of threads that run blocking work (store, Redis, outbound HTTP) for the event
 * loops. Jobs wait in a bounded FIFO; a full queue is refused (the caller answers 503), so overload
 * sheds load instead of growing memory. When a job's work is done the pool posts it back to the
 * owning loop through h2o's multithread queue. Thread-safe.
 */
#ifndef PAKE_SERVER_OFFLOAD_H
#define PAKE_SERVER_OFFLOAD_H
#include "server/server.h"

typedef struct pk_offload_pool pk_offload_pool;
pk_offload_pool *pk_offload_pool_new(int threads, int max_queue);
/* Enqueues; false when the queue is full or the pool is stopping. */
bool pk_offload_pool_submit(pk_offload_pool *p, pk_job *j);
/* Finishes queued work, then joins the threads; later submits are refused. Idempotent. */
void pk_offload_pool_stop(pk_offload_pool *p);
/* Stops (if needed) and frees the pool; no loop may use it any more. */
void pk_offload_pool_free(pk_offload_pool *p);
size_t pk_offload_pool_depth(pk_offload_pool *p);
#endif
