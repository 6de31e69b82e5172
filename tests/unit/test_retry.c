/* Retry: backoff bounds, the decision function's every "no", the retry budget over a fake clock, and
 * pk_retry_run with a fake sleep that advances the fake clock. */
#include "foundation/retry.h"
#include <criterion/criterion.h>
#include <pthread.h>

#define MS 1000000LL
#define SEC 1000000000LL

static int64_t now_ns;
static pk_clock fake = {pk_fake_clock_now, &now_ns};

static void setup(void)
{
    now_ns = 500 * SEC;
}
TestSuite(retry, .init = setup);

Test(retry, backoff_full_jitter_bounds)
{
    pk_retry_policy p = PK_RETRY_POLICY_DEFAULT;
    cr_assert_eq(p.max_attempts, 3);
    cr_assert_eq(p.base_ms, 50);
    cr_assert_eq(p.cap_ms, 2000);
    cr_assert_eq(pk_retry_backoff_ns(&p, 0, 0.0), 0);
    cr_assert_eq(pk_retry_backoff_ns(&p, 0, 0.5), 25 * MS);
    cr_assert_eq(pk_retry_backoff_ns(&p, 1, 0.5), 50 * MS);
    cr_assert_eq(pk_retry_backoff_ns(&p, 2, 0.5), 100 * MS);
    cr_assert_eq(pk_retry_backoff_ns(&p, 5, 0.5), 800 * MS);
    cr_assert_eq(pk_retry_backoff_ns(&p, 6, 0.5), 1000 * MS, "capped at 2000 ms");
    cr_assert_eq(pk_retry_backoff_ns(&p, 1000, 0.5), 1000 * MS, "no overflow for huge attempts");
    int64_t top = pk_retry_backoff_ns(&p, 3, 0.999999999);
    cr_assert(top < 400 * MS && top > 399 * MS);
    for (int a = 0; a < 20; a++)
        for (double u = 0; u < 1; u += 0.01) {
            int64_t v = pk_retry_backoff_ns(&p, a, u);
            int64_t ceil = 50 * MS << (a < 6 ? a : 6);
            if (ceil > 2000 * MS) ceil = 2000 * MS;
            cr_assert(v >= 0 && v < ceil, "attempt %d u %f -> %ld", a, u, (long)v);
        }
}

Test(retry, decide_each_condition)
{
    pk_retry_policy p = PK_RETRY_POLICY_DEFAULT;
    pk_err *retryable = pk_err_unavailable("down");
    pk_err *fatal = pk_err_invalid("bad");
    int64_t sleep = -1;
    cr_assert(pk_retry_decide(&p, NULL, retryable, 0, now_ns, PK_DEADLINE_NONE, 0.5, &sleep));
    cr_assert_eq(sleep, 25 * MS);
    cr_assert(pk_retry_decide(&p, NULL, retryable, 1, now_ns, PK_DEADLINE_NONE, 0.5, &sleep));
    cr_assert_eq(sleep, 50 * MS);
    cr_assert_not(pk_retry_decide(&p, NULL, retryable, 2, now_ns, PK_DEADLINE_NONE, 0.5, &sleep),
                  "3 attempts made");
    cr_assert_not(pk_retry_decide(&p, NULL, fatal, 0, now_ns, PK_DEADLINE_NONE, 0.5, &sleep));
    cr_assert_not(pk_retry_decide(&p, NULL, NULL, 0, now_ns, PK_DEADLINE_NONE, 0.5, &sleep));
    /* deadline: the retry must be able to start before it */
    cr_assert_not(pk_retry_decide(&p, NULL, retryable, 0, now_ns, now_ns + 25 * MS, 0.5, &sleep));
    cr_assert(pk_retry_decide(&p, NULL, retryable, 0, now_ns, now_ns + 25 * MS + 1, 0.5, &sleep));
    cr_assert_not(pk_retry_decide(&p, NULL, retryable, 0, now_ns, now_ns - 1, 0.0, &sleep), "past");
    pk_retry_policy once = {1, 50, 2000};
    cr_assert_not(pk_retry_decide(&once, NULL, retryable, 0, now_ns, PK_DEADLINE_NONE, 0.5, &sleep));
    int64_t s2;
    cr_assert(pk_retry_should(&p, NULL, retryable, 0, now_ns, PK_DEADLINE_NONE, &s2));
    cr_assert(s2 >= 0 && s2 < 50 * MS);
    pk_err_free(retryable);
    pk_err_free(fatal);
}

