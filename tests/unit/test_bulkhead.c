/* Bulkhead: real threads and short real waits (tens of ms). Timing assertions use generous upper
 * bounds so a loaded 2-core machine does not make them flaky, and tight lower bounds (a wait can
 * never end early). */
#include "foundation/bulkhead.h"
#include "core/clock.h"
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define MS 1000000LL

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * MS};
    nanosleep(&ts, NULL);
}

Test(bulkhead, invalid_arguments)
{
    cr_assert_null(pk_bulkhead_new("x", 0, 10));
    cr_assert_null(pk_bulkhead_new("x", 1, -1));
    cr_assert_null(pk_bulkhead_new(NULL, 1, 1));
}

Test(bulkhead, full_without_wait_rejects_at_once)
{
    pk_bulkhead *b = pk_bulkhead_new("store", 2, 0);
    cr_assert_str_eq(pk_bulkhead_name(b), "store");
    cr_assert_null(pk_bulkhead_enter(b, PK_DEADLINE_NONE));
    cr_assert_null(pk_bulkhead_enter(b, PK_DEADLINE_NONE));
    int64_t t0 = pk_mono_ns();
    pk_err *e = pk_bulkhead_enter(b, PK_DEADLINE_NONE);
    cr_assert_lt(pk_mono_ns() - t0, 50 * MS);
    cr_assert_not_null(e);
    cr_assert_str_eq(e->code, "bulkhead_full");
    cr_assert_eq(e->status, 503);
    cr_assert(e->retryable);
    cr_assert_eq(e->retry_after_s, 1);
    pk_err_free(e);
    pk_bulkhead_snapshot s;
    pk_bulkhead_snapshot_get(b, &s);
    cr_assert_eq(s.in_use, 2);
    cr_assert_eq(s.max_concurrent, 2);
    cr_assert_eq(s.rejected_total, 1);
    cr_assert_eq(s.entered_total, 2);
    pk_bulkhead_leave(b);
    cr_assert_null(pk_bulkhead_enter(b, PK_DEADLINE_NONE));
    pk_bulkhead_leave(b);
    pk_bulkhead_leave(b);
    pk_bulkhead_snapshot_get(b, &s);
    cr_assert_eq(s.in_use, 0);
    pk_bulkhead_free(b);
}

static void *hold_then_leave(void *arg)
{
    sleep_ms(30);
    pk_bulkhead_leave(arg);
    return NULL;
}

Test(bulkhead, waiter_gets_freed_slot)
{
    pk_bulkhead *b = pk_bulkhead_new("dep", 1, 5000);
    cr_assert_null(pk_bulkhead_enter(b, PK_DEADLINE_NONE));
    pthread_t t;
    int64_t t0 = pk_mono_ns();
    pthread_create(&t, NULL, hold_then_leave, b);
    pk_err *e = pk_bulkhead_enter(b, PK_DEADLINE_NONE);
    int64_t waited = pk_mono_ns() - t0;
    cr_assert_null(e);
    cr_assert_geq(waited, 25 * MS, "waited %ld ns", (long)waited);
    cr_assert_lt(waited, 3000 * MS);
    pthread_join(t, NULL);
    pk_bulkhead_leave(b);
    pk_bulkhead_free(b);
}

Test(bulkhead, wait_times_out_after_max_wait)
{
    pk_bulkhead *b = pk_bulkhead_new("dep", 1, 40);
    cr_assert_null(pk_bulkhead_enter(b, PK_DEADLINE_NONE));
    int64_t t0 = pk_mono_ns();
    pk_err *e = pk_bulkhead_enter(b, PK_DEADLINE_NONE);
    int64_t waited = pk_mono_ns() - t0;
    cr_assert_not_null(e);
    cr_assert_geq(waited, 40 * MS);
    cr_assert_lt(waited, 2000 * MS);
    pk_err_free(e);
    pk_bulkhead_leave(b);
    pk_bulkhead_free(b);
}

