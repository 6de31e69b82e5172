/*
 * vecstore_pg: note embeddings in PostgreSQL (the pk_vecstore contract of vecstore.h).
 *
 * Why in PostgreSQL: with the PostgreSQL store, several `pake serve` and worker processes share one
 * database; vectors kept in each process' local SQLite file would differ per process. Here they sit
 * next to the notes, and a note's vector dies with the note (foreign key, ON DELETE CASCADE).
 *
 * Two shapes of the same table, chosen at start:
 *  - pgvector installed (or installable by this user): `embedding vector` (no fixed dims, so another
 *    model with other dims can be stored) and, per indexed dims D, a partial expression index
 *    `USING hnsw ((embedding::vector(D)) vector_cosine_ops) WHERE dims = D` (pgvector indexes need a
 *    fixed dimension; the partial index is its documented way to hold several). A query is
 *    `ORDER BY embedding::vector(D) <=> $q LIMIT k` with `dims = D` spelled as a literal so that the
 *    planner (also with a generic plan) can prove the index predicate; hnsw.ef_search is set for the
 *    query's transaction only (set_config(..., true) = SET LOCAL) in the same pipeline.
 *  - no pgvector (e.g. Debian's PostgreSQL 15, which has no pgvector package): `embedding real[]`,
 *    ranked by an exact scan inside PostgreSQL (dot product through unnest; only the top k rows travel
 *    back). Linear in the number of notes: fine for thousands, slow for millions. When pgvector shows
 *    up later, the next start converts the column (real[] casts to vector) and builds the index.
 * The set-up runs in one transaction under an advisory lock, so processes starting together agree.
 * HNSW build settings (m, ef_construction) apply when the index is created; an existing index built
 * with other settings is kept (rebuilding is an operator's decision: DROP INDEX, restart) and `detail`
 * says so.
 */
#include "store/vecstore.h"
#include "core/buf.h"
#include "core/clock.h"
#include "store/pg_pool.h"
#include "store/store_pg.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SETUP_LOCK "7245812012"
#define HNSW_DIMS_MAX 2000 /* pgvector: HNSW indexes vectors of up to 2000 dimensions */

typedef struct pgvs {
    pk_vecstore base;
    pk_pg_pool *pool;
    bool pgvector;
    int index_dims; /* 0: no HNSW index */
    int ef_search;
    char detail[512];
} pgvs;

static const pk_vecstore_ops pg_vec_ops;

static int64_t dl(const pk_op_ctx *c)
{
    return c ? c->deadline_ns : 0;
}

/* '[a,b,...]' (vector) or '{a,b,...}' (real[]) with round-trip float precision. */
static void vec_text(pk_buf *b, const float *v, int dims, bool pgvector)
{
    pk_buf_putc(b, pgvector ? '[' : '{');
    for (int i = 0; i < dims; i++)
        pk_buf_printf(b, i ? ",%.9g" : "%.9g", (double)v[i]);
    pk_buf_putc(b, pgvector ? ']' : '}');
}

static pk_err *acquire(pgvs *v, const pk_op_ctx *c, pk_pg_conn **k)
{
    return pk_pg_pool_acquire(v->pool, dl(c), c ? c->request_id : NULL, k);
}

