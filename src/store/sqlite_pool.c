/*
 * sqlite_pool: connections to the embedded database, with deadlines and a statement cache.
 *
 * Why one writer connection: SQLite allows one writer at a time anyway. If every pooled connection
 * could write, our own threads would collide on the database lock and spin in the busy handler
 * (sleeping in milliseconds). Handing the single writer connection from thread to thread under a
 * mutex/condvar makes write contention a cheap in-process queue, and leaves SQLITE_BUSY for what it
 * really means: another process (a `pake migrate`, a backup) holds the file.
 *
 * Why a progress handler: a deadline must bound a query that is already running (a broad FTS match,
 * a long scan). Every PROGRESS_OPS virtual-machine steps SQLite asks whether the holder's deadline has
 * passed; if so the statement ends with SQLITE_INTERRUPT, which pk_sqlite_err reports as
 * deadline_exceeded. The clock is the store's (injectable), so tests can drive it.
 */
#include "store/sqlite_pool.h"
#include "core/buf.h"
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STMT_CACHE 48
#define PROGRESS_OPS 1000

typedef struct cached_stmt {
    char *sql;
    sqlite3_stmt *st;
    uint64_t used;
} cached_stmt;

struct pk_sqlite_conn {
    pk_sqlite_pool *pool;
    sqlite3 *db;
    bool in_use, writer;
    int64_t deadline_ns; /* of the current holder; 0 = none */
    bool deadline_hit;
    int64_t busy_since_ns; /* real monotonic time of the first busy callback */
    cached_stmt cache[STMT_CACHE];
    uint64_t tick;
    sqlite3_stmt *tx[4]; /* BEGIN, BEGIN IMMEDIATE, COMMIT, ROLLBACK: prepared once (exec parses each time) */
};

struct pk_sqlite_pool {
    char *path;
    int busy_timeout_ms;
    const pk_clock *clock;
    pthread_mutex_t mu;
    pthread_cond_t cv;     /* CLOCK_MONOTONIC */
    pk_sqlite_conn *conns; /* [0] writer, [1..n) readers */
    int nconns;
    atomic_int fi_calls, fi_at, fi_rc;
};

int64_t pk_sqlite_pool_now(pk_sqlite_pool *p)
{
    return pk_clock_now(p->clock);
}
sqlite3 *pk_sqlite_db(pk_sqlite_conn *k)
{
    return k->db;
}

static int fault(pk_sqlite_pool *p)
{
#ifdef PAKE_FAULT_INJECTION
    int n = atomic_fetch_add(&p->fi_calls, 1) + 1;
    int at = atomic_load(&p->fi_at);
    if (at > 0 && n == at) return atomic_load(&p->fi_rc);
#else
    (void)p;
#endif
    return SQLITE_OK;
}

#ifdef PAKE_FAULT_INJECTION
void pk_sqlite_pool_fail_at(pk_sqlite_pool *p, int n, int rc)
{
    atomic_store(&p->fi_rc, rc);
    atomic_store(&p->fi_calls, 0);
    atomic_store(&p->fi_at, n);
}
int pk_sqlite_pool_calls(pk_sqlite_pool *p)
{
    return atomic_load(&p->fi_calls);
}
#endif

static int on_progress(void *ud)
{
    pk_sqlite_conn *k = ud;
    if (k->deadline_ns && pk_clock_now(k->pool->clock) >= k->deadline_ns) {
        k->deadline_hit = true;
        return 1;
    }
    return 0;
}

/* Busy handler: back off 1, 2, 4, 8 ms ... capped at 10 ms, until the busy timeout or the deadline. */
static int on_busy(void *ud, int count)
{
    pk_sqlite_conn *k = ud;
    int64_t now = pk_mono_ns();
    if (count == 0) k->busy_since_ns = now;
    if (now - k->busy_since_ns >= (int64_t)k->pool->busy_timeout_ms * 1000000) return 0;
    if (k->deadline_ns && pk_clock_now(k->pool->clock) >= k->deadline_ns) return 0;
    int ms = count < 4 ? 1 << count : 10;
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
    return 1;
}

pk_err *pk_sqlite_err(pk_sqlite_conn *k, int rc, const char *what)
{
    int prim = rc & 0xff;
    pk_buf m = PK_BUF_INIT;
    pk_buf_printf(&m, "%s: %s", what, sqlite3_errstr(rc));
    if (k && k->db && (sqlite3_extended_errcode(k->db) & 0xff) == prim)
        pk_buf_printf(&m, " (%s)", sqlite3_errmsg(k->db));
    pk_err *cause = pk_err_new("sqlite", 500, "%s", m.data);
    pk_buf_free(&m);
    pk_err *e;
    if (prim == SQLITE_INTERRUPT && k && k->deadline_hit) {
        e = pk_err_wrap(cause, "deadline_exceeded", 504, "the store operation ran past the request deadline");
    } else if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED) {
        e = pk_err_wrap(cause, "store_busy", 503, "the store is busy; try again");
        e->retry_after_s = 1;
    } else if (prim == SQLITE_IOERR || prim == SQLITE_FULL || prim == SQLITE_CANTOPEN ||
               prim == SQLITE_READONLY || prim == SQLITE_NOMEM || prim == SQLITE_PROTOCOL) {
        e = pk_err_wrap(cause, "store_error", 503, "the store is unavailable");
    } else {
        e = pk_err_wrap(cause, "store_error", 500, "the store failed");
    }
    e->retryable = e->status == 503 || e->status == 504; /* wrap copied the cause's flag */
    return e;
}

