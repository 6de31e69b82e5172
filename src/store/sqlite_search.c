/*
 * sqlite_search: the in-memory search index kept in step with the database through search_log.
 *
 * Locks: `mu` guards the state (ready, building, applied id, the builder thread); `rw` guards the
 * index itself: queries hold it shared, applying changes holds it exclusive. Only one thread applies
 * changes at a time (it holds `apply_mu` while it reads the changed notes), so readers are excluded
 * only while the changed notes are tokenized, never while the database is read.
 *
 * Consistency: a search first reads max(search_log.id) in its own read transaction (snapshot S). If
 * the index applied less, the changed notes are read in S and applied, and the index records S's id.
 * The query runs only while the index reflects exactly S (checked under the shared lock, so nobody
 * applies meanwhile); when another thread already applied newer writes, the search restarts its read
 * transaction on a newer snapshot. The ranked notes are then read back in that same snapshot, so
 * hits, snippets and note bodies always agree (a test races searches against writes to check it).
 */
#include "store/sqlite_search.h"
#include "foundation/metrics.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REBUILD_AFTER 20000 /* pending log entries beyond which a rebuild is cheaper than applying */

struct pk_sqlite_search {
    pk_sqlite_pool *pool;
    const pk_sqlite_search_rows *rows; /* how notes are read: the store's (stored notes) or TEXT_ROWS */
    char *build_sql, *apply_sql;
    pk_fts_tokenizer *tk;
    pthread_rwlock_t rw;
    pk_search_index *ix; /* under rw */
    pthread_mutex_t mu, apply_mu;
    pthread_cond_t cv;
    bool ready, building, started, stop; /* under mu */
    pthread_t builder;
    _Atomic int64_t applied; /* search_log id the index reflects (valid when ready) */
    _Atomic uint64_t by_index, by_fts5, notes, bytes, builds;
};

static void text_row(sqlite3_stmt *st, const char *text[PK_SEARCH_COLS], size_t lens[PK_SEARCH_COLS],
                     pk_buf *stored)
{
    (void)stored;
    for (int c = 0; c < PK_SEARCH_COLS; c++) {
        text[c] = (const char *)sqlite3_column_text(st, 1 + c);
        lens[c] = (size_t)sqlite3_column_bytes(st, 1 + c);
    }
}

static const pk_sqlite_search_rows TEXT_ROWS = {"n.seq, n.title, n.content, n.tags", 4, text_row};

pk_err *pk_sqlite_search_open(pk_sqlite_pool *pool, const pk_sqlite_search_rows *rows, pk_sqlite_search **out)
{
    *out = NULL;
    pk_sqlite_search *s = calloc(1, sizeof *s);
    if (!s) abort();
    pk_err *e = pk_fts_tokenizer_open(&s->tk);
    if (e) {
        free(s);
        return e;
    }
    s->pool = pool;
    s->rows = rows ? rows : &TEXT_ROWS;
    pk_buf b = PK_BUF_INIT;
    pk_buf_printf(&b, "SELECT %s FROM notes n", s->rows->cols);
    s->build_sql = pk_buf_steal(&b, NULL);
    /* deleted notes: a row of NULLs (n.seq first) and the log's seq last */
    pk_buf_printf(&b,
                  "SELECT %s, l.seq FROM (SELECT DISTINCT seq FROM search_log WHERE id > ?1 AND id <= ?2) l"
                  " LEFT JOIN notes n ON n.seq = l.seq",
                  s->rows->cols);
    s->apply_sql = pk_buf_steal(&b, NULL);
    pthread_rwlock_init(&s->rw, NULL);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->apply_mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    *out = s;
    return NULL;
}

/* Reaps the builder thread, if one was started (the only place that joins it: the handle is taken
 * under mu, so two callers never join the same thread). Call without mu held. */