static pk_err *pg_put(pk_vecstore *vs, const pk_op_ctx *c, const pk_embedding *em, bool *unchanged)
{
    pgvs *v = (pgvs *)vs;
    if (em->dims < 1 || em->dims > PK_VEC_DIMS_MAX)
        return pk_err_invalid("embedding dims must be 1..%d, got %d", PK_VEC_DIMS_MAX, em->dims);
    pk_buf vec = PK_BUF_INIT;
    vec_text(&vec, em->vec, em->dims, v->pgvector);
    char dims[16], at[24];
    snprintf(dims, sizeof dims, "%d", em->dims);
    snprintf(at, sizeof at, "%lld", (long long)pk_wall_ns());
    const char *p[] = {em->note_id, em->model, dims, em->text_hash, at, vec.data};
    const char *sql =
        v->pgvector
            ? "INSERT INTO note_embeddings AS e (note_id, model, dims, text_hash, updated_at, embedding)"
              " VALUES ($1, $2, $3::int, $4, $5::bigint, $6::vector) ON CONFLICT (note_id) DO UPDATE SET"
              " model = excluded.model, dims = excluded.dims, text_hash = excluded.text_hash,"
              " updated_at = excluded.updated_at, embedding = excluded.embedding"
              " WHERE e.text_hash <> excluded.text_hash OR e.model <> excluded.model OR e.dims <> "
              "excluded.dims"
              " RETURNING 1"
            : "INSERT INTO note_embeddings AS e (note_id, model, dims, text_hash, updated_at, embedding)"
              " VALUES ($1, $2, $3::int, $4, $5::bigint, $6::real[]) ON CONFLICT (note_id) DO UPDATE SET"
              " model = excluded.model, dims = excluded.dims, text_hash = excluded.text_hash,"
              " updated_at = excluded.updated_at, embedding = excluded.embedding"
              " WHERE e.text_hash <> excluded.text_hash OR e.model <> excluded.model OR e.dims <> "
              "excluded.dims"
              " RETURNING 1";
    pk_pg_conn *k;
    pk_err *e = acquire(v, c, &k);
    PGresult *r = NULL;
    if (!e) e = pk_pg_query(k, "vector_put", sql, 6, p, dl(c), &r);
    if (e && k && !strcmp(pk_pg_sqlstate(k), "23503")) { /* foreign_key_violation: the note is gone */
        pk_err_free(e);
        e = pk_err_new("not_found", 404, "note %s does not exist", em->note_id);
    }
    if (!e) *unchanged = PQntuples(r) == 0;
    PQclear(r);
    pk_pg_pool_release(k);
    pk_buf_free(&vec);
    return e;
}

static pk_err *pg_current(pk_vecstore *vs, const pk_op_ctx *c, const pk_embedding *em, bool *same)
{
    pgvs *v = (pgvs *)vs;
    char dims[16];
    snprintf(dims, sizeof dims, "%d", em->dims);
    const char *p[] = {em->note_id, em->model, dims, em->text_hash};
    pk_pg_conn *k;
    pk_err *e = acquire(v, c, &k);
    PGresult *r = NULL;
    if (!e)
        e = pk_pg_query(k, "vector_current",
                        "SELECT 1 FROM note_embeddings WHERE note_id = $1 AND model = $2 AND dims = $3::int"
                        " AND text_hash = $4",
                        4, p, dl(c), &r);
    if (!e) *same = PQntuples(r) > 0;
    PQclear(r);
    pk_pg_pool_release(k);
    return e;
}

static pk_err *pg_remove(pk_vecstore *vs, const pk_op_ctx *c, const char *note_id)
{
    pgvs *v = (pgvs *)vs;
    pk_pg_conn *k;
    pk_err *e = acquire(v, c, &k);
    PGresult *r = NULL;
    const char *p[] = {note_id};
    if (!e)
        e = pk_pg_query(k, "vector_delete", "DELETE FROM note_embeddings WHERE note_id = $1", 1, p, dl(c),
                        &r);
    PQclear(r);
    pk_pg_pool_release(k);
    return e;
}

static void read_hits(PGresult *r, pk_vector_hit *hits, int k, int *n)
{
    int rows = PQntuples(r);
    for (int i = 0; i < rows && *n < k; i++) {
        snprintf(hits[*n].note_id, sizeof hits[*n].note_id, "%s", PQgetvalue(r, i, 0));
        hits[*n].score = PQgetisnull(r, i, 1) ? 0.0f : strtof(PQgetvalue(r, i, 1), NULL);
        (*n)++;
    }
}

