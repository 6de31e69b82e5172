/* Circuit breaker: every transition driven by a fake clock, windows, operator states, registry JSON,
 * and a multi-threaded hammer that checks the counters add up. */
#include "foundation/breaker.h"
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define MS 1000000LL
#define SEC 1000000000LL

static int64_t now_ns;
static pk_clock fake = {pk_fake_clock_now, &now_ns};

typedef struct transitions {
    int n;
    pk_breaker_state from[32], to[32];
} transitions;

static void on_tr(void *ud, const char *name, pk_breaker_state from, pk_breaker_state to)
{
    transitions *t = ud;
    cr_assert_str_eq(name, "dep");
    if (t->n < 32) {
        t->from[t->n] = from;
        t->to[t->n] = to;
    }
    t->n++;
}

static transitions tr;

static pk_breaker *make(pk_breaker_config *c)
{
    pk_breaker *b = NULL;
    c->on_transition = on_tr;
    c->on_transition_ud = &tr;
    pk_err *e = pk_breaker_new(c, &fake, &b);
    cr_assert_null(e, "%s", e ? e->message : "");
    return b;
}

static void setup(void)
{
    now_ns = 1000 * SEC;
    memset(&tr, 0, sizeof tr);
}

/* One call through the breaker; returns whether it was permitted. */
static bool call(pk_breaker *b, pk_breaker_outcome o, int64_t dur)
{
    pk_breaker_permit p;
    if (!pk_breaker_allow(b, &p)) return false;
    pk_breaker_record(b, &p, o, dur);
    return true;
}

static pk_breaker *small_count_breaker(void)
{
    pk_breaker_config c;
    pk_breaker_config_init(&c, "dep");
    c.window_size = 10;
    c.minimum_calls = 10;
    c.wait_in_open_ns = 5 * SEC;
    c.permitted_calls_in_half_open = 3;
    return make(&c);
}

static void trip(pk_breaker *b)
{
    for (int i = 0; i < 10; i++)
        cr_assert(call(b, PK_OUTCOME_FAILURE, MS));
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_OPEN);
}

TestSuite(breaker, .init = setup);

Test(breaker, defaults)
{
    pk_breaker_config c;
    pk_breaker_config_init(&c, "dep");
    cr_assert_eq(c.minimum_calls, 20);
    cr_assert_float_eq(c.failure_rate_threshold, 50.0, 1e-9);
    cr_assert_eq(c.slow_call_duration_ns, 2 * SEC);
    cr_assert_float_eq(c.slow_call_rate_threshold, 100.0, 1e-9);
    cr_assert_eq(c.wait_in_open_ns, 10 * SEC);
    cr_assert_eq(c.permitted_calls_in_half_open, 5);
    cr_assert_eq(c.max_wait_in_half_open_ns, 0);
    pk_breaker *b = make(&c);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    cr_assert_str_eq(pk_breaker_name(b), "dep");
    pk_breaker_free(b);
}

Test(breaker, invalid_config)
{
    pk_breaker_config c;
    pk_breaker *b = (pk_breaker *)1;
    pk_breaker_config_init(&c, "dep");
    c.failure_rate_threshold = 0;
    pk_err *e = pk_breaker_new(&c, &fake, &b);
    cr_assert_not_null(e);
    cr_assert_null(b);
    cr_assert_str_eq(e->code, "invalid_config");
    pk_err_free(e);
    pk_breaker_config_init(&c, "dep");
    c.window_size = 0;
    e = pk_breaker_new(&c, &fake, &b);
    cr_assert_not_null(e);
    pk_err_free(e);
    pk_breaker_config_init(&c, NULL);
    e = pk_breaker_new(&c, &fake, &b);
    cr_assert_not_null(e);
    pk_err_free(e);
}

