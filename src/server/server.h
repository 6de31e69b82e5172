/*
 * server: the HTTP runtime. One h2o event loop per thread, each with its own SO_REUSEPORT listener;
 * one route table; one middleware chain every request passes (request id and trace, limits, auth hook,
 * rate limit, deadline; handlers then validate and run the guard); an offload pool for blocking work
 * whose results are posted back to the loop that owns the request; errors rendered in one place as
 * RFC 9457 problem+json.
 *
 * Ownership: a pk_req lives in the h2o request's memory pool and dies with it (connection closed,
 * response sent). Work handed to the offload pool is a pk_job that never touches the pk_req off the
 * loop thread; when the result comes back the loop checks whether the request still exists. Loop
 * threads never block on I/O.
 */
#ifndef PAKE_SERVER_SERVER_H
#define PAKE_SERVER_SERVER_H
#include "core/buf.h"
#include "core/err.h"
#include "core/json.h"
#include "server/config.h"
#include "store/store.h"
#include <h2o.h>
#include <stdatomic.h>
#include <stdbool.h>

typedef struct pk_server pk_server;
typedef struct pk_loop pk_loop;
typedef struct pk_req pk_req;
typedef struct pk_job pk_job;

typedef enum {
    PK_RC_READ,
    PK_RC_WRITE,
    PK_RC_SEARCH,
    PK_RC_MCP,
    PK_RC_ADMIN,
    PK_RC_OPS, /* health, metrics, openapi */
    PK_RC__COUNT
} pk_route_class;
const char *pk_route_class_name(pk_route_class c);

enum {
    PK_ROUTE_JSON_BODY = 1 << 0,  /* the body must be application/json and is parsed before the handler */
    PK_ROUTE_DEPRECATED = 1 << 1, /* compatibility route: Deprecation + Link successor headers */
    PK_ROUTE_NO_LOG = 1 << 2,     /* no access-log line at info level (metrics, health) */
};

typedef void (*pk_handler_fn)(pk_req *r);

typedef struct pk_route {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* "/v1/notes/{id}"; segments in braces are parameters */
    pk_route_class cls;
    unsigned flags;
    pk_handler_fn handler;
    const char *operation_id; /* OpenAPI operationId */
    const char *successor;    /* for deprecated routes: the v1 path that replaces it */
} pk_route;

/* The route table (api/routes.c) and its size. */
extern const pk_route pk_routes[];
extern const size_t pk_routes_count;

#define PK_MAX_PARAMS 4
#define PK_MAX_EXTRA_HEADERS 12

struct pk_req {
    h2o_req_t *h2o;
    pk_loop *loop;
    pk_server *srv;
    const pk_route *route;
    h2o_iovec_t params[PK_MAX_PARAMS];
    int nparams;
    char request_id[132];
    char trace_id[33];
    char span_id[17];
    char parent_span_id[17];
    bool sampled;
    char principal[80];
    int64_t start_ns;
    int64_t deadline_ns;
    cJSON *json; /* parsed body (PK_ROUTE_JSON_BODY routes) */
    pk_job *job; /* outstanding offloaded job, if any */
    bool responded;
    int status;
    int64_t store_ns;        /* time spent in the store, for Server-Timing */
    const char *cache_state; /* "hit", "miss" or NULL, for Server-Timing */
    const char *successor;   /* deprecated routes: the successor URI when it depends on the request */
    char ratelimit_policy[192];
    char ratelimit[192];
    unsigned char chain_next; /* middleware stage to resume at (pk_request_resume) */
};

/* A middleware stage returns this (not an error) after offloading its decision; the offloaded job's
 * `done` then calls pk_request_resume(r) to run the rest of the chain and the handler. */
#define PK_CHAIN_SUSPENDED ((pk_err *)&pk_chain_suspended_)
extern const char pk_chain_suspended_;
void pk_request_resume(pk_req *r);

/* Request helpers (loop thread only). */
h2o_iovec_t pk_req_param(pk_req *r, const char *name);
/* Query parameter lookup: first value, percent-decoded into the request pool; NULL when absent.
 * Invalid percent-encoding or UTF-8 sets *bad. */
const char *pk_req_query(pk_req *r, const char *name, bool *bad);
/* Every parameter in order: pass *cursor = 0 first; false at the end. The key is raw (not decoded);
 * the value is percent-decoded into the request pool (NULL and *bad set when it is not valid
 * percent-encoded UTF-8). */