static pk_err *pg_search(pk_vecstore *vs, const pk_op_ctx *c, const char *model, const float *q, int dims,
                         int k, pk_vector_hit *hits, int *n)
{
    pgvs *v = (pgvs *)vs;
    if (dims < 1 || dims > PK_VEC_DIMS_MAX)
        return pk_err_invalid("query dims must be 1..%d, got %d", PK_VEC_DIMS_MAX, dims);
    pk_buf qv = PK_BUF_INIT, sql = PK_BUF_INIT;
    vec_text(&qv, q, dims, v->pgvector);
    char dims_s[16], k_s[16], ef[16];
    snprintf(dims_s, sizeof dims_s, "%d", dims);
    snprintf(k_s, sizeof k_s, "%d", k);
    snprintf(ef, sizeof ef, "%d", v->ef_search);
    pk_pg_conn *conn;
    pk_err *e = acquire(v, c, &conn);
    if (!e && v->pgvector) {
        /* dims is a literal: the partial index predicate (dims = D) must be provable at plan time */
        pk_buf_printf(&sql,
                      "SELECT note_id, 1 - (embedding::vector(%d) <=> $1::vector(%d)) FROM note_embeddings"
                      " WHERE dims = %d AND model = $2 ORDER BY embedding::vector(%d) <=> $1::vector(%d)"
                      " LIMIT $3::int",
                      dims, dims, dims, dims, dims);
        const char *pe[] = {ef};
        const char *ps[] = {qv.data, model, k_s};
        pk_pg_stmt st[4] = {{"BEGIN", 0, NULL},
                            {"SELECT set_config('hnsw.ef_search', $1, true)", 1, pe},
                            {sql.data, 3, ps},
                            {"COMMIT", 0, NULL}};
        PGresult *res[4];
        e = pk_pg_run(conn, "vector_search", st, 4, res, dl(c));
        if (!e) read_hits(res[2], hits, k, n);
        for (int i = 0; !e && i < 4; i++)
            PQclear(res[i]);
    } else if (!e) {
        const char *ps[] = {qv.data, dims_s, model, k_s};
        PGresult *r = NULL;
        e = pk_pg_query(
            conn, "vector_search",
            "SELECT note_id, s FROM (SELECT note_id, (SELECT sum(a * b) FROM unnest(embedding,"
            " $1::real[]) AS t(a, b)) AS s FROM note_embeddings WHERE dims = $2::int AND model = $3) x"
            " ORDER BY s DESC, note_id LIMIT $4::int",
            4, ps, dl(c), &r);
        if (!e) read_hits(r, hits, k, n);
        PQclear(r);
    }
    pk_pg_pool_release(conn);
    pk_buf_free(&qv);
    pk_buf_free(&sql);
    return e;
}

static pk_err *pg_count(pk_vecstore *vs, const pk_op_ctx *c, int64_t *n)
{
    pgvs *v = (pgvs *)vs;
    pk_pg_conn *k;
    pk_err *e = acquire(v, c, &k);
    PGresult *r = NULL;
    if (!e) e = pk_pg_query(k, "vector_count", "SELECT count(*) FROM note_embeddings", 0, NULL, dl(c), &r);
    if (!e) *n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    pk_pg_pool_release(k);
    return e;
}

static void pg_close(pk_vecstore *vs)
{
    free(vs);
}

static const pk_vecstore_ops pg_vec_ops = {pg_put, pg_remove, pg_search, pg_count, pg_current, pg_close};

/* ---- set-up ---- */

/* One text value of a one-row query (NULL for no row or SQL NULL); malloc'd. */
static pk_err *query_text(pk_pg_conn *k, const char *sql, int64_t deadline, char **out)
{
    *out = NULL;
    PGresult *r;
    pk_err *e = pk_pg_query(k, "vector_setup", sql, 0, NULL, deadline, &r);
    if (!e && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) *out = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return e;
}

static const char *innermost(const pk_err *e)
{
    while (e->cause)
        e = e->cause;
    return e->message;
}

