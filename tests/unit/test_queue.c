/* The task queue's state machine over a fake clock, run against BOTH backends (suite `queue` = the
 * embedded SQLite one, suite `queue_redis` = Redis Streams): every transition, priority order, delayed
 * start, full-jitter retry backoff, dead letters with their error history, lease expiry and reclaim,
 * heartbeats, cancel (queued and running), release, retry from dead, idempotency keys, cursor pages,
 * stats, purge, per-type limits (concurrency and rate) and concurrent claimers. The Redis suite also
 * covers NOGROUP recovery, the dead-letter stream and the blocking `wait`.
 *
 * Redis: a throw-away redis-server (scripts/redis-test-server.sh) is started once for the whole run by
 * a PRE_ALL hook (or PAKE_TEST_REDIS_URL names one); every test process uses its own key prefix. When
 * redis-server is not installed the Redis tests are SKIPPED with a message; when it is installed but
 * does not start, they FAIL. The SQLite database is in
 * memory; the jitter is a fixed fraction. */
#include "core/json.h"
#include "queue/queue.h"
#include "redis/redis.h"
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000LL
#define SEC 1000000000LL

static int64_t now_ns;
static pk_clock fake = {pk_fake_clock_now, &now_ns};
static double jitter = 0.5;
static double fixed_random(void *ud)
{
    (void)ud;
    return jitter;
}
static pk_queue *q;
static const pk_queue_type_lease leases[] = {{"slow", 120000}};
static const pk_queue_type_limit limits[] = {{"one", 1, 0, 0}, {"rl", 0, 2.0, 1}, {"rb", 0, 1.0, 3}};

/* ---- the shared redis-server ---- */
static int redis_pid;
static char redis_dir[256];

static const char *source_dir(void)
{
    const char *d = getenv("PAKE_SOURCE_DIR");
    return d && *d ? d : PAKE_SOURCE_DIR;
}

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    if (getenv("PAKE_TEST_REDIS_URL")) return;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/scripts/redis-test-server.sh 2>/dev/null", source_dir());
    FILE *f = popen(cmd, "r");
    char url[256] = "";
    int ok = f && fscanf(f, "%255s %d %255s", url, &redis_pid, redis_dir) == 3;
    if (f) pclose(f);
    if (ok)
        setenv("PAKE_TEST_REDIS_URL", url, 1);
    else if (system("command -v redis-server >/dev/null 2>&1") == 0)
        setenv("PAKE_TEST_REDIS_BROKEN", "1", 1); /* installed but not started: fail, do not skip */
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    if (redis_pid <= 0) return;
    kill(redis_pid, SIGTERM);
    for (int i = 0; i < 200 && kill(redis_pid, 0) == 0; i++) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", redis_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", redis_dir);
}

static pk_redis *rc;
static char prefix[64];
static bool is_redis;

static pk_queue_config base_config(void)
{
    return (pk_queue_config){.path = ":memory:",
                             .clock = &fake,
                             .unit_random = fixed_random,
                             .default_lease_ms = 10000,
                             .leases = leases,
                             .nleases = 1,
                             .retry_base_ms = 1000,
                             .retry_cap_ms = 8000,
                             .limits = limits,
                             .nlimits = sizeof limits / sizeof *limits};
}

static void setup_sqlite(void)
{
    now_ns = 1800000000LL * SEC;
    jitter = 0.5;
    is_redis = false;
    pk_queue_config c = base_config();
    pk_err *e = pk_queue_open_sqlite(&c, &q);
    cr_assert_null(e, "%s", e ? e->message : "");
}

static pk_redis *redis_client(void)
{
    const char *url = getenv("PAKE_TEST_REDIS_URL");
    if (!url) return NULL;
    pk_redis_config rcfg = {.url = url, .pool_size = 8, .command_timeout_ms = 3000, .bulkhead_wait_ms = 3000};
    pk_redis *r = NULL;
    pk_err *e = pk_redis_new(&rcfg, &r);
    cr_assert_null(e, "%s", e ? e->message : "");
    return r;
}

static void setup_redis(void)
{
    now_ns = 1800000000LL * SEC;
    jitter = 0.5;
    is_redis = true;
    q = NULL;
    if (!(rc = redis_client())) return;
    snprintf(prefix, sizeof prefix, "t%d:", (int)getpid());
    pk_queue_config c = base_config();
    c.redis = rc;
    c.redis_prefix = prefix;
    pk_err *e = pk_queue_open_redis(&c, &q);
    cr_assert_null(e, "%s", e ? e->message : "");
}

static void teardown(void)
{
    if (q) pk_queue_close(q);
    q = NULL;
    if (rc) pk_redis_free(rc);
    rc = NULL;
}

#define NEED_QUEUE()                                                                                         \
    do {                                                                                                     \
        if (!q && getenv("PAKE_TEST_REDIS_BROKEN"))                                                          \
            cr_assert_fail("redis-server is installed but did not start");                                   \
        if (!q) cr_skip_test("redis-server is not installed: Redis queue tests skipped");                    \
    } while (0)

/* One test body, two tests: suite `queue` (SQLite) and suite `queue_redis`. */
#define QTEST(name)                                                                                          \
    static void name##_body(void);                                                                           \
    Test(queue, name, .init = setup_sqlite, .fini = teardown)                                                \
    {                                                                                                        \
        name##_body();                                                                                       \
    }                                                                                                        \
    Test(queue_redis, name, .init = setup_redis, .fini = teardown)                                           \
    {                                                                                                        \
        NEED_QUEUE();                                                                                        \
        name##_body();                                                                                       \
    }                                                                                                        \
    static void name##_body(void)

/* A Redis-only test. */
#define RTEST(name) Test(queue_redis, name, .init = setup_redis, .fini = teardown)

static void enqueue(const char *type, int prio, int64_t not_before, char id[37])
{
    pk_task_input in = {
        .type = type, .priority = prio, .not_before_ns = not_before, .payload_json = "{\"a\":1}"};
    bool created = false;
    pk_err *e = q->ops->enqueue(q, &in, NULL, &created, id);
    cr_assert_null(e, "%s", e ? e->message : "");
    cr_assert(created);
}

static cJSON *get(const char *id)
{
    pk_buf b = PK_BUF_INIT;
    pk_err *e = q->ops->get(q, id, &b);
    cr_assert_null(e, "%s", e ? e->message : "");
    cJSON *j = NULL;
    cr_assert_null(pk_json_parse(b.data, b.len, 32, &j));
    pk_buf_free(&b);
    return j;
}

static char *state_of(const char *id)
{
    static char s[32];
    cJSON *j = get(id);
    snprintf(s, sizeof s, "%s", cJSON_GetObjectItem(j, "state")->valuestring);
    cJSON_Delete(j);
    return s;
}

static bool claim(const char *worker, pk_task *t)
{
    pk_err *e = q->ops->claim(q, worker, NULL, 0, t);
    cr_assert_null(e, "%s", e ? e->message : "");
    return t->id[0] != 0;
}

QTEST(enqueue_claim_complete)
{
    char id[37];
    enqueue("noop", PK_PRIO_NORMAL, 0, id);
    cr_assert_str_eq(state_of(id), "queued");
    pk_task t;
    cr_assert(claim("w1", &t));
    cr_assert_str_eq(t.id, id);
    cr_assert_str_eq(t.type, "noop");
    cr_assert_str_eq(t.payload_json, "{\"a\":1}");
    cr_assert_eq(t.attempts, 1);
    cr_assert_eq(t.lease_ms, 10000);
    cr_assert_str_eq(state_of(id), "running");
    pk_task t2;
    cr_assert_not(claim("w2", &t2), "a running task is not claimed twice");
    now_ns += 5 * MS;
    cr_assert_null(q->ops->complete(q, id, "w1", "{\"ok\":true}"));
    cJSON *j = get(id);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "state")->valuestring, "succeeded");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "result"), "ok")));
    cr_assert(cJSON_IsString(cJSON_GetObjectItem(j, "finished_at")));
    cJSON_Delete(j);
    pk_err *e = q->ops->complete(q, id, "w1", NULL);
    cr_assert(e && pk_err_is(e, "lease_lost"), "a second completion is refused");
    pk_err_free(e);
    pk_task_free(&t);
}

QTEST(priority_then_age_order)
{
    char low[37], normal1[37], normal2[37], crit[37];
    enqueue("noop", PK_PRIO_LOW, 0, low);
    now_ns += MS;
    enqueue("noop", PK_PRIO_NORMAL, 0, normal1);
    now_ns += MS;
    enqueue("noop", PK_PRIO_NORMAL, 0, normal2);
    now_ns += MS;
    enqueue("noop", PK_PRIO_CRITICAL, 0, crit);
    const char *want[] = {crit, normal1, normal2, low};
    for (int i = 0; i < 4; i++) {
        pk_task t;
        cr_assert(claim("w", &t));
        cr_assert_str_eq(t.id, want[i], "claim %d", i);
        pk_task_free(&t);
    }
}

QTEST(claim_by_type)
{
    char a[37], b[37];
    enqueue("alpha", PK_PRIO_CRITICAL, 0, a);
    enqueue("beta", PK_PRIO_LOW, 0, b);
    const char *types[] = {"beta"};
    pk_task t;
    cr_assert_null(q->ops->claim(q, "w", types, 1, &t));
    cr_assert_str_eq(t.id, b);
    pk_task_free(&t);
}

QTEST(delayed_task_waits_for_its_time)
{
    char id[37];
    enqueue("noop", PK_PRIO_NORMAL, now_ns + 2 * SEC, id);
    cr_assert_str_eq(state_of(id), "scheduled");
    int64_t wake;
    cr_assert_null(q->ops->next_wakeup(q, &wake));
    cr_assert_eq(wake, now_ns + 2 * SEC);
    pk_task t;
    cr_assert_not(claim("w", &t));
    now_ns += 2 * SEC - 1;
    cr_assert_not(claim("w", &t), "1 ns early");
    now_ns += 1;
    cr_assert(claim("w", &t));
    cr_assert_str_eq(t.id, id);
    pk_task_free(&t);
}

