/*
 * search_index: the in-memory inverted index behind the embedded store's relevance search.
 *
 * Model. Terms live in one open-addressing dictionary (FNV-1a hash of the token bytes). Each term has
 * a postings array of (slot, frequency in title, content, tags), appended in slot order, so every
 * postings array is sorted by slot. A note gets a new slot each time it is indexed; the old slot is
 * marked dead and its postings stay until the next compaction (run when dead postings outnumber live
 * ones), which renumbers slots in order so the arrays stay sorted. The statistics BM25 needs are kept
 * for live notes only: the number of notes, their total tokens, each term's document frequency, each
 * note's token count. They equal what FTS5 keeps for notes_fts, so the scores are the same numbers.
 *
 * A query intersects the postings of its terms, rarest first (the others are searched forward with a
 * galloping binary search), and scores each match with FTS5's bm25 formula and weights (10, 1, 5).
 *
 * Snippets follow FTS5's snippet() rules: for every match position, a window of ntoken tokens around
 * the matches that follow it is scored (1000 per distinct query term in the window, 1 per repeat),
 * and a window starting at the beginning of the match's sentence (after '.' or ':' and a space) is
 * scored with a bonus of 100 (120 at the start of the column); the best window wins (the first on
 * ties, columns in order). Matches inside it are wrapped in the open/close marks, and the ellipsis
 * marks text cut at either end. The unit tests compare ranks and snippets with FTS5 on a corpus.
 */
#include "store/search_index.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the tokenizer: SQLite's own FTS5 one, as notes_fts declares it ---- */

struct pk_fts_tokenizer {
    sqlite3 *db; /* private in-memory connection: owns the fts5_api the tokenizer comes from */
    fts5_tokenizer api;
    void *ud;
};

static const char *const TOKENIZER_ARGS[] = {"unicode61", "remove_diacritics", "2"}; /* porter's arguments */

pk_err *pk_fts_tokenizer_open(pk_fts_tokenizer **out)
{
    *out = NULL;
    pk_fts_tokenizer *f = calloc(1, sizeof *f);
    if (!f) abort();
    fts5_api *api = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(":memory:", &f->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(f->db, "SELECT fts5(?1)", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_pointer(st, 1, (void *)&api, "fts5_api_ptr", NULL);
        sqlite3_step(st);
        rc = sqlite3_finalize(st);
    }
    if (rc == SQLITE_OK && api) rc = api->xFindTokenizer(api, "porter", &f->ud, &f->api);
    if (rc != SQLITE_OK || !api) {
        pk_fts_tokenizer_close(f);
        return pk_err_new("store_error", 500, "SQLite's FTS5 porter tokenizer is not available (rc %d)", rc);
    }
    *out = f;
    return NULL;
}

void pk_fts_tokenizer_close(pk_fts_tokenizer *f)
{
    if (!f) return;
    sqlite3_close(f->db);
    free(f);
}

pk_err *pk_fts_tokenizer_instance(const pk_fts_tokenizer *f, pk_fts_tok *out)
{
    out->owner = f;
    out->t = NULL;
    int rc = f->api.xCreate(f->ud, (const char **)TOKENIZER_ARGS, 3, &out->t);
    if (rc != SQLITE_OK)
        return pk_err_new("store_error", 500, "cannot create the FTS5 tokenizer (rc %d)", rc);
    return NULL;
}

void pk_fts_tok_free(pk_fts_tok *t)
{
    if (t && t->t) t->owner->api.xDelete(t->t);
    if (t) t->t = NULL;
}

typedef int (*token_fn)(void *ctx, int flags, const char *tok, int ntok, int start, int end);

static pk_err *tokenize(pk_fts_tok *t, int flags, const char *text, size_t len, void *ctx, token_fn cb)
{
    if (!text || !len) return NULL;
    if (len > INT32_MAX) return pk_err_new("store_error", 500, "text too long to index");
    int rc = t->owner->api.xTokenize(t->t, ctx, flags, text, (int)len, cb);
    if (rc != SQLITE_OK && rc != SQLITE_DONE) /* SQLITE_DONE: the callback stopped it on purpose */
        return pk_err_new("store_error", 500, "the FTS5 tokenizer failed (rc %d)", rc);
    return NULL;
}

/* ---- the index ---- */

typedef struct posting {
    uint32_t slot;
    uint16_t tf[PK_SEARCH_COLS];
} posting;

typedef struct term {
    char *s;
    uint32_t len, hash;
    posting *p;
    uint32_t n, cap;
    uint32_t df;             /* live notes containing the term */
    uint32_t mark, mark_idx; /* scratch while indexing one note */
} term;

/* A note's slot: what queries read for every posting (24 bytes: a cache line holds 2.7 of them), and,
 * in a parallel array, what only writes and page reads touch. */
typedef struct doc {
    int64_t seq;
    uint32_t len;                     /* tokens in all columns */
    uint32_t col_len[PK_SEARCH_COLS]; /* tokens per column; col_len[0] has bit 31 set once removed */
} doc;
#define DEAD_BIT 0x80000000u
#define ALIVE(d) (!((d)->col_len[0] & DEAD_BIT))

typedef struct doc_cold {
    uint32_t nterms;
    uint32_t stored_len;
    uint32_t *terms; /* distinct term ids, for removal */
    char *stored;    /* pk_search_index_store's copy, or NULL */
} doc_cold;

struct pk_search_index {
    size_t stored_bytes; /* pk_search_index_store's copies */
    term *terms;
    uint32_t nterms, terms_cap;
    uint32_t *tmap; /* term id + 1; 0 = empty */
    uint32_t tmap_cap;
    doc *docs;
    doc_cold *cold; /* parallel to docs */
    uint32_t ndocs, docs_cap, cold_cap;
    uint32_t *dmap; /* slot + 1 of live notes by seq; 0 = empty */
    uint32_t dmap_cap, dmap_n;
    uint64_t live_docs, total_tokens, live_postings, dead_postings, term_bytes;
    uint32_t epoch;
};

static void *grow(void *p, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap) return p;
    uint32_t c = *cap ? *cap : 8;
    while (c < need)
        c *= 2;
    void *q = realloc(p, (size_t)c * elem);
    if (!q) abort();
    *cap = c;
    return q;
}

