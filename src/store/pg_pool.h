/*
 * pg_pool: PostgreSQL connections for the PostgreSQL store (internal to that backend).
 *
 * Model. A pool holds between min_size and max_size libpq connections to one server (the primary, or
 * a read replica). acquire() hands out the most recently used idle connection (warm caches, and the
 * others can age out), opens a new one while the pool is below max_size, or waits (bounded by the
 * acquisition timeout and the caller's deadline). A background thread closes connections idle past
 * idle_timeout (keeping min_size) or older than max_lifetime, tops the pool up to min_size, and logs a
 * connection held past leak_threshold (once per hold, with the request id that holds it).
 *
 * Health. A connection that sat idle longer than validate_after, or that was idle when another
 * connection of the pool broke, gets a cheap round trip before it is handed out; a dead one is closed
 * and the next one tried. When opening a connection fails, the pool backs off (exponential, capped at
 * backoff_max): during the backoff acquire fails at once with store_unavailable instead of hammering
 * a server that is down, and the first success resets it.
 *
 * Statements. pk_pg_run sends one or more statements as ONE pipeline (libpq pipeline mode: one round
 * trip for BEGIN; INSERT ...; COMMIT), each as a named prepared statement: the name is derived from
 * the SQL text and the statement is prepared on a connection the first time that connection runs it
 * (the Parse travels in the same pipeline). The caller's deadline is enforced on the client: the
 * socket is polled until the deadline; past it the query is cancelled (PQcancel) and the connection
 * closed, and the call fails with deadline_exceeded. A server-side statement_timeout (set at connect)
 * is the backstop for anything else.
 *
 * Errors (pk_err): store_unavailable 503 retryable (cannot connect, connection lost, server shutting
 * down; the connection is discarded), deadline_exceeded 504, store_busy 503 (no connection within the
 * acquisition timeout; serialization failure or deadlock), store_error 500 otherwise. The server's
 * message is in the cause (code "postgres"); pk_pg_sqlstate() gives the SQLSTATE of the last failure.
 *
 * Thread-safety: acquire/release and the gauges are thread-safe; a pk_pg_conn belongs to the thread
 * that acquired it until it releases it.
 */
#ifndef PAKE_STORE_PG_POOL_H
#define PAKE_STORE_PG_POOL_H
#include "core/err.h"
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pk_metrics;
typedef struct pk_pg_pool pk_pg_pool;
typedef struct pk_pg_conn pk_pg_conn;

typedef struct pk_pg_pool_config {
    const char *name;         /* "primary" or "replica": logs and metric labels (copied) */
    const char *conninfo;     /* postgres://user:pass@host:port/db?opts, or key=value pairs (copied) */
    int min_size;             /* kept open by the background thread; default 1 */
    int max_size;             /* default 10 */
    int acquire_timeout_ms;   /* longest wait for a connection; default 2000 */
    int max_lifetime_ms;      /* a connection older than this is closed when idle; default 30 min */
    int idle_timeout_ms;      /* idle connections above min_size close after this; default 10 min */
    int validate_after_ms;    /* idle longer than this: round trip before use; default 5000 */
    int leak_threshold_ms;    /* held longer than this: one warning log line; default 10000 */
    int connect_timeout_ms;   /* opening a connection; default 3000 */
    int backoff_max_ms;       /* reconnect backoff cap (starts at 50 ms); default 1000 */
    int statement_timeout_ms; /* server-side backstop (SET at connect); default 30000; 0 = none */
    int maintain_interval_ms; /* background thread period; default 500; < 0: no thread (tests) */
} pk_pg_pool_config;

/* Creates the pool (the background thread opens min_size connections). Does not fail when the server
 * is down; the first acquire reports it. Errors: store_error (bad config). */
pk_err *pk_pg_pool_open(const pk_pg_pool_config *cfg, pk_pg_pool **out);
void pk_pg_pool_close(pk_pg_pool *p);

/* Takes a connection, waiting at most until min(deadline_ns, now + acquire timeout) (deadline on
 * pk_mono_ns; 0 = none). `request_id` (copied, may be NULL) names the holder in leak reports. */
pk_err *pk_pg_pool_acquire(pk_pg_pool *p, int64_t deadline_ns, const char *request_id, pk_pg_conn **out);
/* Gives it back (NULL is ignored). A connection in a failed or open transaction is rolled back first;
 * a broken one is closed. */
void pk_pg_pool_release(pk_pg_conn *k);

/* One statement of a pipeline. Parameters are text (NULL = SQL NULL); the SQL is a constant or at least
 * identical text for identical shapes (it names the prepared statement). */
typedef struct pk_pg_stmt {
    const char *sql;
    int nparams;
    const char *const *params;
} pk_pg_stmt;

/* Runs n statements in one pipeline and one round trip. On success res[i] holds statement i's result
 * (PGRES_TUPLES_OK or PGRES_COMMAND_OK; PQclear each). On failure no result is returned, the error is
 * the first statement's failure, and a transaction the pipeline opened is rolled back. `label` names
 * the batch in the query duration histogram. */
pk_err *pk_pg_run(pk_pg_conn *k, const char *label, const pk_pg_stmt *st, size_t n, PGresult **res,
                  int64_t deadline_ns);
/* One statement, one result (the common case of pk_pg_run). */
pk_err *pk_pg_query(pk_pg_conn *k, const char *label, const char *sql, int nparams, const char *const *params,
                    int64_t deadline_ns, PGresult **res);
/* Simple-protocol text (several statements allowed; migrations). */
pk_err *pk_pg_exec_simple(pk_pg_conn *k, const char *sql, int64_t deadline_ns);
/* SQLSTATE of the last failed statement on this connection ("" if none). */
const char *pk_pg_sqlstate(const pk_pg_conn *k);

/* Gauges and counters (any thread). */
typedef struct pk_pg_pool_stats {
    int size, idle, in_use, waiters;
    uint64_t acquired, timeouts, connects, connect_failures, leaks, discarded;
} pk_pg_pool_stats;
void pk_pg_pool_stats_get(pk_pg_pool *p, pk_pg_pool_stats *out);
/* Registers pake_pg_pool_* gauges, the acquisition wait and query duration histograms (idempotent per
 * pool name). The registry must outlive the pool's use. */
void pk_pg_pool_bind_metrics(pk_pg_pool *p, struct pk_metrics *m);
/* Runs one maintenance pass now (what the background thread does periodically). */
void pk_pg_pool_maintain(pk_pg_pool *p);
const char *pk_pg_pool_name(const pk_pg_pool *p);
#endif
