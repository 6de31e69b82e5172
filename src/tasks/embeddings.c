/*
 * embeddings: the embedded pk_vecstore (store/vecstore.h): one vector per note in the queue's SQLite
 * file (table `embeddings`), derived from the note's title and content by note.embed, rebuildable at
 * any time (re-enqueue note.embed). Used with the embedded SQLite store; with the PostgreSQL store the
 * vectors live in PostgreSQL instead (src/store/vecstore_pg.c), shared by every process. With the Redis queue
 * backend the file DATA_DIR/queue.db still holds them (t->sq), so `pake serve` and the `pake worker`s
 * that share a data directory share the vectors.
 *
 * A vector is `dims` little-endian float32 values (a blob) with the model name and the SHA-256 of the
 * text it was computed from, so an unchanged note is not rewritten. Search is an exact scan: every
 * vector of the query's model and dims is read and dotted with the query (vectors are unit length,
 * so the dot product is the cosine); a k-sized sorted array keeps the best. The inner loop is a plain
 * float loop the compiler vectorises. It runs under the queue's connection lock (a scan of 10k notes
 * of 384 dims reads ~15 MB and takes milliseconds); an in-memory index is the next step when that
 * becomes the bottleneck. Nothing here depends on the store: a note deleted from the store keeps its
 * vector until its note.embed task runs (enqueued by the note change) or a search finds it gone.
 */
#include "tasks/tasks_internal.h"
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sqvs {
    pk_vecstore base;
    pk_queue *q;
} sqvs;

static pk_err *sq_err(sqlite3 *db, const char *what)
{
    return pk_err_wrap(pk_err_new("sqlite", 500, "%s: %s", what, sqlite3_errmsg(db)), "queue_error", 500,
                       "the embeddings table failed (%s)", what);
}

static pk_err *init_fn(sqlite3 *db, void *ud)
{
    (void)ud;
    const char *sql = "CREATE TABLE IF NOT EXISTS embeddings (note_id TEXT PRIMARY KEY, model TEXT NOT NULL, "
                      "dims INTEGER NOT NULL, vec BLOB NOT NULL, text_hash TEXT NOT NULL, updated_at INTEGER "
                      "NOT NULL) WITHOUT ROWID";
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? NULL : sq_err(db, "create");
}

typedef struct put_args {
    const pk_embedding *e;
    bool unchanged;
} put_args;

static pk_err *same_fn(sqlite3 *db, void *ud)
{
    put_args *a = ud;
    const pk_embedding *em = a->e;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT text_hash, model, dims FROM embeddings WHERE note_id = ?", -1, &st,
                           NULL) != SQLITE_OK)
        return sq_err(db, "prepare");
    sqlite3_bind_text(st, 1, em->note_id, -1, SQLITE_STATIC);
    a->unchanged =
        sqlite3_step(st) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(st, 0), em->text_hash) &&
        !strcmp((const char *)sqlite3_column_text(st, 1), em->model) && sqlite3_column_int(st, 2) == em->dims;
    sqlite3_finalize(st);
    return NULL;
}

static pk_err *put_fn(sqlite3 *db, void *ud)
{
    put_args *a = ud;
    const pk_embedding *em = a->e;
    pk_err *e = same_fn(db, ud);
    if (e || a->unchanged) return e;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(
            db,
            "INSERT OR REPLACE INTO embeddings (note_id, model, dims, vec, text_hash, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            -1, &st, NULL) != SQLITE_OK)
        return sq_err(db, "prepare");
    sqlite3_bind_text(st, 1, em->note_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, em->model, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, em->dims);
    sqlite3_bind_blob(st, 4, em->vec, (int)((size_t)em->dims * sizeof(float)), SQLITE_STATIC);
    sqlite3_bind_text(st, 5, em->text_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, pk_wall_ns());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? NULL : sq_err(db, "put");
}

static pk_err *sq_put(pk_vecstore *v, const pk_op_ctx *c, const pk_embedding *e, bool *unchanged)
{
    (void)c;
    if (e->dims < 1 || e->dims > PK_VEC_DIMS_MAX)
        return pk_err_invalid("embedding dims must be 1..%d, got %d", PK_VEC_DIMS_MAX, e->dims);
    put_args a = {e, false};
    pk_err *err = pk_queue_sqlite_with_db(((sqvs *)v)->q, put_fn, &a);
    if (!err) *unchanged = a.unchanged;
    return err;
}

static pk_err *sq_current(pk_vecstore *v, const pk_op_ctx *c, const pk_embedding *e, bool *same)
{
    (void)c;
    put_args a = {e, false};
    pk_err *err = pk_queue_sqlite_with_db(((sqvs *)v)->q, same_fn, &a);
    if (!err) *same = a.unchanged;
    return err;
}

static pk_err *delete_fn(sqlite3 *db, void *ud)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "DELETE FROM embeddings WHERE note_id = ?", -1, &st, NULL) != SQLITE_OK)
        return sq_err(db, "prepare");
    sqlite3_bind_text(st, 1, ud, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? NULL : sq_err(db, "delete");
}

