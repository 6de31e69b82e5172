/*
 * queue_sqlite: the embedded task queue, one SQLite file (DATA_DIR/queue.db) next to the store.
 *
 * Why its own file and not tables in the store: the queue is written on every claim, heartbeat and
 * completion, and would otherwise contend with note writes for the store's single writer connection;
 * it also works unchanged when the store is PostgreSQL. Derived data the task handlers produce
 * (embeddings) lives in the same file (pk_queue_sqlite_with_db), so it is rebuildable from the notes.
 *
 * Model: one connection guarded by one mutex. Every operation is one short transaction (BEGIN
 * IMMEDIATE for writes, so two processes on the same file serialise too), so a claim is atomic: the
 * SELECT of the most urgent claimable task and its UPDATE to running happen under the same write lock
 * and two workers can never hold the same task while its lease is valid. Claimable tasks are found
 * through a partial index on (priority, not_before, seq) over the states queued/scheduled/retrying, so
 * scheduled and retrying tasks need no promotion step: they become claimable when not_before passes.
 *
 * Per-type limits (cfg->limits): the claim checks the candidate's type before handing it out:
 * concurrency counts running attempts of the type with an unexpired lease; rate is GCRA with the
 * theoretical arrival time kept per type in queue_type_tat (so processes sharing the file share it).
 * A task over its limit is deferred (not_before = the time the rate allows, or now + LIMIT_RETRY_MS
 * for concurrency) and the claim looks at the next candidate, up to LIMIT_SCAN candidates per call.
 *
 * Worker registry: table `workers`, one row per process that runs workers, upserted by its beat
 * (about once a second), so GET /v1/queues shows the `pake worker` processes sharing this file too.
 *
 * Statements are prepared once and cached by the address of their (static) SQL text.
 */
#include "queue/queue.h"
#include "core/id.h"
#include "core/json.h"
#include "foundation/retry.h"
#include "store/sqlite_pool.h"
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NCACHE 48
#define LIMIT_RETRY_MS 50 /* a concurrency-limited task is offered again after this */
#define LIMIT_SCAN 32     /* limited candidates one claim defers before it gives up */

typedef struct sq_queue {
    pk_queue base;
    pk_queue_config cfg;
    pk_queue_type_lease *leases; /* owned copy */
    pk_queue_type_limit *limits; /* owned copy */
    sqlite3 *db;
    pthread_mutex_t mu;
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } cache[NCACHE];
} sq_queue;

static const char *const STATE_NAMES[] = {"queued", "scheduled", "running", "succeeded",
                                          "failed", "retrying",  "dead",    "cancelled"};
static const char *const PRIO_NAMES[] = {"critical", "high", "normal", "low"};

const char *pk_task_state_name(pk_task_state s)
{
    return (unsigned)s < PK_TASK__STATES ? STATE_NAMES[s] : "unknown";
}
int pk_task_state_parse(const char *s)
{
    for (int i = 0; i < PK_TASK__STATES; i++)
        if (!strcmp(s, STATE_NAMES[i])) return i;
    return -1;
}
const char *pk_task_priority_name(int p)
{
    return (unsigned)p < PK_PRIO__COUNT ? PRIO_NAMES[p] : "normal";
}
int pk_task_priority_parse(const char *s)
{
    for (int i = 0; i < PK_PRIO__COUNT; i++)
        if (!strcmp(s, PRIO_NAMES[i])) return i;
    return -1;
}

bool pk_queue_name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > PK_TASK_TYPE_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

int64_t pk_queue_lease_for(const pk_queue_config *cfg, const char *type)
{
    for (size_t i = 0; i < cfg->nleases; i++)
        if (!strcmp(cfg->leases[i].type, type)) return cfg->leases[i].lease_ms;
    return cfg->default_lease_ms;
}

void pk_task_free(pk_task *t)
{
    free(t->type);
    free(t->queue);
    free(t->payload_json);
    free(t->trace_context);
    memset(t, 0, sizeof *t);
}

void pk_task_page_free(pk_task_page *p)
{
    pk_buf_free(&p->items);
    free(p->next_cursor);
    memset(p, 0, sizeof *p);
}

void pk_queue_stats_free(pk_queue_stats *s)
{
    free(s->rows);
    memset(s, 0, sizeof *s);
}

pk_queue_stats_row *pk_queue_stats_row_for(pk_queue_stats *s, const char *queue, int prio)
{
    for (size_t i = 0; i < s->nrows; i++)
        if (s->rows[i].priority == prio && !strcmp(s->rows[i].queue, queue)) return &s->rows[i];
    s->rows = realloc(s->rows, (s->nrows + 1) * sizeof *s->rows);
    if (!s->rows) abort();
    pk_queue_stats_row *r = &s->rows[s->nrows++];
    memset(r, 0, sizeof *r);
    snprintf(r->queue, sizeof r->queue, "%s", queue);
    r->priority = prio;
    return r;
}

static int stats_row_cmp(const void *a, const void *b)
{
    const pk_queue_stats_row *x = a, *y = b;
    int c = strcmp(x->queue, y->queue);
    return c ? c : x->priority - y->priority;
}

void pk_queue_stats_sort(pk_queue_stats *s)
{
    if (s->nrows) qsort(s->rows, s->nrows, sizeof *s->rows, stats_row_cmp);
}

/* ---- plumbing ------------------------------------------------------------------------------- */

static int64_t now_ns(sq_queue *q)
{
    return pk_clock_now(q->cfg.clock);
}

static pk_err *db_err(sq_queue *q, int rc, const char *what)
{
    int prim = rc & 0xff;
    bool transient = prim == SQLITE_BUSY || prim == SQLITE_LOCKED || prim == SQLITE_IOERR ||
                     prim == SQLITE_FULL || prim == SQLITE_READONLY;
    pk_err *cause = pk_err_new("sqlite", 500, "%s: %s", what, sqlite3_errmsg(q->db));
    pk_err *e = pk_err_wrap(cause, "queue_error", transient ? 503 : 500, "the task queue failed (%s)", what);
    e->retryable = transient;
    return e;
}

static pk_err *prep(sq_queue *q, const char *sql, sqlite3_stmt **out)
{
    for (int i = 0; i < NCACHE; i++)
        if (q->cache[i].sql == sql) {
            sqlite3_reset(q->cache[i].st);
            sqlite3_clear_bindings(q->cache[i].st);
            *out = q->cache[i].st;
            return NULL;
        }
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v3(q->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) return db_err(q, rc, "prepare");
    for (int i = 0; i < NCACHE; i++)
        if (!q->cache[i].sql) {
            q->cache[i].sql = sql;
            q->cache[i].st = st;
            *out = st;
            return NULL;
        }
    sqlite3_finalize(st); /* cache full: a programming error (more static statements than NCACHE) */
    return pk_err_internal("queue statement cache full");
}

