/*
 * A mutex + condition variable FIFO is enough here: a job costs tens of microseconds of store time,
 * far more than the queue operations. Jobs whose deadline passed while queued are not run (the loop
 * already answered 504); they are only posted back so the loop frees them.
 *
 * work_many jobs (pk_offload_many): one thread at a time runs them, taking all of one kind queued at that
 * moment in one call and going on while more arrive; submitting one while that thread runs wakes nobody.
 * So concurrent task creations cost one thread hand-off per batch instead of one per request plus the
 * queue's own group-commit hand-offs among the threads that would otherwise each carry one.
 */
#include "server/offload.h"
#include "core/clock.h"
#include "server/loop.h"
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

struct pk_offload_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pk_job **ring;
    size_t cap, head, len;
    bool stopping;
    bool many_active; /* a thread is running work_many jobs (at most one at a time) */
    int nthreads;
    pthread_t *threads;
};

static pk_job *ring_at(pk_offload_pool *p, size_t i)
{
    return p->ring[(p->head + i) % p->cap];
}

/* Removes the i-th queued job (FIFO order kept). */
static pk_job *ring_take(pk_offload_pool *p, size_t i)
{
    pk_job *j = ring_at(p, i);
    for (size_t k = i; k > 0; k--)
        p->ring[(p->head + k) % p->cap] = p->ring[(p->head + k - 1) % p->cap];
    p->head = (p->head + 1) % p->cap;
    p->len--;
    return j;
}

/* Takes the queued jobs of `fn` into batch[n..] (up to PK_OFFLOAD_MANY_MAX in all); returns the count. */
static size_t take_many(pk_offload_pool *p, pk_work_many_fn fn, pk_job **batch, size_t n)
{
    for (size_t i = 0; i < p->len && n < PK_OFFLOAD_MANY_MAX;)
        if (ring_at(p, i)->work_many == fn)
            batch[n++] = ring_take(p, i);
        else
            i++;
    return n;
}

static bool expired(pk_job *j)
{
    if (!j->deadline_ns || pk_mono_ns() < j->deadline_ns) return false;
    j->skipped = true;
    j->err = pk_err_new("deadline_exceeded", 504, "the request deadline passed while it waited for a worker");
    return true;
}

/* Runs the batch (minus the expired) in one work_many call and posts every job back. Lock not held. */
static void run_many(pk_job **batch, size_t n)
{
    pk_job *live[PK_OFFLOAD_MANY_MAX];
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!expired(batch[i])) live[m++] = batch[i];
    if (m) live[0]->work_many(live, m);
    for (size_t i = 0; i < n; i++)
        pk_loop_post(batch[i]->loop, batch[i]);
}

static void *worker_main(void *arg)
{
    pk_offload_pool *p = arg;
    /* SCHED_BATCH: a worker woken by the loop does not preempt it (wakeup preemption is off for batch
     * threads), so a loop thread sharing a core with workers hands out every ready request before they
     * run, instead of being switched out at each submit. Same priority and time share otherwise. */
    struct sched_param sp = {0};
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        size_t i;
        for (;;) { /* the first job this thread may run: work_many jobs wait for the running batch thread */
            for (i = 0; i < p->len && ring_at(p, i)->work_many && p->many_active; i++)
                ;
            if (i < p->len || (p->stopping && p->len == 0)) break;
            pthread_cond_wait(&p->cv, &p->mu);
        }
        if (i == p->len) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        pk_job *j = ring_take(p, i);
        if (j->work_many) {
            /* this thread runs every job of the kind queued now, then those queued meanwhile, until none */
            pk_work_many_fn fn = j->work_many;
            p->many_active = true;
            pk_job *batch[PK_OFFLOAD_MANY_MAX];
            batch[0] = j;
            size_t n = take_many(p, fn, batch, 1);
            while (n) {
                pthread_mutex_unlock(&p->mu);
                run_many(batch, n);
                pthread_mutex_lock(&p->mu);
                n = take_many(p, fn, batch, 0);
            }
            p->many_active = false;
            if (p->len || p->stopping) pthread_cond_broadcast(&p->cv); /* other kinds, or waiting to stop */
            pthread_mutex_unlock(&p->mu);
            continue;
        }
        pthread_mutex_unlock(&p->mu);
        if (!expired(j)) j->work(j);
        pk_loop_post(j->loop, j);
    }
}

pk_offload_pool *pk_offload_pool_new(int threads, int max_queue)
{
    pk_offload_pool *p = calloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->cap = (size_t)(max_queue > 0 ? max_queue : 1024);
    p->ring = calloc(p->cap, sizeof *p->ring);
    p->nthreads = threads > 0 ? threads : 1;
    p->threads = calloc((size_t)p->nthreads, sizeof *p->threads);
    for (int i = 0; i < p->nthreads; i++)
        pthread_create(&p->threads[i], NULL, worker_main, p);
    return p;
}

bool pk_offload_pool_submit(pk_offload_pool *p, pk_job *j)
{
    pthread_mutex_lock(&p->mu);
    if (p->stopping || p->len == p->cap) {
        pthread_mutex_unlock(&p->mu);
        return false;
    }
    p->ring[(p->head + p->len) % p->cap] = j;
    p->len++;
    if (!j->work_many || !p->many_active) pthread_cond_signal(&p->cv); /* else the batch thread takes it */
    pthread_mutex_unlock(&p->mu);
    return true;
}

size_t pk_offload_pool_depth(pk_offload_pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->len;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void pk_offload_pool_stop(pk_offload_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    bool joined = p->nthreads == 0;
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (joined) return;
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_lock(&p->mu);
    p->nthreads = 0;
    pthread_mutex_unlock(&p->mu);
}

void pk_offload_pool_free(pk_offload_pool *p)
{
    if (!p) return;
    pk_offload_pool_stop(p);
    free(p->threads);
    free(p->ring);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
