/*
 * Bulkhead (see bulkhead.h): a semaphore built from a mutex and a condition variable rather than
 * sem_timedwait, because the wait must use CLOCK_MONOTONIC (a wall-clock jump must not stretch or cut
 * the wait) and because the snapshot needs the number of waiters, which a POSIX semaphore cannot give.
 */
#include "foundation/bulkhead.h"
#include "core/clock.h"
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PER_MS 1000000LL
#define NS_PER_S 1000000000LL

struct pk_bulkhead {
    char *name;
    int max_concurrent;
    int64_t max_wait_ns;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int in_use, waiting;
    uint64_t entered, rejected;
};

pk_bulkhead *pk_bulkhead_new(const char *name, int max_concurrent, int64_t max_wait_ms)
{
    if (!name || max_concurrent < 1 || max_wait_ms < 0) return NULL;
    pk_bulkhead *b = calloc(1, sizeof *b);
    if (!b) abort();
    b->name = strdup(name);
    if (!b->name) abort();
    b->max_concurrent = max_concurrent;
    b->max_wait_ns = max_wait_ms * NS_PER_MS;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    return b;
}

void pk_bulkhead_free(pk_bulkhead *b)
{
    if (!b) return;
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b->name);
    free(b);
}

const char *pk_bulkhead_name(const pk_bulkhead *b)
{
    return b->name;
}

pk_err *pk_bulkhead_enter(pk_bulkhead *b, int64_t deadline_ns)
{
    pthread_mutex_lock(&b->mu);
    if (b->in_use >= b->max_concurrent && b->max_wait_ns > 0) {
        int64_t now = pk_mono_ns();
        int64_t until = b->max_wait_ns > INT64_MAX - now ? INT64_MAX : now + b->max_wait_ns;
        if (deadline_ns < until) until = deadline_ns;
        struct timespec ts = {(time_t)(until / NS_PER_S), (long)(until % NS_PER_S)};
        b->waiting++;
        while (b->in_use >= b->max_concurrent && until > now) {
            if (pthread_cond_timedwait(&b->cv, &b->mu, &ts) == ETIMEDOUT) break;
            now = pk_mono_ns();
        }
        b->waiting--;
    }
    if (b->in_use < b->max_concurrent) {
        b->in_use++;
        b->entered++;
        pthread_mutex_unlock(&b->mu);
        return NULL;
    }
    b->rejected++;
    int max = b->max_concurrent;
    pthread_mutex_unlock(&b->mu);
    pk_err *e = pk_err_new("bulkhead_full", 503, "%s: all %d concurrent slots busy", b->name, max);
    e->retryable = true;
    e->retry_after_s = 1;
    return e;
}

void pk_bulkhead_leave(pk_bulkhead *b)
{
    pthread_mutex_lock(&b->mu);
    if (b->in_use > 0) b->in_use--;
    pthread_mutex_unlock(&b->mu);
    pthread_cond_signal(&b->cv);
}

void pk_bulkhead_snapshot_get(pk_bulkhead *b, pk_bulkhead_snapshot *out)
{
    pthread_mutex_lock(&b->mu);
    out->max_concurrent = b->max_concurrent;
    out->in_use = b->in_use;
    out->waiting = b->waiting;
    out->entered_total = b->entered;
    out->rejected_total = b->rejected;
    pthread_mutex_unlock(&b->mu);
}
