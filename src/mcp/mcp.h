/*
 * mcp: the Model Context Protocol server of PAKE (JSON-RPC 2.0 over Streamable HTTP at /mcp and over
 * stdio with `pake mcp`).
 *
 * Model.
 *  - pk_mcp_hub (one per process): the server (store + services), the fixture switch and the table of
 *    sessions. Initialised once (pk_mcp_init) and read-mostly; the session table has its own mutex.
 *  - pk_mcp_session: one client connection in the protocol sense (an Mcp-Session-Id over HTTP, the
 *    process itself over stdio). Holds the negotiated revision, client capabilities, log level,
 *    resource subscriptions, the requests in flight (for cancellation) and the requests the server sent
 *    to the client (sampling, elicitation) that wait for an answer. Everything mutable is under the
 *    session's mutex `mu`; sessions are reference counted (table, calls, streams, wake-ups).
 *  - pk_mcp_call: one JSON-RPC request being answered. The dispatcher (dispatch.c) validates a message
 *    on the transport's thread (for HTTP: the event loop, where the guard runs) and either answers it
 *    inline or returns a call whose blocking part (`work`, store calls through PK_STORE_CALL) the
 *    transport runs on a worker: the offload pool over HTTP, a thread over stdio. A call ends with
 *    exactly one reply (pk_mcp_call_reply / pk_mcp_call_error), which is dropped if the client
 *    cancelled it (notifications/cancelled sets `cancelled`; long work polls it and stops).
 *  - pk_mcp_transport: how a session's outgoing messages leave (per call, or unrelated to a request
 *    such as notifications/resources/updated) and how work is run. Implemented by mcp_http.c and
 *    mcp_stdio.c; the fuzzer has its own.
 *
 * Errors: protocol errors are JSON-RPC errors (-32700 parse, -32600 invalid request, -32601 unknown
 * method, -32602 invalid params, -32603 internal, -32002 resource not found); a tool that fails returns
 * a result with isError: true and a message built from the pk_err (validation field errors included).
 */
#ifndef PAKE_MCP_MCP_H
#define PAKE_MCP_MCP_H
#include "core/buf.h"
#include "core/json.h"
#include "server/server.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define PK_MCP_LATEST_VERSION "2025-11-25"
#define PK_MCP_MAX_SUBSCRIPTIONS 256
#define PK_MCP_MAX_INFLIGHT 64 /* requests in flight per session */

typedef struct pk_mcp_session pk_mcp_session;
typedef struct pk_mcp_call pk_mcp_call;
typedef struct pk_mcp_transport pk_mcp_transport;

typedef void (*pk_mcp_work_fn)(pk_mcp_call *c, pk_job *j);

struct pk_mcp_call {
    pk_mcp_session *s;
    char *id_json; /* the request id as JSON text ("7" or "\"abc\"") */
    char method[48];
    char tool[64];  /* tools/call: the tool name (metrics) */
    cJSON *params;  /* owned copy of the request's params (may be NULL) */
    char *progress; /* params._meta.progressToken as JSON text, or NULL */
    atomic_bool cancelled;
    bool replied;
    bool may_stream; /* may send messages before its result (HTTP: answered as SSE when accepted) */
    pk_mcp_work_fn work;
    void *data;
    void (*free_data)(void *);
    void *tx; /* the transport's per-call state (HTTP: the stream that carries the answer) */
    int64_t start_ns;
    int64_t deadline_ns;
    char principal[80];   /* who asked (audit log of store writes) */
    char request_id[132]; /* the HTTP request's id, or one made up for stdio */
    pk_mcp_call *next;    /* session's in-flight list (under s->mu) */
};

struct pk_mcp_transport {
    /* Sends one message. `c` is the call it belongs to (NULL: not related to a request); `final`
     * marks the call's response. Called from any thread, never with s->mu held. */
    void (*send)(pk_mcp_session *s, pk_mcp_call *c, const char *json, size_t n, bool final);
    /* Runs c->work on a worker, then the worker calls pk_mcp_call_finish. False: refused (busy). */
    bool (*run)(pk_mcp_session *s, pk_mcp_call *c);
    /* Closes the stream carrying c without ending c (SSE polling); may be NULL. */
    void (*disconnect)(pk_mcp_session *s, pk_mcp_call *c);
    /* Frees s->tx_state when the session goes away; may be NULL. */
    void (*free_state)(pk_mcp_session *s);
};

struct pk_mcp_session {
    char id[72]; /* visible ASCII, unguessable (256 random bits) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const pk_mcp_transport *tx;
    void *tx_state; /* the transport's per-session state */
    /* under the hub's table mutex */
    int refs;
    bool ended;
    int64_t last_active_ns;
    pk_mcp_session *next;
    /* under mu */
    bool initialize_seen; /* initialize answered */
    bool initialized;     /* notifications/initialized received */
    char version[16];
    bool cap_sampling, cap_elicitation;
    int log_level; /* index in pk_mcp_log_levels; messages below it are not sent */
    char *subs[PK_MCP_MAX_SUBSCRIPTIONS];
    int nsubs;
    pk_mcp_call *inflight;
    int ninflight;
    struct mcp_outbound *outbound; /* server->client requests waiting for an answer */
    uint64_t next_out_id;
};

