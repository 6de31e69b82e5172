/* redis:// URL parsing (src/redis/redis.h): hosts, ports, db numbers, password-only and ACL-user
 * credentials with percent-decoding, and the errors for what is not a usable URL. */
#include "redis/redis.h"
#include <criterion/criterion.h>
#include <string.h>

static pk_redis_url parse_ok(const char *s)
{
    pk_redis_url u;
    pk_err *e = pk_redis_url_parse(s, &u);
    cr_assert_null(e, "%s: %s", s, e ? e->message : "");
    return u;
}

static void parse_bad(const char *s)
{
    pk_redis_url u;
    pk_err *e = pk_redis_url_parse(s, &u);
    cr_assert_not_null(e, "%s should be refused", s);
    cr_assert(pk_err_is(e, "bad_config"));
    cr_assert_null(strstr(e->message, "hunter2"), "the password must not appear in errors");
    pk_err_free(e);
}

Test(redis_url, defaults)
{
    pk_redis_url u = parse_ok("redis://cache.local");
    cr_assert_str_eq(u.host, "cache.local");
    cr_assert_eq(u.port, 6379);
    cr_assert_eq(u.db, 0);
    cr_assert_str_eq(u.user, "");
    cr_assert_str_eq(u.password, "");
}

Test(redis_url, port_db_and_ipv6)
{
    pk_redis_url u = parse_ok("redis://127.0.0.1:7000/3");
    cr_assert_str_eq(u.host, "127.0.0.1");
    cr_assert_eq(u.port, 7000);
    cr_assert_eq(u.db, 3);
    u = parse_ok("redis://[::1]:6380/");
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(u.port, 6380);
    cr_assert_eq(u.db, 0);
}

Test(redis_url, credentials)
{
    pk_redis_url u = parse_ok("redis://:hunter2@h:1/2");
    cr_assert_str_eq(u.user, "");
    cr_assert_str_eq(u.password, "hunter2");
    u = parse_ok("redis://app:p%40ss%3Aw@h");
    cr_assert_str_eq(u.user, "app");
    cr_assert_str_eq(u.password, "p@ss:w");
    cr_assert_str_eq(u.host, "h");
    u = parse_ok("redis://a:b@c@h:9"); /* the last '@' ends the credentials */
    cr_assert_str_eq(u.password, "b@c");
    cr_assert_str_eq(u.host, "h");
    cr_assert_eq(u.port, 9);
}

Test(redis_url, refused)
{
    parse_bad("rediss://h");
    parse_bad("http://h");
    parse_bad("redis://");
    parse_bad("redis://:hunter2@h:0");
    parse_bad("redis://:hunter2@h:99999");
    parse_bad("redis://:hunter2@h:12x");
    parse_bad("redis://:hunter2@h/x");
    parse_bad("redis://:hunter2%zz@h");
    parse_bad("redis://[::1");
}