static uint32_t fnv(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint32_t seq_hash(int64_t seq)
{
    uint64_t x = (uint64_t)seq * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(x >> 32);
}

pk_search_index *pk_search_index_new(void)
{
    pk_search_index *ix = calloc(1, sizeof *ix);
    if (!ix) abort();
    return ix;
}

void pk_search_index_free(pk_search_index *ix)
{
    if (!ix) return;
    for (uint32_t i = 0; i < ix->nterms; i++) {
        free(ix->terms[i].s);
        free(ix->terms[i].p);
    }
    for (uint32_t i = 0; i < ix->ndocs; i++) {
        free(ix->cold[i].terms);
        free(ix->cold[i].stored);
    }
    free(ix->cold);
    free(ix->terms);
    free(ix->tmap);
    free(ix->docs);
    free(ix->dmap);
    free(ix);
}

static long term_find(const pk_search_index *ix, const char *s, size_t n)
{
    if (!ix->tmap_cap) return -1;
    uint32_t h = fnv(s, n), mask = ix->tmap_cap - 1;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        uint32_t v = ix->tmap[i];
        if (!v) return -1;
        const term *t = &ix->terms[v - 1];
        if (t->hash == h && t->len == n && memcmp(t->s, s, n) == 0) return (long)(v - 1);
    }
}

static void tmap_insert(pk_search_index *ix, uint32_t id)
{
    uint32_t mask = ix->tmap_cap - 1;
    uint32_t i = ix->terms[id].hash & mask;
    while (ix->tmap[i])
        i = (i + 1) & mask;
    ix->tmap[i] = id + 1;
}

static uint32_t term_get(pk_search_index *ix, const char *s, size_t n)
{
    long f = term_find(ix, s, n);
    if (f >= 0) return (uint32_t)f;
    if ((uint64_t)(ix->nterms + 1) * 2 > ix->tmap_cap) { /* keep the load under 1/2 */
        free(ix->tmap);
        ix->tmap_cap = ix->tmap_cap ? ix->tmap_cap * 2 : 1024;
        ix->tmap = calloc(ix->tmap_cap, sizeof *ix->tmap);
        if (!ix->tmap) abort();
        for (uint32_t i = 0; i < ix->nterms; i++)
            tmap_insert(ix, i);
    }
    ix->terms = grow(ix->terms, &ix->terms_cap, ix->nterms + 1, sizeof *ix->terms);
    term *t = &ix->terms[ix->nterms];
    memset(t, 0, sizeof *t);
    t->s = malloc(n + 1);
    if (!t->s) abort();
    memcpy(t->s, s, n);
    t->s[n] = 0;
    t->len = (uint32_t)n;
    t->hash = fnv(s, n);
    ix->term_bytes += n + 1;
    tmap_insert(ix, ix->nterms);
    return ix->nterms++;
}

/* seq -> slot map (linear probing, backward-shift deletion) */
static long doc_find(const pk_search_index *ix, int64_t seq, uint32_t *pos)
{
    if (!ix->dmap_cap) return -1;
    uint32_t mask = ix->dmap_cap - 1;
    for (uint32_t i = seq_hash(seq) & mask;; i = (i + 1) & mask) {
        uint32_t v = ix->dmap[i];
        if (!v) return -1;
        if (ix->docs[v - 1].seq == seq) {
            if (pos) *pos = i;
            return (long)(v - 1);
        }
    }
}