static pk_err *exec(sq_queue *q, const char *sql)
{
    int rc = sqlite3_exec(q->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? NULL : db_err(q, rc, "exec");
}

static pk_err *begin(sq_queue *q)
{
    pthread_mutex_lock(&q->mu);
    pk_err *e = exec(q, "BEGIN IMMEDIATE");
    if (e) pthread_mutex_unlock(&q->mu);
    return e;
}

/* Commits on success, rolls back on error; unlocks. Returns e (or the commit error). */
static pk_err *end(sq_queue *q, pk_err *e)
{
    if (!e) e = exec(q, "COMMIT");
    if (e) sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&q->mu);
    return e;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

/* Runs a statement that returns no rows (or ignores them). *changes gets sqlite3_changes. */
static pk_err *run(sq_queue *q, sqlite3_stmt *st, int *changes)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    }
    if (rc != SQLITE_DONE) return db_err(q, rc, "step");
    if (changes) *changes = sqlite3_changes(q->db);
    return NULL;
}

/* ---- schema --------------------------------------------------------------------------------- */

static const char SCHEMA_V1[] =
    "CREATE TABLE tasks ("
    " seq INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL UNIQUE,"
    " type TEXT NOT NULL,"
    " queue TEXT NOT NULL,"
    " priority INTEGER NOT NULL,"
    " state INTEGER NOT NULL,"
    " payload TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " max_attempts INTEGER NOT NULL,"
    " idem_key TEXT,"
    " timeout_ms INTEGER NOT NULL,"
    " lease_ms INTEGER NOT NULL,"
    " trace TEXT,"
    " not_before INTEGER NOT NULL,"
    " lease_until INTEGER,"
    " worker TEXT,"
    " progress REAL NOT NULL DEFAULT 0,"
    " cancel_requested INTEGER NOT NULL DEFAULT 0,"
    " result TEXT,"
    " error TEXT,"
    " errors TEXT NOT NULL DEFAULT '[]',"
    " created_at INTEGER NOT NULL,"
    " started_at INTEGER,"
    " finished_at INTEGER,"
    " updated_at INTEGER NOT NULL);"
    "CREATE INDEX tasks_claim ON tasks(priority, not_before, seq) WHERE state IN (0,1,5);"
    "CREATE INDEX tasks_running ON tasks(lease_until) WHERE state = 2;"
    "CREATE INDEX tasks_idem ON tasks(idem_key) WHERE idem_key IS NOT NULL;"
    "CREATE INDEX tasks_state ON tasks(state, seq);"
    "CREATE INDEX tasks_type ON tasks(type, seq);"
    "PRAGMA user_version = 1;";

/* v2: the worker registry (one row per process that runs workers, see pk_queue_worker_info). */
static const char SCHEMA_V2[] = "CREATE TABLE IF NOT EXISTS workers ("
                                " name TEXT PRIMARY KEY,"
                                " host TEXT NOT NULL,"
                                " kind TEXT NOT NULL,"
                                " pid INTEGER NOT NULL,"
                                " threads INTEGER NOT NULL,"
                                " busy INTEGER NOT NULL,"
                                " started_at INTEGER NOT NULL,"
                                " last_seen INTEGER NOT NULL) WITHOUT ROWID;"
                                "CREATE INDEX IF NOT EXISTS workers_seen ON workers(last_seen);"
                                "PRAGMA user_version = 2;";

/* v3: task counts per (queue, priority, state), kept by triggers in the writing transaction, so the
 * stats that feed GET /v1/queues and the queue gauges (read about once a second by every process with
 * workers) cost a read of a few rows instead of a scan of every task kept (finished ones included). */
static const char SCHEMA_V3[] =
    "CREATE TABLE IF NOT EXISTS task_counts ("
    " queue TEXT NOT NULL, priority INTEGER NOT NULL, state INTEGER NOT NULL, n INTEGER NOT NULL,"
    " PRIMARY KEY (queue, priority, state)) WITHOUT ROWID;"
    "DELETE FROM task_counts;"
    "INSERT INTO task_counts SELECT queue, priority, state, count(*) FROM tasks GROUP BY 1, 2, 3;"
    "CREATE TRIGGER IF NOT EXISTS task_counts_ins AFTER INSERT ON tasks BEGIN"
    " INSERT INTO task_counts VALUES (new.queue, new.priority, new.state, 1)"
    "  ON CONFLICT DO UPDATE SET n = n + 1;"
    " END;"
    "CREATE TRIGGER IF NOT EXISTS task_counts_del AFTER DELETE ON tasks BEGIN"
    " UPDATE task_counts SET n = n - 1 WHERE queue = old.queue AND priority = old.priority AND state = "
    "old.state;"
    " END;"
    "CREATE TRIGGER IF NOT EXISTS task_counts_upd AFTER UPDATE OF queue, priority, state ON tasks"
    " WHEN old.state IS NOT new.state OR old.queue IS NOT new.queue OR old.priority IS NOT new.priority BEGIN"
    " UPDATE task_counts SET n = n - 1 WHERE queue = old.queue AND priority = old.priority AND state = "
    "old.state;"
    " INSERT INTO task_counts VALUES (new.queue, new.priority, new.state, 1)"
    "  ON CONFLICT DO UPDATE SET n = n + 1;"
    " END;"
    "PRAGMA user_version = 3;";

/* The version is read inside the write transaction, so processes that open a new file at the same
 * time (several `pake worker`s) apply each step once. */
static pk_err *migrate(sq_queue *q)
{
    pk_err *e = exec(q, "BEGIN IMMEDIATE");
    if (e) return e;
    sqlite3_stmt *st;
    int v = 0;
    if (sqlite3_prepare_v2(q->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    if (v < 1) e = exec(q, SCHEMA_V1);
    if (!e && v < 2) e = exec(q, SCHEMA_V2);
    if (!e && v < 3) e = exec(q, SCHEMA_V3);
    if (!e) e = exec(q, "COMMIT");
    if (e) sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return e;
}

/* ---- JSON output ---------------------------------------------------------------------------- */

#define TASK_COLS                                                                                            \
    "id, type, queue, priority, state, payload, attempts, max_attempts, idem_key, not_before, timeout_ms, "  \
    "lease_ms, trace, progress, cancel_requested, result, error, errors, created_at, started_at, "           \
    "finished_at, updated_at, seq"

static void jw_time(pk_jw *w, sqlite3_stmt *st, int col)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL) return pk_jw_null(w);
    char ts[PK_RFC3339_LEN];
    pk_rfc3339(sqlite3_column_int64(st, col), ts);
    pk_jw_str(w, ts);
}