QTEST(failure_retries_with_full_jitter_then_dead_with_history)
{
    char id[37];
    enqueue("noop", PK_PRIO_NORMAL, 0, id); /* max_attempts 3 by default */
    /* backoff after attempt a (1-based) = jitter * min(cap, base * 2^(a-1)) */
    const int64_t expect[] = {500 * MS, 1000 * MS};
    for (int a = 0; a < 2; a++) {
        pk_task t;
        cr_assert(claim("w", &t));
        cr_assert_eq(t.attempts, a + 1);
        pk_task_state st;
        cr_assert_null(q->ops->fail(q, id, "w", "boom", true, &st));
        cr_assert_eq(st, PK_TASK_RETRYING);
        cr_assert_str_eq(state_of(id), "retrying");
        pk_task t2;
        now_ns += expect[a] - 1;
        cr_assert_not(claim("w", &t2), "still backing off after attempt %d", a + 1);
        now_ns += 1;
        pk_task_free(&t);
    }
    pk_task t;
    cr_assert(claim("w", &t));
    cr_assert_eq(t.attempts, 3);
    pk_task_state st;
    cr_assert_null(q->ops->fail(q, id, "w", "boom 3", true, &st));
    cr_assert_eq(st, PK_TASK_DEAD);
    cJSON *j = get(id);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "state")->valuestring, "dead");
    cr_assert_str_eq(cJSON_GetObjectItem(j, "error")->valuestring, "boom 3");
    cJSON *errs = cJSON_GetObjectItem(j, "errors");
    cr_assert_eq(cJSON_GetArraySize(errs), 3);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(errs, 2), "attempt")->valueint, 3);
    cJSON_Delete(j);
    pk_task_free(&t);
    pk_task t2;
    cr_assert_not(claim("w", &t2), "dead letters are not claimed");
}

QTEST(backoff_is_capped)
{
    jitter = 0.999;
    pk_task_input in = {.type = "noop", .priority = PK_PRIO_NORMAL, .max_attempts = 10};
    char id[37];
    cr_assert_null(q->ops->enqueue(q, &in, NULL, NULL, id));
    for (int a = 0; a < 6; a++) {
        pk_task t;
        cr_assert(claim("w", &t));
        cr_assert_null(q->ops->fail(q, id, "w", "x", true, NULL));
        now_ns += 8 * SEC; /* the cap: always enough */
        pk_task_free(&t);
    }
    pk_task t;
    cr_assert(claim("w", &t));
    cr_assert_eq(t.attempts, 7);
    pk_task_free(&t);
}

QTEST(not_retryable_failure_is_failed_at_once)
{
    char id[37];
    enqueue("noop", PK_PRIO_NORMAL, 0, id);
    pk_task t;
    cr_assert(claim("w", &t));
    pk_task_state st;
    cr_assert_null(q->ops->fail(q, id, "w", "bad payload", false, &st));
    cr_assert_eq(st, PK_TASK_FAILED);
    cr_assert_str_eq(state_of(id), "failed");
    pk_task_free(&t);
}

QTEST(retry_from_dead)
{
    pk_task_input in = {.type = "noop", .priority = PK_PRIO_NORMAL, .max_attempts = 1};
    char id[37];
    cr_assert_null(q->ops->enqueue(q, &in, NULL, NULL, id));
    pk_task t;
    cr_assert(claim("w", &t));
    cr_assert_null(q->ops->fail(q, id, "w", "e1", true, NULL));
    cr_assert_str_eq(state_of(id), "dead");
    pk_task_free(&t);
    pk_buf b = PK_BUF_INIT;
    cr_assert_null(q->ops->retry(q, id, &b));
    cr_assert(strstr(b.data, "\"state\":\"queued\""));
    cr_assert(strstr(b.data, "\"attempts\":0"));
    cr_assert(strstr(b.data, "\"error\":\"e1\""), "the history stays");
    pk_buf_free(&b);
    cr_assert(claim("w", &t));
    cr_assert_eq(t.attempts, 1);
    pk_err *e = q->ops->retry(q, id, NULL);
    cr_assert(e && e->status == 409, "a running task cannot be retried");
    pk_err_free(e);
    pk_task_free(&t);
}

QTEST(lease_expiry_reclaims_and_old_worker_is_refused)
{
    char id[37];
    enqueue("noop", PK_PRIO_NORMAL, 0, id);
    pk_task t;
    cr_assert(claim("w1", &t));
    pk_task_free(&t);
    int n = -1;
    now_ns += 10 * SEC; /* exactly at expiry: still valid */
    cr_assert_null(q->ops->reclaim_expired(q, &n));
    cr_assert_eq(n, 0);
    now_ns += 1;
    cr_assert_null(q->ops->reclaim_expired(q, &n));
    cr_assert_eq(n, 1);
    cr_assert_str_eq(state_of(id), "queued");
    cr_assert(claim("w2", &t));
    cr_assert_eq(t.attempts, 2);
    pk_err *e = q->ops->complete(q, id, "w1", NULL);
    cr_assert(e && pk_err_is(e, "lease_lost"), "the stale worker cannot complete");
    pk_err_free(e);
    bool cancel;
    e = q->ops->heartbeat(q, id, "w1", -1, &cancel);
    cr_assert(e && pk_err_is(e, "lease_lost"));
    pk_err_free(e);
    cr_assert_null(q->ops->complete(q, id, "w2", NULL));
    cJSON *j = get(id);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "state")->valuestring, "succeeded");
    cr_assert_str_eq(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "errors"), 0), "error")->valuestring,
        "lease expired");
    cJSON_Delete(j);
    pk_task_free(&t);
}

QTEST(heartbeat_extends_the_lease_and_records_progress)
{
    char id[37];
    enqueue("noop", PK_PRIO_NORMAL, 0, id);
    pk_task t;
    cr_assert(claim("w1", &t));
    int n;
    for (int i = 0; i < 5; i++) {
        now_ns += 8 * SEC;
        bool cancel = true;
        cr_assert_null(q->ops->heartbeat(q, id, "w1", 0.2 * (i + 1), &cancel));
        cr_assert_not(cancel);
        cr_assert_null(q->ops->reclaim_expired(q, &n));
        cr_assert_eq(n, 0, "renewed leases are not reclaimed");
    }
    cJSON *j = get(id);
    cr_assert_float_eq(cJSON_GetObjectItem(j, "progress")->valuedouble, 1.0, 1e-9);
    cJSON_Delete(j);
    pk_task_free(&t);
}

QTEST(per_type_lease)
{
    char id[37];
    enqueue("slow", PK_PRIO_NORMAL, 0, id);
    pk_task t;
    cr_assert(claim("w", &t));
    cr_assert_eq(t.lease_ms, 120000);
    now_ns += 60 * SEC;
    int n;
    cr_assert_null(q->ops->reclaim_expired(q, &n));
    cr_assert_eq(n, 0);
    now_ns += 61 * SEC;
    cr_assert_null(q->ops->reclaim_expired(q, &n));
    cr_assert_eq(n, 1);
    pk_task_free(&t);
}

QTEST(expired_last_attempt_goes_dead)
{
    pk_task_input in = {.type = "noop", .priority = PK_PRIO_NORMAL, .max_attempts = 1};
    char id[37];
    cr_assert_null(q->ops->enqueue(q, &in, NULL, NULL, id));
    pk_task t;
    cr_assert(claim("w", &t));
    now_ns += 11 * SEC;
    int n;
    cr_assert_null(q->ops->reclaim_expired(q, &n));
    cr_assert_str_eq(state_of(id), "dead");
    pk_task_free(&t);
}

QTEST(cancel_queued_never_starts)
{
    char id[37];
    enqueue("noop", PK_PRIO_NORMAL, 0, id);
    pk_task_state st;
    cr_assert_null(q->ops->cancel(q, id, NULL, &st));
    cr_assert_eq(st, PK_TASK_CANCELLED);
    pk_task t;
    cr_assert_not(claim("w", &t));
    pk_err *e = q->ops->cancel(q, id, NULL, &st);
    cr_assert(e && e->status == 409);
    pk_err_free(e);
    e = q->ops->cancel(q, "0190b6f0-0000-7000-8000-000000000000", NULL, &st);
    cr_assert(e && e->status == 404);
    pk_err_free(e);
}

QTEST(cancel_scheduled_and_retrying)
{
    char a[37], b[37];
    enqueue("noop", PK_PRIO_NORMAL, now_ns + SEC, a);
    cr_assert_null(q->ops->cancel(q, a, NULL, NULL));
    cr_assert_str_eq(state_of(a), "cancelled");
    enqueue("noop", PK_PRIO_NORMAL, 0, b);
    pk_task t;
    cr_assert(claim("w", &t));
    cr_assert_null(q->ops->fail(q, b, "w", "x", true, NULL));
    cr_assert_null(q->ops->cancel(q, b, NULL, NULL));
    cr_assert_str_eq(state_of(b), "cancelled");
    now_ns += 60 * SEC;
    pk_task t2;
    cr_assert_not(claim("w", &t2));
    pk_task_free(&t);
}

QTEST(cancel_running_is_seen_at_heartbeat)
{
    char id[37];
    enqueue("noop", PK_PRIO_NORMAL, 0, id);
    pk_task t;
    cr_assert(claim("w", &t));
    pk_task_state st;
    cr_assert_null(q->ops->cancel(q, id, NULL, &st));
    cr_assert_eq(st, PK_TASK_RUNNING, "running: only requested");
    bool cancel = false;
    cr_assert_null(q->ops->heartbeat(q, id, "w", -1, &cancel));
    cr_assert(cancel);
    cr_assert_null(q->ops->cancelled(q, id, "w"));
    cr_assert_str_eq(state_of(id), "cancelled");
    pk_task_free(&t);
}