static void dmap_insert(pk_search_index *ix, uint32_t slot)
{
    uint32_t mask = ix->dmap_cap - 1;
    uint32_t i = seq_hash(ix->docs[slot].seq) & mask;
    while (ix->dmap[i])
        i = (i + 1) & mask;
    ix->dmap[i] = slot + 1;
}

static void dmap_rebuild(pk_search_index *ix, uint32_t cap)
{
    free(ix->dmap);
    ix->dmap_cap = cap;
    ix->dmap = calloc(cap, sizeof *ix->dmap);
    if (!ix->dmap) abort();
    for (uint32_t s = 0; s < ix->ndocs; s++)
        if (ALIVE(&ix->docs[s])) dmap_insert(ix, s);
}

static void dmap_delete(pk_search_index *ix, uint32_t i)
{
    uint32_t mask = ix->dmap_cap - 1;
    ix->dmap[i] = 0;
    for (uint32_t j = (i + 1) & mask; ix->dmap[j]; j = (j + 1) & mask) {
        uint32_t home = seq_hash(ix->docs[ix->dmap[j] - 1].seq) & mask;
        /* move j back into the hole at i when its home is not in (i, j] (cyclically) */
        bool in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            ix->dmap[i] = ix->dmap[j];
            ix->dmap[j] = 0;
            i = j;
        }
    }
}

static void compact(pk_search_index *ix)
{
    uint32_t *remap = malloc(((size_t)ix->ndocs + 1) * sizeof *remap);
    if (!remap) abort();
    uint32_t live = 0;
    for (uint32_t s = 0; s < ix->ndocs; s++) {
        if (ALIVE(&ix->docs[s])) {
            remap[s] = live;
            ix->cold[live] = ix->cold[s];
            ix->docs[live++] = ix->docs[s];
        } else {
            remap[s] = UINT32_MAX;
            free(ix->cold[s].terms);
            free(ix->cold[s].stored);
        }
    }
    ix->ndocs = live;
    for (uint32_t t = 0; t < ix->nterms; t++) {
        term *tm = &ix->terms[t];
        uint32_t k = 0;
        for (uint32_t i = 0; i < tm->n; i++) {
            uint32_t ns = remap[tm->p[i].slot];
            if (ns == UINT32_MAX) continue;
            tm->p[k] = tm->p[i];
            tm->p[k++].slot = ns;
        }
        tm->n = k;
    }
    free(remap);
    ix->dead_postings = 0;
    dmap_rebuild(ix, ix->dmap_cap);
}

void pk_search_index_remove(pk_search_index *ix, int64_t seq)
{
    uint32_t pos;
    long slot = doc_find(ix, seq, &pos);
    if (slot < 0) return;
    doc *d = &ix->docs[slot];
    doc_cold *dc = &ix->cold[slot];
    for (uint32_t i = 0; i < dc->nterms; i++)
        ix->terms[dc->terms[i]].df--;
    ix->live_docs--;
    ix->total_tokens -= d->len;
    ix->live_postings -= dc->nterms;
    ix->dead_postings += dc->nterms;
    free(dc->terms);
    ix->stored_bytes -= dc->stored_len;
    free(dc->stored);
    *dc = (doc_cold){0};
    d->col_len[0] |= DEAD_BIT;
    dmap_delete(ix, pos);
    ix->dmap_n--;
    if (ix->dead_postings > 4096 && ix->dead_postings > ix->live_postings) compact(ix);
}

typedef struct local_tf {
    uint32_t term;
    uint16_t tf[PK_SEARCH_COLS];
} local_tf;

typedef struct put_ctx {
    pk_search_index *ix;
    int col;
    uint32_t ntok, col_ntok[PK_SEARCH_COLS];
    local_tf *loc;
    uint32_t nloc, loc_cap;
} put_ctx;

static int put_token(void *vc, int flags, const char *tok, int ntok, int start, int end)
{
    (void)start, (void)end;
    put_ctx *c = vc;
    if (flags & FTS5_TOKEN_COLOCATED) return SQLITE_OK; /* not counted by FTS5 either */
    if (ntok <= 0) return SQLITE_OK;
    c->ntok++;
    c->col_ntok[c->col]++;
    uint32_t id = term_get(c->ix, tok, (size_t)ntok);
    term *t = &c->ix->terms[id];
    if (t->mark != c->ix->epoch) {
        t->mark = c->ix->epoch;
        c->loc = grow(c->loc, &c->loc_cap, c->nloc + 1, sizeof *c->loc);
        t->mark_idx = c->nloc;
        c->loc[c->nloc++] = (local_tf){.term = id};
    }
    uint16_t *f = &c->loc[t->mark_idx].tf[c->col];
    if (*f < UINT16_MAX) (*f)++;
    return SQLITE_OK;
}

