/* The embedded store under pressure: idempotency records, deadlines (a driven clock), SQLITE_BUSY
 * from another connection, many threads, injected SQLite failures at every call site, and schema
 * versions it does not know. */
#include "store_fixture.h"
#include <pthread.h>
#include <sqlite3.h>

TestSuite(store_ops, .init = fx_setup, .fini = fx_teardown, .timeout = 60);

Test(store_ops, idempotency_new_in_progress_mismatch_replay)
{
    pk_op_ctx alice = {.principal = "key:alice"}, bob = {.principal = "key:bob"};
    pk_idem_state st;
    int status = 0;
    pk_buf body = PK_BUF_INIT;
    cr_assert_null(pk_store_idem_begin(fx_store, &alice, "k1", "h1", &st, &status, &body));
    cr_assert_eq(st, PK_IDEM_NEW);
    cr_assert_null(pk_store_idem_begin(fx_store, &alice, "k1", "h1", &st, &status, &body));
    cr_assert_eq(st, PK_IDEM_IN_PROGRESS);
    cr_assert_null(pk_store_idem_begin(fx_store, &alice, "k1", "h2", &st, &status, &body));
    cr_assert_eq(st, PK_IDEM_MISMATCH);
    cr_assert_null(pk_store_idem_begin(fx_store, &bob, "k1", "h9", &st, &status, &body));
    cr_assert_eq(st, PK_IDEM_NEW, "keys are per principal");
    cr_assert_null(pk_store_idem_finish(fx_store, &alice, "k1", 201, "{\"id\":1}", 8));
    pk_err_free(fx_expect_err(pk_store_idem_finish(fx_store, &alice, "k1", 201, "x", 1), "not_found", 404));
    cr_assert_null(pk_store_idem_begin(fx_store, &alice, "k1", "h1", &st, &status, &body));
    cr_assert_eq(st, PK_IDEM_REPLAY);
    cr_assert_eq(status, 201);
    cr_assert_str_eq(body.data, "{\"id\":1}");
    pk_buf_reset(&body);
    cr_assert_null(pk_store_idem_begin(fx_store, &alice, "k1", "h2", &st, &status, &body));
    cr_assert_eq(st, PK_IDEM_MISMATCH);
    cr_assert_eq(body.len, 0);
    /* abort frees the key */
    cr_assert_null(pk_store_idem_abort(fx_store, &bob, "k1"));
    pk_err_free(fx_expect_err(pk_store_idem_abort(fx_store, &bob, "k1"), "not_found", 404));
    cr_assert_null(pk_store_idem_begin(fx_store, &bob, "k1", "h3", &st, &status, &body));
    cr_assert_eq(st, PK_IDEM_NEW);
    pk_err_free(fx_expect_err(pk_store_idem_begin(fx_store, &bob, "", "h", &st, &status, &body),
                              "validation_failed", 422));
    pk_buf_free(&body);
}

Test(store_ops, idempotency_records_expire_and_stale_claims_are_taken_over)
{
    pk_op_ctx c = {.principal = "ip:127.0.0.1"};
    pk_idem_state st;
    int status;
    pk_buf body = PK_BUF_INIT;
    cr_assert_null(pk_store_idem_begin(fx_store, &c, "stale", "h", &st, &status, &body));
    cr_assert_null(pk_store_idem_begin(fx_store, &c, "done", "h", &st, &status, &body));
    cr_assert_null(pk_store_idem_finish(fx_store, &c, "done", 200, "ok", 2));
    fx_wall += 59LL * 1000000000LL;
    cr_assert_null(pk_store_idem_begin(fx_store, &c, "stale", "h", &st, &status, &body));
    cr_assert_eq(st, PK_IDEM_IN_PROGRESS, "within the lease");
    fx_wall += 2LL * 1000000000LL;
    cr_assert_null(pk_store_idem_begin(fx_store, &c, "stale", "h", &st, &status, &body));
    cr_assert_eq(st, PK_IDEM_NEW, "an abandoned claim is taken over after the lease");
    cr_assert_null(pk_store_idem_begin(fx_store, &c, "done", "h", &st, &status, &body));
    cr_assert_eq(st, PK_IDEM_REPLAY);
    fx_wall += 86400LL * 1000000000LL;
    cr_assert_null(pk_store_idem_begin(fx_store, &c, "done", "other", &st, &status, &body));
    cr_assert_eq(st, PK_IDEM_NEW, "after the TTL a key is new again");
    pk_buf_free(&body);
}

