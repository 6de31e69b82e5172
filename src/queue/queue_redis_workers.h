/*
 * queue_redis_workers: the worker registry (pk_queue_worker_info, see queue.h) kept in Redis, for the
 * Redis Streams backend's optional worker_beat / worker_leave / workers_seen ops. Every process on the
 * same Redis and prefix shares it.
 *
 * Keys: <prefix>workers, a sorted set (member = worker name, score = time of its last beat in Redis's
 * own clock, ms), and <prefix>workers:info, a hash (name -> JSON of host, kind, pid, threads, busy,
 * started_ns). Each call is one Lua script, so the set and the hash never disagree; a beat also drops
 * the entries older than forget_ms. Times come from Redis (TIME), so machines with skewed clocks agree
 * on who is recent; workers_seen converts them to the caller's clock (last_seen = now - age).
 *
 * Threading and errors: blocking (offload or worker threads), thread-safe through the pool; errors are
 * the pool's (redis_unavailable, redis_timeout, redis_error) or "queue_error" for a malformed reply.
 */
#ifndef PAKE_QUEUE_REDIS_WORKERS_H
#define PAKE_QUEUE_REDIS_WORKERS_H
#include "queue/queue.h"

struct pk_redis;
pk_err *pk_queue_redis_worker_beat(struct pk_redis *r, const char *prefix, const pk_queue_worker_info *w,
                                   int64_t forget_ms);
pk_err *pk_queue_redis_worker_leave(struct pk_redis *r, const char *prefix, const char *name);
/* Processes seen within max_age_ms, most recent first; *out malloc'd (free()), NULL when *n == 0. */
pk_err *pk_queue_redis_workers_seen(struct pk_redis *r, const char *prefix, int64_t max_age_ms,
                                    pk_queue_worker_info **out, size_t *n);
#endif