static void jw_text(pk_jw *w, sqlite3_stmt *st, int col)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL) return pk_jw_null(w);
    pk_jw_strn(w, (const char *)sqlite3_column_text(st, col), (size_t)sqlite3_column_bytes(st, col));
}

static void jw_rawcol(pk_jw *w, sqlite3_stmt *st, int col)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL) return pk_jw_null(w);
    pk_jw_raw(w, (const char *)sqlite3_column_text(st, col), (size_t)sqlite3_column_bytes(st, col));
}

static void task_json(pk_buf *out, sqlite3_stmt *st)
{
    pk_jw w;
    pk_jw_init(&w, out);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "id");
    jw_text(&w, st, 0);
    pk_jw_key(&w, "type");
    jw_text(&w, st, 1);
    pk_jw_key(&w, "queue");
    jw_text(&w, st, 2);
    pk_jw_key(&w, "priority");
    pk_jw_str(&w, pk_task_priority_name(sqlite3_column_int(st, 3)));
    pk_jw_key(&w, "state");
    pk_jw_str(&w, pk_task_state_name(sqlite3_column_int(st, 4)));
    pk_jw_key(&w, "payload");
    jw_rawcol(&w, st, 5);
    pk_jw_key(&w, "attempts");
    pk_jw_int(&w, sqlite3_column_int(st, 6));
    pk_jw_key(&w, "max_attempts");
    pk_jw_int(&w, sqlite3_column_int(st, 7));
    pk_jw_key(&w, "idempotency_key");
    jw_text(&w, st, 8);
    pk_jw_key(&w, "not_before");
    jw_time(&w, st, 9);
    pk_jw_key(&w, "timeout_ms");
    pk_jw_int(&w, sqlite3_column_int64(st, 10));
    pk_jw_key(&w, "lease_ms");
    pk_jw_int(&w, sqlite3_column_int64(st, 11));
    pk_jw_key(&w, "trace_context");
    jw_text(&w, st, 12);
    pk_jw_key(&w, "progress");
    pk_jw_num(&w, sqlite3_column_double(st, 13));
    pk_jw_key(&w, "cancel_requested");
    pk_jw_bool(&w, sqlite3_column_int(st, 14) != 0);
    pk_jw_key(&w, "result");
    jw_rawcol(&w, st, 15);
    pk_jw_key(&w, "error");
    jw_text(&w, st, 16);
    pk_jw_key(&w, "errors");
    jw_rawcol(&w, st, 17);
    pk_jw_key(&w, "created_at");
    jw_time(&w, st, 18);
    pk_jw_key(&w, "started_at");
    jw_time(&w, st, 19);
    pk_jw_key(&w, "finished_at");
    jw_time(&w, st, 20);
    pk_jw_key(&w, "updated_at");
    jw_time(&w, st, 21);
    pk_jw_obj_close(&w);
}

/* Appends the task `id` as JSON (inside a held lock). not_found when absent. */
static pk_err *load_json(sq_queue *q, const char *id, pk_buf *out, int *state)
{
    static const char sql[] = "SELECT " TASK_COLS " FROM tasks WHERE id = ?";
    sqlite3_stmt *st;
    pk_err *e = prep(q, sql, &st);
    if (e) return e;
    bind_text(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) return pk_err_not_found("no task with id '%s'", id);
    if (rc != SQLITE_ROW) return db_err(q, rc, "get");
    if (state) *state = sqlite3_column_int(st, 4);
    if (out) task_json(out, st);
    sqlite3_reset(st);
    return NULL;
}

/* ---- operations ----------------------------------------------------------------------------- */

static void q_close(pk_queue *base)
{
    sq_queue *q = (sq_queue *)base;
    for (int i = 0; i < NCACHE; i++)
        if (q->cache[i].st) sqlite3_finalize(q->cache[i].st);
    sqlite3_close(q->db);
    pthread_mutex_destroy(&q->mu);
    for (size_t i = 0; i < q->cfg.nleases; i++)
        free((char *)q->leases[i].type);
    free(q->leases);
    for (size_t i = 0; i < q->cfg.nlimits; i++)
        free((char *)q->limits[i].type);
    free(q->limits);
    free(q);
}

static pk_err *q_enqueue(pk_queue *base, const pk_task_input *in, pk_buf *out, bool *created, char id_out[37])
{
    sq_queue *q = (sq_queue *)base;
    const char *queue = in->queue && *in->queue ? in->queue : "default";
    if (!pk_queue_name_valid(in->type))
        return pk_err_invalid("type must be 1 to 64 characters of [a-z0-9_.-]");
    if (!pk_queue_name_valid(queue)) return pk_err_invalid("queue must be 1 to 64 characters of [a-z0-9_.-]");
    if (in->priority < 0 || in->priority >= PK_PRIO__COUNT) return pk_err_invalid("unknown priority");
    if (created) *created = false;
    pk_err *e = begin(q);
    if (e) return e;
    int64_t now = now_ns(q);
    char id[37] = "";
    if (in->idempotency_key) {
        static const char sql[] = "SELECT id FROM tasks WHERE idem_key = ? AND (state IN (0,1,5) OR "
                                  "created_at > ?) ORDER BY seq DESC LIMIT 1";
        sqlite3_stmt *st;
        if (!(e = prep(q, sql, &st))) {
            bind_text(st, 1, in->idempotency_key);
            sqlite3_bind_int64(st, 2, now - in->idem_ttl_ms * 1000000);
            int rc = sqlite3_step(st);
            if (rc == SQLITE_ROW)
                snprintf(id, sizeof id, "%s", (const char *)sqlite3_column_text(st, 0));
            else if (rc != SQLITE_DONE)
                e = db_err(q, rc, "enqueue");
            sqlite3_reset(st);
        }
    }
    if (!e && !*id) {
        static const char sql[] =
            "INSERT INTO tasks (id, type, queue, priority, state, payload, max_attempts, idem_key, "
            "timeout_ms, "
            "lease_ms, trace, not_before, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
        sqlite3_stmt *st;
        if (!(e = prep(q, sql, &st))) {
            pk_uuid7(id);
            int64_t nb = in->not_before_ns > now ? in->not_before_ns : now;
            bind_text(st, 1, id);
            bind_text(st, 2, in->type);
            bind_text(st, 3, queue);
            sqlite3_bind_int(st, 4, in->priority);
            sqlite3_bind_int(st, 5, nb > now ? PK_TASK_SCHEDULED : PK_TASK_QUEUED);
            bind_text(st, 6, in->payload_json ? in->payload_json : "{}");
            sqlite3_bind_int(st, 7, in->max_attempts > 0 ? in->max_attempts : q->cfg.default_max_attempts);
            bind_text(st, 8, in->idempotency_key);
            sqlite3_bind_int64(st, 9, in->timeout_ms > 0 ? in->timeout_ms : q->cfg.default_timeout_ms);
            sqlite3_bind_int64(st, 10, pk_queue_lease_for(&q->cfg, in->type));
            bind_text(st, 11, in->trace_context);
            sqlite3_bind_int64(st, 12, nb);
            sqlite3_bind_int64(st, 13, now);
            sqlite3_bind_int64(st, 14, now);
            e = run(q, st, NULL);
            if (!e && created) *created = true;
        }
    }
    if (!e && out) e = load_json(q, id, out, NULL);
    e = end(q, e);
    if (!e && id_out) memcpy(id_out, id, 37);
    return e;
}

