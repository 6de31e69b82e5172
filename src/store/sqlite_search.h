/*
 * sqlite_search: keeps a pk_search_index in step with the embedded database and answers relevance
 * searches from it (internal to the SQLite backend).
 *
 * Every change to a note's searchable text (insert, update of title/content/tags, delete) appends the
 * note's seq to the table search_log, by triggers in the same transaction (migration 4), whichever
 * process or thread made it. Before a search, the caller's read transaction reads max(search_log.id);
 * when it is past what the index has applied, the notes named by the new entries are re-read (or
 * removed) under the index's write lock. So a search sees every write committed before its snapshot,
 * also those of other processes on the same file (pake worker, pake mcp), without any of them
 * notifying the others.
 *
 * The index is built on first use by a background thread on its own reader connection; until it is
 * ready (and when it fell too far behind: the log was trimmed past what it applied, or more than
 * REBUILD_AFTER entries are pending) searches use FTS5 as before, so a large database never makes a
 * search wait for the build. pk_sqlite_search_query returns false whenever FTS5 must answer.
 *
 * Thread-safety: all functions are thread-safe. Errors are pk_err from the connection (deadline,
 * store_error).
 */
#ifndef PAKE_STORE_SQLITE_SEARCH_H
#define PAKE_STORE_SQLITE_SEARCH_H
#include "store/search_index.h"
#include "store/sqlite_pool.h"

struct pk_metrics;
typedef struct pk_sqlite_search pk_sqlite_search;

/* Does not read the database (the build starts at the first query). Errors: the tokenizer. */
pk_err *pk_sqlite_search_open(pk_sqlite_pool *pool, pk_sqlite_search **out);
/* Stops a running build (it checks between notes) and frees everything. */
void pk_sqlite_search_close(pk_sqlite_search *s);

/* Inside the caller's read transaction on `k`: brings the index up to date, then runs the query.
 * Returns false when FTS5 must answer (index not ready, or a query it cannot answer); *err is set on
 * a database error (then false too). `tok` is a tokenizer instance of the caller's thread. */
bool pk_sqlite_search_query(pk_sqlite_search *s, pk_sqlite_conn *k, pk_fts_tok *tok,
                            const pk_search_term *terms, size_t n, pk_search_hits *out, pk_err **err);
const pk_fts_tokenizer *pk_sqlite_search_tokenizer(const pk_sqlite_search *s);
/* Blocks until the index is ready or `timeout_ms` passed (starting the build if needed); true when
 * ready. For tests and the benchmark's warm-up. */
bool pk_sqlite_search_wait_ready(pk_sqlite_search *s, int timeout_ms);

/* Gauges pake_search_index_{ready,notes,bytes} and the counter pake_search_queries_total{engine}. */
void pk_sqlite_search_bind_metrics(pk_sqlite_search *s, struct pk_metrics *m);
void pk_sqlite_search_count(pk_sqlite_search *s, bool by_index);
#endif
