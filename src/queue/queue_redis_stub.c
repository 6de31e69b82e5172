/*
 * queue_redis_stub: TEMPORARY placeholder for the Redis Streams backend (queue_redis.c, built on the
 * `qredis` branch). It lets `--queue-backend redis` fail with a clear 501 until that file is merged;
 * delete this file when merging it.
 */
#include "queue/queue.h"

pk_err *pk_queue_open_redis(const pk_queue_config *cfg, pk_queue **out)
{
    (void)cfg;
    *out = NULL;
    return pk_err_new("not_implemented", 501, "the Redis task queue backend is not built into this binary");
}