QTEST(cancel_requested_and_worker_gone)
{
    char id[37];
    enqueue("noop", PK_PRIO_NORMAL, 0, id);
    pk_task t;
    cr_assert(claim("w", &t));
    cr_assert_null(q->ops->cancel(q, id, NULL, NULL));
    now_ns += 11 * SEC;
    int n;
    cr_assert_null(q->ops->reclaim_expired(q, &n));
    cr_assert_str_eq(state_of(id), "cancelled");
    pk_task_free(&t);
}

QTEST(release_does_not_count_the_attempt)
{
    char id[37];
    enqueue("noop", PK_PRIO_NORMAL, 0, id);
    pk_task t;
    cr_assert(claim("w", &t));
    cr_assert_null(q->ops->release(q, id, "w"));
    cr_assert_str_eq(state_of(id), "queued");
    pk_task_free(&t);
    cr_assert(claim("w", &t));
    cr_assert_eq(t.attempts, 1);
    pk_task_free(&t);
}

QTEST(idempotency_key_dedupes)
{
    pk_task_input in = {
        .type = "noop", .priority = PK_PRIO_NORMAL, .idempotency_key = "k1", .idem_ttl_ms = 60000};
    char a[37], b[37], c[37];
    bool created;
    cr_assert_null(q->ops->enqueue(q, &in, NULL, &created, a));
    cr_assert(created);
    now_ns += 59 * SEC;
    cr_assert_null(q->ops->enqueue(q, &in, NULL, &created, b));
    cr_assert_not(created);
    cr_assert_str_eq(a, b);
    /* finished and past its TTL: a new task */
    pk_task t;
    cr_assert(claim("w", &t));
    cr_assert_null(q->ops->complete(q, a, "w", NULL));
    now_ns += 2 * SEC;
    cr_assert_null(q->ops->enqueue(q, &in, NULL, &created, c));
    cr_assert(created);
    cr_assert_str_neq(a, c);
    pk_task_free(&t);
    /* TTL 0: coalesces only with a task that has not started */
    pk_task_input co = {.type = "noop", .priority = PK_PRIO_NORMAL, .idempotency_key = "k2"};
    cr_assert_null(q->ops->enqueue(q, &co, NULL, &created, a));
    cr_assert_null(q->ops->enqueue(q, &co, NULL, &created, b));
    cr_assert_not(created);
    cr_assert_str_eq(a, b);
}

QTEST(invalid_input)
{
    pk_task_input in = {.type = "Bad Type", .priority = PK_PRIO_NORMAL};
    pk_err *e = q->ops->enqueue(q, &in, NULL, NULL, NULL);
    cr_assert(e && e->status == 422);
    pk_err_free(e);
    in.type = "ok";
    in.priority = 9;
    e = q->ops->enqueue(q, &in, NULL, NULL, NULL);
    cr_assert(e && e->status == 422);
    pk_err_free(e);
}

QTEST(list_pages_and_filters)
{
    char ids[25][37];
    for (int i = 0; i < 25; i++) {
        enqueue(i % 2 ? "odd" : "even", PK_PRIO_NORMAL, 0, ids[i]);
        now_ns += MS;
    }
    pk_task_filter f = {.state = -1, .limit = 10};
    pk_task_page pg = {0};
    int seen = 0;
    char *cursor = NULL;
    for (int page = 0; page < 5; page++) {
        f.cursor = cursor;
        cr_assert_null(q->ops->list(q, &f, &pg));
        seen += (int)pg.count;
        free(cursor);
        cursor = pg.next_cursor ? strdup(pg.next_cursor) : NULL;
        if (page == 0) cr_assert(strstr(pg.items.data, ids[24]), "newest first");
        if (!cursor) break;
    }
    cr_assert_eq(seen, 25);
    pk_task_page_free(&pg);
    f = (pk_task_filter){.state = -1, .type = "odd", .limit = 100};
    cr_assert_null(q->ops->list(q, &f, &pg));
    cr_assert_eq(pg.count, 12);
    f = (pk_task_filter){.state = PK_TASK_RUNNING, .limit = 100};
    cr_assert_null(q->ops->list(q, &f, &pg));
    cr_assert_eq(pg.count, 0);
    f = (pk_task_filter){.state = -1, .limit = 10, .cursor = "x"};
    pk_err *e = q->ops->list(q, &f, &pg);
    cr_assert(e && e->status == 422);
    pk_err_free(e);
    pk_task_page_free(&pg);
}

QTEST(stats_and_purge)
{
    char a[37], b[37], c[37];
    enqueue("noop", PK_PRIO_HIGH, 0, a);
    now_ns += SEC;
    enqueue("noop", PK_PRIO_HIGH, 0, b);
    enqueue("noop", PK_PRIO_LOW, now_ns + 60 * SEC, c);
    pk_task t;
    cr_assert(claim("w", &t));
    cr_assert_str_eq(t.id, a);
    now_ns += SEC;
    pk_queue_stats s = {0};
    cr_assert_null(q->ops->stats(q, &s));
    cr_assert_eq(s.nrows, 2);
    for (size_t i = 0; i < s.nrows; i++) {
        cr_assert_str_eq(s.rows[i].queue, "default");
        if (s.rows[i].priority == PK_PRIO_HIGH) {
            cr_assert_eq(s.rows[i].counts[PK_TASK_RUNNING], 1);
            cr_assert_eq(s.rows[i].ready, 1);
            cr_assert_eq(s.now_ns - s.rows[i].oldest_ready_ns, SEC);
        } else {
            cr_assert_eq(s.rows[i].counts[PK_TASK_SCHEDULED], 1);
            cr_assert_eq(s.rows[i].ready, 0);
        }
    }
    pk_queue_stats_free(&s);
    cr_assert_null(q->ops->complete(q, a, "w", NULL));
    int n;
    cr_assert_null(q->ops->purge(q, &n));
    cr_assert_eq(n, 0);
    now_ns += 8LL * 86400 * SEC;
    cr_assert_null(q->ops->purge(q, &n));
    cr_assert_eq(n, 1);
    pk_buf out = PK_BUF_INIT;
    pk_err *e = q->ops->get(q, a, &out);
    cr_assert(e && e->status == 404);
    pk_err_free(e);
    pk_task_free(&t);
}

/* The stats' counts per state equal what listing finds in that state (both backends keep counts apart
 * from the records: the SQLite triggers of schema v3, the Redis counts hash). */
static void counts_match_listing(const char *when)
{
    pk_queue_stats s = {0};
    cr_assert_null(q->ops->stats(q, &s));
    for (int st = 0; st < PK_TASK__STATES; st++) {
        int64_t counted = 0;
        for (size_t i = 0; i < s.nrows; i++)
            counted += s.rows[i].counts[st];
        size_t listed = 0;
        char *cursor = NULL;
        for (;;) {
            pk_task_filter f = {.state = st, .limit = 100, .cursor = cursor};
            pk_task_page pg = {0};
            cr_assert_null(q->ops->list(q, &f, &pg));
            listed += pg.count;
            free(cursor);
            cursor = pg.next_cursor ? strdup(pg.next_cursor) : NULL;
            pk_task_page_free(&pg);
            if (!cursor) break;
        }
        cr_assert_eq(counted, (int64_t)listed, "%s: state %s counted %lld, listed %zu", when,
                     pk_task_state_name(st), (long long)counted, listed);
    }
    pk_queue_stats_free(&s);
}

QTEST(stats_counts_follow_every_transition)
{
    char id[8][37];
    for (int i = 0; i < 6; i++)
        enqueue(i % 2 ? "noop" : "other", i % 3 ? PK_PRIO_NORMAL : PK_PRIO_HIGH, 0, id[i]);
    enqueue("noop", PK_PRIO_LOW, now_ns + 60 * SEC, id[6]); /* scheduled */
    counts_match_listing("enqueued");
    pk_task t[4];
    for (int i = 0; i < 4; i++)
        cr_assert(claim("w", &t[i]));
    counts_match_listing("claimed");
    cr_assert_null(q->ops->complete(q, t[0].id, "w", "{\"ok\":1}"));
    cr_assert_null(q->ops->fail(q, t[1].id, "w", "boom", true, NULL));   /* retrying */
    cr_assert_null(q->ops->fail(q, t[2].id, "w", "fatal", false, NULL)); /* dead (not retryable) */
    counts_match_listing("settled");
    cr_assert_null(q->ops->cancel(q, t[3].id, NULL, NULL)); /* running: cancel requested */
    char queued[37] = "";
    for (int i = 0; i < 6 && !queued[0]; i++)
        if (strcmp(state_of(id[i]), "queued") == 0) memcpy(queued, id[i], 37);
    cr_assert(queued[0]);
    cr_assert_null(q->ops->cancel(q, queued, NULL, NULL)); /* queued: cancelled at once */
    counts_match_listing("cancelled");
    cr_assert_null(q->ops->retry(q, t[2].id, NULL)); /* dead -> queued */
    counts_match_listing("retried");
    now_ns += 8LL * 86400 * SEC; /* leases expire, the scheduled one is due, finished ones are old */
    int n;
    cr_assert_null(q->ops->reclaim_expired(q, &n));
    counts_match_listing("reclaimed");
    cr_assert_null(q->ops->purge(q, &n));
    cr_assert(n >= 2);
    counts_match_listing("purged");
    for (int i = 0; i < 4; i++)
        pk_task_free(&t[i]);
}

/* complete_claim (pk_queue_complete_claim: the backend's op, or complete + claim where it has none). */
static bool complete_claim(const char *id, const char *worker, const char *result, pk_task *next)
{
    pk_err *e = pk_queue_complete_claim(q, id, worker, result, NULL, 0, next);
    cr_assert_null(e, "%s", e ? e->message : "");
    return next->id[0] != 0;
}