Test(breaker, closed_to_open_on_failure_rate)
{
    pk_breaker *b = small_count_breaker();
    /* 4 failures + 5 successes: 9 calls, below minimum: closed. */
    for (int i = 0; i < 4; i++)
        call(b, PK_OUTCOME_FAILURE, MS);
    for (int i = 0; i < 5; i++)
        call(b, PK_OUTCOME_SUCCESS, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    cr_assert_eq(s.buffered_calls, 9);
    cr_assert_float_eq(s.failure_rate, -1, 1e-9, "rate not computed below the minimum");
    /* 10th call is a success: 40% < 50%: closed. */
    call(b, PK_OUTCOME_SUCCESS, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    pk_breaker_snapshot_get(b, &s);
    cr_assert_float_eq(s.failure_rate, 40.0, 1e-9);
    /* Ring order is F F F F S S S S S S: each new failure first pushes out an old failure (still
     * 40%), the fifth pushes out a success (50%). */
    call(b, PK_OUTCOME_FAILURE, MS); /* drops F: 4F */
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    call(b, PK_OUTCOME_FAILURE, MS); /* drops F: 4F */
    call(b, PK_OUTCOME_FAILURE, MS); /* drops F: 4F */
    call(b, PK_OUTCOME_FAILURE, MS); /* drops F: 4F */
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    call(b, PK_OUTCOME_FAILURE, MS); /* drops S: 5F of 10 = 50% >= 50%: open */
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_OPEN);
    cr_assert_eq(tr.n, 1);
    cr_assert_eq(tr.from[0], PK_BREAKER_CLOSED);
    cr_assert_eq(tr.to[0], PK_BREAKER_OPEN);
    pk_breaker_free(b);
}

Test(breaker, min_calls_not_reached_stays_closed)
{
    pk_breaker_config c;
    pk_breaker_config_init(&c, "dep"); /* minimum 20 of 100 */
    pk_breaker *b = make(&c);
    for (int i = 0; i < 19; i++)
        cr_assert(call(b, PK_OUTCOME_FAILURE, MS));
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    cr_assert(call(b, PK_OUTCOME_FAILURE, MS));
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_OPEN, "20th failure reaches the minimum");
    pk_breaker_free(b);
}

Test(breaker, ignored_outcomes_not_recorded)
{
    pk_breaker *b = small_count_breaker();
    for (int i = 0; i < 50; i++)
        call(b, PK_OUTCOME_IGNORED, MS);
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    cr_assert_eq(s.buffered_calls, 0);
    cr_assert_eq(s.ignored, 50);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    pk_breaker_free(b);
}

Test(breaker, outcome_of_error)
{
    cr_assert_eq(pk_breaker_outcome_of(NULL), PK_OUTCOME_SUCCESS);
    pk_err *e = pk_err_not_found("x");
    cr_assert_eq(pk_breaker_outcome_of(e), PK_OUTCOME_IGNORED);
    pk_err_free(e);
    e = pk_err_unavailable("x");
    cr_assert_eq(pk_breaker_outcome_of(e), PK_OUTCOME_FAILURE);
    pk_err_free(e);
    e = pk_err_new("deadline_exceeded", 504, "x");
    cr_assert_eq(pk_breaker_outcome_of(e), PK_OUTCOME_FAILURE);
    pk_err_free(e);
}

Test(breaker, closed_to_open_on_slow_rate)
{
    pk_breaker_config c;
    pk_breaker_config_init(&c, "dep");
    c.window_size = 10;
    c.minimum_calls = 10;
    c.slow_call_duration_ns = 100 * MS;
    c.slow_call_rate_threshold = 60;
    pk_breaker *b = make(&c);
    /* exactly at the threshold duration is not slow */
    for (int i = 0; i < 10; i++)
        call(b, PK_OUTCOME_SUCCESS, 100 * MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    for (int i = 0; i < 5; i++)
        call(b, PK_OUTCOME_SUCCESS, 100 * MS + 1);
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    cr_assert_float_eq(s.slow_call_rate, 50.0, 1e-9);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    call(b, PK_OUTCOME_SUCCESS, SEC);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_OPEN, "6 slow of 10 = 60%%");
    pk_breaker_snapshot_get(b, &s);
    cr_assert_eq(s.slow, 6);
    cr_assert_eq(s.successful, 16);
    cr_assert_eq(s.failed, 0);
    pk_breaker_free(b);
}