/* A clock that moves forward 1 ms every time it is read: time passes only as the store works. */
static int64_t ticking_ns;
static int64_t ticking_now(void *ctx)
{
    (void)ctx;
    return __atomic_add_fetch(&ticking_ns, 1000000, __ATOMIC_RELAXED);
}
static pk_clock ticking = {ticking_now, NULL};

Test(store_ops, deadlines_stop_waiting_and_running_statements)
{
    pk_store_close(fx_store);
    pk_sqlite_config cfg = {
        .data_dir = fx_dir, .max_connections = 2, .clock = &ticking, .wall_clock = &fx_wall_clock};
    fx_store = fx_open_cfg(&cfg);
    for (int i = 0; i < 300; i++)
        cJSON_Delete(fx_create("common word", "common words repeated in common notes", NULL, 0.5, NULL));
    pk_buf out = PK_BUF_INIT;
    /* already past */
    pk_op_ctx past = {.deadline_ns = ticking_now(NULL) - 1};
    pk_err_free(fx_expect_err(pk_store_note_get(fx_store, &past, "x", &out, NULL), "deadline_exceeded", 504));
    /* expires while the statement runs: the progress handler reads the clock, each read costs 1 ms */
    pk_op_ctx soon = {.deadline_ns = ticking_now(NULL) + 5000000};
    pk_note_query q = {.text = "common", .flagged = -1, .limit = 100, .sort = PK_SORT_TITLE};
    pk_page p = {0};
    pk_err *e = fx_expect_err(pk_store_note_search(fx_store, &soon, &q, &p), "deadline_exceeded", 504);
    cr_assert(e->retryable);
    pk_err_free(e);
    cr_assert_eq(p.count, 0);
    /* the connection is usable afterwards, and a generous deadline completes */
    pk_op_ctx later = {.deadline_ns = ticking_now(NULL) + 1000000000000LL};
    cr_assert_null(pk_store_note_search(fx_store, &later, &q, &p));
    cr_assert_eq(p.count, 100);
    pk_page_free(&p);
    pk_buf_free(&out);
}

Test(store_ops, busy_database_is_a_retryable_store_busy)
{
    pk_store_close(fx_store);
    pk_sqlite_config cfg = {.data_dir = fx_dir, .busy_timeout_ms = 30, .wall_clock = &fx_wall_clock};
    fx_store = fx_open_cfg(&cfg);
    char path[300];
    snprintf(path, sizeof path, "%s/pake.db", fx_dir);
    sqlite3 *other;
    cr_assert_eq(sqlite3_open(path, &other), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    pk_note_input in = {.set = PK_NF_TITLE, .title = "t"};
    pk_buf out = PK_BUF_INIT;
    int64_t t0 = pk_mono_ns();
    pk_err *e = fx_expect_err(pk_store_note_create(fx_store, NULL, &in, &out), "store_busy", 503);
    cr_assert(e->retryable);
    cr_assert(pk_err_is(e, "sqlite"));
    cr_assert(pk_mono_ns() - t0 >= 30000000LL, "waited the busy timeout");
    pk_err_free(e);
    /* readers are not blocked by a writer (WAL) */
    pk_note_query q = {.flagged = -1};
    cJSON_Delete(fx_page(false, &q, NULL));
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    cr_assert_null(pk_store_note_create(fx_store, NULL, &in, &out));
    pk_buf_free(&out);
}

#define THREADS 4
#define PER_THREAD 40
static void *writer_thread(void *arg)
{
    pk_store *s = arg;
    pk_buf out = PK_BUF_INIT;
    int failures = 0;
    for (int i = 0; i < PER_THREAD; i++) {
        pk_note_input in = {.set = PK_NF_TITLE | PK_NF_TAGS, .title = "concurrent", .tags_json = "[\"c\"]"};
        pk_buf_reset(&out);
        pk_err *e = pk_store_note_create(s, NULL, &in, &out);
        failures += e != NULL;
        pk_err_free(e);
        pk_note_query q = {.flagged = -1, .limit = 5};
        pk_page p = {0};
        e = pk_store_note_list(s, NULL, &q, &p);
        failures += e != NULL;
        pk_err_free(e);
        pk_page_free(&p);
    }
    pk_buf_free(&out);
    return (void *)(intptr_t)failures;
}

Test(store_ops, threads_share_one_store)
{
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, writer_thread, fx_store);
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(th[i], &r);
        cr_assert_eq((intptr_t)r, 0, "thread %d had failures", i);
    }
    pk_note_query q = {.flagged = -1, .limit = 100};
    char *cursor = NULL;
    int total = 0;
    do {
        q.cursor = cursor;
        char *next = NULL;
        cJSON *items = fx_page(false, &q, &next);
        total += cJSON_GetArraySize(items);
        cJSON_Delete(items);
        free(cursor);
        cursor = next;
    } while (cursor);
    cr_assert_eq(total, THREADS * PER_THREAD);
}