static pk_err *sq_remove(pk_vecstore *v, const pk_op_ctx *c, const char *note_id)
{
    (void)c;
    return pk_queue_sqlite_with_db(((sqvs *)v)->q, delete_fn, (void *)note_id);
}

typedef struct search_args {
    const char *model;
    const float *q;
    float *v; /* dims floats of scratch */
    int dims, k, n;
    pk_vector_hit *hits;
} search_args;

static float dot(const float *a, const float *b, int dims)
{
    float s = 0;
    for (int i = 0; i < dims; i++)
        s += a[i] * b[i];
    return s;
}

static pk_err *search_fn(sqlite3 *db, void *ud)
{
    search_args *a = ud;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT note_id, vec FROM embeddings WHERE dims = ? AND model = ?", -1, &st,
                           NULL) != SQLITE_OK)
        return sq_err(db, "prepare");
    sqlite3_bind_int(st, 1, a->dims);
    sqlite3_bind_text(st, 2, a->model, -1, SQLITE_STATIC);
    int rc;
    size_t bytes = (size_t)a->dims * sizeof(float);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((size_t)sqlite3_column_bytes(st, 1) != bytes) continue;
        memcpy(a->v, sqlite3_column_blob(st, 1), bytes); /* the blob may be unaligned */
        float s = dot(a->q, a->v, a->dims);
        if (a->n == a->k && s <= a->hits[a->n - 1].score) continue;
        int i = a->n < a->k ? a->n++ : a->n - 1;
        while (i > 0 && a->hits[i - 1].score < s) {
            a->hits[i] = a->hits[i - 1];
            i--;
        }
        a->hits[i].score = s;
        snprintf(a->hits[i].note_id, sizeof a->hits[i].note_id, "%s",
                 (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? NULL : sq_err(db, "scan");
}

static pk_err *sq_search(pk_vecstore *v, const pk_op_ctx *c, const char *model, const float *q, int dims,
                         int k, pk_vector_hit *hits, int *n)
{
    (void)c;
    if (dims < 1 || dims > PK_VEC_DIMS_MAX)
        return pk_err_invalid("query dims must be 1..%d, got %d", PK_VEC_DIMS_MAX, dims);
    search_args a = {model, q, malloc(sizeof(float) * (size_t)dims), dims, k, 0, hits};
    if (!a.v) abort();
    pk_err *e = pk_queue_sqlite_with_db(((sqvs *)v)->q, search_fn, &a);
    free(a.v);
    if (!e) *n = a.n;
    return e;
}

static pk_err *count_fn(sqlite3 *db, void *ud)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM embeddings", -1, &st, NULL) != SQLITE_OK)
        return sq_err(db, "prepare");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *(int64_t *)ud = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? NULL : sq_err(db, "count");
}

static pk_err *sq_count(pk_vecstore *v, const pk_op_ctx *c, int64_t *n)
{
    (void)c;
    return pk_queue_sqlite_with_db(((sqvs *)v)->q, count_fn, n);
}

static void sq_close(pk_vecstore *v)
{
    free(v);
}

static const pk_vecstore_ops sq_ops = {sq_put, sq_remove, sq_search, sq_count, sq_current, sq_close};

pk_err *pk_vecstore_open_queue(pk_queue *q, pk_vecstore **out)
{
    *out = NULL;
    pk_err *e = pk_queue_sqlite_with_db(q, init_fn, NULL);
    if (e) return e;
    sqvs *v = calloc(1, sizeof *v);
    if (!v) abort();
    v->base.ops = &sq_ops;
    v->base.backend = "sqlite";
    v->base.index = "exact-scan";
    v->base.detail = "embedded: vectors in the task queue's SQLite file, exact scan in process";
    v->q = q;
    *out = &v->base;
    return NULL;
}