static pk_err *q_get(pk_queue *base, const char *id, pk_buf *out)
{
    sq_queue *q = (sq_queue *)base;
    pthread_mutex_lock(&q->mu);
    pk_err *e = load_json(q, id, out, NULL);
    pthread_mutex_unlock(&q->mu);
    return e;
}

static pk_err *q_list(pk_queue *base, const pk_task_filter *f, pk_task_page *out)
{
    sq_queue *q = (sq_queue *)base;
    int64_t after = INT64_MAX;
    if (f->cursor) {
        char *endp;
        long long c = strtoll(f->cursor, &endp, 10);
        if (!*f->cursor || *endp || c <= 0) return pk_err_invalid("invalid cursor");
        after = c;
    }
    int limit = f->limit < 1 ? 20 : f->limit > 100 ? 100 : f->limit;
    static const char sql[] =
        "SELECT " TASK_COLS " FROM tasks WHERE seq < ?1 AND (?2 < 0 OR state = ?2) AND "
        "(?3 IS NULL OR type = ?3) AND (?4 IS NULL OR queue = ?4) ORDER BY seq DESC LIMIT ?5";
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st;
    pk_err *e = prep(q, sql, &st);
    pk_task_page pg = {0};
    if (!e) {
        sqlite3_bind_int64(st, 1, after);
        sqlite3_bind_int(st, 2, f->state);
        bind_text(st, 3, f->type);
        bind_text(st, 4, f->queue);
        sqlite3_bind_int(st, 5, limit + 1);
        pk_buf_putc(&pg.items, '[');
        int rc;
        int64_t last = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if ((int)pg.count == limit) {
                char c[24];
                snprintf(c, sizeof c, "%lld", (long long)last);
                pg.next_cursor = strdup(c);
                break;
            }
            if (pg.count) pk_buf_putc(&pg.items, ',');
            task_json(&pg.items, st);
            last = sqlite3_column_int64(st, 22);
            pg.count++;
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) e = db_err(q, rc, "list");
        pk_buf_putc(&pg.items, ']');
        sqlite3_reset(st);
    }
    pthread_mutex_unlock(&q->mu);
    if (e) {
        pk_task_page_free(&pg);
        return e;
    }
    pk_task_page_free(out);
    *out = pg;
    return NULL;
}

static char *col_dup(sqlite3_stmt *st, int c)
{
    const unsigned char *s = sqlite3_column_text(st, c);
    return s ? strdup((const char *)s) : NULL;
}

/* The limit of a type, or NULL. */
static const pk_queue_type_limit *limit_of(sq_queue *q, const char *type)
{
    for (size_t i = 0; i < q->cfg.nlimits; i++)
        if (!strcmp(q->cfg.limits[i].type, type)) return &q->cfg.limits[i];
    return NULL;
}

/* Inside the claim's transaction: may a task of `type` start now? If not, *defer_to is when to offer
 * it again. Counts the start against the rate limit when it may. */
static pk_err *limit_check(sq_queue *q, const char *type, int64_t now, int64_t *defer_to)
{
    *defer_to = 0;
    const pk_queue_type_limit *l = limit_of(q, type);
    if (!l) return NULL;
    sqlite3_stmt *st;
    pk_err *e;
    if (l->concurrency > 0) {
        static const char sql[] =
            "SELECT count(*) FROM tasks WHERE state = 2 AND type = ?1 AND lease_until >= ?2";
        if ((e = prep(q, sql, &st))) return e;
        bind_text(st, 1, type);
        sqlite3_bind_int64(st, 2, now);
        int rc = sqlite3_step(st);
        int64_t running = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
        sqlite3_reset(st);
        if (rc != SQLITE_ROW) return db_err(q, rc, "claim");
        if (running >= l->concurrency) {
            *defer_to = now + LIMIT_RETRY_MS * 1000000LL;
            return NULL;
        }
    }
    if (l->rate_per_s > 0) {
        int64_t iv = (int64_t)(1e9 / l->rate_per_s), burst = l->burst > 0 ? l->burst : 1;
        static const char get[] = "SELECT tat FROM queue_type_tat WHERE type = ?1";
        if ((e = prep(q, get, &st))) return e;
        bind_text(st, 1, type);
        int rc = sqlite3_step(st);
        int64_t tat = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_err(q, rc, "claim");
        if (tat < now) tat = now;
        if (tat - (burst - 1) * iv > now) {
            *defer_to = tat - (burst - 1) * iv;
            return NULL;
        }
        static const char put[] = "INSERT INTO queue_type_tat (type, tat) VALUES (?1, ?2) "
                                  "ON CONFLICT(type) DO UPDATE SET tat = excluded.tat";
        if ((e = prep(q, put, &st))) return e;
        bind_text(st, 1, type);
        sqlite3_bind_int64(st, 2, tat + iv);
        return run(q, st, NULL);
    }
    return NULL;
}

