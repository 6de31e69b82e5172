/*
 * vecstore: where note embeddings live and how the nearest ones are found. One small interface, two
 * implementations, so that the note.embed handler and the semantic/hybrid search do not care which:
 *
 *  - embedded (src/tasks/embeddings.c): a table in the task queue's SQLite file, ranked by an exact
 *    in-process scan. Used with the embedded SQLite store.
 *  - PostgreSQL (src/store/vecstore_pg.c): the table note_embeddings in the store's database, so
 *    every `pake serve` / `pake worker` process sees the same vectors. With the pgvector extension
 *    the column is `vector` under an HNSW index (cosine); without it the vectors are real[] and
 *    ranked by an exact scan inside PostgreSQL. A note deleted from the store loses its vector in the
 *    same transaction (ON DELETE CASCADE).
 *
 * A vector is `dims` floats, unit length (cosine = dot product), tagged with the model that made it
 * and the SHA-256 of the text it came from (so an unchanged note is not rewritten). Everything here
 * is dims-agnostic: the caller passes dims; a search only looks at vectors of the same model and dims.
 *
 * Thread-safety: every function is thread-safe and BLOCKING (offload pool or task workers only).
 * Errors: store_unavailable / store_busy / deadline_exceeded (PostgreSQL, retryable as the store's),
 * queue_error (embedded), not_found from put when the note no longer exists (PostgreSQL: the foreign
 * key to notes), validation_failed for a bad dims.
 */
#ifndef PAKE_STORE_VECSTORE_H
#define PAKE_STORE_VECSTORE_H
#include "store/store.h"
#include <stdbool.h>
#include <stdint.h>

#define PK_VEC_DIMS_MAX 4096

typedef struct pk_vector_hit {
    char note_id[37];
    float score; /* cosine similarity, higher is closer */
} pk_vector_hit;

typedef struct pk_embedding {
    const char *note_id;
    const char *model;
    int dims;
    const float *vec; /* dims floats */
    const char *text_hash;
} pk_embedding;

typedef struct pk_vecstore pk_vecstore;
typedef struct pk_vecstore_ops {
    pk_err *(*put)(pk_vecstore *v, const pk_op_ctx *c, const pk_embedding *e, bool *unchanged);
    pk_err *(*remove)(pk_vecstore *v, const pk_op_ctx *c, const char *note_id);
    pk_err *(*search)(pk_vecstore *v, const pk_op_ctx *c, const char *model, const float *q, int dims, int k,
                      pk_vector_hit *hits, int *n);
    pk_err *(*count)(pk_vecstore *v, const pk_op_ctx *c, int64_t *n);
    pk_err *(*current)(pk_vecstore *v, const pk_op_ctx *c, const pk_embedding *e, bool *same);
    void (*close)(pk_vecstore *v);
} pk_vecstore_ops;

struct pk_vecstore {
    const pk_vecstore_ops *ops;
    const char *backend; /* "sqlite" | "postgres" */
    const char *index;   /* "exact-scan" | "pgvector-hnsw" */
    const char *detail;  /* one sentence for /health/ready and logs (static or owned by the store) */
};

/* Stores (or replaces) a note's vector; *unchanged (may be NULL) when the stored text hash and model
 * equal the new ones (nothing was written). */
static inline pk_err *pk_vecstore_put(pk_vecstore *v, const pk_op_ctx *c, const pk_embedding *e,
                                      bool *unchanged)
{
    bool u = false;
    pk_err *err = v->ops->put(v, c, e, &u);
    if (unchanged) *unchanged = u;
    return err;
}
/* Drops a note's vector (none stored is fine). */
static inline pk_err *pk_vecstore_remove(pk_vecstore *v, const pk_op_ctx *c, const char *note_id)
{
    return v->ops->remove(v, c, note_id);
}
/* The k nearest vectors of `model` and `dims` to q (unit length), best first: hits[0..*n), *n <= k.
 * Exact for "exact-scan"; approximate (HNSW, recall set by ef_search) for "pgvector-hnsw". */
static inline pk_err *pk_vecstore_search(pk_vecstore *v, const pk_op_ctx *c, const char *model,
                                         const float *q, int dims, int k, pk_vector_hit *hits, int *n)
{
    *n = 0;
    if (k <= 0) return NULL;
    return v->ops->search(v, c, model, q, dims, k, hits, n);
}
static inline pk_err *pk_vecstore_count(pk_vecstore *v, const pk_op_ctx *c, int64_t *n)
{
    *n = 0;
    return v->ops->count(v, c, n);
}
/* *same = the note's stored vector was computed by e->model with e->dims from text hashing to
 * e->text_hash (e->vec is not read): the caller can skip the provider call. */
static inline pk_err *pk_vecstore_current(pk_vecstore *v, const pk_op_ctx *c, const pk_embedding *e,
                                          bool *same)
{
    *same = false;
    return v->ops->current(v, c, e, same);
}
static inline void pk_vecstore_close(pk_vecstore *v)
{
    if (v) v->ops->close(v);
}

/* The PostgreSQL implementation over a store opened by pk_store_open_pg (which must outlive it).
 * Opening prepares the database: uses the `vector` extension when it is installed, or creates it
 * when the server offers it (CREATE EXTENSION IF NOT EXISTS vector; needs the privilege), creates
 * note_embeddings if missing (an existing real[] column is converted once pgvector is there) and an
 * HNSW index (vector_cosine_ops, m / ef_construction) for `index_dims`, all under an advisory lock.
 * Without pgvector it falls back to the exact scan and says so in `detail`. Errors: the store's
 * (store_unavailable when the database cannot be reached), validation_failed for bad settings. */
typedef struct pk_vecstore_pg_config {
    int index_dims;           /* dims of the HNSW index (the configured embedder's); 1..2000 */
    int hnsw_m;               /* default 16 */
    int hnsw_ef_construction; /* default 64 */
    int hnsw_ef_search;       /* default 40; SET LOCAL hnsw.ef_search for each query */
} pk_vecstore_pg_config;
pk_err *pk_vecstore_open_pg(pk_store *pg, const pk_vecstore_pg_config *cfg, pk_vecstore **out);
#endif
