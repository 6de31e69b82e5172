/* pg_pool against a real PostgreSQL (the CTest fixture `pg` starts one and names its URL in
 * PAKE_TEST_DATABASE_URL_FILE; PAKE_TEST_DATABASE_URL works too). Skipped without a server. */
#include "core/clock.h"
#include "store/pg_pool.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char url[512];

static bool have_url(void)
{
    const char *u = getenv("PAKE_TEST_DATABASE_URL");
    if (u && *u) {
        snprintf(url, sizeof url, "%s", u);
        return true;
    }
    const char *path = getenv("PAKE_TEST_DATABASE_URL_FILE");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return false;
    bool ok = fgets(url, sizeof url, f) != NULL;
    fclose(f);
    url[strcspn(url, "\n")] = '\0';
    return ok && url[0];
}

static pk_pg_pool *open_pool(const char *u, int max, int acquire_ms, int leak_ms)
{
    pk_pg_pool_config c = {.name = "primary",
                           .conninfo = u,
                           .max_size = max,
                           .acquire_timeout_ms = acquire_ms,
                           .leak_threshold_ms = leak_ms,
                           .maintain_interval_ms = -1};
    pk_pg_pool *p = NULL;
    pk_err *e = pk_pg_pool_open(&c, &p);
    cr_assert_null(e);
    return p;
}

#define NEED_PG()                                                                                            \
    do {                                                                                                     \
        if (!have_url()) cr_skip_test("no PostgreSQL test server (PAKE_TEST_DATABASE_URL_FILE)");            \
    } while (0)

Test(pg_pool, query_and_prepared_reuse)
{
    NEED_PG();
    pk_pg_pool *p = open_pool(url, 2, 1000, 10000);
    pk_pg_conn *k;
    cr_assert_null(pk_pg_pool_acquire(p, 0, "r1", &k));
    for (int i = 0; i < 3; i++) { /* first run prepares in the same pipeline, later runs reuse */
        const char *params[] = {"41"};
        PGresult *r = NULL;
        pk_err *e = pk_pg_query(k, "t", "SELECT $1::int + 1", 1, params, 0, &r);
        cr_assert_null(e, "%s", e ? e->message : "");
        cr_assert_str_eq(PQgetvalue(r, 0, 0), "42");
        PQclear(r);
    }
    pk_pg_pool_release(k);
    pk_pg_pool_stats st;
    pk_pg_pool_stats_get(p, &st);
    cr_assert_eq(st.size, 1);
    cr_assert_eq(st.idle, 1);
    cr_assert_eq(st.in_use, 0);
    cr_assert_eq(st.connects, 1);
    pk_pg_pool_close(p);
}

Test(pg_pool, failed_pipeline_rolls_back_and_reports_sqlstate)
{
    NEED_PG();
    pk_pg_pool *p = open_pool(url, 1, 1000, 10000);
    pk_pg_conn *k;
    cr_assert_null(pk_pg_pool_acquire(p, 0, NULL, &k));
    pk_pg_stmt st[3] = {{"BEGIN", 0, NULL}, {"SELECT 1 / 0", 0, NULL}, {"COMMIT", 0, NULL}};
    PGresult *res[3];
    pk_err *e = pk_pg_run(k, "t", st, 3, res, 0);
    cr_assert_not_null(e);
    cr_assert_str_eq(e->code, "store_error");
    cr_assert_eq(e->status, 500);
    cr_assert_str_eq(pk_pg_sqlstate(k), "22012");
    pk_err_free(e);
    for (int i = 0; i < 3; i++)
        cr_assert_null(res[i]);
    PGresult *r = NULL;
    e = pk_pg_query(k, "t", "SELECT 7", 0, NULL, 0, &r); /* the connection is usable again */
    cr_assert_null(e);
    cr_assert_str_eq(PQgetvalue(r, 0, 0), "7");
    PQclear(r);
    pk_pg_pool_release(k);
    pk_pg_pool_close(p);
}