Test(retry, budget_ratio_and_minimum)
{
    pk_retry_budget_config c = PK_RETRY_BUDGET_DEFAULT;
    cr_assert_eq(c.window_ns, 10 * SEC);
    cr_assert_float_eq(c.ratio, 0.2, 1e-12);
    cr_assert_eq(c.min_retries, 10);
    pk_retry_budget *b = pk_retry_budget_new(&c, &fake);
    cr_assert_not_null(b);
    /* no requests: the minimum allowance of 10 */
    for (int i = 0; i < 10; i++)
        cr_assert(pk_retry_budget_try_retry(b), "retry %d", i);
    cr_assert_not(pk_retry_budget_try_retry(b));
    /* 100 requests: 0.2 * 100 + 10 = 30 retries */
    for (int i = 0; i < 100; i++)
        pk_retry_budget_note_request(b);
    for (int i = 0; i < 20; i++)
        cr_assert(pk_retry_budget_try_retry(b));
    cr_assert_not(pk_retry_budget_try_retry(b));
    pk_retry_budget_snapshot s;
    pk_retry_budget_snapshot_get(b, &s);
    cr_assert_eq(s.requests, 100);
    cr_assert_eq(s.retries, 30);
    cr_assert_eq(s.denied_total, 2);
    /* after the window everything has slid out */
    now_ns += 10 * SEC;
    pk_retry_budget_snapshot_get(b, &s);
    cr_assert_eq(s.requests, 0);
    cr_assert_eq(s.retries, 0);
    cr_assert(pk_retry_budget_try_retry(b));
    pk_retry_budget_free(b);
}

Test(retry, budget_window_slides_per_bucket)
{
    pk_retry_budget_config c = PK_RETRY_BUDGET_DEFAULT;
    c.min_retries = 0;
    c.ratio = 0.5;
    pk_retry_budget *b = pk_retry_budget_new(&c, &fake);
    now_ns = 100 * SEC; /* start of a 1 s bucket */
    for (int i = 0; i < 10; i++)
        pk_retry_budget_note_request(b);
    now_ns += 5 * SEC;
    for (int i = 0; i < 10; i++)
        pk_retry_budget_note_request(b);
    for (int i = 0; i < 10; i++)
        cr_assert(pk_retry_budget_try_retry(b));
    cr_assert_not(pk_retry_budget_try_retry(b));
    /* at +10 s the first 10 requests leave: allowance 0.5 * 10 = 5 < 10 retries made */
    now_ns = 110 * SEC;
    cr_assert_not(pk_retry_budget_try_retry(b));
    pk_retry_budget_snapshot s;
    pk_retry_budget_snapshot_get(b, &s);
    cr_assert_eq(s.requests, 10);
    cr_assert_eq(s.retries, 10);
    /* at +15 s everything left */
    now_ns = 115 * SEC;
    pk_retry_budget_note_request(b);
    pk_retry_budget_note_request(b);
    cr_assert(pk_retry_budget_try_retry(b));
    cr_assert_not(pk_retry_budget_try_retry(b));
    pk_retry_budget_free(b);
}

Test(retry, budget_invalid_config)
{
    pk_retry_budget_config c = PK_RETRY_BUDGET_DEFAULT;
    c.ratio = -1;
    cr_assert_null(pk_retry_budget_new(&c, &fake));
    c = PK_RETRY_BUDGET_DEFAULT;
    c.window_ns = 0;
    cr_assert_null(pk_retry_budget_new(&c, &fake));
}

Test(retry, decide_charges_budget_only_when_retrying)
{
    pk_retry_policy p = PK_RETRY_POLICY_DEFAULT;
    pk_retry_budget_config c = {10 * SEC, 0.0, 2};
    pk_retry_budget *b = pk_retry_budget_new(&c, &fake);
    pk_err *e = pk_err_unavailable("down");
    pk_err *fatal = pk_err_invalid("x");
    int64_t sleep;
    cr_assert_not(pk_retry_decide(&p, b, fatal, 0, now_ns, PK_DEADLINE_NONE, 0.5, &sleep));
    cr_assert_not(pk_retry_decide(&p, b, e, 2, now_ns, PK_DEADLINE_NONE, 0.5, &sleep));
    cr_assert(pk_retry_decide(&p, b, e, 0, now_ns, PK_DEADLINE_NONE, 0.5, &sleep));
    cr_assert(pk_retry_decide(&p, b, e, 0, now_ns, PK_DEADLINE_NONE, 0.5, &sleep));
    cr_assert_not(pk_retry_decide(&p, b, e, 0, now_ns, PK_DEADLINE_NONE, 0.5, &sleep), "budget spent");
    cr_assert_eq(sleep, 0);
    pk_err_free(e);
    pk_err_free(fatal);
    pk_retry_budget_free(b);
}

