/*
 * trace: W3C Trace Context (https://www.w3.org/TR/trace-context/) and request ids.
 *
 * Every request gets a pk_trace: the trace it belongs to (continued from an incoming `traceparent`
 * header, or started here), the id of this server's span, the caller's span id (parent), the trace
 * flags and the incoming `tracestate`, carried through verbatim. The outgoing `traceparent` (response
 * header, child calls) is formatted from it. Log lines carry trace_id and span_id (core/log.h).
 *
 * traceparent parsing (pk_traceparent_parse) follows the spec's rules:
 *   - "version-traceid-parentid-flags", all hex lower-case; optional spaces/tabs around the value;
 *   - version "ff" is invalid; version 00 must be exactly 55 characters;
 *   - a higher (future) version is parsed for its first four fields: at least 55 characters, and if
 *     longer, the character after the flags must be '-'; only the sampled bit of its flags is kept;
 *   - trace-id (32 hex) and parent-id (16 hex) must not be all zeros.
 *   Flags kept from version 00 are sampled (0x01) and random (0x02, Level 2); other bits are zeroed
 *   when propagating. The outgoing header is always version 00.
 * tracestate is kept only when the traceparent was valid, it is at most PK_TRACESTATE_MAX bytes and it
 * passes a loose list-member check (at most 32 members, `key=value`, keys [a-z0-9_*-/@] starting with
 * a lower-case letter or digit, values of printable ASCII without ',' and '='). Otherwise it is dropped
 * (the spec forbids propagating a tracestate one could not parse).
 *
 * X-Request-ID: an incoming id is kept when it is 1..PK_REQUEST_ID_MAX characters of [A-Za-z0-9._:-];
 * otherwise a fresh UUIDv7 is generated.
 *
 * Ids come from core/id.h (pk_rand64, per-thread PRNG). All functions are pure over their arguments
 * apart from id generation, and thread-safe. Nothing allocates; callers own the structs.
 */
#ifndef PAKE_FOUNDATION_TRACE_H
#define PAKE_FOUNDATION_TRACE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PK_TRACEPARENT_LEN 56 /* "00-" 32 "-" 16 "-" 2 = 55 chars + NUL */
#define PK_TRACE_ID_HEX 33    /* 32 hex + NUL */
#define PK_SPAN_ID_HEX 17     /* 16 hex + NUL */
#define PK_TRACESTATE_MAX 512
#define PK_TRACESTATE_MAX_MEMBERS 32
#define PK_REQUEST_ID_MAX 128

#define PK_TRACE_FLAG_SAMPLED 0x01
#define PK_TRACE_FLAG_RANDOM 0x02
#define PK_TRACE_FLAGS_KNOWN (PK_TRACE_FLAG_SAMPLED | PK_TRACE_FLAG_RANDOM)

/* A parsed traceparent header. */
typedef struct pk_traceparent {
    uint8_t version;
    uint8_t trace_id[16];
    uint8_t parent_id[8];
    uint8_t flags; /* already masked as described above */
} pk_traceparent;

/* Parses a traceparent header value of `n` bytes (need not be NUL-terminated). Returns 0 and fills
 * *out, or -1 when the value is invalid (then *out is untouched). */
int pk_traceparent_parse(const char *s, size_t n, pk_traceparent *out);

/* The trace context of one request or span. */
typedef struct pk_trace {
    char trace_id[PK_TRACE_ID_HEX];
    char span_id[PK_SPAN_ID_HEX];   /* this span */
    char parent_id[PK_SPAN_ID_HEX]; /* the caller's span; "" when the trace starts here */
    uint8_t flags;
    char tracestate[PK_TRACESTATE_MAX + 1]; /* "" when none */
} pk_trace;

/* Starts the server span of a request. `traceparent`/`tracestate` are the incoming header values
 * (NULL or length 0 when absent). A valid traceparent continues that trace with a new span id;
 * otherwise a new trace starts with flags `new_flags` (e.g. PK_TRACE_FLAG_SAMPLED) and no tracestate. */
void pk_trace_start(pk_trace *t, const char *traceparent, size_t tp_len, const char *tracestate,
                    size_t ts_len, uint8_t new_flags);
/* A child span: same trace, flags and tracestate; parent = parent's span; new span id. */
void pk_trace_child(const pk_trace *parent, pk_trace *child);
/* Writes "00-<trace_id>-<span_id>-<flags>" (the header for the response or an outbound call). */
void pk_trace_format(const pk_trace *t, char out[PK_TRACEPARENT_LEN]);
static inline bool pk_trace_sampled(const pk_trace *t)
{
    return (t->flags & PK_TRACE_FLAG_SAMPLED) != 0;
}

/* New random ids in lower-case hex, never all zeros. */
void pk_trace_new_trace_id(char out[PK_TRACE_ID_HEX]);
void pk_trace_new_span_id(char out[PK_SPAN_ID_HEX]);

/* Loose tracestate syntax check (see above); false for more than PK_TRACESTATE_MAX bytes. */
bool pk_tracestate_valid(const char *s, size_t n);

/* X-Request-ID */
bool pk_request_id_valid(const char *s, size_t n);
/* Copies a valid incoming id (s may be NULL) into out, or writes a new UUIDv7. Returns true when the
 * incoming id was kept. */
bool pk_request_id_accept(const char *s, size_t n, char out[PK_REQUEST_ID_MAX + 1]);
#endif
