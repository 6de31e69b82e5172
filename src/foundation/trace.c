/*
 * trace.c: W3C Trace Context parsing/formatting and request-id validation (see trace.h).
 *
 * These functions read untrusted header bytes on every request, so they are written as plain bounded
 * scans over (pointer, length) pairs: no allocation, no NUL-termination assumptions, no locale
 * (isxdigit would accept upper case, which the spec forbids). A parse either fully succeeds or leaves
 * the output untouched. fuzz/fuzz_traceparent.c exercises them.
 */
#include "foundation/trace.h"
#include "core/id.h"
#include <string.h>

static int lhex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Decodes 2*n lower-case hex chars into n bytes; false on any other character. */
static bool unhex(const char *s, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = lhex(s[2 * i]), lo = lhex(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *n)
{
    while (*n && ows((*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n && ows((*s)[*n - 1]))
        (*n)--;
}

int pk_traceparent_parse(const char *s, size_t n, pk_traceparent *out)
{
    if (!s) return -1;
    trim(&s, &n);
    if (n < 55) return -1;
    pk_traceparent tp;
    if (!unhex(s, 1, &tp.version) || tp.version == 0xff) return -1;
    if (tp.version == 0 && n != 55) return -1;
    if (n > 55 && s[55] != '-') return -1;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-') return -1;
    if (!unhex(s + 3, 16, tp.trace_id) || all_zero(tp.trace_id, 16)) return -1;
    if (!unhex(s + 36, 8, tp.parent_id) || all_zero(tp.parent_id, 8)) return -1;
    if (!unhex(s + 53, 1, &tp.flags)) return -1;
    tp.flags &= tp.version == 0 ? PK_TRACE_FLAGS_KNOWN : PK_TRACE_FLAG_SAMPLED;
    *out = tp;
    return 0;
}

/* ---- tracestate ---- */

static bool lcalpha(char c)
{
    return c >= 'a' && c <= 'z';
}
static bool digit(char c)
{
    return c >= '0' && c <= '9';
}
static bool keychar(char c)
{
    return lcalpha(c) || digit(c) || c == '_' || c == '-' || c == '*' || c == '/';
}

/* key = simple-key / tenant-id "@" system-id (Trace Context Level 1 grammar). */
static bool key_valid(const char *k, size_t n)
{
    const char *at = memchr(k, '@', n);
    if (!at) {
        if (n < 1 || n > 256 || !lcalpha(k[0])) return false;
        for (size_t i = 1; i < n; i++)
            if (!keychar(k[i])) return false;
        return true;
    }
    size_t tn = (size_t)(at - k), sn = n - tn - 1;
    if (tn < 1 || tn > 241 || sn < 1 || sn > 14) return false;
    if (!lcalpha(k[0]) && !digit(k[0])) return false;
    for (size_t i = 1; i < tn; i++)
        if (!keychar(k[i])) return false;
    if (!lcalpha(at[1])) return false;
    for (size_t i = 2; i <= sn; i++)
        if (!keychar(at[i])) return false;
    return true;
}

/* value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr; nblk-chr = %x21-7E except ',' and '='. */
static bool value_valid(const char *v, size_t n)
{
    if (n < 1 || n > 256 || v[n - 1] == ' ') return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c > 0x7e || c == ',' || c == '=') return false;
    }
    return true;
}

bool pk_tracestate_valid(const char *s, size_t n)
{
    if (!s || n == 0 || n > PK_TRACESTATE_MAX) return false;
    const char *keys[PK_TRACESTATE_MAX_MEMBERS];
    size_t klens[PK_TRACESTATE_MAX_MEMBERS];
    size_t members = 0, pos = 0;
    while (pos <= n) {
        const char *comma = memchr(s + pos, ',', n - pos);
        size_t end = comma ? (size_t)(comma - s) : n;
        const char *m = s + pos;
        size_t mn = end - pos;
        trim(&m, &mn);
        if (mn > 0) { /* empty members are allowed and ignored */
            const char *eq = memchr(m, '=', mn);
            if (!eq) return false;
            size_t kn = (size_t)(eq - m);
            if (!key_valid(m, kn) || !value_valid(eq + 1, mn - kn - 1)) return false;
            if (members == PK_TRACESTATE_MAX_MEMBERS) return false;
            for (size_t i = 0; i < members; i++)
                if (klens[i] == kn && memcmp(keys[i], m, kn) == 0) return false; /* duplicate key */
            keys[members] = m;
            klens[members] = kn;
            members++;
        }
        pos = end + 1;
    }
    return members > 0;
}

/* ---- trace context ---- */

void pk_trace_new_trace_id(char out[PK_TRACE_ID_HEX])
{
    uint64_t r[2];
    do {
        r[0] = pk_rand64();
        r[1] = pk_rand64();
    } while (r[0] == 0 && r[1] == 0);
    pk_hex(r, sizeof r, out);
}

void pk_trace_new_span_id(char out[PK_SPAN_ID_HEX])
{
    uint64_t r;
    do {
        r = pk_rand64();
    } while (r == 0);
    pk_hex(&r, sizeof r, out);
}

void pk_trace_start(pk_trace *t, const char *traceparent, size_t tp_len, const char *tracestate,
                    size_t ts_len, uint8_t new_flags)
{
    pk_traceparent tp;
    t->tracestate[0] = '\0';
    if (traceparent && pk_traceparent_parse(traceparent, tp_len, &tp) == 0) {
        pk_hex(tp.trace_id, 16, t->trace_id);
        pk_hex(tp.parent_id, 8, t->parent_id);
        t->flags = tp.flags;
        if (tracestate) {
            trim(&tracestate, &ts_len);
            if (pk_tracestate_valid(tracestate, ts_len)) {
                memcpy(t->tracestate, tracestate, ts_len);
                t->tracestate[ts_len] = '\0';
            }
        }
    } else {
        pk_trace_new_trace_id(t->trace_id);
        t->parent_id[0] = '\0';
        t->flags = new_flags & PK_TRACE_FLAGS_KNOWN;
    }
    pk_trace_new_span_id(t->span_id);
}

void pk_trace_child(const pk_trace *parent, pk_trace *child)
{
    if (child != parent) {
        memcpy(child->trace_id, parent->trace_id, sizeof child->trace_id);
        memcpy(child->tracestate, parent->tracestate, sizeof child->tracestate);
        child->flags = parent->flags;
    }
    memcpy(child->parent_id, parent->span_id, sizeof child->parent_id);
    pk_trace_new_span_id(child->span_id);
}

void pk_trace_format(const pk_trace *t, char out[PK_TRACEPARENT_LEN])
{
    char flags[3];
    pk_hex(&t->flags, 1, flags);
    memcpy(out, "00-", 3);
    memcpy(out + 3, t->trace_id, 32);
    out[35] = '-';
    memcpy(out + 36, t->span_id, 16);
    out[52] = '-';
    memcpy(out + 53, flags, 2);
    out[55] = '\0';
}

/* ---- X-Request-ID ---- */

bool pk_request_id_valid(const char *s, size_t n)
{
    if (!s || n < 1 || n > PK_REQUEST_ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || digit(c) || c == '.' || c == '_' ||
                  c == ':' || c == '-';
        if (!ok) return false;
    }
    return true;
}

bool pk_request_id_accept(const char *s, size_t n, char out[PK_REQUEST_ID_MAX + 1])
{
    if (pk_request_id_valid(s, n)) {
        memcpy(out, s, n);
        out[n] = '\0';
        return true;
    }
    pk_uuid7(out);
    return false;
}