QTEST(complete_claim_settles_then_hands_out_the_next_by_priority)
{
    if (is_redis) cr_assert_not_null(q->ops->complete_claim, "the Redis backend fuses the two calls");
    char low[37], normal[37], crit[37];
    enqueue("noop", PK_PRIO_LOW, 0, low);
    now_ns += MS;
    enqueue("noop", PK_PRIO_NORMAL, 0, normal);
    now_ns += MS;
    enqueue("noop", PK_PRIO_CRITICAL, 0, crit);
    pk_task t, n;
    cr_assert(claim("w", &t));
    cr_assert_str_eq(t.id, crit);
    now_ns += MS;
    cr_assert(complete_claim(crit, "w", "{\"n\":1}", &n));
    cr_assert_str_eq(n.id, normal, "the next one by priority");
    cr_assert_eq(n.attempts, 1);
    cr_assert_str_eq(n.payload_json, "{\"a\":1}");
    cr_assert_eq(n.started_ns / 1000, now_ns / 1000);
    cJSON *j = get(crit);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "state")->valuestring, "succeeded");
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "result"), "n")->valueint, 1);
    cr_assert_eq(cJSON_GetObjectItem(j, "progress")->valuedouble, 1.0);
    cJSON_Delete(j);
    cr_assert_str_eq(state_of(normal), "running");
    pk_task n2, n3;
    cr_assert(complete_claim(normal, "w", NULL, &n2));
    cr_assert_str_eq(n2.id, low);
    cr_assert_not(complete_claim(low, "w", NULL, &n3), "nothing left: settled, nothing claimed");
    cr_assert_str_eq(state_of(low), "succeeded");
    pk_err *e = pk_queue_complete_claim(q, low, "w", NULL, NULL, 0, &n3);
    cr_assert(e && pk_err_is(e, "lease_lost"), "a second completion is refused");
    pk_err_free(e);
    pk_task_free(&t);
    pk_task_free(&n);
    pk_task_free(&n2);
}

QTEST(complete_claim_by_a_stale_worker_claims_nothing)
{
    char a[37], b[37];
    enqueue("noop", PK_PRIO_NORMAL, 0, a);
    pk_task t;
    cr_assert(claim("w1", &t));
    now_ns += 11 * SEC; /* w1's lease expired */
    int n = 0;
    cr_assert_null(q->ops->reclaim_expired(q, &n));
    cr_assert_eq(n, 1);
    pk_task t2;
    cr_assert(claim("w2", &t2));
    cr_assert_str_eq(t2.id, a);
    enqueue("noop", PK_PRIO_NORMAL, 0, b);
    pk_task next;
    pk_err *e = pk_queue_complete_claim(q, a, "w1", NULL, NULL, 0, &next);
    cr_assert(e && pk_err_is(e, "lease_lost"));
    pk_err_free(e);
    cr_assert_eq(next.id[0], 0, "nothing claimed after a lost lease");
    cr_assert_str_eq(state_of(a), "running", "w2's attempt is untouched");
    cr_assert_str_eq(state_of(b), "queued");
    cr_assert(complete_claim(a, "w2", NULL, &next));
    cr_assert_str_eq(next.id, b);
    pk_task_free(&t);
    pk_task_free(&t2);
    pk_task_free(&next);
}

QTEST(complete_claim_respects_type_limits)
{
    char a[37], b[37], c[37];
    enqueue("one", PK_PRIO_NORMAL, 0, a);
    now_ns += MS;
    enqueue("one", PK_PRIO_NORMAL, 0, b);
    pk_task t, n, n2;
    cr_assert(claim("w1", &t));
    cr_assert_str_eq(t.id, a);
    cr_assert(complete_claim(a, "w1", NULL, &n), "the completion frees the concurrency slot first");
    cr_assert_str_eq(n.id, b);
    pk_task other;
    enqueue("one", PK_PRIO_NORMAL, 0, c);
    cr_assert_not(claim("w2", &other), "concurrency 1: b holds the slot");
    cr_assert_str_eq(state_of(c), "queued");
    now_ns += 50 * MS;
    cr_assert(complete_claim(b, "w1", NULL, &n2));
    cr_assert_str_eq(n2.id, c);
    pk_task_free(&n2);
    /* rl: 2/s, burst 1: the start after a completion still waits its turn */
    char r1[37], r2[37];
    enqueue("rl", PK_PRIO_NORMAL, 0, r1);
    enqueue("rl", PK_PRIO_NORMAL, 0, r2);
    pk_task x, y;
    cr_assert(complete_claim(c, "w1", NULL, &x));
    cr_assert_str_eq(x.id, r1);
    cr_assert_not(complete_claim(r1, "w1", NULL, &y), "rate 2/s: r2 may start 500 ms later");
    cr_assert_str_eq(state_of(r2), "queued");
    now_ns += 500 * MS;
    cr_assert(claim("w1", &y));
    cr_assert_str_eq(y.id, r2);
    pk_task_free(&t);
    pk_task_free(&n);
    pk_task_free(&x);
    pk_task_free(&y);
}

QTEST(enqueue_returns_the_document_get_returns)
{
    pk_task_input ins[] = {
        {.type = "noop", .priority = PK_PRIO_HIGH, .payload_json = "{\"k\":[1,\"x\"]}"},
        {.type = "noop",
         .queue = "mail",
         .priority = PK_PRIO_LOW,
         .max_attempts = 7,
         .timeout_ms = 1234,
         .idempotency_key = "key-\"1\"",
         .idem_ttl_ms = 60000,
         .trace_context = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {.type = "slow", .not_before_ns = now_ns + 2 * SEC + 1},
    };
    for (size_t i = 0; i < sizeof ins / sizeof *ins; i++) {
        pk_buf b = PK_BUF_INIT, g = PK_BUF_INIT;
        char id[37];
        bool created = false;
        now_ns += 1234567; /* not a whole millisecond */
        pk_err *e = q->ops->enqueue(q, &ins[i], &b, &created, id);
        cr_assert_null(e, "%s", e ? e->message : "");
        cr_assert(created);
        cr_assert_null(q->ops->get(q, id, &g));
        cr_assert_str_eq(b.data, g.data, "input %zu", i);
        pk_buf_free(&b);
        pk_buf_free(&g);
    }
}

/* enqueue_each: independent enqueues in one call (Redis: one script), each with its own result; one
 * input's failure is its own, a later input with an earlier one's key is a replay of it. */
QTEST(enqueue_each_gives_every_input_its_own_result)
{
    if (is_redis) cr_assert_not_null(q->ops->enqueue_each, "the Redis backend runs them as one script");
    pk_task_input in[] = {
        {.type = "noop", .priority = PK_PRIO_LOW, .payload_json = "{\"i\":0}"},
        {.type = "Bad Type", .payload_json = "{\"i\":1}"},
        {.type = "noop",
         .priority = PK_PRIO_NORMAL,
         .payload_json = "{\"i\":2}",
         .idempotency_key = "ek",
         .idem_ttl_ms = 60000},
        {.type = "noop",
         .priority = PK_PRIO_NORMAL,
         .payload_json = "{\"i\":3}",
         .idempotency_key = "ek",
         .idem_ttl_ms = 60000},
        {.type = "noop", .priority = PK_PRIO_CRITICAL, .payload_json = "{\"i\":4}"},
    };
    enum { N = sizeof in / sizeof *in };
    pk_buf out[N];
    bool created[N];
    char ids[N][37];
    pk_err *err[N];
    for (int i = 0; i < N; i++)
        out[i] = (pk_buf)PK_BUF_INIT;
    pk_queue_enqueue_each(q, in, N, out, created, ids, err);
    const bool want_created[] = {true, false, true, false, true};
    const int want_i[] = {0, -1, 2, 2, 4};
    for (int i = 0; i < N; i++) {
        if (i == 1) {
            cr_assert_not_null(err[i]);
            cr_assert_str_eq(err[i]->code, "validation_failed");
            pk_err_free(err[i]);
            continue;
        }
        cr_assert_null(err[i], "item %d: %s", i, err[i] ? err[i]->message : "");
        cr_assert_eq(created[i], want_created[i], "item %d", i);
        cJSON *t = NULL;
        cr_assert_null(pk_json_parse(out[i].data, out[i].len, 32, &t));
        cr_assert_str_eq(cJSON_GetObjectItem(t, "id")->valuestring, ids[i], "item %d", i);
        cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(t, "payload"), "i")->valueint, want_i[i]);
        cJSON *g = get(ids[i]); /* the document is what get returns */
        char *one = cJSON_PrintUnformatted(t), *two = cJSON_PrintUnformatted(g);
        cr_assert_str_eq(one, two, "item %d", i);
        free(one);
        free(two);
        cJSON_Delete(g);
        cJSON_Delete(t);
    }
    for (int i = 0; i < N; i++)
        pk_buf_free(&out[i]);
    cr_assert_str_eq(ids[3], ids[2], "one task per idempotency key");
    const char *order[] = {ids[4], ids[2], ids[0]}; /* claimable in priority order */
    for (int i = 0; i < 3; i++) {
        pk_task t;
        cr_assert(claim("w", &t));
        cr_assert_str_eq(t.id, order[i]);
        pk_task_free(&t);
    }
}