/* The most urgent claimable task (optionally of the given types): *seq = 0 when none. */
static pk_err *pick(sq_queue *q, const char *const *types, size_t ntypes, int64_t now, int64_t *seq,
                    char type[PK_TASK_TYPE_MAX + 1])
{
    sqlite3_stmt *st = NULL;
    pk_err *e = NULL;
    bool dynamic = types && ntypes;
    *seq = 0;
    if (dynamic) {
        pk_buf sql = PK_BUF_INIT;
        pk_buf_puts(&sql,
                    "SELECT seq, type FROM tasks WHERE state IN (0,1,5) AND not_before <= ?1 AND type IN (");
        for (size_t i = 0; i < ntypes; i++)
            pk_buf_printf(&sql, "%s?%zu", i ? "," : "", i + 2);
        pk_buf_puts(&sql, ") ORDER BY priority, not_before, seq LIMIT 1");
        int rc = sqlite3_prepare_v2(q->db, sql.data, -1, &st, NULL);
        pk_buf_free(&sql);
        if (rc != SQLITE_OK) return db_err(q, rc, "claim");
        for (size_t i = 0; i < ntypes; i++)
            bind_text(st, (int)i + 2, types[i]);
    } else {
        static const char sql[] = "SELECT seq, type FROM tasks WHERE state IN (0,1,5) AND not_before <= ?1 "
                                  "ORDER BY priority, not_before, seq LIMIT 1";
        if ((e = prep(q, sql, &st))) return e;
    }
    sqlite3_bind_int64(st, 1, now);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *seq = sqlite3_column_int64(st, 0);
        snprintf(type, PK_TASK_TYPE_MAX + 1, "%s", (const char *)sqlite3_column_text(st, 1));
    } else if (rc != SQLITE_DONE)
        e = db_err(q, rc, "claim");
    if (dynamic)
        sqlite3_finalize(st);
    else
        sqlite3_reset(st);
    return e;
}

static pk_err *q_claim(pk_queue *base, const char *worker, const char *const *types, size_t ntypes,
                       pk_task *out)
{
    sq_queue *q = (sq_queue *)base;
    memset(out, 0, sizeof *out);
    pk_err *e = begin(q);
    if (e) return e;
    int64_t now = now_ns(q);
    int64_t seq = 0;
    char type[PK_TASK_TYPE_MAX + 1];
    for (int tries = 0;; tries++) {
        if ((e = pick(q, types, ntypes, now, &seq, type)) || !seq) return end(q, e);
        int64_t defer_to = 0;
        if (q->cfg.nlimits && (e = limit_check(q, type, now, &defer_to))) return end(q, e);
        if (!defer_to) break;
        static const char sql[] = "UPDATE tasks SET not_before = ?2 WHERE seq = ?1";
        sqlite3_stmt *st;
        if ((e = prep(q, sql, &st))) return end(q, e);
        sqlite3_bind_int64(st, 1, seq);
        sqlite3_bind_int64(st, 2, defer_to);
        if ((e = run(q, st, NULL)) || tries + 1 >= LIMIT_SCAN) return end(q, e);
    }
    sqlite3_stmt *st;
    static const char upd[] =
        "UPDATE tasks SET state = 2, attempts = attempts + 1, worker = ?2, lease_until = ?3 + lease_ms * "
        "1000000, "
        "started_at = ?3, updated_at = ?3, finished_at = NULL WHERE seq = ?1 RETURNING id, type, queue, "
        "payload, trace, priority, attempts, max_attempts, timeout_ms, lease_ms, created_at, not_before";
    if ((e = prep(q, upd, &st))) return end(q, e);
    sqlite3_bind_int64(st, 1, seq);
    bind_text(st, 2, worker);
    sqlite3_bind_int64(st, 3, now);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        snprintf(out->id, sizeof out->id, "%s", (const char *)sqlite3_column_text(st, 0));
        out->type = col_dup(st, 1);
        out->queue = col_dup(st, 2);
        out->payload_json = col_dup(st, 3);
        out->trace_context = col_dup(st, 4);
        out->priority = sqlite3_column_int(st, 5);
        out->attempts = sqlite3_column_int(st, 6);
        out->max_attempts = sqlite3_column_int(st, 7);
        out->timeout_ms = sqlite3_column_int64(st, 8);
        out->lease_ms = sqlite3_column_int64(st, 9);
        out->created_ns = sqlite3_column_int64(st, 10);
        out->not_before_ns = sqlite3_column_int64(st, 11);
        out->started_ns = now;
        rc = sqlite3_step(st);
    }
    if (rc != SQLITE_DONE) e = db_err(q, rc, "claim");
    sqlite3_reset(st);
    e = end(q, e);
    if (e) pk_task_free(out);
    return e;
}

static pk_err *lease_lost(const char *id)
{
    return pk_err_new("lease_lost", 409, "task '%s' is no longer held by this worker", id);
}

static pk_err *q_heartbeat(pk_queue *base, const char *id, const char *worker, double progress, bool *cancel)
{
    sq_queue *q = (sq_queue *)base;
    static const char sql[] =
        "UPDATE tasks SET lease_until = ?3 + lease_ms * 1000000, updated_at = ?3, progress = CASE WHEN ?4 < "
        "0 "
        "THEN progress ELSE min(1.0, ?4) END WHERE id = ?1 AND state = 2 AND worker = ?2 RETURNING "
        "cancel_requested";
    pk_err *e = begin(q);
    if (e) return e;
    sqlite3_stmt *st;
    if (!(e = prep(q, sql, &st))) {
        bind_text(st, 1, id);
        bind_text(st, 2, worker);
        sqlite3_bind_int64(st, 3, now_ns(q));
        sqlite3_bind_double(st, 4, progress);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            if (cancel) *cancel = sqlite3_column_int(st, 0) != 0;
            rc = sqlite3_step(st);
        } else if (rc == SQLITE_DONE)
            e = lease_lost(id);
        if (!e && rc != SQLITE_DONE) e = db_err(q, rc, "heartbeat");
        sqlite3_reset(st);
    }
    return end(q, e);
}

/* Moves a task this worker holds out of running. `sql` binds ?1 id, ?2 worker, ?3 now, then extras. */
static pk_err *finish_held(sq_queue *q, const char *sql, const char *id, const char *worker, const char *text)
{
    pk_err *e = begin(q);
    if (e) return e;
    sqlite3_stmt *st;
    int changes = 0;
    if (!(e = prep(q, sql, &st))) {
        bind_text(st, 1, id);
        bind_text(st, 2, worker);
        sqlite3_bind_int64(st, 3, now_ns(q));
        if (sqlite3_bind_parameter_count(st) >= 4) bind_text(st, 4, text);
        e = run(q, st, &changes);
        if (!e && !changes) e = lease_lost(id);
    }
    return end(q, e);
}

