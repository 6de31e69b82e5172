/*
 * store: the knowledge store contract. The request path only sees this header; the embedded SQLite
 * backend (store_sqlite.c) implements it now, PostgreSQL later, through the same vtable.
 *
 * Model. A note is a Markdown document with typed fields (see the JSON shape below); every write bumps
 * `version` and appends to the audit log; every change of `confidence_score` appends to the confidence
 * history. Links are directed, typed edges between two existing notes. Idempotency records let the API
 * replay the first response to a POST with the same Idempotency-Key.
 *
 * Output. Notes and links leave the store as JSON text in a pk_buf, in exactly this shape, so the API
 * can wrap them without re-serialising (and cache the bytes):
 *   {"id":"<uuidv7>","title":"...","content":"...","type":"note","status":"active",
 *    "verification_status":"pending","source_uri":null,"tags":["a","b"],"metadata":{},
 *    "confidence_score":0.5,"ai_summary":null,"human_notes":null,"guard":null,
 *    "created_at":"2026-11-25T18:41:11.123Z","updated_at":"...","version":1}
 * Search results add "snippet" (FTS5 highlight with <mark>..</mark>, "..." ellipsis) and "score"
 * (BM25, higher is better). The snippet is raw note text with <mark> inserted: it is NOT HTML-escaped;
 * whoever renders it as HTML must escape it (the JSON API does not).
 *   A link:    {"id":"<uuidv7>","source_id":"..","target_id":"..","type":"related","strength":0.5,
 *               "metadata":{},"created_at":".."}
 *   link_list: a JSON array of the links whose source OR target is the note, oldest first.
 *   history:   {"note_id":"..","events":[{"action":"create|update|delete","version":1,
 *               "fields":["title",..],"at":"..","request_id":..,"principal":..}],
 *               "confidence_history":[{"version":1,"from":null,"to":0.5,"at":"..","request_id":..,
 *               "principal":..}]}  (oldest first; kept after the note is deleted)
 *
 * Field rules the store owns (others, such as lengths and limits, belong to the API):
 *   title non-empty (required on create); content defaults to ""; type non-empty (default "note");
 *   status in PK_NOTE_STATUSES (default "active"); verification_status in PK_NOTE_VERIFICATIONS
 *   (default "pending"); confidence_score finite in [0,1] (default 0.5); tags an array of non-empty
 *   strings (duplicates dropped, order kept); metadata an object; guard an object or null. A note is
 *   "flagged" when its guard object has "flagged": true. title, content, type, status,
 *   verification_status, tags and metadata are not nullable; a patch setting them to NULL fails.
 *   Link type: 1..64 chars of [a-z0-9_-]; strength in [0,1]; no self links; one link per
 *   (source, target, type).
 *
 * Versions. if_version > 0 must equal the note's current version (else precondition_failed, with
 * "current_version" in the problem's extra members); if_version == 0 means unconditional.
 * A patch with no field set changes nothing and returns the current note.
 *
 * Pages. Lists are keyset-paginated on (sort value, insertion order); relevance pages use an offset.
 * A cursor is only valid with the same sort and direction it was issued for.
 *
 * Errors (pk_err codes): "not_found" 404, "precondition_failed" 412 (If-Match version mismatch),
 * "conflict" 409, "validation_failed" 422 (bad query parameters such as an invalid cursor or FTS
 * syntax), "deadline_exceeded" 504 (the op ran past ctx->deadline_ns), "store_busy" 503 retryable
 * (SQLITE_BUSY after the busy timeout), "store_error" 500/503 otherwise. Store errors carry a generic
 * message safe to show to clients; the database's own message is in the cause chain (code "sqlite").
 *
 * Threading. A pk_store is shared by all threads; every function is thread-safe and BLOCKING (it does
 * file I/O): call it only from the offload pool or a CLI thread, never from an event-loop thread.
 * Input strings are valid UTF-8 (validated by the caller); the store validates field semantics it owns
 * (status enums, confidence range) and returns "validation_failed" with field errors otherwise.
 * Output buffers are appended to only on success (on error they are left as they were); a pk_page
 * is replaced on success (free it with pk_page_free).
 */
