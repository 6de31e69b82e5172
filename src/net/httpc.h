/*
 * httpc: a small blocking HTTP client over libcurl for outbound calls (AI providers, n8n webhooks).
 * For worker and offload threads only: every call blocks up to its timeout (never call it from an
 * event-loop thread).
 *
 * One call = one request: method, URL, extra headers ("Name: value"), optional body. The timeout is
 * min(timeout_ms, time left to deadline_ns); connecting is bounded by connect_timeout_ms too. The
 * response body is capped at max_response_bytes (default 8 MiB): a bigger one is an error, never a
 * truncated body. Redirects are not followed. Any HTTP status is a successful call (the caller reads
 * resp->status and decides); only transport failures are errors.
 *
 * Errors (pk_err codes, all retryable except the last two): "upstream_unavailable" (503: DNS, connect
 * refused, reset, TLS), "upstream_timeout" (504), "upstream_too_large" (502, not retryable),
 * "bad_config" (400-class: bad URL or method, not retryable).
 *
 * Thread-safety: every function may be called from any thread concurrently (libcurl is initialised once,
 * one easy handle per call). No connection reuse across calls (callers are low-rate AI operations).
 */
#ifndef PAKE_NET_HTTPC_H
#define PAKE_NET_HTTPC_H
#include "core/buf.h"
#include "core/err.h"
#include <stddef.h>
#include <stdint.h>

typedef struct pk_httpc_req {
    const char *method; /* "GET", "POST" (default), "PUT", "DELETE" */
    const char *url;    /* http:// or https:// */
    const char *const *headers;
    size_t nheaders;
    const char *body; /* may be NULL */
    size_t body_len;
    int timeout_ms;            /* default 10000 */
    int connect_timeout_ms;    /* default 2000 */
    int64_t deadline_ns;       /* pk_mono_ns based; 0 = none */
    size_t max_response_bytes; /* default 8 MiB */
} pk_httpc_req;

typedef struct pk_httpc_resp {
    long status;
    pk_buf body;
    int64_t retry_after_ms; /* from Retry-After (seconds or HTTP date); -1 when absent */
    char content_type[128];
} pk_httpc_resp;

pk_err *pk_httpc_do(const pk_httpc_req *req, pk_httpc_resp *resp);
void pk_httpc_resp_free(pk_httpc_resp *resp);
#endif