/* ---- pk_retry_run ---- */

typedef struct script {
    int fail_first; /* attempts that fail */
    int status;     /* status of the failure */
    int calls;
    int64_t started[10];
} script;

static pk_err *scripted(void *ud, int attempt)
{
    script *s = ud;
    cr_assert_eq(attempt, s->calls, "attempts are numbered from 0 in order");
    s->started[s->calls++] = now_ns;
    if (attempt < s->fail_first) return pk_err_new("dep_failed", s->status, "attempt %d", attempt);
    return NULL;
}

static int64_t slept_total;
static void fake_sleep(int64_t ns)
{
    slept_total += ns;
    now_ns += ns;
}

Test(retry, run_succeeds_after_retries)
{
    pk_retry_policy p = PK_RETRY_POLICY_DEFAULT;
    script s = {.fail_first = 2, .status = 503};
    slept_total = 0;
    pk_err *e = pk_retry_run(&p, NULL, &fake, PK_DEADLINE_NONE, scripted, &s, fake_sleep);
    cr_assert_null(e);
    cr_assert_eq(s.calls, 3);
    cr_assert(slept_total < 150 * MS);
    cr_assert_eq(s.started[2] - s.started[0], slept_total);
}

Test(retry, run_gives_up_with_last_error)
{
    pk_retry_policy p = PK_RETRY_POLICY_DEFAULT;
    script s = {.fail_first = 100, .status = 503};
    pk_err *e = pk_retry_run(&p, NULL, &fake, PK_DEADLINE_NONE, scripted, &s, fake_sleep);
    cr_assert_not_null(e);
    cr_assert_eq(s.calls, 3);
    cr_assert_str_eq(e->message, "attempt 2");
    pk_err_free(e);

    script n = {.fail_first = 100, .status = 404};
    e = pk_retry_run(&p, NULL, &fake, PK_DEADLINE_NONE, scripted, &n, fake_sleep);
    cr_assert_eq(n.calls, 1, "non-retryable: no retry");
    pk_err_free(e);

    script d = {.fail_first = 100, .status = 503};
    e = pk_retry_run(&p, NULL, &fake, now_ns, scripted, &d, fake_sleep);
    cr_assert_eq(d.calls, 1, "deadline reached: no retry");
    pk_err_free(e);
}

Test(retry, run_notes_requests_in_budget)
{
    pk_retry_policy p = {5, 1, 10};
    pk_retry_budget_config c = {10 * SEC, 0.5, 0};
    pk_retry_budget *b = pk_retry_budget_new(&c, &fake);
    /* each run notes a request, allowing 0.5 retry: 4 runs that always fail make 4 requests and at
     * most 2 retries. */
    int total_calls = 0;
    for (int i = 0; i < 4; i++) {
        script s = {.fail_first = 100, .status = 503};
        pk_err *e = pk_retry_run(&p, b, &fake, PK_DEADLINE_NONE, scripted, &s, fake_sleep);
        pk_err_free(e);
        total_calls += s.calls;
    }
    pk_retry_budget_snapshot snap;
    pk_retry_budget_snapshot_get(b, &snap);
    cr_assert_eq(snap.requests, 4);
    cr_assert_eq(snap.retries, 2);
    cr_assert_eq(total_calls, 6);
    pk_retry_budget_free(b);
}

static void *budget_thread(void *arg)
{
    pk_retry_budget *b = arg;
    long ok = 0;
    for (int i = 0; i < 20000; i++) {
        pk_retry_budget_note_request(b);
        ok += pk_retry_budget_try_retry(b);
    }
    return (void *)ok;
}

Test(retry, budget_threads_respect_ratio)
{
    pk_retry_budget_config c = {10 * SEC, 0.2, 10};
    pk_retry_budget *b = pk_retry_budget_new(&c, &fake);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, budget_thread, b);
    long ok = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        ok += (long)r;
    }
    pk_retry_budget_snapshot s;
    pk_retry_budget_snapshot_get(b, &s);
    cr_assert_eq(s.requests, 80000);
    cr_assert_eq((long)s.retries, ok);
    cr_assert_eq(s.denied_total + s.retries, 80000);
    cr_assert(ok <= 0.2 * 80000 + 10);
    cr_assert(ok >= 0.2 * 80000 - 10, "ok = %ld", ok);
    pk_retry_budget_free(b);
}