static pk_err *q_complete(pk_queue *base, const char *id, const char *worker, const char *result_json)
{
    static const char sql[] =
        "UPDATE tasks SET state = 3, result = ?4, progress = 1, finished_at = ?3, "
        "updated_at = ?3, worker = NULL, lease_until = NULL WHERE id = ?1 AND state = 2 "
        "AND worker = ?2";
    return finish_held((sq_queue *)base, sql, id, worker, result_json ? result_json : "null");
}

static pk_err *q_cancelled(pk_queue *base, const char *id, const char *worker)
{
    static const char sql[] = "UPDATE tasks SET state = 7, finished_at = ?3, updated_at = ?3, worker = NULL, "
                              "lease_until = NULL WHERE id = ?1 AND state = 2 AND worker = ?2";
    return finish_held((sq_queue *)base, sql, id, worker, NULL);
}

static pk_err *q_release(pk_queue *base, const char *id, const char *worker)
{
    static const char sql[] =
        "UPDATE tasks SET state = 0, attempts = max(0, attempts - 1), not_before = ?3, "
        "updated_at = ?3, worker = NULL, lease_until = NULL WHERE id = ?1 AND state = 2 "
        "AND worker = ?2";
    return finish_held((sq_queue *)base, sql, id, worker, NULL);
}

static double default_random(void *ud)
{
    (void)ud;
    return pk_rand_unit();
}

void pk_queue_config_defaults(pk_queue_config *c)
{
    if (!c->clock) c->clock = pk_clock_wall();
    if (!c->unit_random) c->unit_random = default_random;
    if (c->default_max_attempts <= 0) c->default_max_attempts = 3;
    if (c->default_timeout_ms <= 0) c->default_timeout_ms = 30000;
    if (c->default_lease_ms <= 0) c->default_lease_ms = 30000;
    if (c->retry_base_ms <= 0) c->retry_base_ms = 1000;
    if (c->retry_cap_ms <= 0) c->retry_cap_ms = 60000;
    if (c->keep_finished_ms <= 0) c->keep_finished_ms = 7LL * 86400 * 1000;
}

static pk_err *q_fail(pk_queue *base, const char *id, const char *worker, const char *error, bool retryable,
                      pk_task_state *state_out)
{
    sq_queue *q = (sq_queue *)base;
    pk_err *e = begin(q);
    if (e) return e;
    int64_t now = now_ns(q);
    static const char sel[] =
        "SELECT attempts, max_attempts FROM tasks WHERE id = ? AND state = 2 AND worker = ?";
    sqlite3_stmt *st;
    if ((e = prep(q, sel, &st))) return end(q, e);
    bind_text(st, 1, id);
    bind_text(st, 2, worker);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        e = rc == SQLITE_DONE ? lease_lost(id) : db_err(q, rc, "fail");
        sqlite3_reset(st);
        return end(q, e);
    }
    int attempts = sqlite3_column_int(st, 0), max_attempts = sqlite3_column_int(st, 1);
    sqlite3_reset(st);
    pk_task_state next = !retryable                 ? PK_TASK_FAILED
                         : attempts >= max_attempts ? PK_TASK_DEAD
                                                    : PK_TASK_RETRYING;
    int64_t not_before = now;
    if (next == PK_TASK_RETRYING) {
        pk_retry_policy p = {
            .max_attempts = max_attempts, .base_ms = q->cfg.retry_base_ms, .cap_ms = q->cfg.retry_cap_ms};
        not_before = now + pk_retry_backoff_ns(&p, attempts - 1, q->cfg.unit_random(q->cfg.random_ud));
    }
    char at[PK_RFC3339_LEN];
    pk_rfc3339(now, at);
    static const char upd[] =
        "UPDATE tasks SET state = ?3, error = ?4, errors = json_insert(errors, '$[#]', "
        "json_object('attempt', "
        "attempts, 'at', ?5, 'error', ?4)), not_before = ?6, finished_at = CASE WHEN ?3 = 5 THEN NULL ELSE "
        "?7 "
        "END, updated_at = ?7, worker = NULL, lease_until = NULL WHERE id = ?1 AND worker = ?2 AND state = 2";
    if (!(e = prep(q, upd, &st))) {
        bind_text(st, 1, id);
        bind_text(st, 2, worker);
        sqlite3_bind_int(st, 3, next);
        bind_text(st, 4, error ? error : "error");
        bind_text(st, 5, at);
        sqlite3_bind_int64(st, 6, not_before);
        sqlite3_bind_int64(st, 7, now);
        e = run(q, st, NULL);
    }
    e = end(q, e);
    if (!e && state_out) *state_out = next;
    return e;
}

static pk_err *q_cancel(pk_queue *base, const char *id, pk_buf *out, pk_task_state *state_out)
{
    sq_queue *q = (sq_queue *)base;
    pk_err *e = begin(q);
    if (e) return e;
    int state = -1;
    e = load_json(q, id, NULL, &state);
    int64_t now = now_ns(q);
    if (!e) {
        const char *sql = NULL;
        static const char now_sql[] =
            "UPDATE tasks SET state = 7, finished_at = ?2, updated_at = ?2 WHERE id = ?1";
        static const char flag_sql[] = "UPDATE tasks SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1";
        if (state == PK_TASK_QUEUED || state == PK_TASK_SCHEDULED || state == PK_TASK_RETRYING)
            sql = now_sql;
        else if (state == PK_TASK_RUNNING)
            sql = flag_sql;
        else
            e = pk_err_new("conflict", 409, "task '%s' is %s: nothing to cancel", id,
                           pk_task_state_name(state));
        sqlite3_stmt *st;
        if (sql && !(e = prep(q, sql, &st))) {
            bind_text(st, 1, id);
            sqlite3_bind_int64(st, 2, now);
            e = run(q, st, NULL);
        }
    }
    if (!e) e = load_json(q, id, out, &state);
    e = end(q, e);
    if (!e && state_out) *state_out = (pk_task_state)state;
    return e;
}