QTEST(enqueue_batch_in_order_with_per_item_keys)
{
    if (is_redis) cr_assert_not_null(q->ops->enqueue_batch, "the Redis backend runs a batch as one script");
    pk_task_input in[] = {
        {.type = "noop", .priority = PK_PRIO_LOW, .payload_json = "{\"i\":0}"},
        {.type = "noop", .priority = PK_PRIO_NORMAL, .payload_json = "{\"i\":1}", .idempotency_key = "bk"},
        {.type = "noop", .priority = PK_PRIO_NORMAL, .payload_json = "{\"i\":2}", .idempotency_key = "bk"},
        {.type = "noop", .priority = PK_PRIO_CRITICAL, .payload_json = "{\"i\":3}"},
        {.type = "slow", .not_before_ns = now_ns + SEC, .payload_json = "{\"i\":4}"},
    };
    size_t n = sizeof in / sizeof *in;
    bool created[5];
    pk_buf out = PK_BUF_INIT;
    pk_err *e = pk_queue_enqueue_batch(q, in, n, &out, created);
    cr_assert_null(e, "%s", e ? e->message : "");
    cJSON *arr = NULL;
    cr_assert_null(pk_json_parse(out.data, out.len, 32, &arr));
    cr_assert_eq(cJSON_GetArraySize(arr), 5);
    const bool want_created[] = {true, true, false, true, true};
    const int want_i[] = {0, 1, 1, 3, 4};
    char ids[5][37];
    for (int i = 0; i < 5; i++) {
        cJSON *t = cJSON_GetArrayItem(arr, i);
        cr_assert_eq(created[i], want_created[i], "item %d", i);
        cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(t, "payload"), "i")->valueint, want_i[i],
                     "item %d", i);
        snprintf(ids[i], sizeof ids[i], "%s", cJSON_GetObjectItem(t, "id")->valuestring);
        /* each document is what get returns */
        pk_buf g = PK_BUF_INIT;
        cr_assert_null(q->ops->get(q, ids[i], &g));
        char *one = cJSON_PrintUnformatted(t);
        cJSON *gj = NULL;
        cr_assert_null(pk_json_parse(g.data, g.len, 32, &gj));
        char *two = cJSON_PrintUnformatted(gj);
        cr_assert_str_eq(one, two, "item %d", i);
        free(one);
        free(two);
        cJSON_Delete(gj);
        pk_buf_free(&g);
    }
    cJSON_Delete(arr);
    pk_buf_free(&out);
    cr_assert_str_eq(ids[2], ids[1], "a later item with an earlier one's key is a replay of it");
    cr_assert_str_eq(state_of(ids[4]), "scheduled");
    /* claimable in priority order, like single enqueues */
    const char *order[] = {ids[3], ids[1], ids[0]};
    for (int i = 0; i < 3; i++) {
        pk_task t;
        cr_assert(claim("w", &t));
        cr_assert_str_eq(t.id, order[i], "claim %d", i);
        pk_task_free(&t);
    }
    pk_task t;
    cr_assert_not(claim("w", &t), "the delayed one waits");
    /* a bad input: nothing of the batch is enqueued (the Redis backend checks every input first) */
    if (is_redis) {
        pk_task_input bad[] = {{.type = "noop", .queue = "fresh"}, {.type = "no spaces allowed"}};
        pk_buf b = PK_BUF_INIT;
        e = pk_queue_enqueue_batch(q, bad, 2, &b, created);
        cr_assert(e && pk_err_is(e, "validation_failed"), "%s", e ? e->code : "no error");
        pk_err_free(e);
        pk_buf_free(&b);
        pk_queue_stats st = {0};
        cr_assert_null(q->ops->stats(q, &st));
        for (size_t i = 0; i < st.nrows; i++)
            cr_assert_str_neq(st.rows[i].queue, "fresh");
        pk_queue_stats_free(&st);
    }
}

QTEST(concurrency_limit_defers_and_never_exceeds)
{
    char a[37], b[37], x[37];
    enqueue("one", PK_PRIO_NORMAL, 0, a);
    now_ns += MS;
    enqueue("one", PK_PRIO_NORMAL, 0, b);
    now_ns += MS;
    enqueue("noop", PK_PRIO_LOW, 0, x);
    pk_task t1, t2, t3;
    cr_assert(claim("w1", &t1));
    cr_assert_str_eq(t1.id, a);
    cr_assert(claim("w2", &t2), "the limited task is skipped, the next one is handed out");
    cr_assert_str_eq(t2.id, x);
    cr_assert_not(claim("w3", &t3), "concurrency 1: the second 'one' waits");
    cr_assert_str_eq(state_of(b), "queued", "deferred, not lost");
    int64_t wake;
    cr_assert_null(q->ops->next_wakeup(q, &wake));
    cr_assert_eq(wake, now_ns + 50 * MS, "offered again after the retry interval");
    cr_assert_null(q->ops->complete(q, a, "w1", NULL));
    now_ns += 50 * MS;
    cr_assert(claim("w3", &t3));
    cr_assert_str_eq(t3.id, b);
    pk_task_free(&t1);
    pk_task_free(&t2);
    pk_task_free(&t3);
}

QTEST(concurrency_limit_ignores_expired_leases)
{
    char a[37], b[37];
    enqueue("one", PK_PRIO_NORMAL, 0, a);
    enqueue("one", PK_PRIO_NORMAL, 0, b);
    pk_task t1, t2;
    cr_assert(claim("w1", &t1));
    now_ns += 11 * SEC; /* w1's lease expired (not reclaimed yet): it no longer counts */
    cr_assert(claim("w2", &t2));
    cr_assert_str_eq(t2.id, b);
    pk_task_free(&t1);
    pk_task_free(&t2);
}

QTEST(rate_limit_gcra_with_burst)
{
    /* rl: 2/s, burst 1: one start per 500 ms */
    for (int i = 0; i < 3; i++) {
        char id[37];
        enqueue("rl", PK_PRIO_NORMAL, 0, id);
    }
    int64_t t0 = now_ns;
    pk_task t;
    cr_assert(claim("w", &t));
    pk_task_free(&t);
    cr_assert_not(claim("w", &t), "the second start must wait 500 ms");
    int64_t wake;
    cr_assert_null(q->ops->next_wakeup(q, &wake));
    cr_assert_eq(wake, t0 + 500 * MS);
    now_ns = t0 + 499 * MS;
    cr_assert_not(claim("w", &t));
    now_ns = t0 + 500 * MS;
    cr_assert(claim("w", &t));
    pk_task_free(&t);
    cr_assert_not(claim("w", &t));
    now_ns = t0 + 1000 * MS;
    cr_assert(claim("w", &t));
    pk_task_free(&t);
    /* rb: 1/s, burst 3: three at once, the fourth one second later */
    for (int i = 0; i < 4; i++) {
        char id[37];
        enqueue("rb", PK_PRIO_NORMAL, 0, id);
    }
    int64_t t1 = now_ns;
    for (int i = 0; i < 3; i++) {
        cr_assert(claim("w", &t), "burst start %d", i);
        pk_task_free(&t);
    }
    cr_assert_not(claim("w", &t));
    now_ns = t1 + SEC;
    cr_assert(claim("w", &t));
    cr_assert_str_eq(t.type, "rb");
    pk_task_free(&t);
}

QTEST(next_wakeup_reports_leases_and_nothing)
{
    int64_t wake;
    cr_assert_null(q->ops->next_wakeup(q, &wake));
    cr_assert_eq(wake, INT64_MAX, "nothing pending");
    char id[37];
    enqueue("noop", PK_PRIO_NORMAL, 0, id);
    cr_assert_null(q->ops->next_wakeup(q, &wake));
    cr_assert_leq(wake, now_ns, "a ready task: now");
    pk_task t;
    cr_assert(claim("w", &t));
    cr_assert_null(q->ops->next_wakeup(q, &wake));
    cr_assert_eq(wake, now_ns + 10 * SEC, "the lease expiry");
    pk_task_free(&t);
}

QTEST(json_document_shape)
{
    pk_task_input in = {.type = "noop",
                        .queue = "mail",
                        .priority = PK_PRIO_HIGH,
                        .payload_json = "{\"to\":\"a/b\"}",
                        .idempotency_key = "k",
                        .trace_context = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"};
    pk_buf b = PK_BUF_INIT;
    char id[37];
    cr_assert_null(q->ops->enqueue(q, &in, &b, NULL, id));
    char want[1024];
    snprintf(want, sizeof want,
             "{\"id\":\"%s\",\"type\":\"noop\",\"queue\":\"mail\",\"priority\":\"high\",\"state\":\"queued\","
             "\"payload\":{\"to\":\"a/b\"},\"attempts\":0,\"max_attempts\":3,\"idempotency_key\":\"k\","
             "\"not_before\":\"2027-01-15T08:00:00.000Z\",\"timeout_ms\":30000,\"lease_ms\":10000,"
             "\"trace_context\":\"00-0123456789abcdef0123456789abcdef-0123456789abcdef-01\",\"progress\":0,"
             "\"cancel_requested\":false,\"result\":null,\"error\":null,\"errors\":[],"
             "\"created_at\":\"2027-01-15T08:00:00.000Z\",\"started_at\":null,\"finished_at\":null,"
             "\"updated_at\":\"2027-01-15T08:00:00.000Z\"}",
             id);
    cr_assert_str_eq(b.data, want);
    pk_buf_free(&b);
    pk_task t;
    cr_assert(claim("w", &t));
    cr_assert_str_eq(t.trace_context, in.trace_context);
    cr_assert_str_eq(t.queue, "mail");
    cr_assert_eq(t.priority, PK_PRIO_HIGH);
    cr_assert_eq(t.created_ns, now_ns);
    now_ns += 1500 * MS;
    cr_assert_null(q->ops->fail(q, id, "w", "quote \" and / slash", true, NULL));
    cJSON *j = get(id);
    cJSON *e0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "errors"), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(e0, "error")->valuestring, "quote \" and / slash");
    cr_assert_str_eq(cJSON_GetObjectItem(e0, "at")->valuestring, "2027-01-15T08:00:01.500Z");
    cr_assert_str_eq(cJSON_GetObjectItem(j, "not_before")->valuestring, "2027-01-15T08:00:02.000Z",
                     "retry at +500 ms (jitter 0.5 of 1 s)");
    cJSON_Delete(j);
    pk_task_free(&t);
    cr_assert_null(q->ops->get(q, id, NULL));
}

