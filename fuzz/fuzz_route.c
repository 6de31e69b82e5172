/* libFuzzer target: route matching of untrusted method + path bytes (input: "METHOD path"). */
#include "server/request.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *sp = memchr(s, ' ', size);
    size_t mlen = sp ? (size_t)(sp - s) : size;
    const char *path = sp ? sp + 1 : s + size;
    size_t plen = sp ? size - mlen - 1 : 0;
    char *m = malloc(mlen ? mlen : 1), *p = malloc(plen ? plen : 1);
    memcpy(m, s, mlen);
    memcpy(p, path, plen);
    h2o_iovec_t params[PK_MAX_PARAMS];
    int np = 0;
    char allow[128];
    const pk_route *r = pk_route_match(m, mlen, p, plen, params, &np, allow, sizeof allow);
    if (r) {
        for (int i = 0; i < np; i++)
            if (params[i].base < p || params[i].base + params[i].len > p + plen) abort();
    }
    free(m);
    free(p);
    return 0;
}