#ifndef PAKE_STORE_STORE_H
#define PAKE_STORE_STORE_H
#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pk_store pk_store;

/* Who and until when: passed to every call. */
typedef struct pk_op_ctx {
    const char *request_id; /* for the audit log; may be NULL */
    const char *principal;  /* "ip:127.0.0.1", "key:<id>", "cli"; may be NULL */
    int64_t deadline_ns;    /* monotonic (pk_mono_ns); 0 = none */
} pk_op_ctx;

/* Fields of a create or a patch. `set` says which are present (a patch changes only those);
 * a present string field that is NULL means JSON null (clear it), where the field is nullable. */
enum {
    PK_NF_TITLE = 1 << 0,
    PK_NF_CONTENT = 1 << 1,
    PK_NF_TYPE = 1 << 2,
    PK_NF_STATUS = 1 << 3,
    PK_NF_VERIFICATION = 1 << 4,
    PK_NF_SOURCE_URI = 1 << 5,
    PK_NF_TAGS = 1 << 6,
    PK_NF_METADATA = 1 << 7,
    PK_NF_CONFIDENCE = 1 << 8,
    PK_NF_AI_SUMMARY = 1 << 9,
    PK_NF_HUMAN_NOTES = 1 << 10,
    PK_NF_GUARD = 1 << 11,
};

typedef struct pk_note_input {
    unsigned set;
    const char *title, *content, *type, *status, *verification_status, *source_uri;
    const char *ai_summary, *human_notes;
    const char *tags_json;     /* JSON array of strings, already validated */
    const char *metadata_json; /* JSON object, already validated */
    const char *guard_json;    /* JSON object from the security guard, or NULL */
    double confidence_score;   /* 0..1 */
} pk_note_input;

typedef enum {
    PK_SORT_DEFAULT = 0, /* list: created_at desc; search: relevance */
    PK_SORT_CREATED,
    PK_SORT_UPDATED,
    PK_SORT_TITLE,
    PK_SORT_CONFIDENCE,
    PK_SORT_RELEVANCE, /* search only */
} pk_sort_key;

typedef struct pk_note_query {
    const char *text; /* search: the user's query (plain words; quoted phrases allowed); NULL for list */
    const char *type, *status, *verification_status;
    const char *const *tags_all;
    size_t ntags_all;
    const char *const *tags_any;
    size_t ntags_any;
    bool has_min_confidence;
    double min_confidence;
    int64_t created_after, created_before, updated_after, updated_before; /* wall ns; 0 = unset */
    int flagged; /* -1 any, 1 only notes the guard flagged, 0 only unflagged */
    pk_sort_key sort;
    bool ascending;     /* default false (descending); ignored for relevance */
    int limit;          /* 1..100, caller clamps; default 20 */
    const char *cursor; /* opaque, from a previous page's next_cursor; NULL = first page */
} pk_note_query;

typedef struct pk_page {
    pk_buf items;      /* JSON array text: "[{note},...]" */
    char *next_cursor; /* malloc'd opaque string, NULL when this is the last page */
    size_t count;
} pk_page;
void pk_page_free(pk_page *p);

/* Idempotency. Keys are scoped by ctx->principal (one client cannot replay another's response).
 * idem_begin: NEW (a record is now in progress: run the request, then idem_finish or idem_abort),
 * REPLAY (*status and *body hold the first response), MISMATCH (same key, different request_hash:
 * answer 422/409), IN_PROGRESS (the first request is still running: answer 409 and retry later).
 * Records expire after idem_ttl_s; an in-progress record older than idem_lease_s is taken over.
 * idem_finish / idem_abort on an unknown key: not_found. */
typedef enum { PK_IDEM_NEW, PK_IDEM_REPLAY, PK_IDEM_MISMATCH, PK_IDEM_IN_PROGRESS } pk_idem_state;

