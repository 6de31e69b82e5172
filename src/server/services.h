/*
 * services: the foundation layer as the server uses it. pk_services owns the process-wide metrics
 * registry, the rate limiter, the circuit breakers and bulkheads, the L1 cache and the security guard,
 * and exposes them to the middleware chain and the handlers through small functions.
 */
#ifndef PAKE_SERVER_SERVICES_H
#define PAKE_SERVER_SERVICES_H
#include "server/server.h"

pk_err *pk_services_init(pk_server *s);
void pk_services_dispose(pk_server *s);
void pk_services_reload(pk_server *s); /* SIGHUP: guard rules */
int pk_services_deadline_ms(pk_server *s, pk_route_class c);

/* Middleware stages (loop thread). Each returns NULL to continue or an error to answer with. */
pk_err *pk_services_ratelimit(pk_req *r);
/* Guard surfaces (policy per surface). */
enum {
    PK_SURFACE_NOTE_CONTENT,
    PK_SURFACE_NOTE_FIELD,
    PK_SURFACE_SEARCH_QUERY,
    PK_SURFACE_TOOL_ARGUMENT,
    PK_SURFACE_PROMPT_ARGUMENT,
    PK_SURFACE_TASK_PAYLOAD,
    PK_SURFACE_WEBHOOK,
};
/* Screens one user string. Block -> 422 input_rejected error; flag -> appends the verdict JSON to
 * *flag_json (when non-NULL, keeping the worst); allow -> NULL. */
pk_err *pk_services_guard(pk_req *r, int surface, const char *field, const char *text, size_t len,
                          pk_buf *flag_json);
/* L1 cache of notes (loop-thread lookups never block). */
typedef struct pk_services_cached_note {
    const char *data;
    size_t len;
    int64_t version;
    bool missing; /* negative entry: the note does not exist */
    void *handle;
} pk_services_cached_note;
bool pk_services_cache_lookup_note(pk_server *s, const char *id, pk_services_cached_note *out);
void pk_services_cache_note_release(pk_services_cached_note *n);
/* Cache-aside: take a ticket before offloading the load; the put is refused when a write invalidated
 * the key in between (so a slow load never re-inserts stale data). */
uint64_t pk_services_cache_ticket(pk_server *s, const char *key, size_t klen);
void pk_services_cache_note(pk_server *s, const char *id, int64_t version, const char *json, size_t len,
                            uint64_t ticket);
void pk_services_cache_note_missing(pk_server *s, const char *id, uint64_t ticket);
/* Query pages (lists, searches). The key embeds the write generation. Value: "meta\0data". */
bool pk_services_cache_query_key(pk_server *s, pk_req *r, pk_buf *key);
/* The same for a query that does not come from a URL (MCP tools): `op` names the operation, `args`
 * its canonical arguments. False when the cache is off. */
bool pk_services_cache_query_key_for(pk_server *s, const char *op, const char *args, size_t n, pk_buf *key);
bool pk_services_cache_query_get(pk_server *s, const pk_buf *key, pk_services_cached_note *out);
void pk_services_cache_query_put(pk_server *s, const pk_buf *key, const char *meta, const char *data,
                                 size_t len);
/* After a write to a note (or its links): drops it and every cached list/search, then tells the
 * note-change observers. Any thread. */
void pk_services_note_changed(pk_server *s, const char *id);
/* Note-change observers (the MCP server's resource subscriptions): called by pk_services_note_changed
 * on the writer's thread, after the cache invalidation; they must not block. Register them before
 * serving (not thread-safe against concurrent changes); at most 4. */
typedef void (*pk_note_observer)(void *ud, const char *id);
void pk_services_on_note_changed(pk_server *s, pk_note_observer fn, void *ud);
/* The same as pk_services_note_changed for a write answered on request r's loop thread: while the
 * observers run, pk_services_note_change_req returns r (its trace, its route) and whether the write
 * created the note; outside, or for changes without a request (MCP, tasks), it returns NULL. */
void pk_services_note_changed_req(pk_req *r, const char *id, bool created);
pk_req *pk_services_note_change_req(bool *created);
/* Creates a circuit breaker of another module (e.g. "n8n"), owned by the registry: it shows in
 * /v1/admin/breakers, takes the operator actions and gets the pake_breaker_* metrics and transition
 * logs. Start-up only (not thread-safe against itself). Errors: bad config, a taken name. */
