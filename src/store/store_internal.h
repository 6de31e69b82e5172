/*
 * store_internal: backend-neutral helpers shared by the store backends (not part of the contract).
 *  - input checking: turns a pk_note_input into canonical values (compact JSON, deduplicated tags);
 *  - cursors: opaque page tokens (base64url of "kind|seq|value"), checked against the query's sort;
 *  - search text: the user's words and quoted phrases as terms, and as a safe FTS5 query.
 * Pure functions, thread-safe, no I/O.
 */
#ifndef PAKE_STORE_STORE_INTERNAL_H
#define PAKE_STORE_STORE_INTERNAL_H
#include "core/json.h"
#include "store/store.h"

typedef struct pk_note_canon {
    char *tags_json; /* compact JSON array, or NULL when tags are not set */
    char **tags;     /* the distinct tags, in order */
    size_t ntags;
    char *metadata_json; /* compact JSON object, or NULL when not set */
    char *guard_json;    /* compact JSON object, or NULL (not set, or JSON null) */
    bool flagged;        /* guard has "flagged": true */
} pk_note_canon;

/* Checks the fields present in `in` (all required ones too when `create`). On failure returns a
 * "validation_failed" error with one field error per problem; `out` is then empty. */
pk_err *pk_note_input_check(const pk_note_input *in, bool create, pk_note_canon *out);
void pk_note_canon_free(pk_note_canon *c);
bool pk_note_enum_valid(const char *const *allowed, const char *v);
/* Link type: 1..64 chars of [a-z0-9_-]. */
bool pk_link_type_valid(const char *t);

/* Cursor: returns a malloc'd token. */
char *pk_cursor_encode(const char *kind, int64_t seq, const char *value);
/* Decodes `token`; its kind must equal `kind`. On success *value is malloc'd (caller frees).
 * Errors: "validation_failed" on field "cursor". */
pk_err *pk_cursor_decode(const char *token, const char *kind, int64_t *seq, char **value);

/* Builds an FTS5 MATCH expression from user text: bare words and "quoted phrases" become quoted FTS5
 * strings joined by AND (implicit); a trailing '*' on a bare word makes it a prefix query. Nothing
 * the user types can reach FTS5 syntax. Errors: "validation_failed" (field "q") when there is no
 * searchable word. */
pk_err *pk_fts5_query(const char *text, pk_buf *out);

/* The words and "quoted phrases" of a search text, as pk_fts5_query sees them (pointers into `text`;
 * a trailing '*' on a bare word sets `prefix` and is not part of the term). Terms without a letter or
 * digit are skipped. Errors: "validation_failed" (field "q") with no term or more than
 * PK_SEARCH_TERMS_MAX. Each backend turns the terms into its own query syntax. */
#define PK_SEARCH_TERMS_MAX 32
typedef struct pk_search_term {
    const char *text;
    size_t len;
    bool phrase, prefix;
} pk_search_term;
pk_err *pk_search_terms(const char *text, pk_search_term *terms, size_t *nterms);
/* A "validation_failed" error for a list/search query with one field error. */
pk_err *pk_note_query_invalid(const char *field, const char *msg);
/* Checks a list/search query's filters and resolves its sort: *key is the effective key (never
 * PK_SORT_DEFAULT: relevance for searches, created otherwise) and kind the cursor kind (column letter
 * and direction, or "r" for relevance). Errors: "validation_failed" naming the field. Each backend
 * maps *key to its own column expression. */
pk_err *pk_note_query_prepare(const pk_note_query *q, bool search, pk_sort_key *key, char kind[3]);
/* Writes one link object: {"id","source_id","target_id","type","strength","metadata","created_at"}. */
void pk_store_link_json(pk_jw *w, const char *id, const char *src, const char *dst, const char *type,
                        double strength, const char *meta, size_t meta_len, int64_t created);
#endif
