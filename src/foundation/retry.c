/*
 * Retry policy and retry budget (see retry.h).
 *
 * The decision is a pure function of its inputs (the random draw is a parameter), so every branch can
 * be tested without sleeping. The budget is a ring of BUCKETS time buckets, each holding the requests
 * and retries that started in its slice of the window; buckets the clock has moved past are cleared
 * as it advances, so the sums always cover the last `window` (to one bucket's precision) at O(1)
 * amortised cost. One mutex guards it: the critical section is a few additions.
 */
#include "foundation/retry.h"
#include "core/id.h"
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define NS_PER_MS 1000000LL
#define BUCKETS 10

int64_t pk_retry_backoff_ns(const pk_retry_policy *p, int attempt, double unit_random)
{
    if (attempt < 0) attempt = 0;
    int64_t cap = p->cap_ms * NS_PER_MS;
    int64_t ceiling = p->base_ms * NS_PER_MS;
    for (int i = 0; i < attempt && ceiling < cap; i++)
        ceiling *= 2;
    if (ceiling > cap) ceiling = cap;
    if (ceiling <= 0) return 0;
    if (unit_random < 0) unit_random = 0;
    int64_t v = (int64_t)(unit_random * (double)ceiling);
    return v >= ceiling ? ceiling - 1 : v;
}

typedef struct rb_bucket {
    int64_t slot; /* window slice index (now / width) the counts belong to */
    uint64_t requests, retries;
} rb_bucket;

struct pk_retry_budget {
    pk_retry_budget_config cfg;
    const pk_clock *clock;
    int64_t width; /* ns per bucket */
    pthread_mutex_t mu;
    rb_bucket b[BUCKETS];
    int64_t head; /* latest slot seen */
    uint64_t requests, retries, denied;
};

pk_retry_budget *pk_retry_budget_new(const pk_retry_budget_config *cfg, const pk_clock *clock)
{
    if (cfg->window_ns < BUCKETS || cfg->ratio < 0 || cfg->min_retries < 0) return NULL;
    pk_retry_budget *rb = calloc(1, sizeof *rb);
    if (!rb) abort();
    rb->cfg = *cfg;
    rb->clock = clock;
    rb->width = cfg->window_ns / BUCKETS;
    rb->head = INT64_MIN;
    pthread_mutex_init(&rb->mu, NULL);
    return rb;
}

void pk_retry_budget_free(pk_retry_budget *rb)
{
    if (!rb) return;
    pthread_mutex_destroy(&rb->mu);
    free(rb);
}

static int slot_index(int64_t slot)
{
    return (int)(((slot % BUCKETS) + BUCKETS) % BUCKETS);
}

/* Moves the window to the current slot and returns its bucket. */
static rb_bucket *advance(pk_retry_budget *rb)
{
    int64_t slot = pk_clock_now(rb->clock) / rb->width;
    if (rb->head == INT64_MIN || slot > rb->head) {
        int64_t from = rb->head == INT64_MIN || slot - rb->head > BUCKETS ? slot - BUCKETS + 1 : rb->head + 1;
        for (int64_t s = from; s <= slot; s++) {
            rb_bucket *k = &rb->b[slot_index(s)];
            rb->requests -= k->requests;
            rb->retries -= k->retries;
            *k = (rb_bucket){s, 0, 0};
        }
        rb->head = slot;
    }
    return &rb->b[slot_index(rb->head)];
}

void pk_retry_budget_note_request(pk_retry_budget *rb)
{
    pthread_mutex_lock(&rb->mu);
    advance(rb)->requests++;
    rb->requests++;
    pthread_mutex_unlock(&rb->mu);
}

bool pk_retry_budget_try_retry(pk_retry_budget *rb)
{
    pthread_mutex_lock(&rb->mu);
    rb_bucket *k = advance(rb);
    double allowed = rb->cfg.ratio * (double)rb->requests + rb->cfg.min_retries;
    bool ok = (double)(rb->retries + 1) <= allowed;
    if (ok) {
        k->retries++;
        rb->retries++;
    } else {
        rb->denied++;
    }
    pthread_mutex_unlock(&rb->mu);
    return ok;
}

void pk_retry_budget_snapshot_get(pk_retry_budget *rb, pk_retry_budget_snapshot *out)
{
    pthread_mutex_lock(&rb->mu);
    advance(rb);
    out->requests = rb->requests;
    out->retries = rb->retries;
    out->denied_total = rb->denied;
    pthread_mutex_unlock(&rb->mu);
}

bool pk_retry_decide(const pk_retry_policy *p, pk_retry_budget *budget, const pk_err *err, int attempt,
                     int64_t now_ns, int64_t deadline_ns, double unit_random, int64_t *sleep_ns)
{
    *sleep_ns = 0;
    if (!err || !err->retryable) return false;
    if (attempt + 1 >= p->max_attempts) return false;
    int64_t sleep = pk_retry_backoff_ns(p, attempt, unit_random);
    if (now_ns >= deadline_ns || sleep >= deadline_ns - now_ns) return false;
    if (budget && !pk_retry_budget_try_retry(budget)) return false;
    *sleep_ns = sleep;
    return true;
}

bool pk_retry_should(const pk_retry_policy *p, pk_retry_budget *budget, const pk_err *err, int attempt,
                     int64_t now_ns, int64_t deadline_ns, int64_t *sleep_ns)
{
    return pk_retry_decide(p, budget, err, attempt, now_ns, deadline_ns, pk_rand_unit(), sleep_ns);
}

static void real_sleep(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

pk_err *pk_retry_run(const pk_retry_policy *p, pk_retry_budget *budget, const pk_clock *clock,
                     int64_t deadline_ns, pk_err *(*fn)(void *ud, int attempt), void *ud,
                     void (*sleep_fn)(int64_t ns))
{
    if (budget) pk_retry_budget_note_request(budget);
    for (int attempt = 0;; attempt++) {
        pk_err *err = fn(ud, attempt);
        if (!err) return NULL;
        int64_t sleep_ns;
        if (!pk_retry_should(p, budget, err, attempt, pk_clock_now(clock), deadline_ns, &sleep_ns))
            return err;
        pk_err_free(err);
        if (sleep_ns > 0) (sleep_fn ? sleep_fn : real_sleep)(sleep_ns);
    }
}