/* Two queue handles (as two processes would have) and four claiming threads: every task is claimed
 * exactly once while its lease is valid. */
typedef struct claimer {
    pk_queue *q;
    char name[16];
    char (*got)[37];
    int n;
} claimer;

static void *claim_all(void *p)
{
    claimer *c = p;
    for (;;) {
        pk_task t;
        pk_err *e = c->q->ops->claim(c->q, c->name, NULL, 0, &t);
        if (e) {
            pk_err_free(e); /* SQLITE_BUSY between the two handles: try again */
            continue;
        }
        if (!t.id[0]) return NULL;
        memcpy(c->got[c->n++], t.id, 37);
        cr_assert_null(c->q->ops->complete(c->q, t.id, c->name, NULL));
        pk_task_free(&t);
    }
}

static void run_claimers(pk_queue *a, pk_queue *b)
{
    enum { N = 300 };
    for (int i = 0; i < N; i++) {
        pk_task_input in = {.type = "noop", .priority = i % 4, .queue = i % 3 ? "default" : "other"};
        cr_assert_null(a->ops->enqueue(a, &in, NULL, NULL, NULL));
    }
    claimer cl[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        cl[i] = (claimer){.q = i % 2 ? b : a, .got = calloc(N, 37)};
        snprintf(cl[i].name, sizeof cl[i].name, "w%d", i);
        pthread_create(&th[i], NULL, claim_all, &cl[i]);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += cl[i].n;
    }
    cr_assert_eq(total, N, "each task exactly once");
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < cl[i].n; k++)
            for (int j = i; j < 4; j++)
                for (int m = (j == i ? k + 1 : 0); m < cl[j].n; m++)
                    cr_assert_str_neq(cl[i].got[k], cl[j].got[m]);
    for (int i = 0; i < 4; i++)
        free(cl[i].got);
}

Test(queue, concurrent_claims_never_share_a_task, .init = setup_sqlite, .fini = teardown)
{
    char path[] = "/tmp/pake-queue-test-XXXXXX";
    cr_assert_not_null(mkdtemp(path));
    char file[64];
    snprintf(file, sizeof file, "%s/q.db", path);
    pk_queue_config c = {.path = file};
    pk_queue *a, *b;
    cr_assert_null(pk_queue_open_sqlite(&c, &a));
    cr_assert_null(pk_queue_open_sqlite(&c, &b));
    run_claimers(a, b);
    pk_queue_close(a);
    pk_queue_close(b);
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s", path);
    cr_assert_eq(system(cmd), 0);
}

RTEST(concurrent_claims_never_share_a_task)
{
    NEED_QUEUE();
    pk_redis *r2 = redis_client();
    char p2[64];
    snprintf(p2, sizeof p2, "t%dc:", (int)getpid());
    pk_queue_config c = {.redis = rc, .redis_prefix = p2};
    pk_queue *a, *b;
    cr_assert_null(pk_queue_open_redis(&c, &a));
    c.redis = r2;
    cr_assert_null(pk_queue_open_redis(&c, &b));
    run_claimers(a, b);
    pk_queue_close(a);
    pk_queue_close(b);
    pk_redis_free(r2);
}

/* ---- Redis only ---- */

static redisReply *rcmd(int argc, const char **argv)
{
    redisReply *r = NULL;
    pk_err *e = pk_redis_call(rc, 0, 0, &r, argc, argv, NULL);
    cr_assert_null(e, "%s", e ? e->message : "");
    return r;
}

static long long rint_cmd(int argc, const char **argv)
{
    redisReply *r = rcmd(argc, argv);
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return v;
}

/* Deletes every key of this test's prefix (what a Redis restart without persistence does to it). */
static void wipe_prefix(void)
{
    char pat[80];
    snprintf(pat, sizeof pat, "%s*", prefix);
    const char *argv[] = {"KEYS", pat};
    redisReply *r = rcmd(2, argv);
    for (size_t i = 0; i < r->elements; i++) {
        const char *del[] = {"DEL", r->element[i]->str};
        freeReplyObject(rcmd(2, del));
    }
    freeReplyObject(r);
}

RTEST(nogroup_recovery_after_stream_or_all_keys_vanish)
{
    NEED_QUEUE();
    char a[37], b[37], c[37];
    enqueue("noop", PK_PRIO_NORMAL, 0, a);
    pk_task t;
    cr_assert(claim("w", &t));
    cr_assert_null(q->ops->complete(q, a, "w", NULL));
    pk_task_free(&t);
    /* the stream (and its group) vanish: the next claim recreates the group and goes on */
    char key[96];
    snprintf(key, sizeof key, "%sq:s:default:2", prefix);
    const char *del[] = {"DEL", key};
    cr_assert_eq(rint_cmd(2, del), 1);
    cr_assert_not(claim("w", &t));
    enqueue("noop", PK_PRIO_NORMAL, 0, b);
    cr_assert(claim("w", &t), "NOGROUP recovered");
    cr_assert_str_eq(t.id, b);
    pk_task_free(&t);
    /* everything vanishes */
    wipe_prefix();
    cr_assert_not(claim("w", &t));
    enqueue("noop", PK_PRIO_NORMAL, 0, c);
    cr_assert(claim("w", &t));
    cr_assert_str_eq(t.id, c);
    cr_assert_null(q->ops->complete(q, c, "w", NULL));
    pk_task_free(&t);
}

/* The operations are one Redis function library: a Redis that lost it (restarted without persistence,
 * FUNCTION FLUSH) gets it loaded again by the next call, transparently. */
RTEST(function_library_is_reloaded_when_redis_lost_it)
{
    NEED_QUEUE();
    char a[37], b[37];
    enqueue("noop", PK_PRIO_NORMAL, 0, a);
    const char *list[] = {"FUNCTION", "LIST", "LIBRARYNAME", "pkq_*"};
    redisReply *r = rcmd(4, list);
    cr_assert(r->type == REDIS_REPLY_ARRAY && r->elements >= 1, "the library is loaded");
    freeReplyObject(r);
    pk_redis_stats st0, st1;
    pk_redis_stats_get(rc, &st0);
    const char *flush[] = {"FUNCTION", "FLUSH"};
    freeReplyObject(rcmd(2, flush));
    enqueue("noop", PK_PRIO_NORMAL, 0, b);
    pk_redis_stats_get(rc, &st1);
    cr_assert_geq(st1.script_loads, st0.script_loads + 1, "the library was loaded again");
    pk_task t;
    cr_assert(claim("w", &t));
    cr_assert_str_eq(t.id, a);
    cr_assert_null(q->ops->complete(q, a, "w", NULL));
    pk_task_free(&t);
    cr_assert(claim("w", &t));
    cr_assert_str_eq(t.id, b);
    pk_task_free(&t);
}

RTEST(dead_letters_go_to_the_dead_stream_and_streams_hold_only_undelivered_entries)
{
    NEED_QUEUE();
    pk_task_input in = {.type = "noop", .priority = PK_PRIO_NORMAL, .max_attempts = 1};
    char id[37], ok[37];
    cr_assert_null(q->ops->enqueue(q, &in, NULL, NULL, id));
    enqueue("noop", PK_PRIO_NORMAL, 0, ok);
    char skey[96], dkey[96];
    snprintf(skey, sizeof skey, "%sq:s:default:2", prefix);
    snprintf(dkey, sizeof dkey, "%sq:dead", prefix);
    const char *xlen[] = {"XLEN", skey}, *dlen[] = {"XLEN", dkey};
    cr_assert_eq(rint_cmd(2, xlen), 2);
    pk_task t, t2;
    cr_assert(claim("w", &t));
    cr_assert(claim("w", &t2));
    cr_assert_eq(rint_cmd(2, xlen), 0, "a claim trims what it read: a stream holds only undelivered entries");
    const char *xpending[] = {"XPENDING", skey, "g"};
    redisReply *pe = rcmd(3, xpending);
    cr_assert(pe->type == REDIS_REPLY_ARRAY && pe->elements >= 1 && pe->element[0]->integer == 0,
              "claims read with NOACK: no pending-entries list to grow");
    freeReplyObject(pe);
    cr_assert_null(q->ops->fail(q, id, "w", "fatal", true, NULL));
    cr_assert_null(q->ops->complete(q, ok, "w", NULL));
    cr_assert_eq(rint_cmd(2, xlen), 0);
    cr_assert_eq(rint_cmd(2, dlen), 1);
    cr_assert_str_eq(state_of(id), "dead");
    char tkey[160];
    snprintf(tkey, sizeof tkey, "%sq:t:%s", prefix, ok);
    const char *ttl[] = {"PTTL", tkey};
    long long left = rint_cmd(2, ttl);
    cr_assert(left > 0 && left <= 7LL * 86400 * 1000, "finished records expire (%lld)", left);
    pk_task_free(&t);
    pk_task_free(&t2);
}

static void *enqueue_later(void *p)
{
    (void)p;
    struct timespec ts = {0, 100 * 1000000}; /* lets the waiter block first (not required for correctness) */
    nanosleep(&ts, NULL);
    pk_task_input in = {.type = "noop", .priority = PK_PRIO_LOW};
    cr_assert_null(q->ops->enqueue(q, &in, NULL, NULL, NULL));
    return NULL;
}

static int64_t mono_ms(void)
{
    return pk_mono_ns() / 1000000;
}

