/* The router matches exactly (no prefixes), extracts parameters, and lists methods for 405; the
 * settings table parses flags, environment and defaults with the documented precedence. */
#include "server/config.h"
#include "server/request.h"
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static const pk_route *match(const char *m, const char *p, h2o_iovec_t *params, int *np, char *allow)
{
    return pk_route_match(m, strlen(m), p, strlen(p), params, np, allow, 128);
}

Test(router, exact_routes_and_parameters)
{
    h2o_iovec_t ps[PK_MAX_PARAMS];
    int np = 0;
    char allow[128];
    const pk_route *r = match("GET", "/v1/notes/abc", ps, &np, allow);
    cr_assert_not_null(r);
    cr_assert_str_eq(r->pattern, "/v1/notes/{id}");
    cr_assert_eq(np, 1);
    cr_assert_eq(ps[0].len, 3);
    cr_assert(memcmp(ps[0].base, "abc", 3) == 0);
    cr_assert_null(match("GET", "/v1/notes/abc/extra", ps, &np, allow));
    cr_assert_str_eq(allow, "");
    cr_assert_null(match("GET", "/v1/notes/", ps, &np, allow)); /* empty parameter */
    cr_assert_null(match("GET", "/v1/notesx", ps, &np, allow));
    r = match("GET", "/v1/notes/abc/links", ps, &np, allow);
    cr_assert_str_eq(r->operation_id, "listNoteLinks");
}

Test(router, method_not_allowed_lists_allow)
{
    h2o_iovec_t ps[PK_MAX_PARAMS];
    int np = 0;
    char allow[128];
    cr_assert_null(match("PUT", "/v1/notes/abc", ps, &np, allow));
    cr_assert(strstr(allow, "GET") && strstr(allow, "PATCH") && strstr(allow, "DELETE") &&
              strstr(allow, "HEAD"));
    /* HEAD is served by the GET route */
    cr_assert_not_null(match("HEAD", "/v1/notes/abc", ps, &np, allow));
}

Test(router, every_route_is_well_formed)
{
    for (size_t i = 0; i < pk_routes_count; i++) {
        const pk_route *r = &pk_routes[i];
        cr_assert_not_null(r->handler, "%s", r->pattern);
        cr_assert(r->pattern[0] == '/');
        cr_assert((unsigned)r->cls < PK_RC__COUNT);
        cr_assert(!(r->flags & PK_ROUTE_DEPRECATED) || r->successor);
        for (size_t j = 0; j < i; j++)
            cr_assert(strcmp(r->method, pk_routes[j].method) || strcmp(r->pattern, pk_routes[j].pattern),
                      "duplicate route %s %s", r->method, r->pattern);
    }
}

Test(config, precedence_flag_over_env_over_default)
{
    pk_config c;
    bool help;
    setenv("PAKE_DATA_DIR", "/env/dir", 1);
    setenv("PAKE_THREADS", "3", 1);
    char *argv[] = {"serve", "--threads", "5", "--listen", "[::1]:0", "--no-access-log", NULL};
    pk_err *e = pk_config_parse(&c, 6, argv, &help);
    cr_assert_null(e);
    cr_assert_str_eq(c.data_dir, "/env/dir");
    cr_assert_eq(c.threads, 5);
    cr_assert_str_eq(c.listen_host, "::1");
    cr_assert_eq(c.listen_port, 0);
    cr_assert_not(c.access_log);
    cr_assert_eq(c.max_body_bytes, 1048576);
    pk_config_free(&c);
    unsetenv("PAKE_DATA_DIR");
    unsetenv("PAKE_THREADS");
}

Test(config, bad_values_are_errors)
{
    pk_config c;
    bool help;
    const char *bad[][3] = {{"serve", "--threads", "x"},
                            {"serve", "--listen", "nohost"},
                            {"serve", "--nope", "1"},
                            {"serve", "--listen", "h:70000"},
                            {"serve", "--http2", "maybe"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        pk_err *e = pk_config_parse(&c, 3, (char **)bad[i], &help);
        cr_assert_not_null(e, "case %zu", i);
        pk_err_free(e);
        pk_config_free(&c);
    }
}
