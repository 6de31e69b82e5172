/*
 * ThreadSanitizer driver for the resilience modules.
 *
 * Criterion cannot run under TSan (its boxfort sandbox fails to map its inheritable arena:
 * "Could not initialize inheritable arena", Snaipe/Criterion#274), so the multi-threaded scenarios of
 * tests/unit/test_{breaker,ratelimit,retry,bulkhead}.c are repeated here as a plain program with the
 * same exact-count checks. Run it with scripts/tsan-foundation.sh. Exit status 0 = all checks passed
 * (TSan itself exits non-zero on a race report because the script sets halt_on_error).
 */
#include "foundation/breaker.h"
#include "foundation/bulkhead.h"
#include "foundation/ratelimit.h"
#include "foundation/retry.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MS 1000000LL
#define SEC 1000000000LL
#define THREADS 8
#define CALLS 100000

static int failures;
#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                  \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fputc('\n', stderr);                                                                             \
            failures++;                                                                                      \
        }                                                                                                    \
    } while (0)

/* ---- breaker ---- */

static _Atomic int64_t clock_ns = 1000 * SEC;
static int64_t ticking(void *ctx)
{
    (void)ctx;
    return atomic_fetch_add(&clock_ns, 50000) + 50000;
}
static const pk_clock tick_clock = {ticking, NULL};

static atomic_ulong b_ok, b_fail, b_ign, b_rej;
static _Atomic int b_transitions, b_stop;

static void on_tr(void *ud, const char *name, pk_breaker_state from, pk_breaker_state to)
{
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(ud, &s); /* callbacks may call back in */
    atomic_fetch_add(&b_transitions, 1);
}

static void *breaker_worker(void *arg)
{
    pk_breaker *b = arg;
    uint64_t x = (uint64_t)(uintptr_t)&x | 1;
    for (int i = 0; i < CALLS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pk_breaker_permit p;
        if (!pk_breaker_allow(b, &p)) {
            atomic_fetch_add(&b_rej, 1);
            continue;
        }
        int r = (int)(x % 10);
        pk_breaker_outcome o = r < 4 ? PK_OUTCOME_FAILURE : r < 9 ? PK_OUTCOME_SUCCESS : PK_OUTCOME_IGNORED;
        atomic_fetch_add(o == PK_OUTCOME_FAILURE ? &b_fail : o == PK_OUTCOME_SUCCESS ? &b_ok : &b_ign, 1);
        pk_breaker_record(b, &p, o, (int64_t)(x % 4) * SEC);
    }
    return NULL;
}

static void *breaker_operator(void *arg)
{
    pk_breaker_registry *r = arg;
    for (int i = 0; !atomic_load(&b_stop); i++) {
        pk_buf out = PK_BUF_INIT;
        pk_jw w;
        pk_jw_init(&w, &out);
        pk_breaker_registry_write_json(r, &w);
        pk_buf_free(&out);
        if (i % 50 == 10) pk_err_free(pk_breaker_registry_apply(r, "hammer", 6, "force-open"));
        if (i % 50 == 20) pk_err_free(pk_breaker_registry_apply(r, "hammer", 6, "reset"));
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    return NULL;
}

static void breaker_scenario(void)
{
    pk_breaker_config c;
    pk_breaker_config_init(&c, "hammer");
    c.window_type = PK_WINDOW_TIME;
    c.window_size = 2;
    c.minimum_calls = 20;
    c.failure_rate_threshold = 45;
    c.slow_call_duration_ns = 2 * SEC;
    c.slow_call_rate_threshold = 30;
    c.wait_in_open_ns = 100 * MS;
    c.permitted_calls_in_half_open = 4;
    c.max_wait_in_half_open_ns = 500 * MS;
    c.on_transition = on_tr;
    pk_breaker *b = NULL;
    pk_err *e = pk_breaker_new(&c, &tick_clock, &b);
    CHECK(!e, "new");
    c.on_transition_ud = b;
    pk_breaker_free(b);
    e = pk_breaker_new(&c, &tick_clock, &b);
    CHECK(!e, "new");
    pk_breaker_registry *r = pk_breaker_registry_new();
    pk_err_free(pk_breaker_registry_add(r, b));
    pthread_t t[THREADS], op;
    pthread_create(&op, NULL, breaker_operator, r);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, breaker_worker, b);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    atomic_store(&b_stop, 1);
    pthread_join(op, NULL);
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    unsigned long total = (unsigned long)THREADS * CALLS;
    CHECK(b_ok + b_fail + b_ign + b_rej == total, "caller counts");
    CHECK(s.successful == b_ok && s.failed == b_fail && s.ignored == b_ign, "outcomes %llu/%lu %llu/%lu",
          (unsigned long long)s.successful, (unsigned long)b_ok, (unsigned long long)s.failed,
          (unsigned long)b_fail);
    CHECK(s.rejected == b_rej, "rejected %llu vs %lu", (unsigned long long)s.rejected, (unsigned long)b_rej);
    CHECK(s.transitions == (uint64_t)b_transitions, "transitions");
    printf("breaker: %lu calls, %lu rejected, %llu transitions\n", total, (unsigned long)b_rej,
           (unsigned long long)s.transitions);
    pk_breaker_registry_free(r);
}

/* ---- limiter ---- */

static int64_t frozen_ns = 5 * SEC;
static const pk_clock frozen = {pk_fake_clock_now, &frozen_ns};
static pk_limiter *lim;
static atomic_long l_ok, l_no;
static const pk_rate_class cls = {"read", 100, SEC, 10};