pk_err *pk_search_index_put(pk_search_index *ix, pk_fts_tok *tok, int64_t seq,
                            const char *const cols[PK_SEARCH_COLS], const size_t lens[PK_SEARCH_COLS])
{
    pk_search_index_remove(ix, seq);
    if (++ix->epoch == 0) { /* wrapped: clear every mark so none looks current */
        for (uint32_t i = 0; i < ix->nterms; i++)
            ix->terms[i].mark = 0;
        ix->epoch = 1;
    }
    put_ctx c = {.ix = ix};
    for (int col = 0; col < PK_SEARCH_COLS; col++) {
        c.col = col;
        pk_err *e =
            tokenize(tok, FTS5_TOKENIZE_DOCUMENT, cols[col], cols[col] ? lens[col] : 0, &c, put_token);
        if (e) {
            free(c.loc);
            return e;
        }
    }
    if (ix->ndocs == UINT32_MAX - 1) compact(ix);
    /* grow the seq map before the new note exists: a rebuild inserts every live note */
    if ((uint64_t)(ix->dmap_n + 1) * 2 > ix->dmap_cap)
        dmap_rebuild(ix, ix->dmap_cap ? ix->dmap_cap * 2 : 1024);
    ix->docs = grow(ix->docs, &ix->docs_cap, ix->ndocs + 1, sizeof *ix->docs);
    ix->cold = grow(ix->cold, &ix->cold_cap, ix->ndocs + 1, sizeof *ix->cold);
    uint32_t slot = ix->ndocs++;
    doc *d = &ix->docs[slot];
    *d = (doc){.seq = seq, .len = c.ntok};
    memcpy(d->col_len, c.col_ntok, sizeof d->col_len);
    d->col_len[0] &= ~DEAD_BIT; /* a title of 2^31 tokens is not a concern */
    doc_cold *dc = &ix->cold[slot];
    *dc = (doc_cold){.nterms = c.nloc};
    dc->terms = malloc(((size_t)c.nloc + 1) * sizeof *dc->terms);
    if (!dc->terms) abort();
    for (uint32_t i = 0; i < c.nloc; i++) {
        term *t = &ix->terms[c.loc[i].term];
        t->p = grow(t->p, &t->cap, t->n + 1, sizeof *t->p);
        posting *p = &t->p[t->n++];
        p->slot = slot;
        memcpy(p->tf, c.loc[i].tf, sizeof p->tf);
        t->df++;
        dc->terms[i] = c.loc[i].term;
    }
    free(c.loc);
    ix->live_docs++;
    ix->total_tokens += c.ntok;
    ix->live_postings += c.nloc;
    dmap_insert(ix, slot);
    ix->dmap_n++;
    return NULL;
}

void pk_search_index_store(pk_search_index *ix, int64_t seq, const void *data, size_t n)
{
    long slot = doc_find(ix, seq, NULL);
    if (slot < 0 || n > UINT32_MAX) return;
    doc_cold *d = &ix->cold[slot];
    ix->stored_bytes -= d->stored_len;
    free(d->stored);
    d->stored = malloc(n ? n : 1);
    if (!d->stored) abort();
    memcpy(d->stored, data, n);
    d->stored_len = (uint32_t)n;
    ix->stored_bytes += n;
}

const void *pk_search_index_stored(const pk_search_index *ix, const pk_search_hit *h, size_t *n)
{
    const doc *d = h->slot < ix->ndocs ? &ix->docs[h->slot] : NULL;
    const doc_cold *dc = d ? &ix->cold[h->slot] : NULL;
    if (!d || !ALIVE(d) || d->seq != h->seq || !dc->stored) {
        *n = 0;
        return NULL;
    }
    *n = dc->stored_len;
    return dc->stored;
}

size_t pk_search_index_docs(const pk_search_index *ix)
{
    return (size_t)ix->live_docs;
}

size_t pk_search_index_bytes(const pk_search_index *ix)
{
    size_t b = sizeof *ix + (size_t)ix->terms_cap * sizeof(term) + (size_t)ix->tmap_cap * 4 +
               (size_t)ix->docs_cap * sizeof(doc) + (size_t)ix->cold_cap * sizeof(doc_cold) +
               (size_t)ix->dmap_cap * 4 + (size_t)ix->term_bytes + ix->stored_bytes;
    for (uint32_t i = 0; i < ix->nterms; i++)
        b += (size_t)ix->terms[i].cap * sizeof(posting);
    for (uint32_t i = 0; i < ix->ndocs; i++)
        b += (size_t)ix->cold[i].nterms * 4;
    return b;
}

/* ---- queries ---- */

