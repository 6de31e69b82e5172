/*
 * A mutex + condition variable FIFO is enough here: a job costs tens of microseconds of store time,
 * far more than the queue operations. Jobs whose deadline passed while queued are not run (the loop
 * already answered 504); they are only posted back so the loop frees them.
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
    int nthreads;
    pthread_t *threads;
};

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
        while (p->len == 0 && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->len == 0) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        pk_job *j = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->len--;
        pthread_mutex_unlock(&p->mu);

        if (j->deadline_ns && pk_mono_ns() >= j->deadline_ns) {
            j->skipped = true;
            j->err = pk_err_new("deadline_exceeded", 504,
                                "the request deadline passed while it waited for a worker");
        } else {
            j->work(j);
        }
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
    pthread_cond_signal(&p->cv);
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