static void *limiter_worker(void *arg)
{
    long id = (long)arg, ok = 0, no = 0;
    char key[16];
    for (int i = 0; i < CALLS; i++) {
        int n = snprintf(key, sizeof key, "u%d", (int)((i * 7 + id) % 64));
        pk_rate_decision d;
        pk_limiter_decide(lim, key, (size_t)n, &cls, frozen_ns, &d);
        d.allowed ? ok++ : no++;
    }
    atomic_fetch_add(&l_ok, ok);
    atomic_fetch_add(&l_no, no);
    return NULL;
}

static _Atomic int l_stop;
static const pk_rate_class flood_cls = {"flood", 1000000000, SEC, 1}; /* T = 1 ns */
static void *limiter_flood(void *arg)
{
    (void)arg;
    char key[32];
    for (int i = 0; !atomic_load(&l_stop); i++) {
        int n = snprintf(key, sizeof key, "flood-%d", i);
        pk_rate_decision d;
        /* the flood's own clock runs 1 ns per key a second behind the workers': each flood entry is
         * idle for the next flood decision, the workers' keys stay live */
        pk_limiter_decide(lim, key, (size_t)n, &flood_cls, frozen_ns - SEC + i, &d);
        if (i % 1000 == 0) {
            pk_limiter_local_sweep(lim);
            pk_limiter_local_stats st;
            pk_limiter_local_stats_get(lim, &st);
        }
    }
    return NULL;
}

static pthread_barrier_t barrier;
static _Atomic int64_t step_now = 1000 * SEC;
static const pk_rate_class conc = {"conc", 1000, SEC, 50};

static void *one_key_worker(void *arg)
{
    (void)arg;
    long ok = 0, no = 0;
    for (int step = 0; step < 300; step++) {
        int64_t now = atomic_load(&step_now);
        for (int c = 0; c < 3; c++) {
            pk_rate_decision d;
            pk_limiter_decide(lim, "hot", 3, &conc, now, &d);
            d.allowed ? ok++ : no++;
        }
        if (pthread_barrier_wait(&barrier) == PTHREAD_BARRIER_SERIAL_THREAD) atomic_fetch_add(&step_now, MS);
        pthread_barrier_wait(&barrier);
    }
    atomic_fetch_add(&l_ok, ok);
    atomic_fetch_add(&l_no, no);
    return NULL;
}

static void limiter_scenario(void)
{
    lim = pk_limiter_local_new(4096, &frozen);
    pthread_t t[THREADS], fl;
    pthread_create(&fl, NULL, limiter_flood, NULL);
    for (long i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, limiter_worker, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    atomic_store(&l_stop, 1);
    pthread_join(fl, NULL);
    /* the flood only inserts idle entries, which sweeps remove instead of evicting live ones */
    CHECK(l_ok == 64 * 10, "allowed %ld", (long)l_ok);
    CHECK(l_ok + l_no == (long)THREADS * CALLS, "total");
    pk_limiter_local_stats st;
    pk_limiter_local_stats_get(lim, &st);
    CHECK(st.entries <= 4096, "bounded");
    CHECK(st.evictions == 0, "no live entry evicted (%llu)", (unsigned long long)st.evictions);
    printf("limiter: %ld allowed of %ld, entries %zu, expired %llu\n", (long)l_ok, (long)(l_ok + l_no),
           st.entries, (unsigned long long)st.expired);
    pk_limiter_free(lim);

    lim = pk_limiter_local_new(0, &frozen);
    atomic_store(&l_ok, 0);
    atomic_store(&l_no, 0);
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, one_key_worker, NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    CHECK(l_ok == 50 + 299, "one key: allowed %ld", (long)l_ok);
    printf("limiter one key: %ld allowed (expected %d)\n", (long)l_ok, 50 + 299);
    pk_limiter_free(lim);
}

/* ---- retry budget and bulkhead ---- */

static void *budget_worker(void *arg)
{
    for (int i = 0; i < 20000; i++) {
        pk_retry_budget_note_request(arg);
        pk_retry_budget_try_retry(arg);
    }
    return NULL;
}

static void *bulkhead_worker(void *arg)
{
    for (int i = 0; i < 2000; i++) {
        pk_err *e = pk_bulkhead_enter(arg, PK_DEADLINE_NONE);
        if (e) {
            pk_err_free(e);
            continue;
        }
        pk_bulkhead_leave(arg);
    }
    return NULL;
}

static void retry_bulkhead_scenario(void)
{
    pk_retry_budget_config c = PK_RETRY_BUDGET_DEFAULT;
    pk_retry_budget *rb = pk_retry_budget_new(&c, &tick_clock);
    pk_bulkhead *bh = pk_bulkhead_new("dep", 2, 5);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, i % 2 ? budget_worker : bulkhead_worker, i % 2 ? (void *)rb : (void *)bh);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pk_bulkhead_snapshot s;
    pk_bulkhead_snapshot_get(bh, &s);
    CHECK(s.entered_total + s.rejected_total == 4 * 2000, "bulkhead totals");
    CHECK(s.in_use == 0 && s.waiting == 0, "bulkhead idle");
    pk_retry_budget_snapshot bs;
    pk_retry_budget_snapshot_get(rb, &bs);
    CHECK(bs.retries <= bs.requests, "budget");
    printf("bulkhead: %llu entered, %llu rejected\n", (unsigned long long)s.entered_total,
           (unsigned long long)s.rejected_total);
    pk_bulkhead_free(bh);
    pk_retry_budget_free(rb);
}

int main(void)
{
    breaker_scenario();
    limiter_scenario();
    retry_bulkhead_scenario();
    printf(failures ? "FAILED (%d)\n" : "OK\n", failures);
    return failures ? 1 : 0;
}