static pk_err *q_retry(pk_queue *base, const char *id, pk_buf *out)
{
    sq_queue *q = (sq_queue *)base;
    pk_err *e = begin(q);
    if (e) return e;
    int state = -1;
    e = load_json(q, id, NULL, &state);
    if (!e && state != PK_TASK_DEAD && state != PK_TASK_FAILED && state != PK_TASK_CANCELLED)
        e = pk_err_new("conflict", 409,
                       "task '%s' is %s: only dead, failed or cancelled tasks can be retried", id,
                       pk_task_state_name(state));
    static const char sql[] =
        "UPDATE tasks SET state = 0, attempts = 0, not_before = ?2, finished_at = NULL, "
        "cancel_requested = 0, progress = 0, updated_at = ?2 WHERE id = ?1";
    sqlite3_stmt *st;
    if (!e && !(e = prep(q, sql, &st))) {
        bind_text(st, 1, id);
        sqlite3_bind_int64(st, 2, now_ns(q));
        e = run(q, st, NULL);
    }
    if (!e && out) e = load_json(q, id, out, NULL);
    return end(q, e);
}

static pk_err *q_reclaim(pk_queue *base, int *n)
{
    sq_queue *q = (sq_queue *)base;
    *n = 0;
    pk_err *e = begin(q);
    if (e) return e;
    int64_t now = now_ns(q);
    char at[PK_RFC3339_LEN];
    pk_rfc3339(now, at);
    /* a cancel was requested: the worker is gone, so the cancel wins */
    static const char cancel_sql[] =
        "UPDATE tasks SET state = 7, finished_at = ?1, updated_at = ?1, worker = NULL, "
        "lease_until = NULL WHERE state = 2 AND lease_until < ?1 AND cancel_requested = 1";
    static const char dead_sql[] =
        "UPDATE tasks SET state = 6, error = 'lease expired', errors = json_insert(errors, '$[#]', "
        "json_object('attempt', attempts, 'at', ?2, 'error', 'lease expired')), finished_at = ?1, updated_at "
        "= ?1, "
        "worker = NULL, lease_until = NULL WHERE state = 2 AND lease_until < ?1 AND attempts >= max_attempts";
    static const char requeue_sql[] =
        "UPDATE tasks SET state = 0, error = 'lease expired', errors = json_insert(errors, '$[#]', "
        "json_object('attempt', attempts, 'at', ?2, 'error', 'lease expired')), not_before = ?1, updated_at "
        "= ?1, "
        "worker = NULL, lease_until = NULL WHERE state = 2 AND lease_until < ?1";
    const char *const sqls[] = {cancel_sql, dead_sql, requeue_sql};
    for (int i = 0; i < 3 && !e; i++) {
        sqlite3_stmt *st;
        int changes = 0;
        if ((e = prep(q, sqls[i], &st))) break;
        sqlite3_bind_int64(st, 1, now);
        if (sqlite3_bind_parameter_count(st) >= 2) bind_text(st, 2, at);
        e = run(q, st, &changes);
        *n += changes;
    }
    return end(q, e);
}

static pk_err *q_next_wakeup(pk_queue *base, int64_t *at)
{
    sq_queue *q = (sq_queue *)base;
    static const char sql[] = "SELECT (SELECT min(not_before) FROM tasks WHERE state IN (0,1,5)), "
                              "(SELECT min(lease_until) FROM tasks WHERE state = 2)";
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st;
    pk_err *e = prep(q, sql, &st);
    *at = INT64_MAX;
    if (!e) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            for (int c = 0; c < 2; c++)
                if (sqlite3_column_type(st, c) != SQLITE_NULL && sqlite3_column_int64(st, c) < *at)
                    *at = sqlite3_column_int64(st, c);
        } else
            e = db_err(q, rc, "next_wakeup");
        sqlite3_reset(st);
    }
    pthread_mutex_unlock(&q->mu);
    return e;
}

static pk_err *q_stats(pk_queue *base, pk_queue_stats *out)
{
    sq_queue *q = (sq_queue *)base;
    static const char counts[] =
        "SELECT queue, priority, state, n FROM task_counts WHERE n > 0 ORDER BY 1, 2";
    static const char ready[] = "SELECT queue, priority, count(*), min(not_before) FROM tasks WHERE state IN "
                                "(0,1,5) AND not_before <= ?1 GROUP BY 1, 2";
    pk_queue_stats s = {0};
    pthread_mutex_lock(&q->mu);
    s.now_ns = now_ns(q);
    sqlite3_stmt *st;
    pk_err *e = prep(q, counts, &st);
    int rc = SQLITE_DONE;
    if (!e) {
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            int state = sqlite3_column_int(st, 2);
            pk_queue_stats_row *r = pk_queue_stats_row_for(&s, (const char *)sqlite3_column_text(st, 0),
                                                           sqlite3_column_int(st, 1));
            if (state >= 0 && state < PK_TASK__STATES) r->counts[state] = sqlite3_column_int64(st, 3);
        }
        if (rc != SQLITE_DONE) e = db_err(q, rc, "stats");
        sqlite3_reset(st);
    }
    if (!e && !(e = prep(q, ready, &st))) {
        sqlite3_bind_int64(st, 1, s.now_ns);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            pk_queue_stats_row *r = pk_queue_stats_row_for(&s, (const char *)sqlite3_column_text(st, 0),
                                                           sqlite3_column_int(st, 1));
            r->ready = sqlite3_column_int64(st, 2);
            r->oldest_ready_ns = sqlite3_column_int64(st, 3);
        }
        if (rc != SQLITE_DONE) e = db_err(q, rc, "stats");
        sqlite3_reset(st);
    }
    pthread_mutex_unlock(&q->mu);
    if (e) {
        pk_queue_stats_free(&s);
        return e;
    }
    pk_queue_stats_free(out);
    *out = s;
    return NULL;
}

static pk_err *q_purge(pk_queue *base, int *n)
{
    sq_queue *q = (sq_queue *)base;
    static const char sql[] = "DELETE FROM tasks WHERE state IN (3,4,6,7) AND finished_at < ?1";
    *n = 0;
    pk_err *e = begin(q);
    if (e) return e;
    sqlite3_stmt *st;
    if (!(e = prep(q, sql, &st))) {
        sqlite3_bind_int64(st, 1, now_ns(q) - q->cfg.keep_finished_ms * 1000000);
        e = run(q, st, n);
    }
    return end(q, e);
}

/* ---- worker registry ------------------------------------------------------------------------ */