Test(breaker, default_slow_threshold_needs_all_slow)
{
    pk_breaker_config c;
    pk_breaker_config_init(&c, "dep");
    c.window_size = 10;
    c.minimum_calls = 10;
    pk_breaker *b = make(&c);
    for (int i = 0; i < 9; i++)
        call(b, PK_OUTCOME_SUCCESS, 3 * SEC);
    call(b, PK_OUTCOME_SUCCESS, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED, "90%% slow < 100%%");
    for (int i = 0; i < 10; i++)
        call(b, PK_OUTCOME_SUCCESS, 3 * SEC);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_OPEN);
    pk_breaker_free(b);
}

Test(breaker, open_rejects_with_retry_after)
{
    pk_breaker *b = small_count_breaker();
    trip(b);
    pk_breaker_permit p;
    cr_assert_not(pk_breaker_allow(b, &p));
    cr_assert_eq(p.retry_after_ms, 5000);
    now_ns += 1200 * MS;
    cr_assert_not(pk_breaker_allow(b, &p));
    cr_assert_eq(p.retry_after_ms, 3800);
    cr_assert_eq(pk_breaker_retry_after_ms(b), 3800);
    now_ns += 1; /* rounds up */
    cr_assert_eq(pk_breaker_retry_after_ms(b), 3800);
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    cr_assert_eq(s.rejected, 2);
    cr_assert_eq(s.time_in_state_ns, 1200 * MS + 1);
    pk_breaker_free(b);
}

Test(breaker, open_to_half_open_after_wait_and_probe_limit)
{
    pk_breaker *b = small_count_breaker();
    trip(b);
    now_ns += 5 * SEC - 1;
    pk_breaker_permit p;
    cr_assert_not(pk_breaker_allow(b, &p));
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_OPEN);
    now_ns += 1;
    pk_breaker_permit probes[3];
    for (int i = 0; i < 3; i++)
        cr_assert(pk_breaker_allow(b, &probes[i]), "probe %d", i);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_HALF_OPEN);
    cr_assert_not(pk_breaker_allow(b, &p), "4th probe rejected");
    cr_assert_eq(p.retry_after_ms, 1000);
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    cr_assert_eq(s.half_open_outstanding, 3);
    /* An ignored probe gives its permit back. */
    pk_breaker_record(b, &probes[0], PK_OUTCOME_IGNORED, MS);
    cr_assert(pk_breaker_allow(b, &probes[0]));
    cr_assert_not(pk_breaker_allow(b, &p));
    cr_assert_eq(tr.n, 2);
    cr_assert_eq(tr.to[1], PK_BREAKER_HALF_OPEN);
    pk_breaker_free(b);
}