typedef struct obs_log {
    int calls, failures;
    char last[32];
} obs_log;
static void observe(void *ud, const char *op, double seconds, bool ok)
{
    obs_log *l = ud;
    l->calls++;
    l->failures += !ok;
    cr_assert(seconds >= 0);
    snprintf(l->last, sizeof l->last, "%s", op);
}

Test(store_ops, observer_sees_every_operation)
{
    obs_log log = {0};
    fx_store->observer = observe;
    fx_store->observer_ud = &log;
    char id[40];
    cJSON_Delete(fx_create("o", "o", NULL, 0.5, id));
    cr_assert_str_eq(log.last, "note_create");
    pk_buf out = PK_BUF_INIT;
    pk_err_free(pk_store_note_get(fx_store, NULL, "missing", &out, NULL));
    cr_assert_str_eq(log.last, "note_get");
    cr_assert_eq(log.calls, 2);
    cr_assert_eq(log.failures, 0, "not_found is not a store failure");
    pk_buf_free(&out);
}

Test(store_ops, refuses_a_newer_schema)
{
    pk_store_close(fx_store);
    fx_store = NULL;
    char path[300];
    snprintf(path, sizeof path, "%s/pake.db", fx_dir);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    pk_sqlite_config cfg = {.data_dir = fx_dir};
    pk_store *s = NULL;
    pk_err *e = fx_expect_err(pk_store_open_sqlite(&cfg, false, &s), "store_error", 500);
    cr_assert_null(s);
    pk_err_free(e);
    /* without migrating it opens, and ping says the schema does not match */
    cr_assert_null(pk_store_open_sqlite(&cfg, true, &s));
    pk_err_free(fx_expect_err(pk_store_ping(s, NULL), "store_error", 503));
    pk_store_close(s);
}