/* Observer: called after each store operation (for metrics), on the calling thread. `op` is a static
 * name ("note_get", ...). `ok` is false only for failures of the store itself (status >= 500); a
 * not_found or a validation error is a successful store operation. Set it before sharing the store. */
typedef void (*pk_store_observer)(void *ud, const char *op, double seconds, bool ok);

typedef struct pk_store_ops {
    void (*close)(pk_store *s);
    pk_err *(*migrate)(pk_store *s, int *from_version, int *to_version);
    pk_err *(*ping)(pk_store *s, const pk_op_ctx *c);
    pk_err *(*note_create)(pk_store *s, const pk_op_ctx *c, const pk_note_input *in, pk_buf *out);
    pk_err *(*note_get)(pk_store *s, const pk_op_ctx *c, const char *id, pk_buf *out, int64_t *version);
    pk_err *(*note_update)(pk_store *s, const pk_op_ctx *c, const char *id, int64_t if_version,
                           const pk_note_input *in, pk_buf *out);
    pk_err *(*note_delete)(pk_store *s, const pk_op_ctx *c, const char *id, int64_t if_version);
    pk_err *(*note_list)(pk_store *s, const pk_op_ctx *c, const pk_note_query *q, pk_page *out);
    pk_err *(*note_search)(pk_store *s, const pk_op_ctx *c, const pk_note_query *q, pk_page *out);
    pk_err *(*note_history)(pk_store *s, const pk_op_ctx *c, const char *id, pk_buf *out);
    pk_err *(*link_create)(pk_store *s, const pk_op_ctx *c, const char *source_id, const char *target_id,
                           const char *type, double strength, const char *metadata_json, pk_buf *out);
    pk_err *(*link_list)(pk_store *s, const pk_op_ctx *c, const char *note_id, pk_buf *out);
    pk_err *(*idem_begin)(pk_store *s, const pk_op_ctx *c, const char *key, const char *request_hash,
                          pk_idem_state *state, int *status, pk_buf *body);
    pk_err *(*idem_finish)(pk_store *s, const pk_op_ctx *c, const char *key, int status, const char *body,
                           size_t body_len);
    pk_err *(*idem_abort)(pk_store *s, const pk_op_ctx *c, const char *key);
} pk_store_ops;

struct pk_store {
    const pk_store_ops *ops;
    const char *backend; /* "sqlite", "postgres" */
    pk_store_observer observer;
    void *observer_ud;
};

typedef struct pk_sqlite_config {
    const char *data_dir;       /* created if missing; the database is DATA_DIR/pake.db */
    int busy_timeout_ms;        /* default 5000 */
    int max_connections;        /* pool size, default 8: one writer connection + (n-1) readers, n >= 2 */
    const pk_clock *clock;      /* monotonic, for deadlines and timings; NULL = pk_clock_real() */
    const pk_clock *wall_clock; /* wall ns, for timestamps and idempotency expiry; NULL = real time */
    int idem_ttl_s;             /* idempotency records are kept this long; default 86400 */
    int idem_lease_s;           /* an in-progress record older than this is abandoned; default 60 */
    bool search_index; /* relevance search from an in-memory index (built in the background on first use) */
} pk_sqlite_config;

/* Allowed values, NULL-terminated. */
extern const char *const PK_NOTE_STATUSES[];      /* "draft", "active", "archived" */
extern const char *const PK_NOTE_VERIFICATIONS[]; /* "pending", "verified", "disputed", "rejected" */

/* Opens (creating if needed) and applies pending migrations unless `no_migrate`. */
pk_err *pk_store_open_sqlite(const pk_sqlite_config *cfg, bool no_migrate, pk_store **out);
/* The in-memory search index's metrics (docs/observability.md); nothing for other backends or when
 * the index is off. */