typedef struct query_tok {
    char *s;
    int n;
    int count;
} query_tok;

static int query_token(void *vc, int flags, const char *tok, int ntok, int start, int end)
{
    (void)start, (void)end;
    query_tok *q = vc;
    if (flags & FTS5_TOKEN_COLOCATED) return SQLITE_OK;
    if (q->count++ == 0) {
        q->s = malloc((size_t)ntok + 1);
        if (!q->s) abort();
        memcpy(q->s, tok, (size_t)ntok);
        q->s[ntok] = 0;
        q->n = ntok;
    }
    return SQLITE_OK;
}

void pk_search_hits_free(pk_search_hits *h)
{
    free(h->hit);
    for (size_t i = 0; i < h->ntokens; i++)
        free(h->tokens[i]);
    memset(h, 0, sizeof *h);
}

/* first index >= from with p[i].slot >= slot (galloping, then binary search) */
static uint32_t seek(const posting *p, uint32_t n, uint32_t from, uint32_t slot)
{
    uint32_t lo = from, step = 1, hi = from;
    while (hi < n && p[hi].slot < slot) {
        lo = hi + 1;
        hi += step;
        step *= 2;
    }
    if (hi > n) hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (p[mid].slot < slot)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool pk_search_index_query(const pk_search_index *ix, pk_fts_tok *tok, const pk_search_term *terms, size_t n,
                           pk_search_hits *out, pk_err **err)
{
    memset(out, 0, sizeof *out);
    *err = NULL;
    if (n == 0 || n > PK_SEARCH_TERMS_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        if (terms[i].prefix) goto unsupported;
        query_tok q = {0};
        pk_err *e = tokenize(tok, FTS5_TOKENIZE_QUERY, terms[i].text, terms[i].len, &q, query_token);
        if (e || q.count != 1) {
            free(q.s);
            *err = e;
            goto unsupported;
        }
        out->tokens[out->ntokens++] = q.s;
    }
    const term *t[PK_SEARCH_TERMS_MAX];
    double idf[PK_SEARCH_TERMS_MAX];
    for (size_t i = 0; i < n; i++) {
        long id = term_find(ix, out->tokens[i], strlen(out->tokens[i]));
        if (id < 0 || ix->terms[id].df == 0) return true; /* a word no note has: no hits */
        t[i] = &ix->terms[id];
        double nrow = (double)ix->live_docs, nhit = (double)t[i]->df;
        idf[i] = log((nrow - nhit + 0.5) / (nhit + 0.5));
        if (idf[i] <= 0.0) idf[i] = 1e-6;
    }
    size_t drive = 0; /* the rarest term drives the intersection */
    for (size_t i = 1; i < n; i++)
        if (t[i]->n < t[drive]->n) drive = i;
    static const double weight[PK_SEARCH_COLS] = {10.0, 1.0, 5.0}; /* notes_fts's rank: bm25(10, 1, 5) */
    const double k1 = 1.2, b = 0.75;
    double avgdl = (double)ix->total_tokens / (double)ix->live_docs;
    uint32_t cur[PK_SEARCH_TERMS_MAX] = {0};
    size_t cap = 0;
    const term *d = t[drive];
    for (uint32_t j = 0; j < d->n; j++) {
        uint32_t slot = d->p[j].slot;
        if (!ALIVE(&ix->docs[slot])) continue;
        const posting *hit[PK_SEARCH_TERMS_MAX];
        bool all = true;
        for (size_t i = 0; i < n && all; i++) {
            if (i == drive) {
                hit[i] = &d->p[j];
                continue;
            }
            cur[i] = seek(t[i]->p, t[i]->n, cur[i], slot);
            all = cur[i] < t[i]->n && t[i]->p[cur[i]].slot == slot;
            hit[i] = all ? &t[i]->p[cur[i]] : NULL;
        }
        if (!all) continue;
        double D = (double)ix->docs[slot].len, score = 0.0;
        for (size_t i = 0; i < n; i++) {
            double f = 0.0;
            for (int c = 0; c < PK_SEARCH_COLS; c++)
                f += weight[c] * hit[i]->tf[c];
            score += idf[i] * ((f * (k1 + 1.0)) / (f + k1 * (1 - b + b * D / avgdl)));
        }
        if (out->n == cap) {
            cap = cap ? cap * 2 : 64;
            out->hit = realloc(out->hit, cap * sizeof *out->hit);
            if (!out->hit) abort();
        }
        pk_search_hit *ht = &out->hit[out->n++];
        *ht = (pk_search_hit){.seq = ix->docs[slot].seq, .score = score, .slot = slot};
        for (int c = 0; c < PK_SEARCH_COLS; c++) {
            ht->size[c] = ix->docs[slot].col_len[c];
            for (size_t i = 0; i < n; i++)
                ht->inst[c] += hit[i]->tf[c];
        }
    }
    return true;
unsupported:
    pk_search_hits_free(out);
    return false;
}

static int hit_cmp(const void *a, const void *b)
{
    const pk_search_hit *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

static void hit_swap(pk_search_hit *a, pk_search_hit *b)
{
    pk_search_hit t = *a;
    *a = *b;
    *b = t;
}

/* Reorders h[0..n) so that h[0..k) hold the k best (any order); quickselect on a median of three. */
static void select_top(pk_search_hit *h, size_t n, size_t k)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 16 && k > lo && k < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (hit_cmp(&h[mid], &h[lo]) < 0) hit_swap(&h[mid], &h[lo]);
        if (hit_cmp(&h[hi - 1], &h[lo]) < 0) hit_swap(&h[hi - 1], &h[lo]);
        if (hit_cmp(&h[hi - 1], &h[mid]) < 0) hit_swap(&h[hi - 1], &h[mid]);
        pk_search_hit pivot = h[mid];
        size_t i = lo, j = hi - 1;
        for (;;) {
            while (hit_cmp(&h[i], &pivot) < 0)
                i++;
            while (hit_cmp(&h[j], &pivot) > 0)
                j--;
            if (i >= j) break;
            hit_swap(&h[i++], &h[j--]);
        }
        if (k <= j)
            hi = j + 1;
        else
            lo = j + 1;
    }
    if (k > lo && k < hi) qsort(h + lo, hi - lo, sizeof *h, hit_cmp); /* the small range left */
}