static void join_builder(pk_sqlite_search *s)
{
    pthread_mutex_lock(&s->mu);
    bool started = s->started;
    pthread_t t = s->builder;
    s->started = false;
    pthread_mutex_unlock(&s->mu);
    if (started) pthread_join(t, NULL);
}

void pk_sqlite_search_close(pk_sqlite_search *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_mutex_unlock(&s->mu);
    join_builder(s);
    pk_search_index_free(s->ix);
    pk_fts_tokenizer_close(s->tk);
    pthread_rwlock_destroy(&s->rw);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->apply_mu);
    pthread_cond_destroy(&s->cv);
    free(s->build_sql);
    free(s->apply_sql);
    free(s);
}

const pk_fts_tokenizer *pk_sqlite_search_tokenizer(const pk_sqlite_search *s)
{
    return s->tk;
}

static bool stopping(pk_sqlite_search *s)
{
    pthread_mutex_lock(&s->mu);
    bool stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* Indexes the note of the current row (and keeps its stored form when the store asked for it). */
static pk_err *put_row(pk_sqlite_search *s, pk_search_index *ix, pk_fts_tok *tok, sqlite3_stmt *st,
                       pk_buf *stored)
{
    const char *text[PK_SEARCH_COLS];
    size_t lens[PK_SEARCH_COLS];
    pk_buf_reset(stored);
    s->rows->row(st, text, lens, stored);
    int64_t seq = sqlite3_column_int64(st, 0);
    pk_err *e = pk_search_index_put(ix, tok, seq, text, lens);
    if (!e && s->rows != &TEXT_ROWS)
        pk_search_index_store(ix, seq, stored->data ? stored->data : "", stored->len);
    return e;
}

/* The newest search_log id in k's snapshot (0 when empty): one seek to the table's last row. */
static pk_err *log_newest(pk_sqlite_conn *k, int64_t *newest)
{
    return pk_sqlite_scalar(k, "SELECT coalesce((SELECT max(id) FROM search_log), 0)", newest,
                            "reading the search log");
}

/* The newest and oldest search_log ids in k's snapshot (0, 0 when empty). */
static pk_err *log_bounds(pk_sqlite_conn *k, int64_t *newest, int64_t *oldest)
{
    sqlite3_stmt *st;
    pk_err *e = pk_sqlite_prepare(k, /* two subqueries: SQLite answers a lone min() or max() from the
                                      * b-tree's ends, both in one SELECT would scan the table */
                                  "SELECT coalesce((SELECT max(id) FROM search_log), 0),"
                                  " coalesce((SELECT min(id) FROM search_log), 0)",
                                  &st);
    if (e) return e;
    int rc = pk_sqlite_step(k, st);
    if (rc == SQLITE_ROW) {
        *newest = sqlite3_column_int64(st, 0);
        *oldest = sqlite3_column_int64(st, 1);
    } else {
        e = pk_sqlite_err(k, rc, "reading the search log");
    }
    sqlite3_reset(st);
    return e;
}

/* Reads every note into a new index in one read transaction; returns it with the log id it reflects. */
static pk_err *build(pk_sqlite_search *s, pk_search_index **out, int64_t *applied)
{
    *out = NULL;
    pk_sqlite_conn *k;
    pk_err *e = pk_sqlite_pool_acquire(s->pool, false, 0, &k);
    if (e) return e;
    pk_fts_tok tok;
    if ((e = pk_fts_tokenizer_instance(s->tk, &tok))) {
        pk_sqlite_pool_release(k);
        return e;
    }
    pk_search_index *ix = pk_search_index_new();
    sqlite3_stmt *st = NULL;
    int64_t oldest = 0;
    e = pk_sqlite_begin(k, false);
    if (!e) e = log_bounds(k, applied, &oldest);
    if (!e) e = pk_sqlite_prepare(k, s->build_sql, &st);
    int rc = SQLITE_DONE;
    pk_buf stored = PK_BUF_INIT;
    for (long n = 0; !e && (rc = pk_sqlite_step(k, st)) == SQLITE_ROW; n++) {
        e = put_row(s, ix, &tok, st, &stored);
        if (!e && n % 256 == 255 && stopping(s)) e = pk_err_new("store_error", 503, "the store is closing");
    }
    pk_buf_free(&stored);
    if (!e && rc != SQLITE_DONE) e = pk_sqlite_err(k, rc, "reading notes for the search index");
    if (st) sqlite3_reset(st);
    pk_sqlite_rollback(k);
    pk_sqlite_pool_release(k);
    pk_fts_tok_free(&tok);
    if (e) {
        pk_search_index_free(ix);
        return e;
    }
    *out = ix;
    return NULL;
}

static void *builder_main(void *arg)
{
    pk_sqlite_search *s = arg;
    pk_search_index *ix = NULL;
    int64_t applied = 0;
    pk_err *e = build(s, &ix, &applied);
    pthread_mutex_lock(&s->apply_mu);
    if (!e) {
        pthread_rwlock_wrlock(&s->rw);
        pk_search_index *old = s->ix;
        s->ix = ix;
        atomic_store(&s->notes, pk_search_index_docs(ix));
        atomic_store(&s->bytes, pk_search_index_bytes(ix));
        atomic_store(&s->applied, applied);
        pthread_rwlock_unlock(&s->rw);
        pk_search_index_free(old);
        atomic_fetch_add(&s->builds, 1);
    }
    pthread_mutex_lock(&s->mu);
    s->building = false;
    s->ready = e == NULL;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->apply_mu);
    pk_err_free(e); /* a failed build is retried by the next search */
    return NULL;
}

