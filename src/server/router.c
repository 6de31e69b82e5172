/*
 * Exact route matching with {param} segments. h2o itself matches path prefixes, so PAKE registers a
 * single catch-all handler and matches here: "/v1/notes/x/extra" never reaches the note handler.
 * The table is small (tens of routes); a linear scan over pre-split patterns costs well under a
 * microsecond, so no trie is needed.
 */
#include "server/request.h"
#include <string.h>

/* Compares one pattern against a path; fills params. Empty segments never match a parameter. */
static bool match_pattern(const char *pat, const char *path, size_t plen, h2o_iovec_t *params, int *np)
{
    size_t i = 0;
    int n = 0;
    const char *p = pat;
    while (*p) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            size_t start = i;
            while (i < plen && path[i] != '/')
                i++;
            if (i == start || n >= PK_MAX_PARAMS) return false;
            params[n++] = h2o_iovec_init(path + start, i - start);
            p = close + 1;
            continue;
        }
        if (i >= plen || path[i] != *p) return false;
        i++;
        p++;
    }
    if (i != plen) return false;
    *np = n;
    return true;
}

const pk_route *pk_route_match(const char *method, size_t mlen, const char *path, size_t plen,
                               h2o_iovec_t *params, int *nparams, char *allow, size_t allow_len)
{
    size_t alen = 0;
    bool head = mlen == 4 && !memcmp(method, "HEAD", 4);
    allow[0] = '\0';
    const pk_route *get_for_head = NULL;
    h2o_iovec_t tmp[PK_MAX_PARAMS];
    int tn = 0;
    for (size_t r = 0; r < pk_routes_count; r++) {
        const pk_route *rt = &pk_routes[r];
        if (!match_pattern(rt->pattern, path, plen, tmp, &tn)) continue;
        size_t ml = strlen(rt->method);
        if (ml == mlen && !memcmp(rt->method, method, mlen)) {
            memcpy(params, tmp, sizeof tmp);
            *nparams = tn;
            return rt;
        }
        if (head && !strcmp(rt->method, "GET") && !get_for_head) {
            get_for_head = rt;
            memcpy(params, tmp, sizeof tmp);
            *nparams = tn;
        }
        if (!strstr(allow, rt->method) && alen + ml + 3 < allow_len) {
            if (alen) {
                memcpy(allow + alen, ", ", 2);
                alen += 2;
            }
            memcpy(allow + alen, rt->method, ml);
            alen += ml;
            allow[alen] = '\0';
        }
    }
    if (get_for_head) return get_for_head;
    if (alen && strstr(allow, "GET") && !strstr(allow, "HEAD") && alen + 7 < allow_len) {
        memcpy(allow + alen, ", HEAD", 7);
    }
    return NULL;
}