RTEST(wait_wakes_on_new_work_and_times_out)
{
    NEED_QUEUE();
    cr_assert_not_null(q->ops->wait);
    int64_t t0 = mono_ms();
    cr_assert_null(q->ops->wait(q, 150));
    int64_t idle = mono_ms() - t0;
    cr_assert(idle >= 100 && idle < 2000, "nothing to do: waits about the timeout (%lld ms)",
              (long long)idle);
    pthread_t th;
    pthread_create(&th, NULL, enqueue_later, NULL);
    t0 = mono_ms();
    cr_assert_null(q->ops->wait(q, 10000));
    int64_t woke = mono_ms() - t0;
    pthread_join(th, NULL);
    cr_assert(woke < 5000, "woken by the enqueue, not the 10 s timeout (%lld ms)", (long long)woke);
    pk_task t;
    cr_assert(claim("w", &t));
    pk_task_free(&t);
    /* a delayed task: the wait ends at its due time (fake clock: 200 ms ahead) */
    char id[37];
    enqueue("noop", PK_PRIO_NORMAL, now_ns + 200 * MS, id);
    t0 = mono_ms();
    cr_assert_null(q->ops->wait(q, 10000));
    woke = mono_ms() - t0;
    cr_assert(woke < 5000, "woken at the due time (%lld ms)", (long long)woke);
    /* ready work: returns at once */
    now_ns += 200 * MS;
    t0 = mono_ms();
    cr_assert_null(q->ops->wait(q, 10000));
    cr_assert(mono_ms() - t0 < 5000);
    cr_assert(claim("w", &t));
    cr_assert_str_eq(t.id, id);
    pk_task_free(&t);
}

RTEST(redis_down_is_a_retryable_queue_error)
{
    NEED_QUEUE();
    pk_redis_config rcfg = {.url = "redis://127.0.0.1:1/0", .connect_timeout_ms = 200};
    pk_redis *dead = NULL;
    cr_assert_null(pk_redis_new(&rcfg, &dead));
    pk_queue_config c = {.redis = dead};
    pk_queue *dq;
    cr_assert_null(pk_queue_open_redis(&c, &dq));
    pk_task t;
    pk_err *e = dq->ops->claim(dq, "w", NULL, 0, &t);
    cr_assert(e && pk_err_is(e, "queue_error") && e->status == 503 && e->retryable);
    pk_err_free(e);
    pk_queue_close(dq);
    pk_redis_free(dead);
}

/* ---- worker registry (SQLite; the Redis one is tests/unit/test_queue_redis_workers.c: Redis's clock) */

static void beat(const char *name, const char *kind, int busy)
{
    pk_queue_worker_info w = {.pid = 4242, .threads = 3, .busy = busy, .started_ns = 1700000000LL * SEC};
    snprintf(w.name, sizeof w.name, "%s", name);
    snprintf(w.host, sizeof w.host, "host-a");
    snprintf(w.kind, sizeof w.kind, "%s", kind);
    pk_err *e = q->ops->worker_beat(q, &w);
    cr_assert_null(e, "%s", e ? e->message : "");
}

Test(queue, worker_registry_beats_lists_forgets_and_leaves, .init = setup_sqlite, .fini = teardown)
{
    pk_queue_worker_info *ws = NULL;
    size_t n = 99;
    cr_assert_null(q->ops->workers_seen(q, 60000, &ws, &n));
    cr_assert_eq(n, 0);
    free(ws);
    beat("a-1", "worker", 0);
    now_ns += 2 * SEC;
    beat("b-2", "serve", 1);
    now_ns += 1 * SEC;
    beat("a-1", "worker", 2); /* upsert: one row, new numbers and last_seen */
    cr_assert_null(q->ops->workers_seen(q, 60000, &ws, &n));
    cr_assert_eq(n, 2);
    cr_assert_str_eq(ws[0].name, "a-1"); /* most recent first */
    cr_assert_eq(ws[0].busy, 2);
    cr_assert_eq(ws[0].threads, 3);
    cr_assert_eq(ws[0].pid, 4242);
    cr_assert_str_eq(ws[0].host, "host-a");
    cr_assert_str_eq(ws[0].kind, "worker");
    cr_assert_eq(ws[0].last_seen_ns, now_ns);
    cr_assert_eq(ws[0].started_ns, 1700000000LL * SEC);
    cr_assert_str_eq(ws[1].name, "b-2");
    cr_assert_eq(ws[1].last_seen_ns, now_ns - 1 * SEC);
    free(ws);
    /* the age window filters: b-2 was seen 1 s ago, outside a 500 ms window */
    cr_assert_null(q->ops->workers_seen(q, 500, &ws, &n));
    cr_assert_eq(n, 1);
    cr_assert_str_eq(ws[0].name, "a-1");
    free(ws);
    /* a clean stop leaves at once */
    cr_assert_null(q->ops->worker_leave(q, "a-1"));
    cr_assert_null(q->ops->workers_seen(q, 60000, &ws, &n));
    cr_assert_eq(n, 1);
    cr_assert_str_eq(ws[0].name, "b-2");
    free(ws);
    /* entries not seen for the forget period are dropped by anyone's next beat */
    now_ns += PK_QUEUE_WORKER_FORGET_MS * MS + 1;
    beat("c-3", "worker", 0);
    cr_assert_null(q->ops->workers_seen(q, PK_QUEUE_WORKER_FORGET_MS * 10, &ws, &n));
    cr_assert_eq(n, 1);
    cr_assert_str_eq(ws[0].name, "c-3");
    free(ws);
}

/* ---- group commit (Redis): concurrent callers of one process share script calls ---- */

enum { GC_THREADS = 8, GC_EACH = 24 };

typedef struct gc_enq {
    int index;
    pthread_barrier_t *go;
    char ids[GC_EACH][37];
    char doc_ids[GC_EACH][37];
    char payloads[GC_EACH][64];
    bool created[GC_EACH];
    const char *err_code[GC_EACH];
    bool payload_ok[GC_EACH];
} gc_enq;

/* Item j of thread i: every 6th has an invalid type (its own validation error), every 8th the
 * idempotency key "shared" (one task for all of them), the others a payload naming (i, j). */
static void *gc_enqueue_thread(void *arg)
{
    gc_enq *g = arg;
    pthread_barrier_wait(g->go);
    for (int j = 0; j < GC_EACH; j++) {
        snprintf(g->payloads[j], sizeof g->payloads[j], "{\"t\":%d,\"j\":%d}", g->index, j);
        pk_task_input in = {.type = j % 6 == 5 ? "Bad Type" : "gc",
                            .payload_json = g->payloads[j],
                            .idempotency_key = j % 8 == 7 ? "shared" : NULL,
                            .idem_ttl_ms = 60000};
        pk_buf out = PK_BUF_INIT;
        pk_err *e = q->ops->enqueue(q, &in, &out, &g->created[j], g->ids[j]);
        g->err_code[j] = e ? e->code : NULL; /* static strings */
        pk_err_free(e);
        cJSON *doc = NULL;
        if (!e && !pk_json_parse(out.data, out.len, 32, &doc)) {
            snprintf(g->doc_ids[j], 37, "%s", cJSON_GetObjectItem(doc, "id")->valuestring);
            char *pl = cJSON_PrintUnformatted(cJSON_GetObjectItem(doc, "payload"));
            g->payload_ok[j] = !strcmp(pl, g->payloads[j]);
            free(pl);
        }
        cJSON_Delete(doc);
        pk_buf_free(&out);
    }
    return NULL;
}

RTEST(group_committed_enqueues_each_get_their_own_task_or_error)
{
    NEED_QUEUE();
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, GC_THREADS);
    static gc_enq g[GC_THREADS];
    pthread_t th[GC_THREADS];
    memset(g, 0, sizeof g);
    for (int i = 0; i < GC_THREADS; i++) {
        g[i].index = i;
        g[i].go = &go;
        pthread_create(&th[i], NULL, gc_enqueue_thread, &g[i]);
    }
    for (int i = 0; i < GC_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    int shared_created = 0;
    char shared[37] = "";
    for (int i = 0; i < GC_THREADS; i++)
        for (int j = 0; j < GC_EACH; j++) {
            if (j % 6 == 5) {
                cr_assert_str_eq(g[i].err_code[j] ? g[i].err_code[j] : "(none)", "validation_failed");
                continue;
            }
            cr_assert_null(g[i].err_code[j], "thread %d item %d: %s", i, j, g[i].err_code[j]);
            cr_assert_str_eq(g[i].ids[j], g[i].doc_ids[j], "the id and the document are the same task");
            if (j % 8 == 7) {
                shared_created += g[i].created[j];
                if (!shared[0]) snprintf(shared, sizeof shared, "%s", g[i].ids[j]);
                cr_assert_str_eq(g[i].ids[j], shared, "one task per idempotency key");
                continue;
            }
            cr_assert(g[i].created[j]);
            cr_assert(g[i].payload_ok[j], "thread %d item %d got its own payload back", i, j);
            cJSON *d = get(g[i].ids[j]); /* and that is what Redis holds for that id */
            char *pl = cJSON_PrintUnformatted(cJSON_GetObjectItem(d, "payload"));
            cr_assert_str_eq(pl, g[i].payloads[j]);
            free(pl);
            cJSON_Delete(d);
            for (int k = 0; k < j; k++) /* ids are distinct within a thread (and uuid7 across) */
                cr_assert_str_neq(g[i].ids[j], g[i].ids[k]);
        }
    cr_assert_eq(shared_created, 1, "exactly one caller created the shared-key task");
}

typedef struct gc_claimer {
    char name[16];
    pthread_barrier_t *go;
    pk_task task;
    pk_task next;
    const char *err_code;
    int phase;
} gc_claimer;

static void *gc_claim_thread(void *arg)
{
    gc_claimer *c = arg;
    pthread_barrier_wait(c->go);
    pk_err *e = c->phase == 0 ? q->ops->claim(q, c->name, NULL, 0, &c->task)
                              : q->ops->complete_claim(q, c->task.id, c->name, NULL, NULL, 0, &c->next);
    c->err_code = e ? e->code : NULL;
    pk_err_free(e);
    return NULL;
}

static void gc_round(gc_claimer *c, int n, int phase)
{
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)n);
    pthread_t th[GC_THREADS];
    for (int i = 0; i < n; i++) {
        c[i].go = &go;
        c[i].phase = phase;
        pthread_create(&th[i], NULL, gc_claim_thread, &c[i]);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
}