struct pk_breaker_config;
struct pk_breaker;
pk_err *pk_services_breaker_add(pk_server *s, struct pk_breaker_config *cfg, struct pk_breaker **out);
/* Ops endpoints. */
void pk_services_health_checks(pk_server *s, pk_jw *w); /* extra members of "checks" */
void pk_services_render_metrics(pk_server *s, pk_buf *out);
void pk_services_breakers_json(pk_server *s, pk_buf *out);
pk_err *pk_services_breaker_action(pk_server *s, const char *name, const char *action, pk_buf *out);
/* The process metrics registry (for modules that register their own families). */
struct pk_metrics *pk_services_metrics(pk_server *s);
/* Guard (guard_service.c). */
pk_err *pk_services_guard_init(pk_server *s);
void pk_services_guard_dispose(pk_server *s);
void pk_services_guard_metrics(pk_server *s, const char *surface, const char *decision, const char *category,
                               double seconds);
/* Screens a string the server itself is about to store (an AI provider's summary), outside any request:
 * the same surfaces, policies and metrics as pk_services_guard, but no principal is charged. Block ->
 * "input_rejected" (422, not retryable) naming `field`; flag -> the verdict into *flag_json (keeping the
 * worst, as pk_services_guard); allow -> NULL. `request_id` (may be NULL) goes into the log line. */
pk_err *pk_services_guard_stored(pk_server *s, int surface, const char *field, const char *text, size_t len,
                                 const char *request_id, pk_buf *flag_json);
/* A principal's input was blocked: counts against its own abuse budget (429 once spent). */
void pk_services_note_blocked(pk_req *r);
/* ---- Redis (redis_service.c); every function is a no-op / false without --redis-url ---- */
typedef struct pk_redis_svc pk_redis_svc;
typedef struct pk_redis_svc_env {
    struct pk_cache *cache;     /* L1 (may be NULL) */
    struct pk_breaker *breaker; /* the "redis" breaker (owned by the registry) */
    struct pk_metrics *metrics;
} pk_redis_svc_env;
/* Starts the pool, the subscriber and wraps s->store so that every write invalidates L2 and the L1 of
 * every instance before it is acknowledged. A refused AUTH is a start-up error; an unreachable Redis is
 * not (the process starts degraded and recovers on its own). */
pk_err *pk_redis_svc_init(pk_server *s, const pk_redis_svc_env *env, pk_redis_svc **out);
void pk_redis_svc_dispose(pk_redis_svc *rs);
/* Loop thread: may L1 be trusted (no Redis, or a live invalidation lease)? */
bool pk_redis_svc_l1_trusted(pk_redis_svc *rs);
/* Loop thread: should the shared limiter be tried (breaker closed, half-open, or open long enough)? */
bool pk_redis_svc_usable(pk_redis_svc *rs);
bool pk_redis_svc_degraded(pk_redis_svc *rs, const char **why);
/* The shared (GCRA in Redis) limiter; NULL when off. Owned by rs. Offload threads only. */
struct pk_limiter *pk_redis_svc_limiter(pk_redis_svc *rs);
/* L2 for GET /v1/notes/{id} (offload thread). get: true on a hit (out, *version filled); otherwise
 * fills the ticket used by put (which stores only when no write happened since the get). */
typedef struct pk_l2_ticket {
    bool valid;
    char epoch[24];
} pk_l2_ticket;
bool pk_services_l2_get_note(pk_job *j, const char *id, pk_buf *out, int64_t *version, pk_l2_ticket *t);
void pk_services_l2_put_note(pk_job *j, const char *id, const pk_buf *json, int64_t version,
                             const pk_l2_ticket *t);
/* The process's Redis client pool (the Redis task queue uses it with --redis-prefix); NULL without
 * --redis-url. Owned by the services: valid until pk_services_dispose. */
struct pk_redis;
struct pk_redis *pk_services_redis_pool(pk_server *s);
/* True when Redis is configured but not fully working (readiness reports "warn"). */
bool pk_services_degraded(pk_server *s);

/* The task service (src/tasks/), when `pake serve` runs one; NULL otherwise. Set once before serving. */
struct pk_tasks;
void pk_services_set_tasks(pk_server *s, struct pk_tasks *t);
struct pk_tasks *pk_services_tasks(pk_server *s);
/* The AI providers (src/ai/): embeddings for note.embed and semantic search, chat for summaries.
 * Created by pk_services_init from the embed-* / chat-* settings; never NULL after it succeeded. */
struct pk_ai;
struct pk_ai *pk_services_ai(pk_server *s);

/* Called once per finished request (metrics). */
void pk_services_observe(pk_req *r, int status, int64_t duration_ns);
#endif