Test(breaker, half_open_to_closed)
{
    pk_breaker *b = small_count_breaker();
    trip(b);
    now_ns += 5 * SEC;
    pk_breaker_permit probes[3];
    for (int i = 0; i < 3; i++)
        cr_assert(pk_breaker_allow(b, &probes[i]));
    pk_breaker_record(b, &probes[0], PK_OUTCOME_FAILURE, MS); /* 1 of 3 = 33% < 50% */
    pk_breaker_record(b, &probes[1], PK_OUTCOME_SUCCESS, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_HALF_OPEN, "waits for all probes");
    pk_breaker_record(b, &probes[2], PK_OUTCOME_SUCCESS, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    cr_assert_eq(s.buffered_calls, 0, "fresh window");
    cr_assert_eq(s.transitions, 3);
    cr_assert_eq(tr.to[2], PK_BREAKER_CLOSED);
    pk_breaker_free(b);
}

Test(breaker, half_open_to_open)
{
    pk_breaker *b = small_count_breaker();
    trip(b);
    now_ns += 5 * SEC;
    pk_breaker_permit probes[3];
    for (int i = 0; i < 3; i++)
        cr_assert(pk_breaker_allow(b, &probes[i]));
    pk_breaker_record(b, &probes[0], PK_OUTCOME_FAILURE, MS);
    pk_breaker_record(b, &probes[1], PK_OUTCOME_FAILURE, MS);
    pk_breaker_record(b, &probes[2], PK_OUTCOME_SUCCESS, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_OPEN);
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    cr_assert_float_eq(s.failure_rate, 200.0 / 3, 1e-9, "snapshot shows the probe rates");
    pk_breaker_permit p;
    cr_assert_not(pk_breaker_allow(b, &p));
    cr_assert_eq(p.retry_after_ms, 5000, "a new full wait");
    pk_breaker_free(b);
}

Test(breaker, half_open_slow_probes_reopen)
{
    pk_breaker_config c;
    pk_breaker_config_init(&c, "dep");
    c.window_size = 10;
    c.minimum_calls = 10;
    c.permitted_calls_in_half_open = 2;
    c.slow_call_rate_threshold = 50;
    c.slow_call_duration_ns = 10 * MS;
    pk_breaker *b = make(&c);
    trip(b);
    now_ns += 10 * SEC;
    cr_assert(call(b, PK_OUTCOME_SUCCESS, 20 * MS));
    cr_assert(call(b, PK_OUTCOME_SUCCESS, MS));
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_OPEN, "50%% slow probes");
    pk_breaker_free(b);
}

Test(breaker, half_open_max_wait)
{
    pk_breaker_config c;
    pk_breaker_config_init(&c, "dep");
    c.window_size = 10;
    c.minimum_calls = 10;
    c.wait_in_open_ns = 5 * SEC;
    c.max_wait_in_half_open_ns = 2 * SEC;
    pk_breaker *b = make(&c);
    trip(b);
    now_ns += 5 * SEC;
    pk_breaker_permit hung;
    cr_assert(pk_breaker_allow(b, &hung));
    now_ns += 2 * SEC;
    pk_breaker_permit p;
    cr_assert_not(pk_breaker_allow(b, &p));
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_OPEN);
    cr_assert_eq(p.retry_after_ms, 5000);
    /* the hung probe finally reports: counted in totals, no effect on state */
    pk_breaker_record(b, &hung, PK_OUTCOME_SUCCESS, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_OPEN);
    pk_breaker_free(b);
}

Test(breaker, late_results_from_previous_state_do_not_count_as_probes)
{
    pk_breaker *b = small_count_breaker();
    pk_breaker_permit late[5];
    for (int i = 0; i < 5; i++)
        cr_assert(pk_breaker_allow(b, &late[i]));
    trip(b);
    now_ns += 5 * SEC;
    pk_breaker_permit probe;
    cr_assert(pk_breaker_allow(b, &probe));
    for (int i = 0; i < 5; i++)
        pk_breaker_record(b, &late[i], PK_OUTCOME_SUCCESS, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_HALF_OPEN);
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    cr_assert_eq(s.buffered_calls, 0);
    cr_assert_eq(s.successful, 5);
    pk_breaker_free(b);
}