/* Under mu: starts a build unless one runs. */
static void start_build_locked(pk_sqlite_search *s)
{
    if (s->building || s->stop) return;
    if (s->started) { /* the previous builder has finished (building is false): reap it */
        pthread_mutex_unlock(&s->mu);
        join_builder(s);
        pthread_mutex_lock(&s->mu);
        if (s->building || s->stop) return;
    }
    s->ready = false;
    s->building = true;
    if (pthread_create(&s->builder, NULL, builder_main, s) == 0)
        s->started = true;
    else
        s->building = false;
}

bool pk_sqlite_search_wait_ready(pk_sqlite_search *s, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&s->mu);
    if (!s->ready) start_build_locked(s);
    while (!s->ready && s->building)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &until) != 0) break;
    bool ready = s->ready;
    pthread_mutex_unlock(&s->mu);
    return ready;
}

/* Applies the log entries (applied, upto] read in k's transaction. */
static pk_err *apply(pk_sqlite_search *s, pk_sqlite_conn *k, int64_t upto)
{
    pk_fts_tok tok;
    pk_err *e = pk_fts_tokenizer_instance(s->tk, &tok);
    if (e) return e;
    int64_t from = atomic_load(&s->applied);
    sqlite3_stmt *st;
    e = pk_sqlite_prepare(k, s->apply_sql, &st);
    if (e) {
        pk_fts_tok_free(&tok);
        return e;
    }
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, upto);
    int rc, ncols = s->rows->ncols;
    pk_buf stored = PK_BUF_INIT;
    pthread_rwlock_wrlock(&s->rw);
    while (!e && (rc = pk_sqlite_step(k, st)) == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) == SQLITE_NULL) /* deleted: the log's seq is the last column */
            pk_search_index_remove(s->ix, sqlite3_column_int64(st, ncols));
        else
            e = put_row(s, s->ix, &tok, st, &stored);
    }
    if (!e && rc != SQLITE_DONE) e = pk_sqlite_err(k, rc, "reading changed notes for the search index");
    if (!e) {
        atomic_store(&s->applied, upto);
        atomic_store(&s->notes, pk_search_index_docs(s->ix));
        atomic_store(&s->bytes, pk_search_index_bytes(s->ix));
    }
    pthread_rwlock_unlock(&s->rw);
    sqlite3_reset(st);
    pk_buf_free(&stored);
    pk_fts_tok_free(&tok);
    return e;
}

