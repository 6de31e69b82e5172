/*
 * libFuzzer target over the in-memory search index (store/search_index): the query-term splitter,
 * the index's tokenization of note text, its query and its snippets (including the ASCII scanner that
 * avoids the FTS5 tokenizer). Differential: the same note goes into an FTS5 table declared like
 * notes_fts, and the index must agree with FTS5 on whether the note matches, its BM25 score and its
 * snippet, with and without the hit's hints. Beyond that, no crash and no sanitizer report.
 * Input: the query up to the first newline, then title, content and tags separated by NUL bytes.
 */
#include "store/search_index.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static sqlite3 *db;
static pk_fts_tokenizer *tk;
static sqlite3_stmt *ins, *del, *sel;

static void setup(void)
{
    if (db) return;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK) abort();
    const char *ddl = "CREATE VIRTUAL TABLE f USING fts5(title, content, tags,"
                      " tokenize='porter unicode61 remove_diacritics 2');"
                      "INSERT INTO f(f, rank) VALUES ('rank', 'bm25(10.0, 1.0, 5.0)');";
    if (sqlite3_exec(db, ddl, NULL, NULL, NULL) != SQLITE_OK) abort();
    if (sqlite3_prepare_v2(db, "INSERT INTO f(rowid, title, content, tags) VALUES (1, ?, ?, ?)", -1, &ins,
                           NULL) ||
        sqlite3_prepare_v2(db, "DELETE FROM f", -1, &del, NULL) ||
        sqlite3_prepare_v2(
            db, "SELECT -rank, snippet(f, -1, '<mark>', '</mark>', '...', 24) FROM f WHERE f MATCH ?", -1,
            &sel, NULL))
        abort();
    if (pk_fts_tokenizer_open(&tk)) abort();
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    setup();
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    if (!nl) return 0;
    char *query = strndup(s, (size_t)(nl - s)); /* stops at a NUL too, as the API's C string would */
    const char *cols[PK_SEARCH_COLS] = {"", "", ""};
    size_t lens[PK_SEARCH_COLS] = {0, 0, 0};
    const char *p = nl + 1, *end = s + size;
    for (int c = 0; c < PK_SEARCH_COLS && p <= end; c++) {
        const char *z = memchr(p, 0, (size_t)(end - p));
        cols[c] = p;
        lens[c] = z ? (size_t)(z - p) : (size_t)(end - p);
        p += lens[c] + 1;
    }
    pk_search_term t[PK_SEARCH_TERMS_MAX];
    size_t nt = 0;
    pk_buf match = PK_BUF_INIT;
    pk_err *e = pk_search_terms(query, t, &nt);
    if (!e) e = pk_fts5_query(query, &match);
    pk_fts_tok tok;
    if (pk_fts_tokenizer_instance(tk, &tok)) abort();
    pk_search_index *ix = pk_search_index_new();
    pk_err *pe = pk_search_index_put(ix, &tok, 1, cols, lens);
    if (!e && !pe) {
        pk_search_hits h;
        pk_err *qe = NULL;
        bool ok = pk_search_index_query(ix, &tok, t, nt, &h, &qe);
        pk_err_free(qe);
        for (int c = 0; c < PK_SEARCH_COLS; c++)
            sqlite3_bind_text(ins, c + 1, cols[c], (int)lens[c], SQLITE_STATIC);
        bool stored = sqlite3_step(ins) == SQLITE_DONE; /* FTS5 refuses what is not valid UTF-8 text? */
        sqlite3_reset(ins);
        if (ok && stored) {
            sqlite3_bind_text(sel, 1, match.data, (int)match.len, SQLITE_STATIC);
            int rc = sqlite3_step(sel);
            if ((rc == SQLITE_ROW) != (h.n == 1)) {
                fprintf(stderr, "index %zu hits, FTS5 %s\n", h.n, rc == SQLITE_ROW ? "a row" : "none");
                abort();
            }
            if (rc == SQLITE_ROW) {
                double score = sqlite3_column_double(sel, 0);
                if (fabs(score - h.hit[0].score) > 1e-9 * fabs(score)) abort();
                const char *want = (const char *)sqlite3_column_text(sel, 1);
                for (int hint = 0; hint < 2; hint++) {
                    pk_buf snip = PK_BUF_INIT;
                    if (pk_search_snippet(&tok, &h, hint ? &h.hit[0] : NULL, cols, lens, "<mark>", "</mark>",
                                          "...", 24, &snip))
                        abort();
                    pk_buf_putc(&snip, 0);
                    if (strcmp(snip.data, want ? want : "") != 0) {
                        fprintf(stderr, "snippet (hint %d)\n index: %s\n FTS5:  %s\n", hint, snip.data, want);
                        abort();
                    }
                    pk_buf_free(&snip);
                }
            }
            sqlite3_reset(sel);
        }
        if (ok) pk_search_hits_free(&h);
        if (stored) {
            sqlite3_step(del);
            sqlite3_reset(del);
        }
    }
    pk_search_index_remove(ix, 1);
    pk_search_index_free(ix);
    pk_fts_tok_free(&tok);
    pk_err_free(e);
    pk_err_free(pe);
    pk_buf_free(&match);
    free(query);
    return 0;
}
