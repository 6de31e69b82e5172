/*
 * redis: a small, blocking Redis client pool over hiredis (RESP2), for offload threads only (never call
 * it from an event-loop thread: every function here may block up to the caller's deadline).
 *
 * URL: redis://[[user]:password@]host[:port][/db]   (port 6379, db 0 by default; user and password are
 * percent-decoded; "redis://:secret@h" is a password without ACL user, "redis://u:p@h" an ACL user).
 *
 * Pool: `pool_size` slots. A call goes: circuit breaker ("redis", owned by the caller, may be NULL) ->
 * bulkhead (pool_size concurrent calls, bounded wait) -> a slot: an idle connection, or a new one when
 * the slot's reconnect backoff has passed (full-jitter exponential, 50 ms .. 1 s) -> the command with a
 * socket timeout of min(command timeout, time left to the deadline) -> outcome recorded. A connection
 * that saw an I/O error or a timeout is closed (hiredis contexts are unusable after an error) and its
 * slot backs off. Connect = TCP connect (timeout min(connect timeout, time left)), AUTH, SELECT.
 *
 * Errors (pk_err codes): "redis_unavailable" (503: breaker open, no connection, I/O error),
 * "redis_timeout" (504), "redis_auth" (503: AUTH refused, the message says why), "redis_error" (500:
 * an error reply, message = Redis's text), "bad_config" (bad URL), "bulkhead_full".
 *
 * Scripts: pk_redis_script holds a Lua source and its SHA1; pk_redis_eval uses EVALSHA and on NOSCRIPT
 * loads the script (SCRIPT LOAD) and tries again once (a restarted Redis has an empty script cache).
 * Functions: pk_redis_fcall is the same for a Redis 7 function library (FCALL; "Function not found" ->
 * FUNCTION LOAD REPLACE and once more): its helpers are created once at load, not on every call.
 *
 * Subscriber: pk_redis_sub runs one thread with its own connection: SUBSCRIBE to one channel, PING
 * every `ping_ms` (replies arrive in order with messages, so a PONG proves every message published
 * before the PING was delivered), reconnect with backoff. Callbacks run on that thread.
 *
 * Thread-safety: every function may be called from any non-loop thread concurrently; free only when no
 * call is in flight. Replies returned to the caller are owned by the caller (freeReplyObject).
 */
#ifndef PAKE_REDIS_REDIS_H
#define PAKE_REDIS_REDIS_H
#include "core/err.h"
#include "foundation/breaker.h"
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pk_redis_url {
    char host[256];
    int port;
    int db;
    char user[128];
    char password[256];
} pk_redis_url;

/* Parses a redis:// URL. Errors: "bad_config" (exit 2) naming what is wrong (never the password). */
pk_err *pk_redis_url_parse(const char *url, pk_redis_url *out);

typedef struct pk_redis_config {
    const char *url;
    int pool_size;          /* default 8 */
    int connect_timeout_ms; /* default 500 */
    int command_timeout_ms; /* default 250 */
    int bulkhead_wait_ms;   /* default 50 */
    pk_breaker *breaker;    /* optional, not owned: every pooled call goes through it */
} pk_redis_config;

typedef struct pk_redis pk_redis;

typedef struct pk_redis_stats {
    int pool_size, connected, in_use;
    uint64_t ok, error_reply, io_error, timeout, rejected, connects, connect_failures, script_loads;
} pk_redis_stats;

pk_err *pk_redis_new(const pk_redis_config *cfg, pk_redis **out);
void pk_redis_free(pk_redis *r);
const pk_redis_url *pk_redis_get_url(const pk_redis *r);
void pk_redis_stats_get(pk_redis *r, pk_redis_stats *out);

/* One command (argv form; lens may be NULL for NUL-terminated args). deadline_ns: pk_mono_ns based, 0 =
 * none. timeout_ms > 0 overrides the command timeout (blocking commands such as BLPOP). On success
 * *out is the reply (never an error reply: those become "redis_error"). */
pk_err *pk_redis_call(pk_redis *r, int64_t deadline_ns, int timeout_ms, redisReply **out, int argc,
                      const char **argv, const size_t *lens);

typedef struct pk_redis_script {
    const char *src;
    char sha[41]; /* filled by pk_redis_script_init */
} pk_redis_script;
void pk_redis_script_init(pk_redis_script *s);
/* EVALSHA sha nkeys args...; NOSCRIPT -> SCRIPT LOAD and once more. argv holds keys then args. */
pk_err *pk_redis_eval(pk_redis *r, int64_t deadline_ns, pk_redis_script *s, int nkeys, int argc,
                      const char **argv, const size_t *lens, redisReply **out);

/* FCALL fn nkeys args... of a function library (Redis >= 7.0 Functions): `library` is its whole code
 * ("#!lua name=...", loaded with FUNCTION LOAD REPLACE when Redis answers "Function not found": a new,
 * restarted or flushed Redis), then the call once more. Give every version of a library its own library
 * and function names (e.g. with a hash of its code), so that processes of different versions sharing a
 * Redis never replace each other's code. argv holds keys then args. Errors as pk_redis_call. */
pk_err *pk_redis_fcall(pk_redis *r, int64_t deadline_ns, const char *library, const char *fn, int nkeys,
                       int argc, const char **argv, const size_t *lens, redisReply **out);

/* Connects one dedicated connection (AUTH, SELECT) outside the pool, with a timeout. */
pk_err *pk_redis_connect(pk_redis *r, int timeout_ms, redisContext **out);

/* ---- subscriber ---- */
typedef struct pk_redis_sub pk_redis_sub;
typedef struct pk_redis_sub_callbacks {
    /* Subscribed (first time or after a reconnect): messages may have been missed before. */
    void (*on_subscribed)(void *ud);
    /* A message on the channel. */
    void (*on_message)(void *ud, const char *msg, size_t len);
    /* A PONG for a PING sent at sent_ns (pk_mono_ns): every message published before that is done. */
    void (*on_pong)(void *ud, int64_t sent_ns);
    /* The subscription was lost (I/O error, PONG overdue). */
    void (*on_lost)(void *ud);
    void *ud;
} pk_redis_sub_callbacks;

/* Starts the thread. ping_ms: PING period (a PONG overdue by 4 periods counts as a lost connection). */
pk_redis_sub *pk_redis_sub_start(pk_redis *r, const char *channel, int ping_ms,
                                 const pk_redis_sub_callbacks *cb);
/* Stops and joins the thread (at most ~ping_ms + connect timeout). */
void pk_redis_sub_stop(pk_redis_sub *s);
#endif
