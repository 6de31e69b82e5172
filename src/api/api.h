/*
 * api: REST v1 handlers, the compatibility routes of the original PAKE agents, health, metrics and
 * the OpenAPI document. Handlers run on the loop thread: they validate input (and run the security
 * guard) there, then offload store calls. Helpers shared by handlers live in api_util.c.
 */
#ifndef PAKE_API_API_H
#define PAKE_API_API_H
#include "server/server.h"

struct pk_query_args;
/* notes.c */
void pk_api_note_create(pk_req *r);
void pk_api_note_get(pk_req *r);
void pk_api_note_patch(pk_req *r);
void pk_api_note_delete(pk_req *r);
void pk_api_note_list(pk_req *r);
void pk_api_search(pk_req *r);
void pk_api_link_create(pk_req *r);
void pk_api_link_list(pk_req *r);
void pk_api_note_history(pk_req *r);
void pk_api_note_create_from(pk_req *r, const cJSON *obj);
void pk_api_note_patch_from(pk_req *r, const char *id, const cJSON *obj); /* id: validated UUID */
void pk_api_note_get_id(pk_req *r, const char *id);
void pk_api_search_with(pk_req *r, struct pk_query_args *qa); /* takes ownership of qa */
/* compat.c */
void pk_api_compat_search_notes(pk_req *r);
void pk_api_compat_get_note_by_id(pk_req *r);
void pk_api_compat_notes_from_schema(pk_req *r);
/* tasks.c (docs/tasks.md) */
void pk_api_task_create(pk_req *r);
void pk_api_task_create_batch(pk_req *r);
void pk_api_task_get(pk_req *r);
void pk_api_task_list(pk_req *r);
void pk_api_task_cancel(pk_req *r);
void pk_api_task_retry(pk_req *r);
void pk_api_queues(pk_req *r);
/* hooks.c: POST /v1/hooks/{name} (docs/n8n.md) */
void pk_api_hook(pk_req *r);
/* search_vector.c: GET /v1/search?mode=semantic|hybrid */
void pk_api_search_vector(pk_req *r, bool hybrid);
/* The semantic (hybrid: fused with full-text by RRF) ranking shared with MCP search_notes. Blocking (a
 * worker): appends a JSON array of the top `limit` notes, each with "score" (and "fulltext_rank",
 * "vector_rank" when hybrid), to out; *count notes; *index = the vector index that ranked them
 * ("pgvector-hnsw" | "exact-scan", static). Failure sets j->err (unavailable without the task service). */
struct pk_job;
void pk_api_vector_search_run(struct pk_job *j, const char *q, int limit, bool hybrid, pk_buf *out,
                              int *count, const char **index);
/* ops.c */
void pk_api_health_live(pk_req *r);
void pk_api_health_ready(pk_req *r);
void pk_api_metrics(pk_req *r);
void pk_api_openapi(pk_req *r);
void pk_api_admin_breakers(pk_req *r);
void pk_api_admin_breaker_action(pk_req *r);

/* ---- shared by handlers (api_util.c) ---- */
typedef struct pk_note_fields {
    pk_note_input in;
    char *tags_json, *metadata_json, *guard_json; /* owned */
    char *strs[10];                               /* owned copies of string fields */
    int nstrs;
} pk_note_fields;

/* Validates a note object (create: required fields and defaults; patch: only present fields). Unknown
 * and read-only fields are 422. Runs the guard over every string (title, content, tags, metadata
 * values) and fills in.guard_json when it flags; a block is 422 input_rejected. */
pk_err *pk_api_parse_note(pk_req *r, const cJSON *obj, bool create, pk_note_fields *out);
void pk_note_fields_free(pk_note_fields *f);
void pk_note_fields_free_void(void *p);

struct pk_query_args;
typedef struct pk_query_args {
    pk_note_query q;
    char *text;
    char **tags_all, **tags_any; /* owned arrays of owned strings */
} pk_query_args;
/* Replaces every byte outside ASCII 0x20-0x7e with '?' in place: a client's parameter name is
 * echoed back in a problem only in that form. */
void pk_api_printable(char *s);
/* Parses list/search filters from the query string (search: q required). Unknown parameters 422. */
pk_err *pk_api_parse_query(pk_req *r, bool search, pk_query_args *out);
/* The same filters from a JSON object (compat search_notes). */
pk_err *pk_api_parse_query_json(pk_req *r, const cJSON *obj, pk_query_args *out);
void pk_query_args_free_void(void *p);

/* Validates a UUID path parameter into out (37 bytes); 404 when malformed. */
pk_err *pk_api_note_id(pk_req *r, const char *param, char out[37]);
/* Guard check of one user string on a surface; NULL when allowed (or flagged: *flag_json gets the
 * result when non-NULL). */
pk_err *pk_api_guard(pk_req *r, int surface, const char *field, const char *text, size_t len,
                     pk_buf *flag_json);

/* Store calls go through the dependency's bulkhead and circuit breaker (services.c). */
pk_err *pk_api_store_begin(pk_job *j, void **permit);
void pk_api_store_end(pk_job *j, void *permit, const pk_err *e, int64_t started_ns);
/* After a failed attempt: true (having slept the backoff) when the call should be tried again. */
bool pk_api_store_retry(pk_job *j, const pk_err *e, int attempt);
/* Runs one store call through bulkhead, breaker and retries; the error (if any) lands in j->err.
 * Store calls fill their output only on success, so a retried call starts clean. */
#define PK_STORE_CALL(j, call)                                                                               \
    do {                                                                                                     \
        for (int attempt_ = 0;; attempt_++) {                                                                \
            void *permit_ = NULL;                                                                            \
            int64_t t0_ = pk_mono_ns();                                                                      \
            pk_err *e_ = pk_api_store_begin((j), &permit_);                                                  \
            if (!e_) {                                                                                       \
                e_ = (call);                                                                                 \
                pk_api_store_end((j), permit_, e_, t0_);                                                     \
            }                                                                                                \
            (j)->store_ns += pk_mono_ns() - t0_;                                                             \
            if (e_ && pk_api_store_retry((j), e_, attempt_)) {                                               \
                pk_err_free(e_);                                                                             \
                continue;                                                                                    \
            }                                                                                                \
            if (e_) (j)->err = e_;                                                                           \
            break;                                                                                           \
        }                                                                                                    \
    } while (0)
#endif
