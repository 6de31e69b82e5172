/*
 * embeddings: one vector per note in the queue's SQLite file (table `embeddings`), derived from the
 * note's title and content by note.embed, rebuildable at any time (re-enqueue note.embed). With the
 * Redis queue backend the file DATA_DIR/queue.db still holds them (t->sq), so `pake serve` and the
 * `pake worker`s that share a data directory share the vectors.
 *
 * A vector is PK_EMBED_DIMS little-endian float32 values (a 1536-byte blob) with the model name and
 * the SHA-256 of the text it was computed from, so an unchanged note is not rewritten. Search is an
 * exact scan: every vector is read and dotted with the query (vectors are unit length, so the dot
 * product is the cosine); a k-sized sorted array keeps the best. The inner loop is a plain float
 * loop the compiler vectorises. It runs under the queue's connection lock (a scan of 10k notes reads
 * ~15 MB and takes milliseconds); an in-memory index is the next step when that becomes the bottleneck.
 */
#include "tasks/tasks_internal.h"
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

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

pk_err *pk_tasks_embeddings_init(pk_tasks *t)
{
    return pk_queue_sqlite_with_db(t->sq, init_fn, NULL);
}

typedef struct put_args {
    const char *note_id;
    const float *vec;
    const char *hash;
    bool unchanged;
} put_args;

static pk_err *put_fn(sqlite3 *db, void *ud)
{
    put_args *a = ud;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT text_hash, model FROM embeddings WHERE note_id = ?", -1, &st, NULL) !=
        SQLITE_OK)
        return sq_err(db, "prepare");
    sqlite3_bind_text(st, 1, a->note_id, -1, SQLITE_STATIC);
    a->unchanged = sqlite3_step(st) == SQLITE_ROW &&
                   !strcmp((const char *)sqlite3_column_text(st, 0), a->hash) &&
                   !strcmp((const char *)sqlite3_column_text(st, 1), PK_EMBED_MODEL);
    sqlite3_finalize(st);
    if (a->unchanged) return NULL;
    if (sqlite3_prepare_v2(
            db,
            "INSERT OR REPLACE INTO embeddings (note_id, model, dims, vec, text_hash, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            -1, &st, NULL) != SQLITE_OK)
        return sq_err(db, "prepare");
    sqlite3_bind_text(st, 1, a->note_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, PK_EMBED_MODEL, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, PK_EMBED_DIMS);
    sqlite3_bind_blob(st, 4, a->vec, (int)(PK_EMBED_DIMS * sizeof(float)), SQLITE_STATIC);
    sqlite3_bind_text(st, 5, a->hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, pk_wall_ns());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? NULL : sq_err(db, "put");
}

pk_err *pk_tasks_embedding_put(pk_tasks *t, const char *note_id, const float *vec, const char *hash,
                               bool *unchanged)
{
    put_args a = {note_id, vec, hash, false};
    pk_err *e = pk_queue_sqlite_with_db(t->sq, put_fn, &a);
    if (!e && unchanged) *unchanged = a.unchanged;
    return e;
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

pk_err *pk_tasks_embedding_delete(pk_tasks *t, const char *note_id)
{
    return pk_queue_sqlite_with_db(t->sq, delete_fn, (void *)note_id);
}

typedef struct search_args {
    const float *q;
    int k, n;
    pk_vector_hit *hits;
} search_args;

static float dot(const float *a, const float *b)
{
    float s = 0;
    for (int i = 0; i < PK_EMBED_DIMS; i++)
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
    sqlite3_bind_int(st, 1, PK_EMBED_DIMS);
    sqlite3_bind_text(st, 2, PK_EMBED_MODEL, -1, SQLITE_STATIC);
    int rc;
    float v[PK_EMBED_DIMS];
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 1) != (int)sizeof v) continue;
        memcpy(v, sqlite3_column_blob(st, 1), sizeof v); /* the blob may be unaligned */
        float s = dot(a->q, v);
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

pk_err *pk_tasks_vector_search(pk_tasks *t, const float query[PK_EMBED_DIMS], int k, pk_vector_hit *hits,
                               int *n)
{
    search_args a = {query, k, 0, hits};
    *n = 0;
    if (k <= 0) return NULL;
    pk_err *e = pk_queue_sqlite_with_db(t->sq, search_fn, &a);
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

pk_err *pk_tasks_embedding_count(pk_tasks *t, int64_t *n)
{
    *n = 0;
    return pk_queue_sqlite_with_db(t->sq, count_fn, n);
}
