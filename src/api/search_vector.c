/*
 * GET /v1/search?mode=semantic|hybrid (mode=fulltext, the default, is notes.c's FTS search).
 *
 * semantic: the query is embedded by the same embeddings provider as the notes (src/ai/: the local
 * embedder or the OpenAI-compatible API, within the request's deadline) and ranked against the stored
 * note vectors of that model through the task service's vector store (store/vecstore.h: exact scan, or
 * pgvector's HNSW index on PostgreSQL; meta.vector_index says which); results are the top `limit` notes
 * with "score" = cosine similarity. A provider failure is the request's error (503 with Retry-After
 * while its breaker is open, 504 on timeout, 502 when it refuses).
 * hybrid: reciprocal rank fusion (Cormack et al. 2009) of the full-text ranking and the vector
 * ranking, each cut at 50: score = sum over the lists of 1 / (60 + rank), rank from 1. RRF needs no
 * score calibration between BM25 and cosine, which is why it is the usual choice.
 *
 * Only `q`, `limit` and `mode` are accepted here (filters apply to full-text search only); results
 * are one page (next_cursor null). Notes deleted since they were embedded are skipped. MCP's
 * search_notes with mode semantic|hybrid runs the same pk_api_vector_search_run.
 */
#include "api/api.h"
#include "ai/ai.h"
#include "server/services.h"
#include "tasks/tasks.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RRF_K 60.0
#define DEPTH 50

typedef struct vjob {
    char *q;
    int limit;
    bool hybrid;
} vjob;

static void vjob_free(void *p)
{
    vjob *d = p;
    free(d->q);
    free(d);
}

typedef struct cand {
    char id[37];
    double score;
    int fts_rank, vec_rank;
} cand;

static cand *find_or_add(cand *c, int *n, const char *id)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(c[i].id, id)) return &c[i];
    memset(&c[*n], 0, sizeof c[*n]);
    snprintf(c[*n].id, sizeof c[*n].id, "%s", id);
    return &c[(*n)++];
}

static int by_score(const void *a, const void *b)
{
    double x = ((const cand *)a)->score, y = ((const cand *)b)->score;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The vector ranking: the k nearest note vectors to the embedded query. */
static void vector_hits(pk_job *j, pk_vecstore *vs, const char *q, int k, pk_vector_hit *hits, int *nh)
{
    pk_ai *ai = pk_services_ai(j->srv);
    int dims = pk_ai_embed_dims(ai);
    float *qv = malloc(sizeof(float) * (size_t)dims);
    if (!qv) abort();
    pk_ai_call call = {.deadline_ns = j->op.deadline_ns};
    size_t qlen = strlen(q);
    const char *texts[1] = {q};
    *nh = 0;
    j->err = pk_ai_embed(ai, &call, texts, &qlen, 1, qv);
    if (!j->err)
        PK_STORE_CALL(j, pk_vecstore_search(vs, &j->op, pk_ai_embed_model(ai), qv, dims, k, hits, nh));
    free(qv);
}

/* Adds the full-text ranking (top DEPTH) to the candidates, RRF-scored. */
static void fulltext_ranks(pk_job *j, const char *q, cand *c, int *nc)
{
    pk_note_query nq = {.text = q, .flagged = -1, .limit = DEPTH, .sort = PK_SORT_RELEVANCE};
    pk_page pg = {0};
    PK_STORE_CALL(j, pk_store_note_search(j->srv->store, &j->op, &nq, &pg));
    cJSON *arr = NULL;
    if (!j->err && !pk_json_parse(pg.items.data, pg.items.len, 64, &arr)) {
        int rank = 0;
        for (const cJSON *it = arr->child; it; it = it->next) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
            if (!cJSON_IsString(id)) continue;
            cand *x = find_or_add(c, nc, id->valuestring);
            x->fts_rank = ++rank;
            x->score += 1.0 / (RRF_K + rank);
        }
    }
    cJSON_Delete(arr);
    pk_page_free(&pg);
}

/* Writes the top `limit` candidates that still exist as note objects with their ranking members. A
 * vector whose note is gone is dropped on the way (the PostgreSQL store cascades; this is for the
 * embedded one when note.embed has not run yet). */
