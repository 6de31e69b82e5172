/* The in-memory search index against FTS5 itself: on a generated corpus (with updates and deletes),
 * every query must give the same notes, the same BM25 scores, the same order and the same snippets as
 * the notes_fts statement it replaces. */
#include "store/search_index.h"
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const WORDS[] = {
    "run",       "running", "runs",     "runner",    "note",    "notes",  "noting",   "search",
    "searching", "index",   "indexes",  "indexed",   "café",    "Zürich", "naïve",    "résumé",
    "market",    "markets", "graph",    "vector",    "token",   "tokens", "queue",    "worker",
    "workers",   "the",     "a",        "of",        "and",     "to",     "in",       "is",
    "it",        "for",     "on",       "with",      "as",      "system", "prompt",   "rare",
    "unique",    "zebra",   "alpha",    "beta",      "gamma",   "delta",  "epsilon",  "lambda",
    "omega",     "river",   "mountain", "city",      "Leipzig", "Zagreb", "analysis", "analyses",
    "analyzing", "connect", "connects", "connected", "x1",      "42",     "2026",     "data-set",
    "e-mail",    "O'Brien", "über",     "straße",    "naive",   "resume", "ΑΘΗΝΑ",    "東京",
    "knowledge", "engine",  "server",   "fast",      "safe",    "boring", "operate",  "sentence",
    "colon",
};
#define NWORDS (sizeof WORDS / sizeof WORDS[0])
#define NDOCS 700

static uint64_t rng = 88172645463325252ull;
static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* Words with skewed frequencies (the first ones common), sentences ending in '.', ':' or '!', line
 * breaks and extra spaces, so sentence starts and windows vary. */
static bool ascii_only; /* the note being generated uses ASCII words only */