/* Installs pgvector if it is offered and not installed; says why not in v->detail. */
static pk_err *use_extension(pgvs *v, pk_pg_conn *k, int64_t deadline)
{
    char *ver = NULL, *avail = NULL;
    pk_err *e = query_text(k, "SELECT extversion FROM pg_extension WHERE extname = 'vector'", deadline, &ver);
    if (!e && !ver)
        e = query_text(k, "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'",
                       deadline, &avail);
    if (!e && !ver && avail) {
        pk_err *ce =
            pk_pg_exec_simple(k, "SAVEPOINT pgvector; CREATE EXTENSION IF NOT EXISTS vector", deadline);
        if (ce) {
            snprintf(
                v->detail, sizeof v->detail,
                "pgvector %s is available but CREATE EXTENSION vector failed (%s): exact scan in PostgreSQL",
                avail, innermost(ce));
            pk_err_free(ce);
            e = pk_pg_exec_simple(k, "ROLLBACK TO SAVEPOINT pgvector", deadline);
        } else {
            e = query_text(k, "SELECT extversion FROM pg_extension WHERE extname = 'vector'", deadline, &ver);
        }
    } else if (!e && !ver) {
        snprintf(
            v->detail, sizeof v->detail,
            "pgvector is not installed on the database server: semantic search ranks every stored vector"
            " (exact scan in PostgreSQL, linear in the number of notes); install pgvector for an HNSW index");
    }
    v->pgvector = !e && ver;
    if (v->pgvector) snprintf(v->detail, sizeof v->detail, "pgvector %s", ver);
    free(ver);
    free(avail);
    return e;
}

static pk_err *create_table(pgvs *v, pk_pg_conn *k, int64_t deadline)
{
    pk_err *e = pk_pg_exec_simple(
        k,
        v->pgvector
            ? "CREATE TABLE IF NOT EXISTS note_embeddings (note_id text PRIMARY KEY REFERENCES notes(id)"
              " ON DELETE CASCADE, model text NOT NULL, dims integer NOT NULL, text_hash text NOT NULL,"
              " updated_at bigint NOT NULL, embedding vector NOT NULL)"
            : "CREATE TABLE IF NOT EXISTS note_embeddings (note_id text PRIMARY KEY REFERENCES notes(id)"
              " ON DELETE CASCADE, model text NOT NULL, dims integer NOT NULL, text_hash text NOT NULL,"
              " updated_at bigint NOT NULL, embedding real[] NOT NULL)",
        deadline);
    char *type = NULL;
    if (!e)
        e = query_text(k,
                       "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid ="
                       " 'note_embeddings'::regclass AND attname = 'embedding'",
                       deadline, &type);
    if (!e && v->pgvector && type && !strcmp(type, "real[]"))
        e = pk_pg_exec_simple(k,
                              "ALTER TABLE note_embeddings ALTER COLUMN embedding TYPE vector USING"
                              " embedding::vector",
                              deadline);
    else if (!e && !v->pgvector && type && strcmp(type, "real[]"))
        e = pk_err_new("store_error", 500, "note_embeddings.embedding has type %s, expected real[]", type);
    free(type);
    return e;
}

static pk_err *create_index(pgvs *v, pk_pg_conn *k, const pk_vecstore_pg_config *cfg, int64_t deadline)
{
    char sql[512], want[64], *have = NULL;
    int d = cfg->index_dims;
    snprintf(sql, sizeof sql,
             "SET LOCAL statement_timeout = 0; CREATE INDEX IF NOT EXISTS note_embeddings_hnsw_%d ON"
             " note_embeddings USING hnsw ((embedding::vector(%d)) vector_cosine_ops) WITH (m = %d,"
             " ef_construction = %d) WHERE dims = %d",
             d, d, cfg->hnsw_m, cfg->hnsw_ef_construction, d);
    pk_err *e = pk_pg_exec_simple(k, sql, deadline);
    snprintf(
        sql, sizeof sql,
        "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE relname = 'note_embeddings_hnsw_%d'", d);
    if (!e) e = query_text(k, sql, deadline, &have);
    if (e) return e;
    snprintf(want, sizeof want, "m=%d,ef_construction=%d", cfg->hnsw_m, cfg->hnsw_ef_construction);
    size_t len = strlen(v->detail);
    if (have && strcmp(have, want))
        snprintf(
            v->detail + len, sizeof v->detail - len,
            ", HNSW index note_embeddings_hnsw_%d (cosine) built with %s, not the configured %s (DROP INDEX"
            " note_embeddings_hnsw_%d and restart to rebuild), ef_search=%d",
            d, have, want, d, v->ef_search);
    else
        snprintf(v->detail + len, sizeof v->detail - len,
                 ", HNSW index note_embeddings_hnsw_%d (cosine, %s), ef_search=%d", d, want, v->ef_search);
    free(have);
    v->index_dims = d;
    return NULL;
}