/* The process-wide MCP state. */
typedef struct pk_mcp_hub {
    pk_server *srv;
    bool fixtures; /* --mcp-conformance-fixtures */
    int max_sessions;
    int64_t session_idle_ns;
    pthread_mutex_t mu; /* session table */
    pk_mcp_session *sessions;
    int nsessions;
    struct pk_metric_family *m_requests, *m_duration;
    atomic_long fixture_cancelled; /* slow fixture calls stopped by cancellation (tests) */
} pk_mcp_hub;

/* Initialises the hub for a server whose store and services are up (idempotent per process). */
void pk_mcp_init(pk_server *srv, bool fixtures);
pk_mcp_hub *pk_mcp_hub_get(void);
/* Ends every session (shutdown of `pake mcp`, tests). */
void pk_mcp_shutdown(void);

/* Sessions. create: a new session in the table (NULL when the table is full after expiring idle
 * ones); find: takes a reference (NULL when unknown or ended); unref drops it. end: removes it from
 * the table, cancels its calls; the memory goes with the last reference. */
pk_mcp_session *pk_mcp_session_create(const pk_mcp_transport *tx, void *tx_state);
pk_mcp_session *pk_mcp_session_find(const char *id, size_t n);
void pk_mcp_session_ref(pk_mcp_session *s);
void pk_mcp_session_unref(pk_mcp_session *s);
void pk_mcp_session_end(pk_mcp_session *s);
/* Calls fn for each live session (under the table mutex: fn must not take it). */
void pk_mcp_each_session(void (*fn)(pk_mcp_session *s, void *ud), void *ud);

/* ---- dispatch (dispatch.c) ---- */
typedef enum {
    PK_MCP_HANDLED,  /* a notification or a response: nothing to send */
    PK_MCP_ANSWERED, /* `out` holds the response */
    PK_MCP_ASYNC,    /* *call must be handed to pk_mcp_call_start (after the transport set c->tx) */
} pk_mcp_outcome;

/* Handles one JSON-RPC message (an element of a batch or the whole body). `r` is the HTTP request it
 * arrived on (guard, rate limit, principal); NULL over stdio and in the fuzzer. */
pk_mcp_outcome pk_mcp_handle(pk_mcp_session *s, const cJSON *msg, pk_req *r, pk_buf *out, pk_mcp_call **call);
/* Starts an async call (or answers it with an error when the transport refuses it). */
void pk_mcp_call_start(pk_mcp_call *c);
/* Worker side: replies (once), then the transport is told the call is over. */
void pk_mcp_call_reply(pk_mcp_call *c, const char *result_json, size_t n);
void pk_mcp_call_error(pk_mcp_call *c, int code, const char *message, const char *data_json);
/* Worker side, after work returned: unregisters and frees the call. */
void pk_mcp_call_finish(pk_mcp_call *c);
bool pk_mcp_call_cancelled(pk_mcp_call *c);
/* Sends notifications/progress for the call when the client gave a progress token. */
void pk_mcp_call_progress(pk_mcp_call *c, double progress, double total, const char *message);
/* Sends notifications/message when `level` passes the session's level (c may be NULL). */
void pk_mcp_log(pk_mcp_session *s, pk_mcp_call *c, const char *level, const char *logger,
                const char *data_json);
/* Worker side: sends a request to the client and waits for its answer (result JSON into *result;
 * error -> false with a message in *result). Gives up after timeout_ms, on cancellation or shutdown. */
bool pk_mcp_call_ask(pk_mcp_call *c, const char *method, const char *params_json, int timeout_ms,
                     pk_buf *result);
/* Sleeps up to ms in small steps; false when the call was cancelled meanwhile. */
bool pk_mcp_call_sleep(pk_mcp_call *c, int ms);

/* A note changed (REST or MCP): notifications/resources/updated to subscribers of pake://notes/{id},
 * notifications/resources/list_changed when it was created or deleted. Any thread. */
void pk_mcp_note_changed(const char *id, bool created_or_deleted);

/* JSON-RPC helpers. */
void pk_mcp_write_error(pk_buf *out, const char *id_json, int code, const char *message,
                        const char *data_json);
void pk_mcp_write_result(pk_buf *out, const char *id_json, const char *result_json, size_t n);
bool pk_mcp_version_supported(const char *v);
extern const char *const pk_mcp_log_levels[]; /* "debug" .. "emergency", NULL-terminated */

/* ---- transports ---- */
/* HTTP handlers for the /mcp routes (mcp_http.c). */
void pk_mcp_http_post(pk_req *r);
void pk_mcp_http_get(pk_req *r);
void pk_mcp_http_delete(pk_req *r);
/* `pake mcp`: serves newline-delimited JSON-RPC on in/out until EOF; returns the exit code. */
int pk_mcp_stdio_run(pk_server *srv, int in_fd, int out_fd);
#endif
