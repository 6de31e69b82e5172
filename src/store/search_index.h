/*
 * search_index: PAKE's own in-memory full-text index for the embedded (SQLite) store.
 *
 * What: an inverted index over each note's title, content and tags (postings: note, term frequency
 * per column), which answers the store's relevance search (every word of the query must occur; ranked
 * by BM25 with the column weights of notes_fts) and builds its snippets, with the same results as the
 * FTS5 statement it replaces, at a fraction of the cost (FTS5's bm25() looks each matching row's size
 * up with a statement of its own; here sizes and frequencies are in memory).
 *
 * Same tokens as FTS5 by construction: text is tokenized by SQLite's own FTS5 tokenizer, the one
 * notes_fts declares ("porter unicode61 remove_diacritics 2"), found through the fts5_api of a private
 * in-memory connection (pk_fts_tokenizer). Only queries whose every term is one token and no prefix
 * are served here (pk_search_index_query returns false otherwise and the caller runs FTS5).
 *
 * Ownership and threads: a pk_search_index is plain data, not synchronised: the caller serialises
 * writers (put/remove) against everything else (store_sqlite holds a rwlock). pk_search_index_query
 * only reads the index and returns a pk_search_hits the caller owns, usable without the index.
 * pk_fts_tokenizer is immutable after open; each thread makes its own instance with
 * pk_fts_tokenizer_instance (instances are not thread-safe). Errors: out of memory aborts (as
 * pk_buf); the tokenizer's failures are returned as pk_err "store_error".
 */
#ifndef PAKE_STORE_SEARCH_INDEX_H
#define PAKE_STORE_SEARCH_INDEX_H
#include "core/buf.h"
#include "core/err.h"
#include "store/store_internal.h"
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PK_SEARCH_COLS 3 /* title, content, tags: the columns of notes_fts, in its order */

typedef struct pk_fts_tokenizer pk_fts_tokenizer;
typedef struct pk_fts_tok {
    const pk_fts_tokenizer *owner;
    Fts5Tokenizer *t;
} pk_fts_tok;

pk_err *pk_fts_tokenizer_open(pk_fts_tokenizer **out);
void pk_fts_tokenizer_close(pk_fts_tokenizer *f);
/* A tokenizer instance for one thread; free it with pk_fts_tok_free. */
pk_err *pk_fts_tokenizer_instance(const pk_fts_tokenizer *f, pk_fts_tok *out);
void pk_fts_tok_free(pk_fts_tok *t);

typedef struct pk_search_index pk_search_index;

pk_search_index *pk_search_index_new(void);
void pk_search_index_free(pk_search_index *ix);
/* Indexes note `seq` (replacing what it had). cols[i] may be NULL (empty). */
pk_err *pk_search_index_put(pk_search_index *ix, pk_fts_tok *tok, int64_t seq,
                            const char *const cols[PK_SEARCH_COLS], const size_t lens[PK_SEARCH_COLS]);
void pk_search_index_remove(pk_search_index *ix, int64_t seq);
/* Live notes, and bytes held (approximate: arrays and term strings). */
size_t pk_search_index_docs(const pk_search_index *ix);
size_t pk_search_index_bytes(const pk_search_index *ix);

/* The notes matching a query, ranked lazily (best first; equal scores by seq). */
typedef struct pk_search_hit {
    int64_t seq;
    double score;                  /* BM25, larger is better (FTS5's rank with the sign flipped) */
    uint32_t inst[PK_SEARCH_COLS]; /* matches per column (occurrences of the query's words) */
    uint32_t size[PK_SEARCH_COLS]; /* tokens per column */
    uint32_t slot;                 /* the note's place in the index (pk_search_index_stored) */
} pk_search_hit;
typedef struct pk_search_hits {
    pk_search_hit *hit;
    size_t n, sorted; /* hit[0..sorted) are the best `sorted`, in order */
    char *tokens[PK_SEARCH_TERMS_MAX];
    size_t ntokens;
} pk_search_hits;

/* Attaches a copy of data[0..n) to note `seq` (indexed by put: a later put or remove drops it), the
 * store's ready-to-send form of the note (see store_sqlite.c, "stored notes"). No-op for an unknown seq. */
void pk_search_index_store(pk_search_index *ix, int64_t seq, const void *data, size_t n);
/* The data stored with a hit's note (NULL, 0 when none), valid until the index next changes. */
const void *pk_search_index_stored(const pk_search_index *ix, const pk_search_hit *h, size_t *n);

/* Runs the query. Returns false (and leaves *out empty) when the index cannot answer it like FTS5 (a
 * term that is a prefix or more than one token): the caller runs FTS5 then. Errors from the tokenizer
 * are returned in *err (then the result is false too). */
bool pk_search_index_query(const pk_search_index *ix, pk_fts_tok *tok, const pk_search_term *terms, size_t n,
                           pk_search_hits *out, pk_err **err);
/* Makes hit[0..k) (k capped at n) the best k in order. */
void pk_search_hits_rank(pk_search_hits *h, size_t k);
void pk_search_hits_free(pk_search_hits *h);

/* The snippet FTS5's snippet(notes_fts, -1, open, close, ellipsis, ntoken) gives for this query and
 * note: the best window of `ntoken` tokens over all columns, matches wrapped in open/close. `hint`
 * (the note's hit, or NULL) lets it skip columns without matches and stop reading a column once its
 * window is decided; it must describe the same text. */
pk_err *pk_search_snippet(pk_fts_tok *tok, const pk_search_hits *q, const pk_search_hit *hint,
                          const char *const cols[PK_SEARCH_COLS], const size_t lens[PK_SEARCH_COLS],
                          const char *open, const char *close, const char *ellipsis, int ntoken, pk_buf *out);
#endif