static int write_notes(pk_job *j, pk_vecstore *vs, const cand *c, int nc, int limit, bool hybrid, pk_buf *out)
{
    pk_jw w;
    pk_jw_init(&w, out);
    pk_jw_arr_open(&w);
    int count = 0;
    for (int i = 0; i < nc && count < limit && !j->err; i++) {
        pk_buf nb = PK_BUF_INIT;
        int64_t version;
        PK_STORE_CALL(j, pk_store_note_get(j->srv->store, &j->op, c[i].id, &nb, &version));
        if (j->err && pk_err_is(j->err, "not_found")) {
            pk_err_free(j->err);
            j->err = NULL;
            pk_buf_free(&nb);
            if (c[i].vec_rank) pk_err_free(pk_vecstore_remove(vs, &j->op, c[i].id));
            continue;
        }
        if (!j->err && nb.len > 1 && nb.data[nb.len - 1] == '}') {
            nb.len--; /* splice the ranking members into the note object */
            pk_buf_printf(&nb, ",\"score\":%.6f", c[i].score);
            if (hybrid)
                pk_buf_printf(&nb, ",\"fulltext_rank\":%d,\"vector_rank\":%d", c[i].fts_rank, c[i].vec_rank);
            pk_buf_putc(&nb, '}');
            pk_jw_raw(&w, nb.data, nb.len);
            count++;
        }
        pk_buf_free(&nb);
    }
    pk_jw_arr_close(&w);
    return count;
}

void pk_api_vector_search_run(pk_job *j, const char *q, int limit, bool hybrid, pk_buf *out, int *count,
                              const char **index)
{
    *count = 0;
    pk_tasks *t = pk_services_tasks(j->srv);
    if (!t) {
        j->err = pk_err_unavailable("semantic search needs the task service (pake serve)");
        return;
    }
    pk_vecstore *vs = pk_tasks_vectors(t);
    *index = vs->index;
    int k = hybrid ? (limit > DEPTH ? limit : DEPTH) : limit;
    pk_vector_hit *hits = calloc((size_t)k, sizeof *hits);
    cand *c = calloc((size_t)(k + DEPTH), sizeof *c);
    if (!hits || !c) abort();
    int nh = 0, nc = 0;
    vector_hits(j, vs, q, k, hits, &nh);
    for (int i = 0; !j->err && i < nh; i++) {
        cand *x = find_or_add(c, &nc, hits[i].note_id);
        x->vec_rank = i + 1;
        x->score = hybrid ? 1.0 / (RRF_K + i + 1) : hits[i].score;
    }
    if (!j->err && hybrid) fulltext_ranks(j, q, c, &nc);
    if (!j->err) {
        qsort(c, (size_t)nc, sizeof *c, by_score);
        *count = write_notes(j, vs, c, nc, limit, hybrid, out);
    }
    free(hits);
    free(c);
}

static void work_vector(pk_job *j)
{
    vjob *d = j->data;
    int count = 0;
    const char *index = "";
    pk_api_vector_search_run(j, d->q, d->limit, d->hybrid, &j->body, &count, &index);
    if (j->err) return;
    pk_buf m = PK_BUF_INIT;
    pk_buf_printf(&m,
                  "\"pagination\":{\"limit\":%d,\"count\":%d,\"next_cursor\":null},\"mode\":\"%s\","
                  "\"vector_index\":\"%s\"",
                  d->limit, count, d->hybrid ? "hybrid" : "semantic", index);
    j->meta_extra = pk_buf_steal(&m, NULL);
    j->status = 200;
}

void pk_api_search_vector(pk_req *r, bool hybrid)
{
    if (!pk_services_tasks(r->srv))
        return pk_respond_error(r, pk_err_unavailable("semantic search needs the task service (pake serve)"));
    vjob *d = calloc(1, sizeof *d);
    d->hybrid = hybrid;
    d->limit = 20;
    pk_err *ve = NULL;
    size_t cur = 0;
    h2o_iovec_t k;
    const char *v;
    bool bad = false;
    for (; pk_req_query_pair(r, &cur, &k, &v, &bad); bad = false) {
        char key[32];
        snprintf(key, sizeof key, "%.*s", (int)(k.len < 31 ? k.len : 31), k.base);
        pk_api_printable(key);
        if (!ve && bad) ve = pk_err_invalid("the request has invalid query parameters");
        if (bad) {
            pk_err_add_field(ve, key, "is not valid percent-encoded UTF-8");
        } else if (!strcmp(key, "q")) {
            free(d->q);
            d->q = strdup(v);
        } else if (!strcmp(key, "limit")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 1 || n > 100) {
                if (!ve) ve = pk_err_invalid("the request has invalid query parameters");
                pk_err_add_field(ve, "limit", "must be an integer from 1 to 100");
            } else
                d->limit = (int)n;
        } else if (strcmp(key, "mode")) {
            if (!ve) ve = pk_err_invalid("the request has invalid query parameters");
            pk_err_add_field(ve, key,
                             "is not supported with mode=semantic or mode=hybrid (only q and limit)");
        }
    }
    if (!ve && (!d->q || !*d->q)) {
        ve = pk_err_invalid("the request has invalid query parameters");
        pk_err_add_field(ve, "q", "is required");
    }
    if (!ve) ve = pk_api_guard(r, PK_SURFACE_SEARCH_QUERY, "q", d->q, strlen(d->q), NULL);
    if (ve) {
        vjob_free(d);
        return pk_respond_error(r, ve);
    }
    pk_offload(r, work_vector, NULL, d, vjob_free);
}