/* Brings the index up to k's snapshot (whose newest log id goes to *upto). Returns false when FTS5
 * must answer (no index yet, or it is being rebuilt). */
static bool sync_index(pk_sqlite_search *s, pk_sqlite_conn *k, int64_t *upto, pk_err **err)
{
    pthread_mutex_lock(&s->mu);
    bool ready = s->ready;
    if (!ready) start_build_locked(s);
    pthread_mutex_unlock(&s->mu);
    if (!ready) return false;
    if ((*err = log_newest(k, upto))) return false;
    if (*upto <= atomic_load(&s->applied)) return true; /* the usual case: nothing new */
    int64_t oldest = 0;
    if ((*err = log_bounds(k, upto, &oldest))) return false;
    pthread_mutex_lock(&s->apply_mu);
    bool ok = true;
    int64_t from = atomic_load(&s->applied);
    if (*upto > from) {
        if (oldest > from + 1 || *upto - from > REBUILD_AFTER) {
            /* entries this index needs were trimmed, or a rebuild is cheaper: FTS5 until it is done */
            pthread_mutex_lock(&s->mu);
            s->ready = false;
            start_build_locked(s);
            pthread_mutex_unlock(&s->mu);
            ok = false;
        } else {
            *err = apply(s, k, *upto);
            ok = *err == NULL;
        }
    }
    pthread_mutex_unlock(&s->apply_mu);
    return ok;
}

/* The hits must describe the caller's snapshot exactly (its notes are read back in it): the query
 * runs only while the index (held shared, so nobody applies meanwhile) reflects that snapshot's log
 * id. An index ahead of the snapshot (another thread applied newer writes) means a newer snapshot: the
 * read transaction restarts. A few tries, then FTS5, which answers from any snapshot. */
typedef struct page_req {
    size_t offset, limit;
    pk_sqlite_search_emit emit;
    void *ctx;
    bool *more;
} page_req;

/* Under the shared lock, the index reflecting the caller's snapshot: the page from the stored notes.
 * False (nothing emitted) when a hit of the page has no stored form. */
static bool emit_page(pk_sqlite_search *s, pk_search_hits *h, const page_req *pg, pk_err **err)
{
    size_t end = pg->offset + pg->limit < h->n ? pg->offset + pg->limit : h->n;
    pk_search_hits_rank(h, end);
    for (size_t i = pg->offset; i < end; i++) {
        size_t n;
        if (!pk_search_index_stored(s->ix, &h->hit[i], &n)) return false;
    }
    for (size_t i = pg->offset; i < end && !*err; i++) {
        size_t n;
        const void *d = pk_search_index_stored(s->ix, &h->hit[i], &n);
        *err = pg->emit(pg->ctx, h, &h->hit[i], d, n);
    }
    *pg->more = end < h->n;
    return true;
}

static bool run_query(pk_sqlite_search *s, pk_sqlite_conn *k, pk_fts_tok *tok, const pk_search_term *terms,
                      size_t n, pk_search_hits *out, const page_req *pg, pk_err **err)
{
    memset(out, 0, sizeof *out);
    *err = NULL;
    for (int attempt = 0; attempt < 4; attempt++) {
        int64_t upto = 0;
        if (!sync_index(s, k, &upto, err)) return false;
        pthread_rwlock_rdlock(&s->rw);
        int64_t applied = atomic_load(&s->applied);
        bool ok = false, same = applied == upto && s->ix;
        if (same) ok = pk_search_index_query(s->ix, tok, terms, n, out, err);
        if (same && ok && pg && !emit_page(s, out, pg, err)) {
            pk_search_hits_free(out);
            ok = false;
        }
        pthread_rwlock_unlock(&s->rw);
        if (same) return ok;
        if (applied > upto) { /* a newer snapshot */
            pk_sqlite_rollback(k);
            if ((*err = pk_sqlite_begin(k, false))) return false;
        }
    }
    return false;
}