void pk_search_hits_rank(pk_search_hits *h, size_t k)
{
    if (k > h->n) k = h->n;
    if (k <= h->sorted) return;
    pk_search_hit *rest = h->hit + h->sorted;
    size_t nrest = h->n - h->sorted, want = k - h->sorted;
    if (want < nrest) select_top(rest, nrest, want);
    qsort(rest, want, sizeof *rest, hit_cmp);
    h->sorted = k;
}

/* ---- snippets ---- */

typedef struct span {
    int start, end; /* byte offsets */
} span;

typedef struct col_toks {
    const char *text;
    span *tok;
    int n, cap; /* tokens read (all of them, unless the reading stopped early) */
    int size;   /* tokens in the column */
    int *first; /* token positions that start a sentence */
    int nfirst, first_cap;
    struct inst {
        int pos, phrase; /* a match: token position, query term */
    } * inst;
    int ninst, inst_cap;
    const pk_search_hits *q;
    int expect, ntoken;                /* matches the hint announces (-1: unknown), window size */
    bool own_tok, own_first, own_inst; /* the arrays moved from the caller's stack to the heap */
} col_toks;

/* Grows an array that starts in a stack buffer (*owned false) and moves to the heap when it outgrows
 * it: most columns fit the stack buffers, so a snippet costs no allocation. */
static void *grow_int(void *p, int *cap, int need, size_t elem, bool *owned)
{
    if (need <= *cap) return p;
    int c = *cap ? *cap : 8;
    while (c < need)
        c *= 2;
    void *q;
    if (*owned) {
        q = realloc(p, (size_t)c * elem);
    } else {
        q = malloc((size_t)c * elem);
        if (q && *cap) memcpy(q, p, (size_t)*cap * elem);
    }
    if (!q) abort();
    *owned = true;
    *cap = c;
    return q;
}

/* All the matches the hint announced are seen, and the longest window after the last one is read:
 * the rest of the column cannot change the snippet. */
static bool window_decided(const col_toks *c, int pos)
{
    return c->expect > 0 && c->ninst >= c->expect && pos >= c->inst[c->ninst - 1].pos + c->ntoken - 1;
}

/* Records the token at [start, end) of c->text and whether a sentence starts there (FTS5's rule: the
 * first token, or one after '.' or ':' followed by white space); returns its position. */
static int add_token(col_toks *c, int start, int end)
{
    int pos = c->n;
    c->tok = grow_int(c->tok, &c->cap, pos + 1, sizeof *c->tok, &c->own_tok);
    c->tok[c->n++] = (span){start, end};
    int i = start;
    while (i > 0 && (c->text[i - 1] == ' ' || c->text[i - 1] == '\t' || c->text[i - 1] == '\n' ||
                     c->text[i - 1] == '\r'))
        i--;
    if (pos == 0 || (i < start && i > 0 && (c->text[i - 1] == '.' || c->text[i - 1] == ':'))) {
        c->first = grow_int(c->first, &c->first_cap, c->nfirst + 1, sizeof *c->first, &c->own_first);
        c->first[c->nfirst++] = pos;
    }
    return pos;
}

