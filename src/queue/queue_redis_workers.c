/*
 * queue_redis_workers: the worker registry in Redis (see the header for the keys and why Redis's clock).
 * Three small scripts; the JSON in the hash is written with the project's writer and read back with
 * the strict parser, so a foreign or damaged value is skipped, never trusted.
 */
#include "queue/queue_redis_workers.h"
#include "core/clock.h"
#include "core/json.h"
#include "redis/redis.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALL_TIMEOUT_NS 2000000000LL

/* KEYS: set, hash. ARGV: name, info, forget ms. */
static pk_redis_script S_BEAT = {
    .src = "local t = redis.call('TIME')\n"
           "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
           "redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
           "redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])\n"
           "local cut = now - tonumber(ARGV[3])\n"
           "local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cut)\n"
           "for i = 1, #old do redis.call('HDEL', KEYS[2], old[i]) end\n"
           "if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. cut) end\n"
           "return #old\n"};
/* KEYS: set, hash. ARGV: name. */
static pk_redis_script S_LEAVE = {.src = "redis.call('ZREM', KEYS[1], ARGV[1])\n"
                                         "return redis.call('HDEL', KEYS[2], ARGV[1])\n"};
/* KEYS: set, hash. ARGV: max age ms. Returns {now, name, score, info, name, score, info, ...}. */
static pk_redis_script S_SEEN = {
    .src =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
        "local r = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', now - tonumber(ARGV[1]), 'WITHSCORES')\n"
        "local out = {now}\n"
        "for i = 1, #r, 2 do\n"
        "  out[#out + 1] = r[i]\n"
        "  out[#out + 1] = r[i + 1]\n"
        "  out[#out + 1] = redis.call('HGET', KEYS[2], r[i]) or ''\n"
        "end\n"
        "return out\n"};

static void keys(const char *prefix, char set[128], char hash[128])
{
    snprintf(set, 128, "%.100sworkers", prefix ? prefix : "pake:");
    snprintf(hash, 128, "%.100sworkers:info", prefix ? prefix : "pake:");
}

static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;
static void init_scripts(void)
{
    pk_redis_script_init(&S_BEAT);
    pk_redis_script_init(&S_LEAVE);
    pk_redis_script_init(&S_SEEN);
}

static pk_err *eval(struct pk_redis *r, pk_redis_script *s, int argc, const char **argv, redisReply **out)
{
    pthread_once(&scripts_once, init_scripts);
    return pk_redis_eval(r, pk_mono_ns() + CALL_TIMEOUT_NS, s, 2, argc, argv, NULL, out);
}

pk_err *pk_queue_redis_worker_beat(struct pk_redis *r, const char *prefix, const pk_queue_worker_info *w,
                                   int64_t forget_ms)
{
    char set[128], hash[128], forget[24];
    keys(prefix, set, hash);
    snprintf(forget, sizeof forget, "%lld", (long long)forget_ms);
    pk_buf info = PK_BUF_INIT;
    pk_jw j;
    pk_jw_init(&j, &info);
    pk_jw_obj_open(&j);
    pk_jw_key(&j, "host");
    pk_jw_str(&j, w->host);
    pk_jw_key(&j, "kind");
    pk_jw_str(&j, w->kind);
    pk_jw_key(&j, "pid");
    pk_jw_int(&j, w->pid);
    pk_jw_key(&j, "threads");
    pk_jw_int(&j, w->threads);
    pk_jw_key(&j, "busy");
    pk_jw_int(&j, w->busy);
    pk_jw_key(&j, "started_ns");
    pk_jw_int(&j, w->started_ns);
    pk_jw_obj_close(&j);
    const char *argv[] = {set, hash, w->name, info.data, forget};
    redisReply *rep = NULL;
    pk_err *e = eval(r, &S_BEAT, 5, argv, &rep);
    if (rep) freeReplyObject(rep);
    pk_buf_free(&info);
    return e;
}

pk_err *pk_queue_redis_worker_leave(struct pk_redis *r, const char *prefix, const char *name)
{
    char set[128], hash[128];
    keys(prefix, set, hash);
    const char *argv[] = {set, hash, name};
    redisReply *rep = NULL;
    pk_err *e = eval(r, &S_LEAVE, 3, argv, &rep);
    if (rep) freeReplyObject(rep);
    return e;
}

static int64_t json_int(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static void json_str(const cJSON *o, const char *k, char *dst, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    snprintf(dst, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

/* One entry from (name, score, info); false when the info is not ours. */
static bool entry(const redisReply *name, const redisReply *score, const redisReply *info, long long now_ms,
                  int64_t local_now, pk_queue_worker_info *w)
{
    if (name->type != REDIS_REPLY_STRING || score->type != REDIS_REPLY_STRING ||
        info->type != REDIS_REPLY_STRING)
        return false;
    cJSON *o = NULL;
    pk_err *e = pk_json_parse(info->str, info->len, 8, &o);
    if (e || !cJSON_IsObject(o)) {
        pk_err_free(e);
        cJSON_Delete(o);
        return false;
    }
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "%.*s", (int)name->len, name->str);
    json_str(o, "host", w->host, sizeof w->host);
    json_str(o, "kind", w->kind, sizeof w->kind);
    w->pid = (int)json_int(o, "pid");
    w->threads = (int)json_int(o, "threads");
    w->busy = (int)json_int(o, "busy");
    w->started_ns = json_int(o, "started_ns");
    long long age_ms = now_ms - atoll(score->str);
    w->last_seen_ns = local_now - (age_ms > 0 ? age_ms : 0) * 1000000LL;
    cJSON_Delete(o);
    return true;
}

pk_err *pk_queue_redis_workers_seen(struct pk_redis *r, const char *prefix, int64_t max_age_ms,
                                    pk_queue_worker_info **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    char set[128], hash[128], age[24];
    keys(prefix, set, hash);
    snprintf(age, sizeof age, "%lld", (long long)max_age_ms);
    const char *argv[] = {set, hash, age};
    redisReply *rep = NULL;
    pk_err *e = eval(r, &S_SEEN, 3, argv, &rep);
    if (e) return e;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 || rep->element[0]->type != REDIS_REPLY_INTEGER ||
        (rep->elements - 1) % 3) {
        freeReplyObject(rep);
        return pk_err_new("queue_error", 500, "the worker registry answered an unexpected reply");
    }
    long long now_ms = rep->element[0]->integer;
    int64_t local_now = pk_wall_ns();
    size_t cnt = (rep->elements - 1) / 3;
    if (cnt) *out = calloc(cnt, sizeof **out);
    for (size_t i = 0; i < cnt; i++) {
        redisReply **el = &rep->element[1 + 3 * i];
        if (entry(el[0], el[1], el[2], now_ms, local_now, &(*out)[*n])) (*n)++;
    }
    if (!*n) {
        free(*out);
        *out = NULL;
    }
    freeReplyObject(rep);
    return NULL;
}
