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

/* Stored notes (optional): how the store reads a note for the index and what it keeps with it. `cols`
 * is an SQL select list over `notes n` whose first column is n.seq, with `ncols` columns; `row` gets
 * a row of it (columns from 0) and gives the searchable text (title, content, tags; valid while the
 * row is) and writes the note's stored form into *stored (empty on entry). */
typedef struct pk_sqlite_search_rows {
    const char *cols;
    int ncols;
    void (*row)(sqlite3_stmt *st, const char *text[PK_SEARCH_COLS], size_t lens[PK_SEARCH_COLS],
                pk_buf *stored);
} pk_sqlite_search_rows;

/* Does not read the database (the build starts at the first query). `rows` (may be NULL: text only)
 * must outlive the handle. Errors: the tokenizer. */
pk_err *pk_sqlite_search_open(pk_sqlite_pool *pool, const pk_sqlite_search_rows *rows,
                              pk_sqlite_search **out);
/* Stops a running build (it checks between notes) and frees everything. */
void pk_sqlite_search_close(pk_sqlite_search *s);

/* Inside the caller's read transaction on `k`: brings the index up to date, then runs the query.
 * Returns false when FTS5 must answer (index not ready, or a query it cannot answer); *err is set on
 * a database error (then false too). `tok` is a tokenizer instance of the caller's thread. */
bool pk_sqlite_search_query(pk_sqlite_search *s, pk_sqlite_conn *k, pk_fts_tok *tok,
                            const pk_search_term *terms, size_t n, pk_search_hits *out, pk_err **err);
/* A page straight from the stored notes: as pk_sqlite_search_query, then, while the index still
 * reflects the caller's snapshot, calls emit for the hits [offset, offset + limit) in rank order with
 * each note's stored form; *more tells whether hits follow. Every hit is a note of the snapshot, so
 * this serves only searches without filters. Returns false when it cannot answer (as
 * pk_sqlite_search_query, or no stored notes): nothing was emitted then. An error from emit stops
 * the page and is returned in *err (with true). */
typedef pk_err *(*pk_sqlite_search_emit)(void *ctx, const pk_search_hits *h, const pk_search_hit *hit,
                                         const void *stored, size_t n);
bool pk_sqlite_search_page(pk_sqlite_search *s, pk_sqlite_conn *k, pk_fts_tok *tok,
                           const pk_search_term *terms, size_t n, size_t offset, size_t limit,
                           pk_sqlite_search_emit emit, void *ctx, bool *more, pk_err **err);
const pk_fts_tokenizer *pk_sqlite_search_tokenizer(const pk_sqlite_search *s);
/* Blocks until the index is ready or `timeout_ms` passed (starting the build if needed); true when
 * ready. For tests and the benchmark's warm-up. */
bool pk_sqlite_search_wait_ready(pk_sqlite_search *s, int timeout_ms);

/* Gauges pake_search_index_{ready,notes,bytes} and the counter pake_search_queries_total{engine}. */
void pk_sqlite_search_bind_metrics(pk_sqlite_search *s, struct pk_metrics *m);
void pk_sqlite_search_count(pk_sqlite_search *s, bool by_index);
#endif