static pk_err *q_worker_beat(pk_queue *base, const pk_queue_worker_info *w)
{
    sq_queue *q = (sq_queue *)base;
    static const char up[] =
        "INSERT INTO workers (name, host, kind, pid, threads, busy, started_at, last_seen) VALUES "
        "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(name) DO UPDATE SET host = ?2, kind = ?3, pid = ?4, "
        "threads = ?5, busy = ?6, started_at = ?7, last_seen = ?8";
    static const char forget[] = "DELETE FROM workers WHERE last_seen < ?1";
    pk_err *e = begin(q);
    if (e) return e;
    int64_t now = now_ns(q);
    sqlite3_stmt *st;
    if (!(e = prep(q, up, &st))) {
        bind_text(st, 1, w->name);
        bind_text(st, 2, w->host);
        bind_text(st, 3, w->kind);
        sqlite3_bind_int(st, 4, w->pid);
        sqlite3_bind_int(st, 5, w->threads);
        sqlite3_bind_int(st, 6, w->busy);
        sqlite3_bind_int64(st, 7, w->started_ns);
        sqlite3_bind_int64(st, 8, now);
        e = run(q, st, NULL);
    }
    if (!e && !(e = prep(q, forget, &st))) {
        sqlite3_bind_int64(st, 1, now - PK_QUEUE_WORKER_FORGET_MS * 1000000);
        e = run(q, st, NULL);
    }
    return end(q, e);
}

static pk_err *q_worker_leave(pk_queue *base, const char *name)
{
    sq_queue *q = (sq_queue *)base;
    static const char sql[] = "DELETE FROM workers WHERE name = ?1";
    pk_err *e = begin(q);
    if (e) return e;
    sqlite3_stmt *st;
    if (!(e = prep(q, sql, &st))) {
        bind_text(st, 1, name);
        e = run(q, st, NULL);
    }
    return end(q, e);
}

static void copy_col(char *dst, size_t cap, sqlite3_stmt *st, int c)
{
    const unsigned char *s = sqlite3_column_text(st, c);
    snprintf(dst, cap, "%s", s ? (const char *)s : "");
}

static pk_err *q_workers_seen(pk_queue *base, int64_t max_age_ms, pk_queue_worker_info **out, size_t *n)
{
    sq_queue *q = (sq_queue *)base;
    static const char sql[] = "SELECT name, host, kind, pid, threads, busy, started_at, last_seen FROM "
                              "workers WHERE last_seen >= ?1 ORDER BY last_seen DESC, name";
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&q->mu);
    sqlite3_stmt *st;
    pk_err *e = prep(q, sql, &st);
    if (!e) {
        sqlite3_bind_int64(st, 1, now_ns(q) - max_age_ms * 1000000);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            *out = realloc(*out, (*n + 1) * sizeof **out);
            pk_queue_worker_info *w = &(*out)[(*n)++];
            memset(w, 0, sizeof *w);
            copy_col(w->name, sizeof w->name, st, 0);
            copy_col(w->host, sizeof w->host, st, 1);
            copy_col(w->kind, sizeof w->kind, st, 2);
            w->pid = sqlite3_column_int(st, 3);
            w->threads = sqlite3_column_int(st, 4);
            w->busy = sqlite3_column_int(st, 5);
            w->started_ns = sqlite3_column_int64(st, 6);
            w->last_seen_ns = sqlite3_column_int64(st, 7);
        }
        if (rc != SQLITE_DONE) e = db_err(q, rc, "workers");
        sqlite3_reset(st);
    }
    pthread_mutex_unlock(&q->mu);
    if (e) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return e;
}

static const pk_queue_ops SQ_OPS = {
    .close = q_close,
    .enqueue = q_enqueue,
    .get = q_get,
    .list = q_list,
    .claim = q_claim,
    .heartbeat = q_heartbeat,
    .complete = q_complete,
    .fail = q_fail,
    .cancelled = q_cancelled,
    .release = q_release,
    .cancel = q_cancel,
    .retry = q_retry,
    .reclaim_expired = q_reclaim,
    .next_wakeup = q_next_wakeup,
    .stats = q_stats,
    .purge = q_purge,
    .worker_beat = q_worker_beat,
    .worker_leave = q_worker_leave,
    .workers_seen = q_workers_seen,
};

pk_err *pk_queue_open_sqlite(const pk_queue_config *cfg, pk_queue **out)
{
    sq_queue *q = calloc(1, sizeof *q);
    q->base.ops = &SQ_OPS;
    q->base.backend = "sqlite";
    q->cfg = *cfg;
    pk_queue_config_defaults(&q->cfg);
    q->leases = calloc(cfg->nleases ? cfg->nleases : 1, sizeof *q->leases);
    for (size_t i = 0; i < cfg->nleases; i++)
        q->leases[i] = (pk_queue_type_lease){strdup(cfg->leases[i].type), cfg->leases[i].lease_ms};
    q->cfg.leases = q->leases;
    q->limits = calloc(cfg->nlimits ? cfg->nlimits : 1, sizeof *q->limits);
    for (size_t i = 0; i < cfg->nlimits; i++) {
        q->limits[i] = cfg->limits[i];
        q->limits[i].type = strdup(cfg->limits[i].type);
    }
    q->cfg.limits = q->limits;
    q->cfg.path = NULL; /* borrowed; not kept */
    pthread_mutex_init(&q->mu, NULL);
    pk_sqlite_global_init();
    int rc = sqlite3_open_v2(cfg->path, &q->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    pk_err *e = NULL;
    if (rc != SQLITE_OK)
        e = pk_err_wrap(pk_err_new("sqlite", 500, "%s", sqlite3_errmsg(q->db)), "queue_error", 500,
                        "cannot open the task queue database '%s'", cfg->path);
    if (!e) {
        sqlite3_busy_timeout(q->db, 5000);
        e = exec(q, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY;");
    }
    if (!e) e = migrate(q);
    if (!e)
        e = exec(q,
                 "CREATE TABLE IF NOT EXISTS queue_type_tat (type TEXT PRIMARY KEY, tat INTEGER NOT NULL)");
    if (e) {
        q_close(&q->base);
        return e;
    }
    *out = &q->base;
    return NULL;
}

pk_err *pk_queue_sqlite_with_db(pk_queue *base, pk_err *(*fn)(sqlite3 *db, void *ud), void *ud)
{
    if (base->ops != &SQ_OPS)
        return pk_err_new("queue_error", 500, "the %s task queue has no SQLite database", base->backend);
    sq_queue *q = (sq_queue *)base;
    pthread_mutex_lock(&q->mu);
    pk_err *e = fn(q->db, ud);
    pthread_mutex_unlock(&q->mu);
    return e;
}