Test(bulkhead, deadline_shorter_than_max_wait)
{
    pk_bulkhead *b = pk_bulkhead_new("dep", 1, 10000);
    cr_assert_null(pk_bulkhead_enter(b, PK_DEADLINE_NONE));
    int64_t t0 = pk_mono_ns();
    pk_err *e = pk_bulkhead_enter(b, t0 + 30 * MS);
    int64_t waited = pk_mono_ns() - t0;
    cr_assert_not_null(e);
    cr_assert_geq(waited, 30 * MS);
    cr_assert_lt(waited, 3000 * MS, "bounded by the deadline, not the 10 s max wait");
    pk_err_free(e);
    /* a deadline already past: no wait */
    t0 = pk_mono_ns();
    e = pk_bulkhead_enter(b, t0 - 1);
    cr_assert_not_null(e);
    cr_assert_lt(pk_mono_ns() - t0, 50 * MS);
    pk_err_free(e);
    pk_bulkhead_leave(b);
    pk_bulkhead_free(b);
}

static void *enter_and_hold(void *arg)
{
    pk_bulkhead *b = arg;
    pk_err *e = pk_bulkhead_enter(b, PK_DEADLINE_NONE);
    cr_assert_null(e);
    pk_bulkhead_leave(b);
    return NULL;
}

Test(bulkhead, snapshot_counts_waiters)
{
    pk_bulkhead *b = pk_bulkhead_new("dep", 1, 5000);
    cr_assert_null(pk_bulkhead_enter(b, PK_DEADLINE_NONE));
    pthread_t t;
    pthread_create(&t, NULL, enter_and_hold, b);
    pk_bulkhead_snapshot s = {0};
    for (int i = 0; i < 1000 && s.waiting == 0; i++) {
        sleep_ms(2);
        pk_bulkhead_snapshot_get(b, &s);
    }
    cr_assert_eq(s.waiting, 1);
    cr_assert_eq(s.in_use, 1);
    pk_bulkhead_leave(b);
    pthread_join(t, NULL);
    pk_bulkhead_snapshot_get(b, &s);
    cr_assert_eq(s.waiting, 0);
    cr_assert_eq(s.in_use, 0);
    cr_assert_eq(s.entered_total, 2);
    pk_bulkhead_free(b);
}

#define T_THREADS 8
#define T_ROUNDS 300
static _Atomic int inside, max_inside;
static _Atomic int ok_count, full_count;

static void *contend(void *arg)
{
    pk_bulkhead *b = arg;
    for (int i = 0; i < T_ROUNDS; i++) {
        pk_err *e = pk_bulkhead_enter(b, PK_DEADLINE_NONE);
        if (e) {
            atomic_fetch_add(&full_count, 1);
            pk_err_free(e);
            continue;
        }
        int n = atomic_fetch_add(&inside, 1) + 1;
        int m = atomic_load(&max_inside);
        while (n > m && !atomic_compare_exchange_weak(&max_inside, &m, n)) {
        }
        if (i % 50 == 0) sleep_ms(1);
        atomic_fetch_sub(&inside, 1);
        atomic_fetch_add(&ok_count, 1);
        pk_bulkhead_leave(b);
    }
    return NULL;
}

Test(bulkhead, threads_never_exceed_limit, .timeout = 30)
{
    pk_bulkhead *b = pk_bulkhead_new("dep", 3, 20);
    pthread_t t[T_THREADS];
    for (int i = 0; i < T_THREADS; i++)
        pthread_create(&t[i], NULL, contend, b);
    for (int i = 0; i < T_THREADS; i++)
        pthread_join(t[i], NULL);
    pk_bulkhead_snapshot s;
    pk_bulkhead_snapshot_get(b, &s);
    cr_assert_leq(max_inside, 3);
    cr_assert_geq(max_inside, 1);
    cr_assert_eq(ok_count + full_count, T_THREADS * T_ROUNDS);
    cr_assert_eq(s.entered_total, (uint64_t)ok_count);
    cr_assert_eq(s.rejected_total, (uint64_t)full_count);
    cr_assert_eq(s.in_use, 0);
    cr_assert_eq(s.waiting, 0);
    pk_bulkhead_free(b);
}