Test(breaker, forced_open_disabled_reset)
{
    pk_breaker *b = small_count_breaker();
    pk_breaker_force_open(b);
    pk_breaker_permit p;
    cr_assert_not(pk_breaker_allow(b, &p));
    cr_assert_eq(p.retry_after_ms, 5000);
    now_ns += 3600 * SEC;
    cr_assert_not(pk_breaker_allow(b, &p), "forced open never half-opens");
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_FORCED_OPEN);

    pk_breaker_disable(b);
    for (int i = 0; i < 100; i++)
        cr_assert(call(b, PK_OUTCOME_FAILURE, 10 * SEC));
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    cr_assert_eq(s.state, PK_BREAKER_DISABLED);
    cr_assert_eq(s.failed, 0, "disabled records nothing");
    cr_assert_eq(s.buffered_calls, 0);

    pk_breaker_reset(b);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    for (int i = 0; i < 9; i++)
        call(b, PK_OUTCOME_FAILURE, MS);
    pk_breaker_reset(b); /* reset while closed clears the window */
    pk_breaker_snapshot_get(b, &s);
    cr_assert_eq(s.buffered_calls, 0);
    call(b, PK_OUTCOME_FAILURE, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    cr_assert_eq(tr.n, 3);
    cr_assert_eq(tr.to[0], PK_BREAKER_FORCED_OPEN);
    cr_assert_eq(tr.to[1], PK_BREAKER_DISABLED);
    cr_assert_eq(tr.to[2], PK_BREAKER_CLOSED);
    pk_breaker_reset(b);
    trip(b);
    pk_breaker_reset(b);
    cr_assert(pk_breaker_allow(b, &p));
    pk_breaker_free(b);
}