pk_err *pk_vecstore_open_pg(pk_store *pg, const pk_vecstore_pg_config *cfg, pk_vecstore **out)
{
    *out = NULL;
    pk_pg_pool *pool = pk_store_pg_primary_pool(pg);
    if (!pool)
        return pk_err_new("store_error", 500, "the PostgreSQL vector store needs the PostgreSQL store");
    pk_vecstore_pg_config c = *cfg;
    if (!c.hnsw_m) c.hnsw_m = 16;
    if (!c.hnsw_ef_construction) c.hnsw_ef_construction = 64;
    if (!c.hnsw_ef_search) c.hnsw_ef_search = 40;
    if (c.index_dims < 1 || c.index_dims > PK_VEC_DIMS_MAX || c.hnsw_m < 2 || c.hnsw_m > 100 ||
        c.hnsw_ef_construction < 2 * c.hnsw_m || c.hnsw_ef_construction > 1000 || c.hnsw_ef_search < 1 ||
        c.hnsw_ef_search > 1000)
        return pk_err_invalid("vector index settings out of range (dims %d, m %d, ef_construction %d, "
                              "ef_search %d)",
                              c.index_dims, c.hnsw_m, c.hnsw_ef_construction, c.hnsw_ef_search);
    pgvs *v = calloc(1, sizeof *v);
    if (!v) abort();
    v->base.ops = &pg_vec_ops;
    v->base.backend = "postgres";
    v->pool = pool;
    v->ef_search = c.hnsw_ef_search;
    int64_t deadline = pk_mono_ns() + 600 * 1000000000LL; /* building an index over many rows takes time */
    pk_pg_conn *k;
    pk_err *e = pk_pg_pool_acquire(pool, pk_mono_ns() + 30 * 1000000000LL, "vector_setup", &k);
    if (e) {
        free(v);
        return e;
    }
    e = pk_pg_exec_simple(k, "BEGIN; SELECT pg_advisory_xact_lock(" SETUP_LOCK ")", deadline);
    if (!e) e = use_extension(v, k, deadline);
    if (!e) e = create_table(v, k, deadline);
    if (!e && v->pgvector && c.index_dims <= HNSW_DIMS_MAX) e = create_index(v, k, &c, deadline);
    if (!e && v->pgvector && !v->index_dims) {
        size_t len = strlen(v->detail);
        snprintf(v->detail + len, sizeof v->detail - len,
                 ", no HNSW index (pgvector indexes at most %d dimensions, the embedder has %d): exact scan",
                 HNSW_DIMS_MAX, c.index_dims);
    }
    if (!e) e = pk_pg_exec_simple(k, "COMMIT", deadline);
    if (e) pk_err_free(pk_pg_exec_simple(k, "ROLLBACK", deadline));
    pk_pg_pool_release(k);
    if (e) {
        free(v);
        /* start-up fails on this: say what the database said */
        char why[400];
        snprintf(why, sizeof why, "%s", innermost(e));
        return pk_err_wrap(e, e->code, e->status, "cannot set up vector search in PostgreSQL: %s", why);
    }
    v->base.index = v->index_dims ? "pgvector-hnsw" : "exact-scan";
    v->base.detail = v->detail;
    *out = &v->base;
    return NULL;
}