bool pk_req_query_pair(pk_req *r, size_t *cursor, h2o_iovec_t *key, const char **value, bool *bad);
/* Next value of a repeated query parameter: pass *cursor = 0 first; NULL at the end. */
const char *pk_req_query_next(pk_req *r, const char *name, size_t *cursor, bool *bad);
const char *pk_req_header(pk_req *r, const char *lower_name, size_t *len);
void pk_req_add_header(pk_req *r, const char *name, const char *value, size_t len);
int64_t pk_req_remaining_ns(pk_req *r);

/* Responses. Each request is answered exactly once; the data variant wraps `data_json` into the
 * success envelope {"data":...,"meta":{...}} (meta_extra: extra members, e.g. pagination). */
void pk_respond_data(pk_req *r, int status, const char *data_json, size_t len, const char *meta_extra);
void pk_respond_raw(pk_req *r, int status, const char *content_type, const char *body, size_t len);
void pk_respond_error(pk_req *r, pk_err *e); /* takes ownership of e */
void pk_respond_empty(pk_req *r, int status);
/* A streamed answer (SSE): sends status and headers, counts the request as answered; the body follows
 * with h2o_send through `gen` on the loop thread (see request.c). */
void pk_respond_stream_start(pk_req *r, int status, const char *content_type, h2o_generator_t *gen);

/* Offloading blocking work. `work` runs on a pool thread and may only use the job (never the
 * pk_req); `done` runs afterwards on the request's loop thread, only if the request is still alive
 * and unanswered. Deadline expiry answers 504 and abandons the job (work that has not started is
 * skipped; the store aborts statements past the deadline). */
typedef void (*pk_work_fn)(pk_job *j);
typedef void (*pk_done_fn)(pk_req *r, pk_job *j);
/* Runs n jobs of the same kind together (pk_offload_many); sets each job's results as work would. */
typedef void (*pk_work_many_fn)(pk_job **jobs, size_t n);

struct pk_job {
    h2o_multithread_message_t msg; /* must be first */
    h2o_timeout_entry_t deadline_entry;
    pk_req *req; /* loop thread only; NULL once the request is gone or answered */
    pk_loop *loop;
    pk_server *srv;
    pk_work_fn work;
    pk_work_many_fn work_many; /* pk_offload_many: jobs of one kind queued together run in one call */
    pk_done_fn done;
    void *data;
    void (*free_data)(void *);
    /* copied from the request so the worker never touches it */
    char request_id[132];
    char principal[80];
    pk_op_ctx op;
    int64_t deadline_ns;
    int64_t enqueued_ns;
    /* results, set by work */
    int status;
    pk_buf body; /* "data" JSON, or a raw body when raw_content_type is set */
    const char *raw_content_type;
    char *meta_extra;
    pk_err *err;
    char etag[40];
    char location[160];
    int64_t store_ns;
    const char *cache_state;
    bool abandoned; /* set on the loop when the deadline fired */
    bool skipped;   /* set by the pool when it did not run work because the deadline had passed */
};

/* Default `done`: renders job->err, or job->body as data with job->status (+ ETag/Location). */
void pk_job_respond(pk_req *r, pk_job *j);
/* Submits a job (loop thread). On a full queue answers 503 itself and returns false. */
bool pk_offload(pk_req *r, pk_work_fn work, pk_done_fn done, void *data, void (*free_data)(void *));
/* pk_offload for work that is cheaper done for several requests at once (e.g. task creations: one Redis
 * call for all): one pool thread at a time runs such jobs, taking every job of the same work_many queued
 * at that moment (up to PK_OFFLOAD_MANY_MAX) in one call, and goes on while more arrive; a job submitted
 * while that thread is busy wakes no other thread. Each job still gets its own done/response. */
bool pk_offload_many(pk_req *r, pk_work_many_fn work_many, pk_done_fn done, void *data,
                     void (*free_data)(void *));
#define PK_OFFLOAD_MANY_MAX 64

/* Process-wide state (initialised once, read-mostly). */
struct pk_server {
    pk_config cfg;
    pk_store *store;
    struct pk_offload_pool *pool;
    struct pk_services *svc; /* foundation services: metrics, limiter, breakers, cache, guard */
    pk_loop *loops;
    int nloops;
    int listen_port; /* actual port after bind */
    atomic_bool draining;
    atomic_bool stopping;
    atomic_long inflight;
    int64_t started_wall_ns;
    h2o_globalconf_t h2oconf;
    SSL_CTX *ssl_ctx;
};

pk_err *pk_server_init(pk_server *s);
/* Runs until SIGTERM/SIGINT, then drains; returns the process exit code. */
int pk_server_run(pk_server *s);
void pk_server_dispose(pk_server *s);

/* Problem rendering (problem.c): the single place errors become bytes. */
void pk_problem_render(pk_buf *out, const pk_err *e, const char *instance, const char *request_id,
                       const char *trace_id);
#endif