struct pk_metrics;
void pk_store_sqlite_bind_metrics(pk_store *s, struct pk_metrics *m);
/* Waits up to timeout_ms for the search index to be ready (starting its build); false when it is off
 * or not ready in time. */
bool pk_store_sqlite_search_ready(pk_store *s, int timeout_ms);
int pk_store_schema_version_latest(void);

#ifdef PAKE_FAULT_INJECTION
/* Test builds only: the n-th SQLite call (prepare, step or exec; n >= 1, counted across threads) made
 * by this store from now on fails with `sqlite_rc` (SQLITE_IOERR, SQLITE_BUSY, SQLITE_FULL, ...); n <= 0
 * disarms. pk_store_sqlite_calls returns the number of SQLite calls made since the last arm. */
void pk_store_sqlite_fail_at(pk_store *s, int n, int sqlite_rc);
int pk_store_sqlite_calls(pk_store *s);
#endif

/* Dispatch helpers: the functions the rest of PAKE calls. */
static inline void pk_store_close(pk_store *s)
{
    s->ops->close(s);
}
static inline pk_err *pk_store_migrate(pk_store *s, int *from, int *to)
{
    return s->ops->migrate(s, from, to);
}
static inline pk_err *pk_store_ping(pk_store *s, const pk_op_ctx *c)
{
    return s->ops->ping(s, c);
}
static inline pk_err *pk_store_note_create(pk_store *s, const pk_op_ctx *c, const pk_note_input *in,
                                           pk_buf *out)
{
    return s->ops->note_create(s, c, in, out);
}
static inline pk_err *pk_store_note_get(pk_store *s, const pk_op_ctx *c, const char *id, pk_buf *out,
                                        int64_t *version)
{
    return s->ops->note_get(s, c, id, out, version);
}
static inline pk_err *pk_store_note_update(pk_store *s, const pk_op_ctx *c, const char *id,
                                           int64_t if_version, const pk_note_input *in, pk_buf *out)
{
    return s->ops->note_update(s, c, id, if_version, in, out);
}
static inline pk_err *pk_store_note_delete(pk_store *s, const pk_op_ctx *c, const char *id,
                                           int64_t if_version)
{
    return s->ops->note_delete(s, c, id, if_version);
}
static inline pk_err *pk_store_note_list(pk_store *s, const pk_op_ctx *c, const pk_note_query *q,
                                         pk_page *out)
{
    return s->ops->note_list(s, c, q, out);
}
static inline pk_err *pk_store_note_search(pk_store *s, const pk_op_ctx *c, const pk_note_query *q,
                                           pk_page *out)
{
    return s->ops->note_search(s, c, q, out);
}
static inline pk_err *pk_store_note_history(pk_store *s, const pk_op_ctx *c, const char *id, pk_buf *out)
{
    return s->ops->note_history(s, c, id, out);
}
static inline pk_err *pk_store_link_create(pk_store *s, const pk_op_ctx *c, const char *src, const char *dst,
                                           const char *type, double strength, const char *metadata_json,
                                           pk_buf *out)
{
    return s->ops->link_create(s, c, src, dst, type, strength, metadata_json, out);
}
static inline pk_err *pk_store_link_list(pk_store *s, const pk_op_ctx *c, const char *id, pk_buf *out)
{
    return s->ops->link_list(s, c, id, out);
}
static inline pk_err *pk_store_idem_begin(pk_store *s, const pk_op_ctx *c, const char *key, const char *hash,
                                          pk_idem_state *state, int *status, pk_buf *body)
{
    return s->ops->idem_begin(s, c, key, hash, state, status, body);
}
static inline pk_err *pk_store_idem_finish(pk_store *s, const pk_op_ctx *c, const char *key, int status,
                                           const char *body, size_t body_len)
{
    return s->ops->idem_finish(s, c, key, status, body, body_len);
}
static inline pk_err *pk_store_idem_abort(pk_store *s, const pk_op_ctx *c, const char *key)
{
    return s->ops->idem_abort(s, c, key);
}
#endif
