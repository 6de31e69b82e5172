/*
 * fmt: allocation-free formatting for hot paths (every response formats a few numbers and headers;
 * snprintf's format parsing and locale-aware float code showed up at ~10% of a cached read's CPU).
 * Each function writes at p and returns the end (no NUL unless stated); callers size buffers.
 */
#ifndef PAKE_CORE_FMT_H
#define PAKE_CORE_FMT_H
#include <stdint.h>
#include <string.h>

/* Decimal integer. At most 20 bytes. */
static inline char *pk_fmt_i64(char *p, int64_t v)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *p++ = '-';
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* Nanoseconds as milliseconds with three decimals ("12.345"), rounded down. At most 24 bytes. */
static inline char *pk_fmt_ms3(char *p, int64_t ns)
{
    if (ns < 0) ns = 0;
    int64_t us = ns / 1000;
    p = pk_fmt_i64(p, us / 1000);
    int64_t frac = us % 1000;
    *p++ = '.';
    *p++ = (char)('0' + frac / 100);
    *p++ = (char)('0' + frac / 10 % 10);
    *p++ = (char)('0' + frac % 10);
    return p;
}

/* Copies a NUL-terminated string (without the NUL). */
static inline char *pk_fmt_str(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}
/* A double exactly as printf("%.15g") prints it, without printf: 15 significant digits rounded
 * half-to-even from the exact binary value, trailing zeros dropped. Values whose %.15g form is
 * fixed-point and lies in [1e-4, 1e15) are done here with 128-bit integer arithmetic (exact: the value
 * is m * 2^e with m < 2^53, and m * 10^k fits in 113 bits for k <= 18); others (exponent form, NaN,
 * infinities) fall back to snprintf. At most 32 bytes. Checked against snprintf in tests/unit/test_json.c. */
char *pk_fmt_g15(char *p, double v);
#endif