static void gen_text(pk_buf *b, int words)
{
    for (int i = 0; i < words; i++) {
        uint32_t r = next_rand();
        size_t w = (r % 3 == 0) ? r % NWORDS : (r >> 8) % (NWORDS / 3);
        while (ascii_only &&
               strspn(WORDS[w], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-'") !=
                   strlen(WORDS[w]))
            w = next_rand() % NWORDS;
        if (i) {
            uint32_t p = next_rand() % 20;
            pk_buf_puts(b, p == 0   ? ". "
                           : p == 1 ? ": "
                           : p == 2 ? "!\n"
                           : p == 3 ? ",  "
                           : p == 4 ? ".\n\n"
                                    : " ");
        }
        pk_buf_puts(b, WORDS[w]);
    }
    if (next_rand() % 2) pk_buf_putc(b, '.');
}

typedef struct corpus {
    sqlite3 *db;
    pk_fts_tokenizer *tk;
    pk_fts_tok tok;
    pk_search_index *ix;
} corpus;

static void put(corpus *c, int64_t seq)
{
    pk_buf col[3] = {PK_BUF_INIT, PK_BUF_INIT, PK_BUF_INIT};
    ascii_only = next_rand() % 2;
    gen_text(&col[0], 1 + (int)(next_rand() % 6));
    /* one content in eight is long: past the snippet's stack buffers (256 tokens, 32 matches) */
    gen_text(&col[1], next_rand() % 8 ? (int)(next_rand() % 160) : 250 + (int)(next_rand() % 500));
    pk_buf_puts(&col[2], "[\"");
    gen_text(&col[2], (int)(next_rand() % 3));
    pk_buf_puts(&col[2], "\"]");
    char del[64]; /* delete + insert: REPLACE would not fire the delete trigger FTS5 needs */
    snprintf(del, sizeof del, "DELETE FROM n WHERE seq = %lld", (long long)seq);
    cr_assert_eq(sqlite3_exec(c->db, del, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(c->db, "INSERT INTO n(seq, title, content, tags) VALUES (?, ?, ?, ?)", -1,
                                    &st, NULL),
                 SQLITE_OK);
    sqlite3_bind_int64(st, 1, seq);
    const char *cols[3];
    size_t lens[3];
    for (int i = 0; i < 3; i++) {
        cols[i] = col[i].data ? col[i].data : "";
        lens[i] = col[i].len;
        sqlite3_bind_text(st, i + 2, cols[i], (int)lens[i], SQLITE_TRANSIENT);
    }
    cr_assert_eq(sqlite3_step(st), SQLITE_DONE, "%s", sqlite3_errmsg(c->db));
    sqlite3_finalize(st);
    pk_err *e = pk_search_index_put(c->ix, &c->tok, seq, cols, lens);
    cr_assert_null(e);
    for (int i = 0; i < 3; i++)
        pk_buf_free(&col[i]);
}

static void corpus_open(corpus *c)
{
    memset(c, 0, sizeof *c);
    cr_assert_eq(sqlite3_open(":memory:", &c->db), SQLITE_OK);
    /* notes_fts as the store declares it (src/store/sqlite_schema.c, migration 2) */
    const char *ddl =
        "CREATE TABLE n(seq INTEGER PRIMARY KEY, title TEXT, content TEXT, tags TEXT);"
        "CREATE VIRTUAL TABLE f USING fts5(title, content, tags, content='n', content_rowid='seq',"
        " tokenize='porter unicode61 remove_diacritics 2');"
        "INSERT INTO f(f, rank) VALUES ('rank', 'bm25(10.0, 1.0, 5.0)');"
        "CREATE TRIGGER n_ai AFTER INSERT ON n BEGIN INSERT INTO f(rowid, title, content, tags)"
        " VALUES (new.seq, new.title, new.content, new.tags); END;"
        "CREATE TRIGGER n_ad AFTER DELETE ON n BEGIN INSERT INTO f(f, rowid, title, content, tags)"
        " VALUES ('delete', old.seq, old.title, old.content, old.tags); END;";
    cr_assert_eq(sqlite3_exec(c->db, ddl, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(c->db));
    cr_assert_null(pk_fts_tokenizer_open(&c->tk));
    cr_assert_null(pk_fts_tokenizer_instance(c->tk, &c->tok));
    c->ix = pk_search_index_new();
    for (int64_t s = 1; s <= NDOCS; s++)
        put(c, s);
    /* updates (a note re-indexed under the same seq) and deletes, enough to compact */
    for (int i = 0; i < NDOCS / 2; i++)
        put(c, 1 + (int64_t)(next_rand() % NDOCS));
    for (int i = 0; i < NDOCS / 5; i++) {
        int64_t s = 1 + (int64_t)(next_rand() % NDOCS);
        char sql[64];
        snprintf(sql, sizeof sql, "DELETE FROM n WHERE seq = %lld", (long long)s);
        cr_assert_eq(sqlite3_exec(c->db, sql, NULL, NULL, NULL), SQLITE_OK);
        pk_search_index_remove(c->ix, s);
    }
}

static void corpus_close(corpus *c)
{
    pk_search_index_free(c->ix);
    pk_fts_tok_free(&c->tok);
    pk_fts_tokenizer_close(c->tk);
    sqlite3_close(c->db);
}

/* Runs `query` (user syntax) both ways and compares everything. Returns the number of hits. */
static size_t compare(corpus *c, const char *query)
{
    pk_search_term t[PK_SEARCH_TERMS_MAX];
    size_t nt = 0;
    pk_err *e = pk_search_terms(query, t, &nt);
    cr_assert_null(e, "terms of [%s]", query);
    pk_buf match = PK_BUF_INIT;
    cr_assert_null(pk_fts5_query(query, &match));
    pk_search_hits h;
    cr_assert(pk_search_index_query(c->ix, &c->tok, t, nt, &h, &e), "index refused [%s]", query);
    cr_assert_null(e);
    pk_search_hits_rank(&h, h.n);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(c->db,
                                    "SELECT f.rowid, -f.rank, snippet(f, -1, '<mark>', '</mark>', '...', 24),"
                                    " n.title, n.content, n.tags FROM f JOIN n ON n.seq = f.rowid"
                                    " WHERE f MATCH ? ORDER BY f.rank",
                                    -1, &st, NULL),
                 SQLITE_OK);
    sqlite3_bind_text(st, 1, match.data, -1, SQLITE_STATIC);
    size_t i = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        cr_assert_lt(i, h.n, "[%s]: FTS5 has more than the index's %zu hits", query, h.n);
        int64_t seq = sqlite3_column_int64(st, 0);
        double score = sqlite3_column_double(st, 1);
        /* equal scores may come in any order from FTS5: compare the score at this rank, and the note
         * among those with that score */
        cr_assert(fabs(h.hit[i].score - score) <= 1e-9 * fabs(score),
                  "[%s] rank %zu: score %.17g, FTS5 %.17g", query, i, h.hit[i].score, score);
        bool found = false;
        for (size_t j = 0; j < h.n && !found; j++)
            found = h.hit[j].seq == seq && fabs(h.hit[j].score - score) <= 1e-9 * fabs(score);
        cr_assert(found, "[%s]: note %lld (score %g) not among the index's hits", query, (long long)seq,
                  score);
        const char *cols[3];
        size_t lens[3];
        for (int k = 0; k < 3; k++) {
            cols[k] = (const char *)sqlite3_column_text(st, 3 + k);
            lens[k] = (size_t)sqlite3_column_bytes(st, 3 + k);
        }
        const pk_search_hit *hint = NULL;
        for (size_t j = 0; j < h.n && !hint; j++)
            hint = h.hit[j].seq == seq ? &h.hit[j] : NULL;
        for (int with_hint = 0; with_hint < 2;
             with_hint++) { /* reading it all, and only what the hit needs */
            pk_buf snip = PK_BUF_INIT;
            cr_assert_null(pk_search_snippet(&c->tok, &h, with_hint ? hint : NULL, cols, lens, "<mark>",
                                             "</mark>", "...", 24, &snip));
            pk_buf_putc(&snip, 0);
            cr_assert_str_eq(snip.data, (const char *)sqlite3_column_text(st, 2),
                             "[%s] note %lld: snippet (hint %d)", query, (long long)seq, with_hint);
            pk_buf_free(&snip);
        }
        i++;
    }
    cr_assert_eq(i, h.n, "[%s]: index %zu hits, FTS5 %zu", query, h.n, i);
    sqlite3_finalize(st);
    pk_search_hits_free(&h);
    pk_buf_free(&match);
    return i;
}

Test(search_index, same_hits_scores_order_and_snippets_as_fts5, .timeout = 60)
{
    corpus c;
    corpus_open(&c);
    size_t total = 0;
    for (size_t w = 0; w < NWORDS; w++)
        if (!strchr(WORDS[w], '-') && !strchr(WORDS[w], '\'')) total += compare(&c, WORDS[w]); /* one token */
    const char *multi[] = {
        "run note",          "search index the",      "cafe zurich",  "CAFÉ",
        "runs runs",         "\"market\" analysis",   "x1 42",        "naive resume",
        "zebra nonexistent", "the a of and to in is", "straße ΑΘΗΝΑ", "worker queue token"};
    for (size_t q = 0; q < sizeof multi / sizeof multi[0]; q++)
        total += compare(&c, multi[q]);
    cr_assert_gt(total, 5000, "the corpus should give many hits (%zu)", total);
    corpus_close(&c);
}

Test(search_index, refuses_what_fts5_must_answer)
{
    corpus c;
    corpus_open(&c);
    const char *refused[] = {"run*", "data-set", "\"knowledge engine\"", "e-mail run"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        pk_search_term t[PK_SEARCH_TERMS_MAX];
        size_t nt = 0;
        pk_err *e = pk_search_terms(refused[i], t, &nt);
        cr_assert_null(e);
        pk_search_hits h;
        cr_assert_not(pk_search_index_query(c.ix, &c.tok, t, nt, &h, &e), "[%s] must go to FTS5", refused[i]);
        cr_assert_null(e);
        cr_assert_eq(h.n, 0);
    }
    corpus_close(&c);
}

Test(search_index, remove_and_reput_keep_statistics)
{
    corpus c;
    corpus_open(&c);
    size_t before = pk_search_index_docs(c.ix);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(c.db, "SELECT count(*) FROM n", -1, &st, NULL);
    sqlite3_step(st);
    cr_assert_eq(before, (size_t)sqlite3_column_int64(st, 0));
    sqlite3_finalize(st);
    /* indexing every note again (an update each) leaves one live entry per note: no hit twice */
    for (int round = 0; round < 2; round++)
        for (int64_t s = 1; s <= NDOCS; s++)
            put(&c, s);
    cr_assert_eq(pk_search_index_docs(c.ix), NDOCS);
    for (size_t w = 0; w < 20; w++) {
        pk_search_term t1[1] = {{WORDS[w], strlen(WORDS[w]), false, false}};
        pk_search_hits h1;
        pk_err *e1;
        cr_assert(pk_search_index_query(c.ix, &c.tok, t1, 1, &h1, &e1));
        for (size_t i = 0; i < h1.n; i++)
            for (size_t j = i + 1; j < h1.n; j++)
                cr_assert_neq(h1.hit[i].seq, h1.hit[j].seq, "note %lld twice for %s",
                              (long long)h1.hit[i].seq, WORDS[w]);
        pk_search_hits_free(&h1);
    }
    compare(&c, "run");
    /* removing everything and a second removal of the same note are harmless */
    for (int64_t s = 1; s <= NDOCS; s++) {
        pk_search_index_remove(c.ix, s);
        pk_search_index_remove(c.ix, s);
    }
    cr_assert_eq(pk_search_index_docs(c.ix), 0);
    pk_search_term t[1] = {{"run", 3, false, false}};
    pk_search_hits h;
    pk_err *e;
    cr_assert(pk_search_index_query(c.ix, &c.tok, t, 1, &h, &e));
    cr_assert_eq(h.n, 0);
    pk_search_hits_free(&h);
    corpus_close(&c);
}

Test(search_index, partial_ranking_gives_the_best_first)
{
    pk_search_hits h = {0};
    h.n = 1000;
    h.hit = calloc(h.n, sizeof *h.hit);
    for (size_t i = 0; i < h.n; i++)
        h.hit[i] = (pk_search_hit){.seq = (int64_t)i, .score = (double)(next_rand() % 50)};
    pk_search_hits_rank(&h, 21);
    cr_assert_eq(h.sorted, 21);
    for (size_t i = 1; i < 21; i++)
        cr_assert(h.hit[i - 1].score > h.hit[i].score ||
                  (h.hit[i - 1].score == h.hit[i].score && h.hit[i - 1].seq < h.hit[i].seq));
    for (size_t i = 21; i < h.n; i++)
        cr_assert(h.hit[i].score <= h.hit[20].score);
    pk_search_hits_rank(&h, 500);
    for (size_t i = 1; i < 500; i++)
        cr_assert(h.hit[i - 1].score >= h.hit[i].score);
    free(h.hit);
}

/* Every note indexed again several times (updates), across the growth of the seq map and without a
 * compaction in between: one live entry per note, exact note count, no hit twice. */
Test(search_index, reindexing_keeps_one_entry_per_note)
{
    pk_fts_tokenizer *tk;
    cr_assert_null(pk_fts_tokenizer_open(&tk));
    pk_fts_tok tok;
    cr_assert_null(pk_fts_tokenizer_instance(tk, &tok));
    pk_search_index *ix = pk_search_index_new();
    enum { N = 600 };
    for (int round = 0; round < 4; round++)
        for (int64_t s = 1; s <= N; s++) {
            char title[64];
            snprintf(title, sizeof title, "common word%lld round%d", (long long)s, round);
            const char *cols[3] = {title, "", "[]"};
            size_t lens[3] = {strlen(title), 0, 2};
            cr_assert_null(pk_search_index_put(ix, &tok, s, cols, lens));
            cr_assert_eq(pk_search_index_docs(ix), round ? N : (size_t)s);
        }
    pk_search_term t[1] = {{"common", 6, false, false}};
    pk_search_hits h;
    pk_err *e;
    cr_assert(pk_search_index_query(ix, &tok, t, 1, &h, &e));
    cr_assert_eq(h.n, N);
    char *seen = calloc(N + 1, 1);
    for (size_t i = 0; i < h.n; i++) {
        cr_assert(h.hit[i].seq >= 1 && h.hit[i].seq <= N);
        cr_assert_not(seen[h.hit[i].seq], "note %lld twice", (long long)h.hit[i].seq);
        seen[h.hit[i].seq] = 1;
    }
    free(seen);
    pk_search_hits_free(&h);
    pk_search_index_free(ix);
    pk_fts_tok_free(&tok);
    pk_fts_tokenizer_close(tk);
}