/* The hits must describe the caller's snapshot exactly (its notes are read back in it): the query
 * runs only while the index (held shared, so nobody applies meanwhile) reflects that snapshot's log
 * id. An index ahead of the snapshot (another thread applied newer writes) means a newer snapshot: the
 * read transaction restarts. A few tries, then FTS5, which answers from any snapshot. */
bool pk_sqlite_search_query(pk_sqlite_search *s, pk_sqlite_conn *k, pk_fts_tok *tok,
                            const pk_search_term *terms, size_t n, pk_search_hits *out, pk_err **err)
{
    return run_query(s, k, tok, terms, n, out, NULL, err);
}

bool pk_sqlite_search_page(pk_sqlite_search *s, pk_sqlite_conn *k, pk_fts_tok *tok,
                           const pk_search_term *terms, size_t n, size_t offset, size_t limit,
                           pk_sqlite_search_emit emit, void *ctx, bool *more, pk_err **err)
{
    *more = false;
    if (s->rows == &TEXT_ROWS) { /* no stored notes */
        *err = NULL;
        return false;
    }
    page_req pg = {offset, limit, emit, ctx, more};
    pk_search_hits h;
    bool ok = run_query(s, k, tok, terms, n, &h, &pg, err);
    if (ok) pk_search_hits_free(&h);
    return ok;
}

void pk_sqlite_search_count(pk_sqlite_search *s, bool by_index)
{
    atomic_fetch_add(by_index ? &s->by_index : &s->by_fts5, 1);
}

/* ---- metrics ---- */

static double m_ready(void *ctx)
{
    pk_sqlite_search *s = ctx;
    pthread_mutex_lock(&s->mu);
    bool r = s->ready;
    pthread_mutex_unlock(&s->mu);
    return r ? 1 : 0;
}
static double m_notes(void *ctx)
{
    return (double)atomic_load(&((pk_sqlite_search *)ctx)->notes);
}
static double m_bytes(void *ctx)
{
    return (double)atomic_load(&((pk_sqlite_search *)ctx)->bytes);
}
static double m_by_index(void *ctx)
{
    return (double)atomic_load(&((pk_sqlite_search *)ctx)->by_index);
}
static double m_by_fts5(void *ctx)
{
    return (double)atomic_load(&((pk_sqlite_search *)ctx)->by_fts5);
}
static double m_builds(void *ctx)
{
    return (double)atomic_load(&((pk_sqlite_search *)ctx)->builds);
}

void pk_sqlite_search_bind_metrics(pk_sqlite_search *s, struct pk_metrics *m)
{
    if (!s || !m) return;
    pk_metric_bind_fn(pk_metrics_gauge(m, "pake_search_index_ready",
                                       "1 when relevance searches are served by the in-memory index.", 0,
                                       NULL),
                      NULL, 0, m_ready, s);
    pk_metric_bind_fn(
        pk_metrics_gauge(m, "pake_search_index_notes", "Notes in the in-memory search index.", 0, NULL), NULL,
        0, m_notes, s);
    pk_metric_bind_fn(pk_metrics_gauge(m, "pake_search_index_bytes",
                                       "Memory held by the in-memory search index (approximate).", 0, NULL),
                      NULL, 0, m_bytes, s);
    pk_metric_bind_fn(pk_metrics_counter(m, "pake_search_index_builds_total",
                                         "Complete builds of the in-memory search index.", 0, NULL),
                      NULL, 0, m_builds, s);
    static const char *const engine_l[] = {"engine"};
    pk_metric_family *q = pk_metrics_counter(
        m, "pake_search_queries_total", "Relevance searches by the engine that answered them.", 1, engine_l);
    pk_metric_bind_fn(q, (const char *const[]){"index"}, 1, m_by_index, s);
    pk_metric_bind_fn(q, (const char *const[]){"fts5"}, 1, m_by_fts5, s);
}