/* The token at `pos`, stemmed to tok[0..ntok), is a match of every query term equal to it. */
static void add_matches(col_toks *c, int pos, const char *tok, size_t ntok)
{
    for (size_t p = 0; p < c->q->ntokens; p++) {
        const char *qt = c->q->tokens[p];
        if (strlen(qt) != ntok || memcmp(qt, tok, ntok) != 0) continue;
        c->inst = grow_int(c->inst, &c->inst_cap, c->ninst + 1, sizeof *c->inst, &c->own_inst);
        c->inst[c->ninst++] = (struct inst){pos, (int)p};
    }
}

static int snip_token(void *vc, int flags, const char *tok, int ntok, int start, int end)
{
    col_toks *c = vc;
    if (flags & FTS5_TOKEN_COLOCATED) return SQLITE_OK;
    int pos = add_token(c, start, end);
    add_matches(c, pos, tok, (size_t)ntok);
    return window_decided(c, pos) ? SQLITE_DONE : SQLITE_OK;
}

/* Byte classes of the ASCII snippet scanner: 1 = letter or digit (part of a token), 2 = not ASCII. */
static const unsigned char BYTE_CLASS[256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1,
    ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
#define B2(i) [0x80 + (i)] = 2, [0x81 + (i)] = 2
#define B8(i) B2(i), B2((i) + 2), B2((i) + 4), B2((i) + 6)
#define B32(i) B8(i), B8((i) + 8), B8((i) + 16), B8((i) + 24)
    B32(0),    B32(32),   B32(64),   B32(96)
#undef B32
#undef B8
#undef B2
};

static int stem_token(void *vb, int flags, const char *tok, int ntok, int start, int end)
{
    (void)flags, (void)start, (void)end;
    pk_buf *b = vb;
    if (!b->len) pk_buf_append(b, tok, (size_t)ntok);
    return SQLITE_OK;
}

/* The tokens of an ASCII column without running the whole text through FTS5: for ASCII, unicode61's
 * tokens are the runs of letters and digits. Porter only rewrites a word's ending and always keeps
 * its first two letters (every suffix rule needs a stem with a vowel-consonant sequence before the
 * suffix; "ies" -> "i" keeps the first), so only a token that starts like some query token can stem
 * to it: those alone go through the FTS5 tokenizer. Returns false (c untouched but for capacity) at
 * the first non-ASCII byte: the caller tokenizes with FTS5 then. */
static bool snip_ascii(pk_fts_tok *tok, col_toks *c, const char *text, size_t len, pk_err **err)
{
    pk_buf stem = PK_BUF_INIT;
    for (size_t i = 0; i < len && !*err;) {
        unsigned char cl = 0;
        while (i < len && !((cl = BYTE_CLASS[(unsigned char)text[i]]) & 1)) {
            if (cl) goto not_ascii;
            i++;
        }
        if (i == len) break;
        size_t s = i;
        while (i < len && (cl = BYTE_CLASS[(unsigned char)text[i]]) == 1)
            i++;
        if (i < len && cl == 2) goto not_ascii;
        int pos = add_token(c, (int)s, (int)i);
        /* the first two letters, lowercased (| 0x20 leaves digits as they are) */
        char l0 = (char)(text[s] | 0x20), l1 = s + 1 < i ? (char)(text[s + 1] | 0x20) : 0;
        bool candidate = false;
        for (size_t p = 0; p < c->q->ntokens && !candidate; p++) {
            const char *qt = c->q->tokens[p];
            candidate = qt[0] == l0 && (!qt[1] || qt[1] == l1);
        }
        if (!candidate) {
            if (window_decided(c, pos)) break;
            continue;
        }
        pk_buf_reset(&stem);
        *err = tokenize(tok, FTS5_TOKENIZE_DOCUMENT, text + s, i - s, &stem, stem_token);
        if (!*err) add_matches(c, pos, stem.data ? stem.data : "", stem.len);
    }
    pk_buf_free(&stem);
    return true;
not_ascii:
    pk_buf_free(&stem);
    c->n = c->nfirst = c->ninst = 0;
    return false;
}

/* Score of the window [pos, pos + ntoken) of column c; *adj = where a window centred on its matches
 * starts (FTS5's rule). */