static pk_err *conn_open(pk_sqlite_pool *p, pk_sqlite_conn *k)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(p->path, &k->db, flags, NULL);
    if (rc != SQLITE_OK) {
        pk_err *e = pk_sqlite_err(k, rc, "opening the database");
        sqlite3_close_v2(k->db);
        k->db = NULL;
        return e;
    }
    sqlite3_extended_result_codes(k->db, 1);
    sqlite3_busy_handler(k->db, on_busy, k);
    sqlite3_progress_handler(k->db, PROGRESS_OPS, on_progress, k);
    const char *pragmas = k->writer
                              ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                                "PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-8000;"
                              : "PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-4000;"
                                "PRAGMA query_only=ON; PRAGMA mmap_size=1073741824;";
    rc = sqlite3_exec(k->db, pragmas, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        pk_err *e = pk_sqlite_err(k, rc, "configuring the database connection");
        sqlite3_close_v2(k->db);
        k->db = NULL;
        return e;
    }
    return NULL;
}

static void conn_close(pk_sqlite_conn *k)
{
    for (int i = 0; i < STMT_CACHE; i++) {
        sqlite3_finalize(k->cache[i].st);
        free(k->cache[i].sql);
        k->cache[i].st = NULL;
        k->cache[i].sql = NULL;
    }
    for (int i = 0; i < 4; i++) {
        sqlite3_finalize(k->tx[i]);
        k->tx[i] = NULL;
    }
    if (k->db) sqlite3_close_v2(k->db);
    k->db = NULL;
}

static void global_init(void)
{
    /* No global allocation statistics (nothing reads them): with them on, every SQLite allocation and
     * free takes one process-wide mutex, which all store threads contend for. Only possible before
     * SQLite initialises; later calls are refused and harmless. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

void pk_sqlite_global_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, global_init);
}

pk_err *pk_sqlite_pool_open(const pk_sqlite_pool_config *cfg, pk_sqlite_pool **out)
{
    *out = NULL;
    pk_sqlite_global_init();
    pk_sqlite_pool *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->path = strdup(cfg->path);
    p->busy_timeout_ms = cfg->busy_timeout_ms;
    p->clock = cfg->clock;
    p->nconns = cfg->max_connections < 2 ? 2 : cfg->max_connections;
    p->conns = calloc((size_t)p->nconns, sizeof *p->conns);
    if (!p->conns || !p->path) abort();
    for (int i = 0; i < p->nconns; i++) {
        p->conns[i].pool = p;
        p->conns[i].writer = i == 0;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    /* open the writer now: it creates the file and switches it to WAL before any reader opens */
    pk_err *e = conn_open(p, &p->conns[0]);
    if (e) {
        pk_sqlite_pool_close(p);
        return e;
    }
    *out = p;
    return NULL;
}

void pk_sqlite_pool_close(pk_sqlite_pool *p)
{
    if (!p) return;
    for (int i = p->nconns - 1; i >= 0; i--) /* readers first: the writer's close checkpoints the WAL */
        conn_close(&p->conns[i]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->conns);
    free(p->path);
    free(p);
}

static pk_sqlite_conn *find_free(pk_sqlite_pool *p, bool write)
{
    if (write) return p->conns[0].in_use ? NULL : &p->conns[0];
    pk_sqlite_conn *closed = NULL;
    for (int i = 1; i < p->nconns; i++) {
        pk_sqlite_conn *k = &p->conns[i];
        if (k->in_use) continue;
        if (k->db) return k; /* prefer a warm connection (its statement cache is filled) */
        if (!closed) closed = k;
    }
    return closed;
}

