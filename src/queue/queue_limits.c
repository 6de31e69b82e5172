/*
 * queue_limits: the parser of per-type limits (--task-limits / PAKE_TASK_LIMITS), shared by every
 * backend. The grammar is small on purpose, so a typo is a start-up error naming the bad part rather
 * than a silently unlimited type:
 *
 *   spec   = entry *("," entry)
 *   entry  = type "=" param *(";" param)
 *   param  = "concurrency:" N | "rate:" R ["/s" | "/m" | "/h"] | "burst:" B
 *
 * N and B are integers (N >= 0, 0 = unlimited; B >= 1), R a positive number per second (or per minute
 * or hour, converted). Blanks around the separators are ignored. A type appears once; a param appears
 * once per entry; burst needs a rate. The type strings of the result point into one owned copy of the
 * spec (*buf), so the caller frees exactly two blocks.
 */
#include "queue/queue.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* strsep: the next `sep`-separated part of *s (empty parts included), NULL at the end. */
static char *next_part(char **s, char sep)
{
    char *p = *s;
    if (!p) return NULL;
    char *q = strchr(p, sep);
    if (q) *q = '\0';
    *s = q ? q + 1 : NULL;
    return p;
}

static pk_err *bad(const char *part, const char *why)
{
    return pk_err_new("bad_config", 2,
                      "--task-limits: %s in '%s' (expected TYPE=concurrency:N;rate:R/s;burst:B[,TYPE=...])",
                      why, part);
}

static pk_err *parse_int(const char *part, const char *v, long min, long *out)
{
    char *end = NULL;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < min || x > 1000000)
        return bad(part, min ? "expected an integer 1..1000000" : "expected an integer 0..1000000");
    *out = x;
    return NULL;
}

static pk_err *parse_rate(const char *part, char *v, double *out)
{
    double per = 1;
    char *slash = strchr(v, '/');
    if (slash) {
        const char *u = trim(slash + 1);
        if (!strcmp(u, "s"))
            per = 1;
        else if (!strcmp(u, "m"))
            per = 60;
        else if (!strcmp(u, "h"))
            per = 3600;
        else
            return bad(part, "the rate unit must be /s, /m or /h");
        *slash = '\0';
        v = trim(v);
    }
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x <= 0 || x > 1e6)
        return bad(part, "expected a rate > 0, e.g. rate:5/s");
    *out = x / per;
    return NULL;
}

/* One "type=params" entry (modified in place) into *l. */
static pk_err *parse_entry(char *entry, pk_queue_type_limit *l)
{
    char whole[160];
    snprintf(whole, sizeof whole, "%.150s", entry);
    char *eq = strchr(entry, '=');
    if (!eq) return bad(whole, "missing '='");
    *eq = '\0';
    char *type = trim(entry);
    if (!pk_queue_name_valid(type)) return bad(whole, "the type must be 1..64 chars of [a-z0-9_.-]");
    *l = (pk_queue_type_limit){.type = type};
    bool seen_c = false, seen_r = false, seen_b = false;
    char *rest = eq + 1;
    int nparams = 0;
    for (char *p; (p = next_part(&rest, ';'));) {
        p = trim(p);
        if (!*p) return bad(whole, "an empty parameter");
        nparams++;
        char *colon = strchr(p, ':');
        if (!colon) return bad(whole, "a parameter is KEY:VALUE");
        *colon = '\0';
        char *k = trim(p), *v = trim(colon + 1);
        long x = 0;
        pk_err *e = NULL;
        if (!strcmp(k, "concurrency")) {
            if (seen_c) return bad(whole, "concurrency given twice");
            seen_c = true;
            if (!(e = parse_int(whole, v, 0, &x))) l->concurrency = (int)x;
        } else if (!strcmp(k, "rate")) {
            if (seen_r) return bad(whole, "rate given twice");
            seen_r = true;
            e = parse_rate(whole, v, &l->rate_per_s);
        } else if (!strcmp(k, "burst")) {
            if (seen_b) return bad(whole, "burst given twice");
            seen_b = true;
            if (!(e = parse_int(whole, v, 1, &x))) l->burst = (int)x;
        } else {
            return bad(whole, "unknown parameter (concurrency, rate or burst)");
        }
        if (e) return e;
    }
    if (!nparams) return bad(whole, "no limit given");
    if (seen_b && !seen_r) return bad(whole, "burst needs a rate");
    return NULL;
}

pk_err *pk_queue_limits_parse(const char *spec, pk_queue_type_limit **limits, size_t *n, char **buf)
{
    *limits = NULL;
    *n = 0;
    *buf = NULL;
    if (!spec) return NULL;
    char *copy = strdup(spec);
    if (!*trim(copy)) {
        free(copy);
        return NULL;
    }
    size_t cap = 1;
    for (const char *p = spec; *p; p++)
        cap += *p == ',';
    pk_queue_type_limit *out = calloc(cap, sizeof *out);
    size_t count = 0;
    pk_err *e = NULL;
    char *rest = copy;
    for (char *entry; !e && (entry = next_part(&rest, ','));) {
        if (!*trim(entry)) {
            e = bad(spec, "an empty entry");
            break;
        }
        e = parse_entry(entry, &out[count]);
        for (size_t i = 0; !e && i < count; i++)
            if (!strcmp(out[i].type, out[count].type)) e = bad(out[count].type, "the type is given twice");
        if (!e) count++;
    }
    if (e) {
        free(out);
        free(copy);
        return e;
    }
    *limits = out;
    *n = count;
    *buf = copy;
    return NULL;
}