Test(breaker, time_window_buckets_expire)
{
    pk_breaker_config c;
    pk_breaker_config_init(&c, "dep");
    c.window_type = PK_WINDOW_TIME;
    c.window_size = 10; /* seconds */
    c.minimum_calls = 10;
    pk_breaker *b = make(&c);
    now_ns = 2000 * SEC; /* start of a second */
    for (int i = 0; i < 4; i++)
        call(b, PK_OUTCOME_FAILURE, MS);
    now_ns += 3 * SEC;
    for (int i = 0; i < 6; i++)
        call(b, PK_OUTCOME_SUCCESS, MS);
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    cr_assert_eq(s.buffered_calls, 10);
    cr_assert_float_eq(s.failure_rate, 40.0, 1e-9);
    /* At +10 s the first bucket (4 failures) has expired. */
    now_ns = 2009 * SEC + 999 * MS;
    pk_breaker_snapshot_get(b, &s);
    cr_assert_eq(s.buffered_calls, 10);
    now_ns = 2010 * SEC;
    pk_breaker_snapshot_get(b, &s);
    cr_assert_eq(s.buffered_calls, 6);
    cr_assert_eq(s.failed_calls, 0);
    cr_assert_float_eq(s.failure_rate, -1, 1e-9);
    /* 4 new failures: 4 of 10 = 40%, closed; one more: 5 of 11 = 45%; 6 of 12 = 50% opens. */
    for (int i = 0; i < 4; i++)
        call(b, PK_OUTCOME_FAILURE, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    call(b, PK_OUTCOME_FAILURE, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    call(b, PK_OUTCOME_FAILURE, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_OPEN);
    pk_breaker_free(b);
}

Test(breaker, time_window_long_gap_clears_everything)
{
    pk_breaker_config c;
    pk_breaker_config_init(&c, "dep");
    c.window_type = PK_WINDOW_TIME;
    c.window_size = 5;
    c.minimum_calls = 3;
    pk_breaker *b = make(&c);
    now_ns = 0; /* fake clock at zero: bucket indexes must stay in range */
    call(b, PK_OUTCOME_FAILURE, MS);
    call(b, PK_OUTCOME_SUCCESS, MS);
    now_ns = 1000 * SEC;
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    cr_assert_eq(s.buffered_calls, 0);
    for (int sec = 0; sec < 20; sec++) { /* one success per second: window holds at most 5 */
        now_ns = (1000 + sec) * SEC;
        call(b, PK_OUTCOME_SUCCESS, MS);
        pk_breaker_snapshot_get(b, &s);
        cr_assert_eq(s.buffered_calls, sec + 1 < 5 ? sec + 1 : 5);
    }
    pk_breaker_free(b);
}

Test(breaker, count_window_minimum_capped_by_size)
{
    pk_breaker_config c;
    pk_breaker_config_init(&c, "dep");
    c.window_size = 4; /* minimum 20 > size: effective 4 */
    pk_breaker *b = make(&c);
    for (int i = 0; i < 3; i++)
        call(b, PK_OUTCOME_FAILURE, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_CLOSED);
    call(b, PK_OUTCOME_SUCCESS, MS);
    cr_assert_eq(pk_breaker_get_state(b), PK_BREAKER_OPEN);
    pk_breaker_free(b);
}

Test(breaker, registry_json_and_actions)
{
    pk_breaker_registry *r = pk_breaker_registry_new();
    pk_breaker_config c;
    pk_breaker_config_init(&c, "dep");
    c.window_size = 10;
    c.minimum_calls = 10;
    pk_breaker *b = make(&c);
    cr_assert_null(pk_breaker_registry_add(r, b));
    pk_breaker_config_init(&c, "redis");
    pk_breaker *b2 = NULL;
    cr_assert_null(pk_breaker_new(&c, &fake, &b2));
    cr_assert_null(pk_breaker_registry_add(r, b2));
    pk_breaker *dup = NULL;
    cr_assert_null(pk_breaker_new(&c, &fake, &dup));
    pk_err *e = pk_breaker_registry_add(r, dup);
    cr_assert_not_null(e);
    cr_assert_eq(e->status, 409);
    pk_err_free(e);
    cr_assert_eq(pk_breaker_registry_count(r), 2);
    cr_assert_eq(pk_breaker_registry_get(r, "redis", 5), b2);
    cr_assert_null(pk_breaker_registry_get(r, "redi", 4));

    for (int i = 0; i < 10; i++)
        call(b, i < 3 ? PK_OUTCOME_FAILURE : PK_OUTCOME_SUCCESS, MS);
    pk_breaker_permit p;
    cr_assert_null(pk_breaker_registry_apply(r, "redis", 5, "force-open"));
    cr_assert_not(pk_breaker_allow(b2, &p));
    e = pk_breaker_registry_apply(r, "nope", 4, "reset");
    cr_assert_eq(e->status, 404);
    pk_err_free(e);
    e = pk_breaker_registry_apply(r, "redis", 5, "explode");
    cr_assert_eq(e->status, 400);
    pk_err_free(e);

    pk_buf out = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &out);
    pk_breaker_registry_write_json(r, &w);
    cJSON *j = NULL;
    cr_assert_null(pk_json_parse(out.data, out.len, 32, &j));
    cr_assert(cJSON_IsArray(j));
    cr_assert_eq(cJSON_GetArraySize(j), 2);
    cJSON *o = cJSON_GetArrayItem(j, 0);
    cr_assert_str_eq(cJSON_GetObjectItem(o, "name")->valuestring, "dep");
    cr_assert_str_eq(cJSON_GetObjectItem(o, "state")->valuestring, "closed");
    cr_assert_float_eq(cJSON_GetObjectItem(o, "failure_rate")->valuedouble, 30.0, 1e-9);
    cr_assert_eq(cJSON_GetObjectItem(o, "buffered_calls")->valueint, 10);
    cJSON *calls = cJSON_GetObjectItem(o, "calls");
    cr_assert_eq(cJSON_GetObjectItem(calls, "success")->valueint, 7);
    cr_assert_eq(cJSON_GetObjectItem(calls, "failure")->valueint, 3);
    cJSON *cfg = cJSON_GetObjectItem(o, "config");
    cr_assert_eq(cJSON_GetObjectItem(cfg, "minimum_calls")->valueint, 10);
    cr_assert_str_eq(cJSON_GetObjectItem(cfg, "window_type")->valuestring, "count");
    o = cJSON_GetArrayItem(j, 1);
    cr_assert_str_eq(cJSON_GetObjectItem(o, "state")->valuestring, "forced_open");
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "failure_rate")));
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "calls"), "rejected")->valueint, 1);
    cJSON_Delete(j);
    pk_buf_free(&out);
    pk_breaker_registry_free(r);
}

