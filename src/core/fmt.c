/*
 * fmt: the out-of-line members of fmt.h. pk_fmt_g15 replaces snprintf("%.15g") for the numbers of
 * every JSON answer (a search page formats two per hit): the value m * 2^e (m < 2^53) is scaled to
 * 15 digits with one 128-bit multiplication and shift, then rounded half-to-even on the exact
 * remainder, which is what glibc's printf does in the default rounding mode. Anything outside the
 * fixed-point range of %.15g takes snprintf itself, so the output is identical for every double.
 */
#include "core/fmt.h"
#include <math.h>
#include <stdio.h>

static const uint64_t POW10[19] = {1ull,
                                   10ull,
                                   100ull,
                                   1000ull,
                                   10000ull,
                                   100000ull,
                                   1000000ull,
                                   10000000ull,
                                   100000000ull,
                                   1000000000ull,
                                   10000000000ull,
                                   100000000000ull,
                                   1000000000000ull,
                                   10000000000000ull,
                                   100000000000000ull,
                                   1000000000000000ull,
                                   10000000000000000ull,
                                   100000000000000000ull,
                                   1000000000000000000ull};

static char *fallback(char *p, double v)
{
    char tmp[40];
    int n = snprintf(tmp, sizeof tmp, "%.15g", v);
    memcpy(p, tmp, (size_t)n);
    return p + n;
}

char *pk_fmt_g15(char *p, double v)
{
    if (v == 0) {
        if (signbit(v)) *p++ = '-';
        *p++ = '0';
        return p;
    }
    double a = fabs(v);
    if (!(a >= 1e-4 && a < 1e15)) return fallback(p, v); /* exponent form, NaN, infinities */
    int e2;
    double fr = frexp(a, &e2); /* a = fr * 2^e2, fr in [0.5, 1) */
    uint64_t m = (uint64_t)ldexp(fr, 53);
    int s = 53 - e2;              /* a = m / 2^s; 1e-4 <= a < 1e15 gives 3 <= s <= 67 */
    int E = (int)floor(log10(a)); /* decimal exponent; an estimate, checked on the integers below */
    if (E < -4) E = -4;
    if (E > 14) E = 14;
    unsigned __int128 q, rem, half = (unsigned __int128)1 << (s - 1);
    for (int tries = 0;; tries++) {
        unsigned __int128 num = (unsigned __int128)m * POW10[14 - E];
        q = num >> s;
        rem = num - (q << s);
        if (tries < 3 && q < POW10[14] && E > -4) {
            E--;
        } else if (tries < 3 && q >= POW10[15] && E < 14) {
            E++;
        } else {
            break;
        }
    }
    if (q < POW10[14] || q >= POW10[15]) return fallback(p, v); /* not expected: a bad estimate */
    if (rem > half || (rem == half && (q & 1))) q++;
    if (q == POW10[15]) { /* rounded up to the next power of ten */
        q = POW10[14];
        if (++E > 14) return fallback(p, v); /* %.15g switches to the exponent form */
    }
    char d[15];
    uint64_t u = (uint64_t)q;
    for (int i = 14; i >= 0; i--) {
        d[i] = (char)('0' + u % 10);
        u /= 10;
    }
    int nd = 15;
    while (nd > 1 && d[nd - 1] == '0')
        nd--;
    if (v < 0) *p++ = '-';
    if (E >= 0) {
        int ip = E + 1; /* integer digits */
        for (int i = 0; i < ip; i++)
            *p++ = d[i];
        if (nd > ip) {
            *p++ = '.';
            for (int i = ip; i < nd; i++)
                *p++ = d[i];
        }
    } else {
        *p++ = '0';
        *p++ = '.';
        for (int i = 0; i < -E - 1; i++)
            *p++ = '0';
        for (int i = 0; i < nd; i++)
            *p++ = d[i];
    }
    return p;
}