Test(pg_pool, deadline_cancels_and_discards)
{
    NEED_PG();
    pk_pg_pool *p = open_pool(url, 1, 1000, 10000);
    pk_pg_conn *k;
    cr_assert_null(pk_pg_pool_acquire(p, 0, NULL, &k));
    int64_t t0 = pk_mono_ns();
    PGresult *r = NULL;
    pk_err *e = pk_pg_query(k, "t", "SELECT pg_sleep(5)", 0, NULL, t0 + 200000000LL, &r);
    int64_t took_ms = (pk_mono_ns() - t0) / 1000000;
    cr_assert_not_null(e);
    cr_assert_str_eq(e->code, "deadline_exceeded");
    cr_assert_eq(e->status, 504);
    cr_assert_lt(took_ms, 1500, "took %lld ms", (long long)took_ms);
    pk_err_free(e);
    pk_pg_pool_release(k);
    pk_pg_pool_stats st;
    pk_pg_pool_stats_get(p, &st);
    cr_assert_eq(st.size, 0, "a timed-out connection is closed");
    cr_assert_eq(st.discarded, 1);
    cr_assert_null(pk_pg_pool_acquire(p, 0, NULL, &k)); /* and a new one is opened */
    pk_pg_pool_release(k);
    pk_pg_pool_close(p);
}

Test(pg_pool, acquisition_timeout_and_deadline)
{
    NEED_PG();
    pk_pg_pool *p = open_pool(url, 1, 100, 10000);
    pk_pg_conn *k, *k2;
    cr_assert_null(pk_pg_pool_acquire(p, 0, NULL, &k));
    pk_err *e = pk_pg_pool_acquire(p, 0, NULL, &k2);
    cr_assert_not_null(e);
    cr_assert_str_eq(e->code, "store_busy");
    cr_assert_eq(e->status, 503);
    pk_err_free(e);
    e = pk_pg_pool_acquire(p, pk_mono_ns() + 20000000LL, NULL, &k2);
    cr_assert_not_null(e);
    cr_assert_str_eq(e->code, "deadline_exceeded");
    pk_err_free(e);
    pk_pg_pool_stats st;
    pk_pg_pool_stats_get(p, &st);
    cr_assert_eq(st.timeouts, 2);
    pk_pg_pool_release(k);
    cr_assert_null(pk_pg_pool_acquire(p, 0, NULL, &k2));
    pk_pg_pool_release(k2);
    pk_pg_pool_close(p);
}

Test(pg_pool, leak_detection_reports_once)
{
    NEED_PG();
    pk_pg_pool *p = open_pool(url, 2, 1000, 50);
    pk_pg_conn *k;
    cr_assert_null(pk_pg_pool_acquire(p, 0, "req-leaky", &k));
    pk_pg_pool_maintain(p);
    pk_pg_pool_stats st;
    pk_pg_pool_stats_get(p, &st);
    cr_assert_eq(st.leaks, 0);
    usleep(80000);
    pk_pg_pool_maintain(p);
    pk_pg_pool_maintain(p);
    pk_pg_pool_stats_get(p, &st);
    cr_assert_eq(st.leaks, 1);
    pk_pg_pool_release(k);
    pk_pg_pool_close(p);
}

Test(pg_pool, unreachable_server_backs_off)
{
    pk_pg_pool *p = open_pool("postgres://pake@127.0.0.1:1/none", 2, 1000, 10000);
    pk_pg_conn *k;
    pk_err *e = pk_pg_pool_acquire(p, 0, NULL, &k);
    cr_assert_not_null(e);
    cr_assert_str_eq(e->code, "store_unavailable");
    cr_assert(e->retryable);
    pk_err_free(e);
    int64_t t0 = pk_mono_ns();
    e = pk_pg_pool_acquire(p, 0, NULL, &k); /* inside the backoff: fails at once, no connect */
    cr_assert_not_null(e);
    cr_assert_str_eq(e->code, "store_unavailable");
    cr_assert_lt(pk_mono_ns() - t0, 20000000LL);
    pk_err_free(e);
    pk_pg_pool_stats st;
    pk_pg_pool_stats_get(p, &st);
    cr_assert_eq(st.connect_failures, 1);
    cr_assert_eq(st.size, 0);
    usleep(60000); /* past the first backoff (50 ms): the pool tries again */
    e = pk_pg_pool_acquire(p, 0, NULL, &k);
    pk_err_free(e);
    pk_pg_pool_stats_get(p, &st);
    cr_assert_eq(st.connect_failures, 2);
    pk_pg_pool_close(p);
}
