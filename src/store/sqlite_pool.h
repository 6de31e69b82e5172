/*
 * sqlite_pool: the embedded store's connections (internal to the SQLite backend).
 *
 * One writer connection and up to n-1 reader connections on the same WAL database file. Writers are
 * serialised in process by owning the single writer connection (no SQLITE_BUSY spinning between our
 * own threads); readers never wait for the writer (WAL snapshots). Connections open lazily.
 *
 * Each connection carries the deadline of the operation that holds it: a progress handler interrupts
 * any statement that runs past it, and the busy handler gives up at min(busy timeout, deadline).
 * Statements are prepared once per connection and cached by SQL text (LRU).
 *
 * Thread-safety: pk_sqlite_pool_acquire/release are thread-safe; a pk_sqlite_conn belongs to the thread
 * that acquired it until it releases it.
 */
#ifndef PAKE_STORE_SQLITE_POOL_H
#define PAKE_STORE_SQLITE_POOL_H
#include "core/clock.h"
#include "core/err.h"
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct pk_sqlite_pool pk_sqlite_pool;
typedef struct pk_sqlite_conn pk_sqlite_conn;

typedef struct pk_sqlite_pool_config {
    const char *path;
    int busy_timeout_ms;
    int max_connections;   /* >= 2 */
    const pk_clock *clock; /* monotonic, for deadlines */
} pk_sqlite_pool_config;

pk_err *pk_sqlite_pool_open(const pk_sqlite_pool_config *cfg, pk_sqlite_pool **out);
void pk_sqlite_pool_close(pk_sqlite_pool *p);

/* Takes the writer (write) or a reader connection, waiting at most until deadline_ns (0 = no limit;
 * on the pool's clock). Errors: deadline_exceeded, store_error (cannot open the database). */
pk_err *pk_sqlite_pool_acquire(pk_sqlite_pool *p, bool write, int64_t deadline_ns, pk_sqlite_conn **out);
/* Gives the connection back; resets any statement left running and rolls back an open transaction. */
void pk_sqlite_pool_release(pk_sqlite_conn *k);

sqlite3 *pk_sqlite_db(pk_sqlite_conn *k);

/* Cached prepared statement for `sql` (any text; the cache copies it). The statement is reset and
 * its bindings cleared. Errors as pk_sqlite_err. */
pk_err *pk_sqlite_prepare(pk_sqlite_conn *k, const char *sql, sqlite3_stmt **out);
/* sqlite3_step / sqlite3_exec through the fault-injection counter. */
int pk_sqlite_step(pk_sqlite_conn *k, sqlite3_stmt *st);
int pk_sqlite_exec(pk_sqlite_conn *k, const char *sql);
/* Maps a SQLite result code to a PAKE error (see store.h): deadline_exceeded when the progress handler
 * stopped the statement, store_busy, store_error 503 (I/O, disk full, read-only), store_error 500. */
pk_err *pk_sqlite_err(pk_sqlite_conn *k, int rc, const char *what);
/* BEGIN IMMEDIATE (writer) or BEGIN (reader snapshot); COMMIT; ROLLBACK (never fails, never injected). */
/* Process-wide SQLite settings (no allocation statistics); call before any other SQLite use. Idempotent,
 * thread-safe; pk_sqlite_pool_open calls it. */
void pk_sqlite_global_init(void);
/* Runs a statement that gives one integer (its first column of the first row) into *out. */
pk_err *pk_sqlite_scalar(pk_sqlite_conn *k, const char *sql, int64_t *out, const char *what);
pk_err *pk_sqlite_begin(pk_sqlite_conn *k, bool write);
pk_err *pk_sqlite_commit(pk_sqlite_conn *k);
void pk_sqlite_rollback(pk_sqlite_conn *k);
int64_t pk_sqlite_pool_now(pk_sqlite_pool *p);

#ifdef PAKE_FAULT_INJECTION
void pk_sqlite_pool_fail_at(pk_sqlite_pool *p, int n, int rc);
int pk_sqlite_pool_calls(pk_sqlite_pool *p);
#endif
#endif