Test(breaker, state_names)
{
    cr_assert_str_eq(pk_breaker_state_name(PK_BREAKER_CLOSED), "closed");
    cr_assert_str_eq(pk_breaker_state_name(PK_BREAKER_OPEN), "open");
    cr_assert_str_eq(pk_breaker_state_name(PK_BREAKER_HALF_OPEN), "half_open");
    cr_assert_str_eq(pk_breaker_state_name(PK_BREAKER_FORCED_OPEN), "forced_open");
    cr_assert_str_eq(pk_breaker_state_name(PK_BREAKER_DISABLED), "disabled");
}

/* ---- hammer: 8 threads x 100k calls; a clock that advances atomically ---- */

static _Atomic int64_t hammer_now;
static int64_t hammer_clock(void *ctx)
{
    (void)ctx;
    return atomic_fetch_add(&hammer_now, 50 * 1000) + 50 * 1000; /* 50 us per reading */
}

static atomic_uint_fast64_t h_allowed, h_rejected, h_fail, h_ok, h_ign;
static _Atomic int h_transitions;
static void hammer_tr(void *ud, const char *name, pk_breaker_state from, pk_breaker_state to)
{
    (void)ud;
    (void)name;
    (void)from;
    (void)to;
    atomic_fetch_add(&h_transitions, 1);
}

#define H_THREADS 8
#define H_CALLS 100000

static void *hammer(void *arg)
{
    pk_breaker *b = arg;
    uint64_t x = (uint64_t)pthread_self() | 1;
    for (int i = 0; i < H_CALLS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pk_breaker_permit p;
        if (!pk_breaker_allow(b, &p)) {
            atomic_fetch_add(&h_rejected, 1);
            continue;
        }
        atomic_fetch_add(&h_allowed, 1);
        int r = (int)(x % 10);
        pk_breaker_outcome o = r < 4 ? PK_OUTCOME_FAILURE : r < 9 ? PK_OUTCOME_SUCCESS : PK_OUTCOME_IGNORED;
        if (o == PK_OUTCOME_FAILURE)
            atomic_fetch_add(&h_fail, 1);
        else if (o == PK_OUTCOME_SUCCESS)
            atomic_fetch_add(&h_ok, 1);
        else
            atomic_fetch_add(&h_ign, 1);
        pk_breaker_record(b, &p, o, (int64_t)(x % 3) * SEC);
    }
    return NULL;
}

Test(breaker, hammer_counters_add_up, .timeout = 60)
{
    pk_clock clk = {hammer_clock, NULL};
    pk_breaker_config c;
    pk_breaker_config_init(&c, "hammer");
    c.window_size = 50;
    c.minimum_calls = 20;
    c.failure_rate_threshold = 45;
    c.wait_in_open_ns = 100 * MS;
    c.permitted_calls_in_half_open = 4;
    c.on_transition = hammer_tr;
    pk_breaker *b = NULL;
    cr_assert_null(pk_breaker_new(&c, &clk, &b));
    pthread_t t[H_THREADS];
    for (int i = 0; i < H_THREADS; i++)
        pthread_create(&t[i], NULL, hammer, b);
    for (int i = 0; i < H_THREADS; i++)
        pthread_join(t[i], NULL);
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    uint64_t total = (uint64_t)H_THREADS * H_CALLS;
    cr_assert_eq(h_allowed + h_rejected, total);
    cr_assert_eq(s.rejected, h_rejected);
    cr_assert_eq(s.successful, h_ok);
    cr_assert_eq(s.failed, h_fail);
    cr_assert_eq(s.ignored, h_ign);
    cr_assert_eq(s.successful + s.failed + s.ignored + s.rejected, total);
    cr_assert_eq(s.transitions, (uint64_t)h_transitions);
    cr_assert_gt(s.transitions, 0, "40%% failures around a 45%% threshold must trip sometimes");
    cr_assert_gt(s.rejected, 0);
    cr_assert(s.buffered_calls <= 50);
    pk_breaker_free(b);
}