pk_err *pk_sqlite_pool_acquire(pk_sqlite_pool *p, bool write, int64_t deadline_ns, pk_sqlite_conn **out)
{
    *out = NULL;
    pk_sqlite_conn *k;
    pthread_mutex_lock(&p->mu);
    while (!(k = find_free(p, write))) {
        if (!deadline_ns) {
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        int64_t left = deadline_ns - pk_clock_now(p->clock);
        if (left <= 0) break;
        int64_t until = pk_mono_ns() + left;
        struct timespec ts = {(time_t)(until / 1000000000LL), (long)(until % 1000000000LL)};
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    if (k) k->in_use = true;
    pthread_mutex_unlock(&p->mu);
    if (!k)
        return pk_err_new("deadline_exceeded", 504,
                          "the request deadline passed while waiting for a %s connection",
                          write ? "writer" : "reader");
    if (!k->db) {
        pk_err *e = conn_open(p, k);
        if (e) {
            pthread_mutex_lock(&p->mu);
            k->in_use = false;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
            return e;
        }
    }
    k->deadline_ns = deadline_ns;
    k->deadline_hit = false;
    *out = k;
    return NULL;
}

void pk_sqlite_pool_release(pk_sqlite_conn *k)
{
    if (!k) return;
    /* a safety net for error paths: nothing may keep a read snapshot or a write lock across holders */
    for (sqlite3_stmt *st = sqlite3_next_stmt(k->db, NULL); st; st = sqlite3_next_stmt(k->db, st))
        if (sqlite3_stmt_busy(st)) sqlite3_reset(st);
    k->deadline_ns = 0;
    if (!sqlite3_get_autocommit(k->db)) sqlite3_exec(k->db, "ROLLBACK", NULL, NULL, NULL);
    pk_sqlite_pool *p = k->pool;
    pthread_mutex_lock(&p->mu);
    k->in_use = false;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

pk_err *pk_sqlite_prepare(pk_sqlite_conn *k, const char *sql, sqlite3_stmt **out)
{
    *out = NULL;
    cached_stmt *victim = NULL;
    for (int i = 0; i < STMT_CACHE; i++) {
        cached_stmt *c = &k->cache[i];
        if (c->sql && strcmp(c->sql, sql) == 0) {
            c->used = ++k->tick;
            sqlite3_reset(c->st);
            sqlite3_clear_bindings(c->st);
            *out = c->st;
            return NULL;
        }
        /* never evict a statement the current operation is still stepping through */
        if (c->st && sqlite3_stmt_busy(c->st)) continue;
        if (!victim || (victim->sql && (!c->sql || c->used < victim->used))) victim = c;
    }
    if (!victim) abort(); /* an operation with more than STMT_CACHE live statements is a bug */
    sqlite3_stmt *st = NULL;
    int rc = fault(k->pool);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v3(k->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) return pk_sqlite_err(k, rc, "preparing a statement");
    sqlite3_finalize(victim->st);
    free(victim->sql);
    victim->sql = strdup(sql);
    if (!victim->sql) abort();
    victim->st = st;
    victim->used = ++k->tick;
    *out = st;
    return NULL;
}

int pk_sqlite_step(pk_sqlite_conn *k, sqlite3_stmt *st)
{
    int rc = fault(k->pool);
    return rc != SQLITE_OK ? rc : sqlite3_step(st);
}

int pk_sqlite_exec(pk_sqlite_conn *k, const char *sql)
{
    int rc = fault(k->pool);
    return rc != SQLITE_OK ? rc : sqlite3_exec(k->db, sql, NULL, NULL, NULL);
}

pk_err *pk_sqlite_scalar(pk_sqlite_conn *k, const char *sql, int64_t *out, const char *what)
{
    sqlite3_stmt *st;
    pk_err *e = pk_sqlite_prepare(k, sql, &st);
    if (e) return e;
    int rc = pk_sqlite_step(k, st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? NULL : pk_sqlite_err(k, rc, what);
}

enum { TX_BEGIN, TX_BEGIN_WRITE, TX_COMMIT, TX_ROLLBACK };

/* Runs one of the transaction statements, prepared on first use. Same result codes as sqlite3_exec. */
static int tx_run(pk_sqlite_conn *k, int which, bool inject)
{
    static const char *const sql[] = {"BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"};
    int rc = inject ? fault(k->pool) : SQLITE_OK;
    if (rc == SQLITE_OK && !k->tx[which])
        rc = sqlite3_prepare_v3(k->db, sql[which], -1, SQLITE_PREPARE_PERSISTENT, &k->tx[which], NULL);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(k->tx[which]);
    sqlite3_reset(k->tx[which]);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

pk_err *pk_sqlite_begin(pk_sqlite_conn *k, bool write)
{
    int rc = tx_run(k, write ? TX_BEGIN_WRITE : TX_BEGIN, true);
    return rc == SQLITE_OK ? NULL : pk_sqlite_err(k, rc, "starting a transaction");
}

pk_err *pk_sqlite_commit(pk_sqlite_conn *k)
{
    int rc = tx_run(k, TX_COMMIT, true);
    return rc == SQLITE_OK ? NULL : pk_sqlite_err(k, rc, "committing");
}

void pk_sqlite_rollback(pk_sqlite_conn *k)
{
    if (!sqlite3_get_autocommit(k->db)) tx_run(k, TX_ROLLBACK, false);
}