#ifdef PAKE_FAULT_INJECTION
/* Counts rows straight from the file, outside the store. */
static long long raw_count(const char *sql)
{
    char path[300];
    snprintf(path, sizeof path, "%s/pake.db", fx_dir);
    sqlite3 *db;
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    long long n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static const char *const STATE_SQL =
    "SELECT (SELECT count(*) FROM notes) * 1000000 + (SELECT count(*) FROM audit_log) * 10000 +"
    " (SELECT count(*) FROM confidence_history) * 100 + (SELECT count(*) FROM note_tags) * 10 +"
    " (SELECT count(*) FROM links) + (SELECT sum(version) FROM notes) * 100000000";

typedef pk_err *(*op_fn)(const char *id, const char *other, pk_buf *out);
static pk_err *op_create(const char *id, const char *other, pk_buf *out)
{
    (void)id, (void)other;
    pk_note_input in = {.set = PK_NF_TITLE | PK_NF_TAGS, .title = "f", .tags_json = "[\"a\",\"b\"]"};
    return pk_store_note_create(fx_store, NULL, &in, out);
}
static pk_err *op_update(const char *id, const char *other, pk_buf *out)
{
    (void)other;
    pk_note_input in = {.set = PK_NF_TITLE | PK_NF_TAGS | PK_NF_CONFIDENCE,
                        .title = "g",
                        .tags_json = "[\"z\"]",
                        .confidence_score = 0.9};
    return pk_store_note_update(fx_store, NULL, id, 0, &in, out);
}
static pk_err *op_delete(const char *id, const char *other, pk_buf *out)
{
    (void)other;
    pk_err *e = pk_store_note_delete(fx_store, NULL, id, 0);
    if (!e) pk_buf_puts(out, "deleted"); /* delete has no output; mark success for the checks */
    return e;
}
static pk_err *op_link(const char *id, const char *other, pk_buf *out)
{
    return pk_store_link_create(fx_store, NULL, id, other, "rel", 0.5, NULL, out);
}

/* Fails the n-th SQLite call for n = 1, 2, ... until the operation succeeds: every failure must be a
 * clean store error that leaves the database exactly as before and the output buffer untouched. */
static void fail_everywhere(op_fn op, int rc, const char *code)
{
    char a[40], b[40];
    cJSON_Delete(fx_create("A", "a", "[\"t\"]", 0.5, a));
    cJSON_Delete(fx_create("B", "b", NULL, 0.5, b));
    long long before = raw_count(STATE_SQL);
    int n;
    for (n = 1; n < 200; n++) {
        pk_store_sqlite_fail_at(fx_store, n, rc);
        pk_buf out = PK_BUF_INIT;
        pk_err *e = op(a, b, &out);
        int calls = pk_store_sqlite_calls(fx_store);
        pk_store_sqlite_fail_at(fx_store, 0, 0);
        if (!e) {
            cr_assert(calls < n, "succeeded although call %d was failed", n);
            cr_assert_gt(out.len, 0);
            pk_buf_free(&out);
            break;
        }
        cr_assert_str_eq(e->code, code, "call %d: %s (%s)", n, e->code, e->message);
        cr_assert_eq(out.len, 0);
        cr_assert_eq(raw_count(STATE_SQL), before, "call %d: a failed operation changed the database", n);
        pk_err_free(e);
        pk_buf_free(&out);
    }
    cr_assert(n > 2 && n < 200, "n = %d", n);
    /* the store still works */
    cJSON_Delete(fx_create("C", "c", NULL, 0.5, NULL));
}

Test(store_ops, injected_io_errors_leave_no_partial_writes)
{
    op_fn ops[] = {op_create, op_update, op_delete, op_link};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        fail_everywhere(ops[i], SQLITE_IOERR_WRITE, "store_error");
}

Test(store_ops, injected_busy_is_store_busy)
{
    fail_everywhere(op_update, SQLITE_BUSY, "store_busy");
}

Test(store_ops, injected_failures_in_reads)
{
    char id[40];
    cJSON_Delete(fx_create("R", "read me", NULL, 0.5, id));
    for (int n = 1; n < 10; n++) {
        pk_store_sqlite_fail_at(fx_store, n, SQLITE_CORRUPT);
        pk_page p = {0};
        pk_note_query q = {.text = "read", .flagged = -1};
        pk_err *e = pk_store_note_search(fx_store, NULL, &q, &p);
        pk_store_sqlite_fail_at(fx_store, 0, 0);
        pk_page_free(&p);
        if (!e) break;
        cr_assert_str_eq(e->code, "store_error");
        cr_assert_eq(e->status, 500);
        cr_assert_null(p.items.data);
        pk_err_free(e);
    }
    pk_buf out = PK_BUF_INIT;
    cr_assert_null(pk_store_note_get(fx_store, NULL, id, &out, NULL));
    pk_buf_free(&out);
}
#endif
