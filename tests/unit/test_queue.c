/* The embedded task queue's state machine over a fake clock: every transition, priority order,
 * delayed start, full-jitter retry backoff, dead letters with their error history, lease expiry and
 * reclaim, heartbeats, cancel (queued and running), release, retry from dead, idempotency keys,
 * cursor pages, stats and purge. The database is in memory; the jitter is a fixed fraction. */
#include "core/json.h"
#include "queue/queue.h"
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void setup(void)
{
    now_ns = 1800000000LL * SEC;
    jitter = 0.5;
    pk_queue_config c = {.path = ":memory:",
                         .clock = &fake,
                         .unit_random = fixed_random,
                         .default_lease_ms = 10000,
                         .leases = leases,
                         .nleases = 1,
                         .retry_base_ms = 1000,
                         .retry_cap_ms = 8000};
    pk_err *e = pk_queue_open_sqlite(&c, &q);
    cr_assert_null(e, "%s", e ? e->message : "");
}
static void teardown(void)
{
    pk_queue_close(q);
}
TestSuite(queue, .init = setup, .fini = teardown);

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

Test(queue, enqueue_claim_complete)
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

Test(queue, priority_then_age_order)
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

Test(queue, claim_by_type)
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

Test(queue, delayed_task_waits_for_its_time)
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

Test(queue, failure_retries_with_full_jitter_then_dead_with_history)
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

Test(queue, backoff_is_capped)
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

Test(queue, not_retryable_failure_is_failed_at_once)
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

Test(queue, retry_from_dead)
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

Test(queue, lease_expiry_reclaims_and_old_worker_is_refused)
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

Test(queue, heartbeat_extends_the_lease_and_records_progress)
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

Test(queue, per_type_lease)
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

Test(queue, expired_last_attempt_goes_dead)
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

Test(queue, cancel_queued_never_starts)
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

Test(queue, cancel_scheduled_and_retrying)
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

Test(queue, cancel_running_is_seen_at_heartbeat)
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

Test(queue, cancel_requested_and_worker_gone)
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

Test(queue, release_does_not_count_the_attempt)
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

Test(queue, idempotency_key_dedupes)
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

Test(queue, invalid_input)
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

Test(queue, list_pages_and_filters)
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

Test(queue, stats_and_purge)
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

/* Two queue handles on one file (as two processes would be) and four claiming threads: every task is
 * claimed exactly once while its lease is valid. */
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

Test(queue, concurrent_claims_never_share_a_task)
{
    char path[] = "/tmp/pake-queue-test-XXXXXX";
    cr_assert_not_null(mkdtemp(path));
    char file[64];
    snprintf(file, sizeof file, "%s/q.db", path);
    pk_queue_config c = {.path = file};
    pk_queue *a, *b;
    cr_assert_null(pk_queue_open_sqlite(&c, &a));
    cr_assert_null(pk_queue_open_sqlite(&c, &b));
    enum { N = 300 };
    for (int i = 0; i < N; i++) {
        pk_task_input in = {.type = "noop", .priority = i % 4};
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
    pk_queue_close(a);
    pk_queue_close(b);
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s", path);
    cr_assert_eq(system(cmd), 0);
}

static void beat(const char *name, const char *kind, int busy)
{
    pk_queue_worker_info w = {.pid = 4242, .threads = 3, .busy = busy, .started_ns = 1700000000LL * SEC};
    snprintf(w.name, sizeof w.name, "%s", name);
    snprintf(w.host, sizeof w.host, "host-a");
    snprintf(w.kind, sizeof w.kind, "%s", kind);
    pk_err *e = q->ops->worker_beat(q, &w);
    cr_assert_null(e, "%s", e ? e->message : "");
}

Test(queue, worker_registry_beats_lists_forgets_and_leaves)
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