static int window_score(const col_toks *c, unsigned char *seen, size_t nphrase, int pos, int ntoken, int *adj)
{
    memset(seen, 0, nphrase);
    int score = 0, first = -1, last = 0;
    int64_t end = (int64_t)pos + ntoken;
    int lo = 0, hi = c->ninst; /* instances are in position order: find the first at or after pos */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (c->inst[mid].pos < pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (int i = lo; i < c->ninst && c->inst[i].pos < end; i++) {
        int io = c->inst[i].pos;
        int p = c->inst[i].phrase;
        score += seen[p] ? 1 : 1000;
        seen[p] = 1;
        if (first < 0) first = io;
        last = io + 1;
    }
    if (adj) {
        int64_t a = first - (ntoken - (last - first)) / 2;
        if (a + ntoken > c->size) a = c->size - ntoken;
        if (a < 0) a = 0;
        *adj = (int)a;
    }
    return score;
}

pk_err *pk_search_snippet(pk_fts_tok *tok, const pk_search_hits *q, const pk_search_hit *hint,
                          const char *const cols[PK_SEARCH_COLS], const size_t lens[PK_SEARCH_COLS],
                          const char *open, const char *close, const char *ellipsis, int ntoken, pk_buf *out)
{
    col_toks c[PK_SEARCH_COLS];
    memset(c, 0, sizeof c);
    span tok_stack[PK_SEARCH_COLS][256];
    int first_stack[PK_SEARCH_COLS][32];
    struct inst inst_stack[PK_SEARCH_COLS][32];
    for (int i = 0; i < PK_SEARCH_COLS; i++) {
        c[i].tok = tok_stack[i], c[i].cap = 256;
        c[i].first = first_stack[i], c[i].first_cap = 32;
        c[i].inst = inst_stack[i], c[i].inst_cap = 32;
    }
    pk_err *e = NULL;
    unsigned char seen[PK_SEARCH_TERMS_MAX];
    int best_col = 0, best_start = 0, best_score = 0;
    for (int i = 0; i < PK_SEARCH_COLS && !e; i++) {
        c[i].text = cols[i] ? cols[i] : "";
        c[i].q = q;
        size_t n = cols[i] ? lens[i] : 0;
        if (hint && hint->inst[i] == 0) { /* no match in this column: nothing to read */
            c[i].size = (int)hint->size[i];
            continue;
        }
        c[i].expect = hint ? (int)hint->inst[i] : -1;
        c[i].ntoken = ntoken;
        if (!snip_ascii(tok, &c[i], c[i].text, n, &e))
            e = tokenize(tok, FTS5_TOKENIZE_DOCUMENT, cols[i], n, &c[i], snip_token);
        c[i].size = hint && c[i].n < (int)hint->size[i] ? (int)hint->size[i] : c[i].n;
        for (int ii = 0; !e && ii < c[i].ninst; ii++) {
            int io = c[i].inst[ii].pos, adj;
            int score = window_score(&c[i], seen, q->ntokens, io, ntoken, &adj);
            if (score > best_score) {
                best_score = score;
                best_col = i;
                best_start = adj;
            }
            if (c[i].nfirst && c[i].size > ntoken) {
                int jj = 0;
                for (; jj < c[i].nfirst - 1; jj++)
                    if (c[i].first[jj + 1] > io) break;
                int s0 = c[i].first[jj];
                if (s0 < io) {
                    score = window_score(&c[i], seen, q->ntokens, s0, ntoken, NULL) + (s0 == 0 ? 120 : 100);
                    if (score > best_score) {
                        best_score = score;
                        best_col = i;
                        best_start = s0;
                    }
                }
            }
        }
    }
    if (!e) {
        const col_toks *b = &c[best_col];
        const char *text = b->text;
        size_t tlen = cols[best_col] ? lens[best_col] : 0;
        int range_end = best_start + ntoken - 1;
        if (best_start > 0) pk_buf_puts(out, ellipsis);
        int off = best_start > 0 && best_start < b->n ? b->tok[best_start].start : 0;
        bool opened = false;
        int next = 0; /* the first instance at or after pos */
        for (int pos = best_start; pos < b->n && pos <= range_end; pos++) {
            int st = b->tok[pos].start, en = b->tok[pos].end;
            while (next < b->ninst && b->inst[next].pos < pos)
                next++;
            bool m = next < b->ninst && b->inst[next].pos == pos;
            if (opened && st > off) {
                pk_buf_puts(out, close);
                opened = false;
            }
            if (m) {
                if (!opened) {
                    pk_buf_append(out, text + off, (size_t)(st - off));
                    pk_buf_puts(out, open);
                    off = st;
                    opened = true;
                }
                pk_buf_append(out, text + off, (size_t)(en - off));
                off = en;
            }
            if (pos == range_end) {
                if (opened) pk_buf_puts(out, close);
                opened = false;
                pk_buf_append(out, text + off, (size_t)(en - off));
                off = en;
            }
        }
        if (opened) pk_buf_puts(out, close);
        if (range_end >= b->size - 1)
            pk_buf_append(out, text + off, tlen - (size_t)off);
        else
            pk_buf_puts(out, ellipsis);
    }
    for (int i = 0; i < PK_SEARCH_COLS; i++) {
        if (c[i].own_tok) free(c[i].tok);
        if (c[i].own_first) free(c[i].first);
        if (c[i].own_inst) free(c[i].inst);
    }
    return e;
}
