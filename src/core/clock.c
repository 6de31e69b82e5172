#include "core/clock.h"
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t pk_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t pk_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t real_now(void *ctx)
{
    (void)ctx;
    return pk_mono_ns();
}

const pk_clock *pk_clock_real(void)
{
    static const pk_clock c = {real_now, NULL};
    return &c;
}

static int64_t wall_now(void *ctx)
{
    (void)ctx;
    return pk_wall_ns();
}

const pk_clock *pk_clock_wall(void)
{
    static const pk_clock c = {wall_now, NULL};
    return &c;
}

int64_t pk_fake_clock_now(void *ctx)
{
    return *(int64_t *)ctx;
}

/* UTC calendar fields of secs >= 0 (the days-to-civil algorithm of H. Hinnant's "chrono-compatible
 * low-level date algorithms": eras of 400 years starting on March 1st); gmtime_r cost ~700 instructions
 * (two per note of every list and search page). */
static void civil(int64_t secs, struct tm *tm)
{
    int64_t days = secs / 86400, rem = secs % 86400;
    tm->tm_hour = (int)(rem / 3600);
    tm->tm_min = (int)(rem / 60 % 60);
    tm->tm_sec = (int)(rem % 60);
    int64_t z = days + 719468;
    int64_t era = z / 146097;
    int64_t doe = z - era * 146097;                                      /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                    /* [0, 11], March = 0 */
    tm->tm_mday = (int)(doy - (153 * mp + 2) / 5 + 1);
    tm->tm_mon = (int)(mp < 10 ? mp + 2 : mp - 10);
    tm->tm_year = (int)(yoe + era * 400 + (tm->tm_mon <= 1) - 1900);
}

void pk_rfc3339(int64_t wall_ns, char out[PK_RFC3339_LEN])
{
    time_t secs = (time_t)(wall_ns / 1000000000LL);
    int ms = (int)((wall_ns / 1000000LL) % 1000);
    struct tm tm;
    if (wall_ns >= 0) { /* 1970 .. 2262 (all of int64 ns): no gmtime_r call */
        civil(secs, &tm);
    } else {
        gmtime_r(&secs, &tm);
    }
    int year = tm.tm_year + 1900;
    if (year < 0 || year > 9999 || ms < 0) { /* outside what the digits below write */
        char tmp[64];
        snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", year, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
        memcpy(out, tmp, PK_RFC3339_LEN - 1);
        out[PK_RFC3339_LEN - 1] = '\0';
        return;
    }
    /* written digit by digit: snprintf showed in profiles of list and search pages (two per note) */
    const int v[7] = {year, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms};
    static const int width[7] = {4, 2, 2, 2, 2, 2, 3};
    static const char after[7] = {'-', '-', 'T', ':', ':', '.', 'Z'};
    char *o = out;
    for (int f = 0; f < 7; f++) {
        for (int d = width[f] - 1, x = v[f]; d >= 0; d--, x /= 10)
            o[d] = (char)('0' + x % 10);
        o += width[f];
        *o++ = after[f];
    }
    *o = '\0';
}

static int digits(const char *s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        *v = *v * 10 + (s[i] - '0');
    }
    return 0;
}

int pk_rfc3339_parse(const char *s, int64_t *wall_ns)
{
    int Y, M, D, h, m, sec;
    size_t n = strlen(s);
    if (n < 20) return -1;
    if (digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) || s[7] != '-' || digits(s + 8, 2, &D) ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || digits(s + 11, 2, &h) || s[13] != ':' ||
        digits(s + 14, 2, &m) || s[16] != ':' || digits(s + 17, 2, &sec))
        return -1;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return -1;
    /* nanoseconds since 1970 fit in int64 only for years 1678..2261 */
    if (Y < 1678 || Y > 2261) return -1;
    const char *p = s + 19;
    int64_t frac_ns = 0;
    if (*p == '.') {
        p++;
        int64_t scale = 100000000;
        if (*p < '0' || *p > '9') return -1;
        while (*p >= '0' && *p <= '9') {
            frac_ns += (*p - '0') * scale;
            scale /= 10;
            p++;
        }
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 || om > 59) return -1;
        off = (oh * 60 + om) * 60 * (*p == '+' ? 1 : -1);
        p += 6;
    } else
        return -1;
    if (*p) return -1;
    struct tm tm = {0};
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    *wall_ns = ((int64_t)t - off) * 1000000000LL + frac_ns;
    return 0;
}
