/* pk_queue_limits_parse (--task-limits): good specs give exactly the limits written (rates converted
 * to per second, blanks ignored), bad specs are "bad_config" errors naming the bad part, and nothing
 * is returned (or leaked) on an error. */
#include "queue/queue.h"
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static pk_queue_type_limit *lim;
static size_t n;
static char *buf;

static void parse_ok(const char *spec)
{
    pk_err *e = pk_queue_limits_parse(spec, &lim, &n, &buf);
    cr_assert_null(e, "'%s': %s", spec, e ? e->message : "");
}

static void done(void)
{
    free(lim);
    free(buf);
    lim = NULL;
    buf = NULL;
    n = 0;
}

TestSuite(limits, .fini = done);

Test(limits, empty_spec_is_no_limits)
{
    parse_ok("");
    cr_assert_eq(n, 0);
    cr_assert_null(lim);
    parse_ok("   ");
    cr_assert_eq(n, 0);
    parse_ok(NULL);
    cr_assert_eq(n, 0);
}

Test(limits, full_entry)
{
    parse_ok("note.embed=concurrency:4;rate:10/s;burst:20");
    cr_assert_eq(n, 1);
    cr_assert_str_eq(lim[0].type, "note.embed");
    cr_assert_eq(lim[0].concurrency, 4);
    cr_assert_float_eq(lim[0].rate_per_s, 10.0, 1e-9);
    cr_assert_eq(lim[0].burst, 20);
}

Test(limits, several_types_partial_params_and_units)
{
    parse_ok(" noop = concurrency:1 , note.summarize=rate:30/m ; burst:2,ai=rate:7200/h,x=rate:2.5 ");
    cr_assert_eq(n, 4);
    cr_assert_str_eq(lim[0].type, "noop");
    cr_assert_eq(lim[0].concurrency, 1);
    cr_assert_float_eq(lim[0].rate_per_s, 0.0, 1e-12);
    cr_assert_eq(lim[0].burst, 0);
    cr_assert_str_eq(lim[1].type, "note.summarize");
    cr_assert_eq(lim[1].concurrency, 0);
    cr_assert_float_eq(lim[1].rate_per_s, 0.5, 1e-9);
    cr_assert_eq(lim[1].burst, 2);
    cr_assert_str_eq(lim[2].type, "ai");
    cr_assert_float_eq(lim[2].rate_per_s, 2.0, 1e-9);
    cr_assert_str_eq(lim[3].type, "x");
    cr_assert_float_eq(lim[3].rate_per_s, 2.5, 1e-9);
}

Test(limits, concurrency_zero_means_unlimited)
{
    parse_ok("noop=concurrency:0");
    cr_assert_eq(n, 1);
    cr_assert_eq(lim[0].concurrency, 0);
}

Test(limits, bad_specs_are_config_errors_naming_the_part)
{
    static const struct {
        const char *spec, *mentions;
    } cases[] = {
        {"noop", "noop"},                                 /* no '=' */
        {"noop=", "noop"},                                /* no limit */
        {"=concurrency:1", "type"},                       /* no type */
        {"Noop=concurrency:1", "type"},                   /* bad alphabet */
        {"noop=concurrency", "KEY:VALUE"},                /* no value */
        {"noop=concurrency:-1", "integer"},               /* negative */
        {"noop=concurrency:two", "integer"},              /* not a number */
        {"noop=concurrency:1x", "integer"},               /* trailing junk */
        {"noop=rate:0", "rate"},                          /* zero rate */
        {"noop=rate:5/d", "unit"},                        /* unknown unit */
        {"noop=rate:abc/s", "rate"},                      /* not a number */
        {"noop=burst:3", "burst needs a rate"},           /* burst alone */
        {"noop=rate:1;burst:0", "integer"},               /* burst < 1 */
        {"noop=speed:3", "unknown parameter"},            /* unknown key */
        {"noop=concurrency:1;concurrency:2", "twice"},    /* repeated key */
        {"noop=concurrency:1,noop=rate:1", "twice"},      /* repeated type */
        {"noop=concurrency:1,,x=concurrency:1", "empty"}, /* empty entry */
        {"noop=concurrency:1;;rate:1", "empty"},          /* empty param */
        {"noop=concurrency:1,", "empty"},                 /* trailing comma */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lim = (pk_queue_type_limit *)1; /* must be reset to NULL on error */
        buf = (char *)1;
        n = 99;
        pk_err *e = pk_queue_limits_parse(cases[i].spec, &lim, &n, &buf);
        cr_assert_not_null(e, "'%s' was accepted", cases[i].spec);
        cr_assert(pk_err_is(e, "bad_config"), "'%s': code %s", cases[i].spec, e->code);
        cr_assert_eq(e->status, 2);
        cr_assert(strstr(e->message, "--task-limits") != NULL, "%s", e->message);
        cr_assert(strstr(e->message, cases[i].mentions) != NULL, "'%s': message '%s' lacks '%s'",
                  cases[i].spec, e->message, cases[i].mentions);
        cr_assert_null(lim);
        cr_assert_null(buf);
        cr_assert_eq(n, 0);
        pk_err_free(e);
    }
}