static long long lease_of(const char *id)
{
    char key[128];
    snprintf(key, sizeof key, "%sq:running", prefix); /* the lease table */
    const char *argv[] = {"ZSCORE", key, id};
    redisReply *r = rcmd(3, argv);
    long long v = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;
    freeReplyObject(r);
    return v;
}

RTEST(group_claims_respect_concurrency_limits_and_give_each_its_own_lease)
{
    NEED_QUEUE();
    enum { N = 6 };
    char ids[2 * N][37];
    for (int i = 0; i < 2 * N; i++) /* one, gc, one, gc, ...: type "one" has concurrency 1 */
        enqueue(i % 2 ? "gc" : "one", PK_PRIO_NORMAL, 0, ids[i]);
    gc_claimer c[N];
    memset(c, 0, sizeof c);
    for (int i = 0; i < N; i++)
        snprintf(c[i].name, sizeof c[i].name, "w%d", i);
    gc_round(c, N, 0); /* N concurrent claims: as N claims one after the other would */
    int ones = 0, gcs = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_null(c[i].err_code, "%s", c[i].err_code);
        cr_assert(c[i].task.id[0], "worker %d got a task", i);
        ones += !strcmp(c[i].task.type, "one");
        gcs += !strcmp(c[i].task.type, "gc");
        cr_assert_eq(c[i].task.attempts, 1);
        cr_assert_str_eq(state_of(c[i].task.id), "running");
        cr_assert_eq(lease_of(c[i].task.id), now_ns / 1000 + c[i].task.lease_ms * 1000,
                     "each claimed task has its own lease, from the claim time");
        for (int k = 0; k < i; k++)
            cr_assert_str_neq(c[i].task.id, c[k].task.id, "never one task to two workers");
    }
    cr_assert_eq(ones, 1, "the concurrency limit of 1 holds within one group");
    cr_assert_eq(gcs, N - 1);
    /* N concurrent complete-and-claims: every completion is recorded, the freed slot of "one" goes to
     * at most one of the new claims */
    gc_round(c, N, 1);
    int next_ones = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_null(c[i].err_code, "%s", c[i].err_code);
        cr_assert_str_eq(state_of(c[i].task.id), "succeeded");
        if (c[i].next.id[0]) {
            next_ones += !strcmp(c[i].next.type, "one");
            cr_assert_str_eq(state_of(c[i].next.id), "running");
            for (int k = 0; k < N; k++)
                cr_assert_str_neq(c[i].next.id, c[k].task.id, "a settled task is not claimed again");
        }
    }
    cr_assert_leq(next_ones, 1);
    /* a stale completion in a group gets its own lease_lost, the others are unaffected */
    for (int i = 0; i < N; i++) {
        pk_task_free(&c[i].task);
        c[i].task = c[i].next;
        c[i].next = (pk_task){0};
        if (!c[i].task.id[0]) snprintf(c[i].task.id, sizeof c[i].task.id, "%s", ids[0]); /* settled */
    }
    gc_round(c, N, 1);
    for (int i = 0; i < N; i++) {
        if (!strcmp(c[i].task.id, ids[0]))
            cr_assert_str_eq(c[i].err_code ? c[i].err_code : "(none)", "lease_lost");
        else
            cr_assert_null(c[i].err_code, "%s", c[i].err_code);
        pk_task_free(&c[i].task);
        pk_task_free(&c[i].next);
    }
}

/* ---- several groups in flight (pk_queue_config.group_inflight) ---- */

static _Atomic int64_t tick_ns; /* a clock that moves 1 ms per reading: limit-deferred tasks come due */
static int64_t ticking_now(void *ctx)
{
    (void)ctx;
    return atomic_fetch_add(&tick_ns, 1000000) + 1000000;
}
static pk_clock ticking = {ticking_now, NULL};

enum { IF_THREADS = 8, IF_TASKS = 240 };

typedef struct if_worker {
    pk_queue *q;
    char name[16];
    char (*got)[37]; /* the tasks this worker ran, in order */
    int n;
    atomic_int *ones_running; /* "one" tasks held right now by any worker (limit: concurrency 1) */
    atomic_int *ones_max;
    atomic_int *left; /* tasks not yet run */
    const char *err;  /* first unexpected error code */
} if_worker;

static void *if_worker_main(void *arg)
{
    if_worker *w = arg;
    pk_task t = {0}, next = {0};
    while (atomic_load(w->left) > 0 && !w->err) {
        if (!next.id[0]) {
            pk_err *e = w->q->ops->claim(w->q, w->name, NULL, 0, &next);
            if (e) w->err = e->code;
            pk_err_free(e);
            if (!next.id[0]) {
                sched_yield(); /* deferred "one" tasks come due as the clock ticks */
                continue;
            }
        }
        t = next;
        next = (pk_task){0};
        bool one = !strcmp(t.type, "one");
        if (one) {
            int now_running = atomic_fetch_add(w->ones_running, 1) + 1;
            int m = atomic_load(w->ones_max);
            while (now_running > m && !atomic_compare_exchange_weak(w->ones_max, &m, now_running)) {
            }
        }
        memcpy(w->got[w->n++], t.id, 37);
        atomic_fetch_sub(w->left, 1);
        if (one) atomic_fetch_sub(w->ones_running, 1); /* before its completion reaches Redis */
        char result[64];
        snprintf(result, sizeof result, "{\"by\":\"%s\"}", w->name);
        pk_err *e = w->q->ops->complete_claim(w->q, t.id, w->name, result, NULL, 0, &next);
        if (e && !w->err) w->err = e->code; /* lease_lost here: the task was not this caller's */
        pk_err_free(e);
        pk_task_free(&t);
    }
    if (next.id[0]) {
        pk_err_free(w->q->ops->release(w->q, next.id, w->name));
        pk_task_free(&next);
    }
    return NULL;
}

/* Two "processes" (queue handles, each its own pool) x 4 worker threads: every task runs exactly
 * once, each completion is accepted as its caller's (its own lease), the result stored is the caller's
 * own, and type "one" (concurrency 1) never runs twice at once. */
static void run_workers(int inflight, int64_t gather_us)
{
    atomic_store(&tick_ns, 1800000000LL * SEC);
    pk_redis *r2 = redis_client();
    char p2[64];
    snprintf(p2, sizeof p2, "t%di%d:", (int)getpid(), inflight);
    pk_queue_config c = base_config();
    c.clock = &ticking;
    c.default_lease_ms = 3600000; /* no lease expires while the clock ticks */
    c.redis = rc;
    c.redis_prefix = p2;
    c.group_inflight = inflight;
    c.group_gather_us = gather_us;
    pk_queue *a, *b;
    cr_assert_null(pk_queue_open_redis(&c, &a));
    c.redis = r2;
    cr_assert_null(pk_queue_open_redis(&c, &b));
    static char ids[IF_TASKS][37];
    for (int i = 0; i < IF_TASKS; i++) {
        pk_task_input in = {.type = i % 5 ? "gc" : "one", .priority = i % 4};
        cr_assert_null(a->ops->enqueue(a, &in, NULL, NULL, ids[i]));
    }
    atomic_int ones_running = 0, ones_max = 0, left = IF_TASKS;
    if_worker w[IF_THREADS];
    pthread_t th[IF_THREADS];
    for (int i = 0; i < IF_THREADS; i++) {
        w[i] = (if_worker){.q = i % 2 ? b : a,
                           .got = calloc(IF_TASKS, 37),
                           .ones_running = &ones_running,
                           .ones_max = &ones_max,
                           .left = &left};
        snprintf(w[i].name, sizeof w[i].name, "w%d", i);
        pthread_create(&th[i], NULL, if_worker_main, &w[i]);
    }
    for (int i = 0; i < IF_THREADS; i++)
        pthread_join(th[i], NULL);
    int total = 0;
    for (int i = 0; i < IF_THREADS; i++) {
        cr_assert_null(w[i].err, "worker %d: %s", i, w[i].err);
        total += w[i].n;
    }
    cr_assert_eq(total, IF_TASKS, "every task ran exactly once (%d runs)", total);
    cr_assert_eq(atomic_load(&ones_max), 1, "type one (concurrency 1) never ran twice at once");
    for (int i = 0; i < IF_TASKS; i++) { /* each id run by exactly one worker, which stored its result */
        int runs = 0;
        const char *by = NULL;
        for (int k = 0; k < IF_THREADS; k++)
            for (int m = 0; m < w[k].n; m++)
                if (!strcmp(w[k].got[m], ids[i])) {
                    runs++;
                    by = w[k].name;
                }
        cr_assert_eq(runs, 1, "task %d ran %d times", i, runs);
        pk_buf out = PK_BUF_INIT;
        cr_assert_null(a->ops->get(a, ids[i], &out));
        cJSON *d = NULL;
        cr_assert_null(pk_json_parse(out.data, out.len, 32, &d));
        cr_assert_str_eq(cJSON_GetObjectItem(d, "state")->valuestring, "succeeded");
        cJSON *res = cJSON_GetObjectItem(d, "result");
        cr_assert_str_eq(cJSON_GetObjectItem(res, "by")->valuestring, by,
                         "the result of the worker that ran it");
        cJSON_Delete(d);
        pk_buf_free(&out);
    }
    for (int i = 0; i < IF_THREADS; i++)
        free(w[i].got);
    pk_queue_close(a);
    pk_queue_close(b);
    pk_redis_free(r2);
}

RTEST(two_groups_in_flight_keep_each_callers_result_limits_and_exactly_once)
{
    NEED_QUEUE();
    run_workers(2, 0);
}

/* The claim group's leader waits for the last group's callers: the same guarantees. */
RTEST(gathering_claim_groups_keep_each_callers_result_limits_and_exactly_once)
{
    NEED_QUEUE();
    run_workers(1, 2000);
}
