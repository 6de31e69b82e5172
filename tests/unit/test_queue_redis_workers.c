/* The worker registry in Redis (queue_redis_workers.c) against a real redis-server started by
 * scripts/redis-test-server.sh (skipped when redis-server is not installed): beats upsert, the list
 * is most recent first and filtered by age, a clean leave removes at once, old entries are forgotten
 * by anyone's beat, prefixes do not mix, and a foreign value in the hash is skipped. */
#include "queue/queue_redis_workers.h"
#include "redis/redis.h"
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pk_redis *r;
static int redis_pid;
static char redis_dir[256], url[256];

static void setup(void)
{
    const char *src = getenv("PAKE_SOURCE_DIR");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/scripts/redis-test-server.sh 2>/dev/null", src ? src : PAKE_SOURCE_DIR);
    FILE *p = popen(cmd, "r");
    int ok = p && fscanf(p, "%255s %d %255s", url, &redis_pid, redis_dir) == 3;
    if (p) pclose(p);
    if (!ok) {
        redis_pid = 0;
        return;
    }
    pk_redis_config c = {.url = url, .pool_size = 2};
    pk_err *e = pk_redis_new(&c, &r);
    cr_assert_null(e, "%s", e ? e->message : "");
}

static void teardown(void)
{
    if (r) pk_redis_free(r);
    r = NULL;
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", redis_dir);
        for (int i = 0; i < 200 && kill(redis_pid, 0) == 0; i++)
            usleep(10000);
        if (system(cmd) != 0) { /* best effort */
        }
    }
}

TestSuite(redis_workers, .init = setup, .fini = teardown, .timeout = 30);

static void beat(const char *prefix, const char *name, int busy, int64_t forget_ms)
{
    pk_queue_worker_info w = {.pid = 77, .threads = 4, .busy = busy, .started_ns = 1700000000000000000LL};
    snprintf(w.name, sizeof w.name, "%s", name);
    snprintf(w.host, sizeof w.host, "host-b");
    snprintf(w.kind, sizeof w.kind, "worker");
    pk_err *e = pk_queue_redis_worker_beat(r, prefix, &w, forget_ms);
    cr_assert_null(e, "%s", e ? e->message : "");
}

static size_t seen(const char *prefix, int64_t max_age_ms, pk_queue_worker_info **ws)
{
    size_t n = 99;
    pk_err *e = pk_queue_redis_workers_seen(r, prefix, max_age_ms, ws, &n);
    cr_assert_null(e, "%s", e ? e->message : "");
    return n;
}

static void sleep_ms(int ms)
{
    struct timespec d = {0, ms * 1000000L};
    nanosleep(&d, NULL);
}

Test(redis_workers, beat_list_leave_forget)
{
    if (!redis_pid) cr_skip_test("redis-server is not installed");
    pk_queue_worker_info *ws = NULL;
    cr_assert_eq(seen("t:", 60000, &ws), 0);
    cr_assert_null(ws);
    beat("t:", "a-1", 0, 3600000);
    sleep_ms(5);
    beat("t:", "b-2", 1, 3600000);
    beat("other:", "c-3", 0, 3600000); /* another deployment's prefix */
    int64_t before = pk_wall_ns();
    cr_assert_eq(seen("t:", 60000, &ws), 2);
    cr_assert_str_eq(ws[0].name, "b-2"); /* most recent first */
    cr_assert_eq(ws[0].busy, 1);
    cr_assert_eq(ws[0].threads, 4);
    cr_assert_eq(ws[0].pid, 77);
    cr_assert_str_eq(ws[0].host, "host-b");
    cr_assert_str_eq(ws[0].kind, "worker");
    cr_assert_eq(ws[0].started_ns, 1700000000000000000LL);
    cr_assert(ws[0].last_seen_ns <= before + 1000000 && ws[0].last_seen_ns > before - 2000000000LL);
    cr_assert_str_eq(ws[1].name, "a-1");
    free(ws);
    sleep_ms(5);
    beat("t:", "a-1", 3, 3600000); /* upsert */
    cr_assert_eq(seen("t:", 60000, &ws), 2);
    cr_assert_str_eq(ws[0].name, "a-1");
    cr_assert_eq(ws[0].busy, 3);
    free(ws);
    cr_assert_null(pk_queue_redis_worker_leave(r, "t:", "a-1"));
    cr_assert_eq(seen("t:", 60000, &ws), 1);
    cr_assert_str_eq(ws[0].name, "b-2");
    free(ws);
    /* b-2 gets old; c's beat with a 20 ms forget period drops it (polled, bounded) */
    bool gone = false;
    for (int i = 0; i < 200 && !gone; i++) {
        sleep_ms(10);
        beat("t:", "d-4", 0, 20);
        size_t n = seen("t:", 60000, &ws);
        gone = n == 1 && !strcmp(ws[0].name, "d-4");
        free(ws);
    }
    cr_assert(gone, "b-2 was never forgotten");
    /* the age window: nothing has beaten within 0 ms... once a few ms have passed */
    sleep_ms(5);
    cr_assert_eq(seen("t:", 1, &ws), 0);
    /* the other prefix kept its own entry */
    cr_assert_eq(seen("other:", 60000, &ws), 1);
    cr_assert_str_eq(ws[0].name, "c-3");
    free(ws);
}

Test(redis_workers, foreign_values_are_skipped)
{
    if (!redis_pid) cr_skip_test("redis-server is not installed");
    beat("t:", "good", 0, 3600000);
    const char *argv[] = {"ZADD", "t:workers", "99999999999999", "bad"};
    redisReply *rep = NULL;
    cr_assert_null(pk_redis_call(r, 0, 0, &rep, 4, argv, NULL));
    freeReplyObject(rep);
    const char *argv2[] = {"HSET", "t:workers:info", "bad", "not json"};
    cr_assert_null(pk_redis_call(r, 0, 0, &rep, 4, argv2, NULL));
    freeReplyObject(rep);
    pk_queue_worker_info *ws = NULL;
    cr_assert_eq(seen("t:", 60000, &ws), 1);
    cr_assert_str_eq(ws[0].name, "good");
    free(ws);
}
