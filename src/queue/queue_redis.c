/*
 * queue_redis: the distributed task queue on Redis Streams, the same contract as queue_sqlite.c
 * (queue.h): same states, leases, idempotency, JSON output and error codes, so `pake worker`
 * processes on any machine share one queue.
 *
 * Model. Every operation is ONE Redis function (FCALL) of one function library (Redis >= 7.0; built
 * once, scripts_init: the shared Lua helpers are top-level locals of the library, created once when it
 * is loaded, not on every call as an EVALSHA script's prelude would be; the library and function names
 * carry a hash of the code, "pkq_<12 hex>_<op>", so builds sharing a Redis never run each other's code;
 * "Function not found" -> FUNCTION LOAD REPLACE and once more, redis.h, which covers a restarted or
 * flushed Redis). So each state transition is atomic in Redis and costs one round trip: enqueue, claim,
 * heartbeat, complete, fail, cancel, retry, reclaim, stats, list and next_wakeup are one FCALL each,
 * get is one HGETALL, and `wait` is one FCALL plus one blocking XREAD on a dedicated connection. The hot
 * path is two round trips per task: enqueue (which returns only the id: the caller renders the new
 * task from its own input, new_task_json) and complete_claim (settle + the worker's next claim in one
 * call, like BullMQ's moveToFinished); enqueue_batch and enqueue_each send many as one call. The
 * functions share Lua helpers (LUA_ENQUEUE, LUA_CLAIM, LUA_SETTLE) so the fused ones run exactly the
 * single operations' code. Per-task cost is dominated by Redis running the functions (the Lua side,
 * i.e. argument and reply conversion and the VM, about as much as the commands themselves; each
 * redis.call ~0.5 us beyond the command, a Lua number passed as a command argument ~2 us more,
 * formatted with %.17g: integers are passed as strings, fi()), so the hot paths keep their command and
 * field counts low (see the comments of each) and several callers share one
 * call (group commit, below). Keys (P = redis_prefix + "q:", default "pake:q:"):
 *
 *   P t:<id>           hash, the task record (the source of truth; fields are short names, times are
 *                      integer MICROseconds of the configured clock: exact in Lua's doubles)
 *   P s:<queue>:<prio> stream of ready entries {id}, consumer group "g", one consumer "c"
 *   P queues           set of queue names (the streams to read)
 *   P delayed          zset id -> due time: scheduled, retrying and limit-deferred tasks
 *   P running          zset id -> lease expiry: the lease table reclaim and next_wakeup read
 *   P lr:<type>        zset id -> lease expiry, running tasks of a type with a concurrency limit
 *   P tat:<type>       GCRA theoretical arrival time of a rate-limited type (expires when idle)
 *   P limits           hash type -> "concurrency rate burst" (written at open, see below)
 *   P i:<key>          idempotency key -> task id (with a TTL)
 *   P index            zset id -> creation sequence (P seq): listing, newest first
 *   P finished         zset "state|prio|queue|id" -> finish time: what purge deletes
 *   P counts           hash "queue:prio:state" -> count: stats without scanning records
 *   P dead             stream: dead-letter log {id, error}, capped (MAXLEN ~ 10000)
 *   P wake             stream (MAXLEN 1): a tick when a queue appears or a new earliest due time
 *   P workers          zset name -> last beat (Redis time), and P workers:info, hash name -> JSON: the
 *                      worker registry (queue_redis_workers.c)
 *
 * Claim. The function first promotes due tasks from `delayed` into their stream (so a delayed task is
 * never held by anyone), then reads streams in strict priority order (critical, high, normal, low;
 * queues of one priority round-robin by a per-call counter) with a non-blocking XREADGROUP .. NOACK
 * (an empty stream is skipped after an XLEN), checks the record (an entry whose task is no longer
 * claimable, e.g. cancelled, is dropped), applies the per-type limits and marks the task running. The
 * record and `running` are the whole truth about a running task, so entries are read with NOACK (no
 * pending-entries list: no XACK, XDEL or XCLAIM per task) and every read trims the stream up to what it
 * read (XTRIM MINID last+1: everything before the group's last-delivered id has been delivered), so a
 * stream holds exactly its undelivered entries and XLEN is the ready count. One entry per worker: a read
 * for one worker never leases tasks it may not start for a while; the claims of a group (below) read
 * COUNT = the claims still to come in that call, at most 7, when there is one queue (with several, the
 * round robin would leave entries read for the next claim unused), and take the entries in order from
 * that buffer. An entry read and not taken (only when a type filter or the read budget stops a claim
 * early) is added back at the tail (unread()), as type-filtered claims do anyway.
 *
 * Group commit. Concurrent enqueues of a process, and concurrent claims / complete-and-claims of its
 * worker threads, each queue up in a line (gc_line, one per operation); the first in line takes
 * everyone queued at that moment (up to GROUP_MAX) off the line, runs ONE call for all of them
 * (S_ENQUEUE_BATCH; S_SETTLE_CLAIM with one item per caller), stores each caller's own result or error
 * in its item and wakes them and the next in line. Up to cfg->group_inflight groups of one line are in
 * flight at once (default 1; each on its own pooled connection): with 2, while one call is in flight
 * the next caller leads a new group at once instead of waiting for it. A lone caller runs alone at
 * once, and under load the groups form while the previous call is in flight. The scripts run the items in
 * line order with the single operations' code, so a group does exactly what the same calls one after the
 * other would (limits, idempotency, leases from the claim time), in one atomic step. Groups in flight at
 * the same time hold callers that are all still waiting (none has its result), so whichever Redis runs
 * first, every caller's operation takes effect atomically between its call and its return, as it would
 * alone (each FCALL is atomic: limits, leases and "never claimed twice" are checked inside it, against
 * whatever the other group did). Measured on one machine, 2 in flight cost Redis CPU (more, smaller
 * calls) and gained nothing, so the default is 1. Gathering (claim line only, cfg->group_gather_us):
 * short tasks send a process's worker threads back from a group together, but they wake one after the
 * other and the first one back would lead a group of only those already there; so when fewer callers
 * wait than the last group held, the leader waits (bounded by the gather time, on its condition
 * variable; each arrival that completes the group wakes it) for that many, then sends. A lone caller,
 * or one after a group of one, never waits. Per-call costs
 * (the round trip and syscalls on both sides, FCALL dispatch, promote, the queue list, empty-stream
 * checks, the sequence numbers, queue-set and index writes and count changes of the enqueues) are paid
 * once per group. enqueue_each runs a group a caller already holds (the server's task creations,
 * coalesced by its offload pool) without the line. Off with cfg->no_group_commit.
 *
 * Leases. The lease expiry is stored in the record and in `running`, computed from the configured
 * clock, and reclaim_expired takes expired ones from `running` (ZRANGEBYSCORE). Why not XAUTOCLAIM:
 * its idle time is Redis's own clock (tests could not drive it), it scans stream by stream, and leases
 * differ per type, while one zset answers "which lease expires first" across all streams in O(log n)
 * (next_wakeup needs that too). A running task has no stream entry (read with NOACK and trimmed, see
 * Claim): liveness is the lease in `running`, renewed by heartbeats. A reclaimed task gets a fresh
 * entry at the tail of its stream, or goes dead
 * (record state dead with its error history, plus an entry in the dead-letter stream) when that was
 * its last attempt. Completion calls check state = running and worker in the record inside the
 * script, so a stale worker gets "lease_lost".
 *
 * Memory bounds. A stream holds only undelivered entries (claims trim what they read, a cancel XDELs
 * its task's entry) and the group has no pending-entries list. Finished records get a TTL of keep_finished_ms
 * and are also deleted (with their index, finished and count entries) by purge; the index drops ids whose
 * record expired when list meets them. Idempotency keys expire (TTL + keep_finished + delay), TAT keys expire
 * when idle, the dead-letter and wake streams are capped.
 *
 * Limits. cfg->limits are written to P limits at open (by a process that has any: the last one to
 * start wins; the same --task-limits on every worker is the intended use). The claim script checks the
 * candidate's type: concurrency = ZCOUNT of unexpired leases in P lr:<type>; rate = GCRA on P
 * tat:<type>. A task over its limit is not handed out: its (read) entry is gone and the task is deferred
 * into `delayed` until the time the rate allows, or LIMIT_RETRY_MS for concurrency, and the claim goes
 * on with the next entry.
 *
 * Watchdog. A stream or group that vanished (Redis restarted without persistence, a key deleted) makes
 * XREADGROUP fail with NOGROUP: the claim script recreates the group (XGROUP CREATE .. 0 MKSTREAM) and
 * reads again, so a consumer never stalls. Connection errors surface as retryable "queue_error" 503
 * (the pool reconnects with backoff).
 *
 * Wait. One script promotes due tasks and returns, for every stream, the group's last-delivered id,
 * plus the earliest due time and lease expiry; then XREAD BLOCK on all streams from those ids (and on
 * P wake) returns as soon as any stream has an undelivered entry, or at the earliest due time, or at
 * timeout_ms. It does not claim: the caller claims after it returns. XREAD (not XREADGROUP) so that a
 * waiting worker never owns an entry. Blocking reads use dedicated connections (not the pool), kept in
 * a small free list, so idle workers cannot exhaust the pool.
 *
 * Not cluster-ready: functions derive their keys from the prefix (no KEYS declared, no hash tags).
 * Type-filtered claims (types != NULL) move entries of other types to the tail of their stream; fine for
 * a few types per queue, slow when one queue holds thousands of tasks of types nobody here handles.
 */
#include "core/clock.h"
#include "core/id.h"
#include "core/json.h"
#include "queue/queue.h"
#include "queue/queue_redis_workers.h"
#include "redis/redis.h"
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIMIT_RETRY_MS 50 /* a concurrency-limited task is offered again after this */
#define GROUP_MAX 64      /* most calls one group-commit script carries */
#define WAIT_IDLE_CONNS 8 /* dedicated blocking connections kept for `wait` */

/* Group commit (see the top comment): callers of one operation queue up; the first in line runs one
 * script for itself and the callers behind it, hands each its result and wakes the next in line. */
typedef struct gc_item {
    struct gc_item *next;
    pthread_cond_t cv;
    bool done;
    void *op; /* the operation's own arguments and results (enq_op, claim_op) */
} gc_item;

typedef struct gc_line {
    gc_item *head, *tail; /* callers waiting, not yet taken by a leader */
    int len;              /* how many */
    int busy;             /* groups of this line in flight */
    bool gather;          /* the leader waits (q->gather_ns at most) for the last group's size */
    int last_n;           /* size of the last group that finished */
    int want;             /* a gathering leader waits for len >= want (0: none gathers) */
} gc_line;

typedef struct rq_queue {
    pk_queue base;
    pk_queue_config cfg;
    pk_queue_type_lease *leases; /* owned copy */
    pk_redis *r;
    char prefix[160]; /* redis_prefix + "q:" */
    atomic_uint rr;   /* round-robin start across queues of one priority */
    pthread_mutex_t mu;
    redisContext *idle[WAIT_IDLE_CONNS];
    int nidle;
    bool group;        /* cfg.redis_group_commit */
    int inflight;      /* most groups of one line in flight (cfg.group_inflight) */
    int64_t gather_ns; /* claim line: the leader's wait for the last group's size (cfg.group_gather_us) */
    pthread_condattr_t cv_attr; /* CLOCK_MONOTONIC, for the gathering leader's timed wait */
    pthread_mutex_t gc_mu;      /* the lines below */
    gc_line enq_line, claim_line;
} rq_queue;

/* ---- scripts ----------------------------------------------------------------------------------- */

/* One operation: a function of the library (see scripts_init). ARGV[1..4] are the common arguments
 * (LUA_PRELUDE's begin), the op's own follow. */
typedef struct rq_fn {
    const char *name; /* the op; the function is "<library>_<name>" */
    const char *body; /* Lua, the function's body after begin(ARGV) */
    char fname[64];
} rq_fn;

/* Shared by every script. ARGV[1] prefix, [2] now (us, floor), [3] now (us, ceiling: a lease expiring
 * at L has expired once now > L, i.e. L < ceil(now)), [4] keep_finished_ms; op arguments follow. */
#define LUA_PRELUDE                                                                                          \
    "local P, NOWS, NOW, NOWC, KEEP, KEEPS, DRY, CD, QS, LIM, BUF, WANT, SEQ, SEQN, QK, IDX\n"               \
    "local G = 'g'\n"                                                                                        \
    "local function begin(a)\n"                                                                              \
    "  P, NOWS, NOW, NOWC, KEEP, KEEPS = a[1], a[2], tonumber(a[2]), tonumber(a[3]), tonumber(a[4]), a[4]\n" \
    "  DRY, CD, QS, LIM, BUF, WANT, SEQ, SEQN, QK, IDX = {}, nil, nil, {}, {}, 1, 0, 0, {}, nil\n"           \
    "end\n"                                                                                                  \
    "local function tk(id) return P .. 't:' .. id end\n"                                                     \
    "local function sk(q, p) return P .. 's:' .. q .. ':' .. p end\n"                                        \
    "local function fmt(n) return string.format('%.0f', n) end\n"                                            \
    "local function fi(n) return string.format('%d', n) end\n"                                               \
    "local NS = {[0] = '0', '1', '2', '3', '4', '5', '6', '7'}\n"                                            \
    "local function count(q, p, st, d)\n"                                                                    \
    "  local k = q .. ':' .. p .. ':' .. (NS[st] or st)\n"                                                   \
    "  if CD then CD[k] = (CD[k] or 0) + d else redis.call('HINCRBY', P .. 'counts', k, fi(d)) end\n"        \
    "end\n"                                                                                                  \
    "local function flush()\n"                                                                               \
    "  for k, d in pairs(CD) do\n"                                                                           \
    "    if d ~= 0 then redis.call('HINCRBY', P .. 'counts', k, fi(d)) end\n"                                \
    "  end\n"                                                                                                \
    "end\n" /* DRY: stream key -> true: nothing undelivered in it (this call) */                             \
    "local function ready(id, q, p)\n"                                                                       \
    "  DRY[sk(q, p)] = nil\n"                                                                                \
    "  local sid = redis.call('XADD', sk(q, p), '*', 'id', id)\n"                                            \
    "  redis.call('HSET', tk(id), 'sid', sid)\n"                                                             \
    "end\n"                                                                                                  \
    "local function unready(id, q, p, sid)\n"                                                                \
    "  if sid then\n"                                                                                        \
    "    redis.pcall('XACK', sk(q, p), G, sid)\n"                                                            \
    "    redis.call('XDEL', sk(q, p), sid)\n"                                                                \
    "    redis.call('HDEL', tk(id), 'sid')\n"                                                                \
    "  end\n"                                                                                                \
    "end\n"                                                                                                  \
    "local function delay(id, due)\n"                                                                        \
    "  local first = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')\n"                             \
    "  redis.call('ZADD', P .. 'delayed', fi(due), id)\n"                                                    \
    "  if not first[2] or due < tonumber(first[2]) then\n"                                                   \
    "    redis.call('XADD', P .. 'wake', 'MAXLEN', 1, '*', 'due', fmt(due))\n"                               \
    "  end\n"                                                                                                \
    "end\n"                                                                                                  \
    "local function unrun(id, ty)\n"                                                                         \
    "  redis.call('ZREM', P .. 'running', id)\n"                                                             \
    "  redis.call('ZREM', P .. 'lr:' .. ty, id)\n"                                                           \
    "  redis.call('HDEL', tk(id), 'wk')\n"                                                                   \
    "end\n"                                                                                                  \
    "local function fin(id, q, p, old, st, extra)\n"                                                         \
    "  count(q, p, old, -1)\n"                                                                               \
    "  count(q, p, st, 1)\n"                                                                                 \
    "  local f = extra or {}\n"                                                                              \
    "  f[#f + 1] = 'st' f[#f + 1] = NS[st] f[#f + 1] = 'fa' f[#f + 1] = NOWS\n"                              \
    "  redis.call('HSET', tk(id), unpack(f))\n"                                                              \
    "  redis.call('ZADD', P .. 'finished', NOWS, NS[st] .. '|' .. p .. '|' .. q .. '|' .. id)\n"             \
    "  redis.call('PEXPIRE', tk(id), KEEPS)\n"                                                               \
    "end\n"                                                                                                  \
    "local function dead(id, err)\n"                                                                         \
    "  redis.call('XADD', P .. 'dead', 'MAXLEN', '~', 10000, '*', 'id', id, 'error', err)\n"                 \
    "end\n"                                                                                                  \
    "local function adderr(es, att, at, ej)\n"                                                               \
    "  local item = '{\"attempt\":' .. att .. ',\"at\":\"' .. at .. '\",\"error\":' .. ej .. '}'\n"          \
    "  if not es or es == '[]' then return '[' .. item .. ']' end\n"                                         \
    "  return string.sub(es, 1, -2) .. ',' .. item .. ']'\n"                                                 \
    "end\n"                                                                                                  \
    "local function promote(n)\n"                                                                            \
    "  local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', NOWS, 'LIMIT', '0', fi(n))\n"         \
    "  for _, id in ipairs(due) do\n"                                                                        \
    "    redis.call('ZREM', P .. 'delayed', id)\n"                                                           \
    "    local r = redis.call('HMGET', tk(id), 'st', 'qu', 'pr')\n"                                          \
    "    local st = tonumber(r[1])\n"                                                                        \
    "    if st == 0 or st == 1 or st == 5 then ready(id, r[2], r[3]) end\n"                                  \
    "  end\n"                                                                                                \
    "end\n"                                                                                                  \
    "local function queues()\n"                                                                              \
    "  local qs = redis.call('SMEMBERS', P .. 'queues')\n"                                                   \
    "  table.sort(qs)\n"                                                                                     \
    "  return qs\n"                                                                                          \
    "end\n"

/* enqueue(id, type, queue, prio, payload, max_attempts, "" or "=" idem key, idem ttl ms, timeout ms,
 * lease ms, "" or "=" trace, not_before us, "1" to return the existing record on an idempotent replay).
 * Returns {1, {"id", id}} for a new task (the caller renders it from its input: every field is known),
 * {0, record or {"id", id}} for a replay. The record holds only what differs from the defaults
 * (attempts 0, progress 0, no cancel, no errors, updated = created are implicit, see task_json), and
 * the stream entry is added first so that its id goes into the same HSET. */
#define LUA_ENQUEUE                                                                                          \
    "local function enqueue(id, ty, q, p, pl, ma, ik, ittl, to, lm, tc, nbs, want)\n"                        \
    "  if ik ~= '' then\n"                                                                                   \
    "    ik = string.sub(ik, 2)\n"                                                                           \
    "    local old = redis.call('GET', P .. 'i:' .. ik)\n"                                                   \
    "    if old then\n"                                                                                      \
    "      local r = redis.call('HMGET', tk(old), 'st', 'ca')\n"                                             \
    "      local st = tonumber(r[1])\n"                                                                      \
    "      if st and (st == 0 or st == 1 or st == 5 or tonumber(r[2]) > NOW - tonumber(ittl) * 1000) then\n" \
    "        if want == '1' then return {0, redis.call('HGETALL', tk(old))} end\n"                           \
    "        return {0, {'id', old}}\n"                                                                      \
    "      end\n"                                                                                            \
    "    end\n"                                                                                              \
    "  end\n"                                                                                                \
    "  local nb = tonumber(nbs)\n"                                                                           \
    "  local st = 0\n"                                                                                       \
    "  if nb > NOW then st = 1 else nb = NOW end\n"                                                          \
    "  local seq\n"                                                                                          \
    "  if SEQN > 0 then seq, SEQ, SEQN = SEQ, SEQ + 1, SEQN - 1 else seq = redis.call('INCR', P .. 'seq') "  \
    "end\n"                                                                                                  \
    "  if not QK[q] then\n"                                                                                  \
    "    QK[q] = true\n"                                                                                     \
    "    if redis.call('SADD', P .. 'queues', q) == 1 then\n"                                                \
    "      for pp = 0, 3 do redis.pcall('XGROUP', 'CREATE', sk(q, pp), G, '0', 'MKSTREAM') end\n"            \
    "      redis.call('XADD', P .. 'wake', 'MAXLEN', 1, '*', 'q', q)\n"                                      \
    "    end\n"                                                                                              \
    "  end\n"                                                                                                \
    "  local f = {'id', id, 'ty', ty, 'qu', q, 'pr', p, 'st', fi(st), 'pl', pl, 'ma', ma, 'nb', fi(nb), "    \
    "'to', to, "                                                                                             \
    "'lm', lm,\n"                                                                                            \
    "             'ca', NOWS}\n"                                                                             \
    "  if st == 0 then\n"                                                                                    \
    "    f[#f + 1] = 'sid'\n"                                                                                \
    "    f[#f + 1] = redis.call('XADD', sk(q, p), '*', 'id', id)\n"                                          \
    "  end\n"                                                                                                \
    "  if ik ~= '' then f[#f + 1] = 'ik' f[#f + 1] = ik end\n"                                               \
    "  if tc ~= '' then f[#f + 1] = 'tc' f[#f + 1] = string.sub(tc, 2) end\n"                                \
    "  redis.call('HSET', tk(id), unpack(f))\n"                                                              \
    "  if IDX then\n"                                                                                        \
    "    IDX[#IDX + 1] = fi(seq) IDX[#IDX + 1] = id\n"                                                       \
    "  else\n"                                                                                               \
    "    redis.call('ZADD', P .. 'index', fi(seq), id)\n"                                                    \
    "  end\n"                                                                                                \
    "  count(q, p, st, 1)\n"                                                                                 \
    "  if st == 1 then delay(id, nb) end\n"                                                                  \
    "  if ik ~= '' then\n"                                                                                   \
    "    local ttl = math.max(1, tonumber(ittl)) + KEEP + math.floor((nb - NOW) / 1000)\n"                   \
    "    redis.call('SET', P .. 'i:' .. ik, id, 'PX', ttl)\n"                                                \
    "  end\n"                                                                                                \
    "  return {1, {'id', id}}\n"                                                                             \
    "end\n"

/* ARGV[5..17]: enqueue's arguments. */
static rq_fn S_ENQUEUE = {.name = "enqueue",
                          .body = "return enqueue(ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], "
                                  "ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15], ARGV[16], ARGV[17])\n"};

/* A batch: ARGV[5..] enqueue's arguments, 13 per item, in order (flat: no JSON to encode and decode).
 * Returns the list of enqueue's replies. One script for the whole batch: it is atomic like a single
 * enqueue, and a later item with the key of an earlier one is a replay of it. */
static rq_fn S_ENQUEUE_BATCH = {
    .name = "enqueue_batch",
    .body = "local out, n = {}, (#ARGV - 4) / 13\n"
            /* per call, not per item: the sequence numbers (one INCRBY),
               the counts (one HINCRBY per key), the index (one ZADD) */
            "if n > 1 then\n"
            "  SEQ = redis.call('INCRBY', P .. 'seq', fi(n)) - n + 1\n"
            "  SEQN, CD, IDX = n, {}, {}\n"
            "end\n"
            "for i = 5, #ARGV, 13 do\n"
            "  out[#out + 1] = enqueue(unpack(ARGV, i, i + 12))\n"
            "end\n"
            "if IDX and #IDX > 0 then redis.call('ZADD', P .. 'index', unpack(IDX)) end\n"
            "if CD then flush() end\n"
            "return out\n"};

/* The claim as a Lua function (S_SETTLE_CLAIM, once per item): promote due delayed tasks and read the
 * queue list (once per script call), then read the streams in priority order (XLEN first: an empty
 * stream costs no XREADGROUP; a stream found with nothing undelivered is not read again in the same
 * call unless ready() added to it).
 * claim(worker, round-robin counter, concurrency retry us, "" or "type,type,..") returns false or
 * {id, type, queue, payload, trace, prio, attempts, max, timeout, lease, created, nb, started,
 * has_trace}. The record's `lt` says whether the attempt holds a slot in P lr:<type> (settle skips the
 * ZREM otherwise). */
#define LUA_CLAIM                                                                                            \
    "local function read(key)\n"                                                                             \
    "  if DRY[key] then return nil end\n"                                                                    \
    "  local b = BUF[key]\n"                                                                                 \
    "  if b and b.i <= #b then\n"                                                                            \
    "    local e = b[b.i]\n"                                                                                 \
    "    b.i = b.i + 1\n"                                                                                    \
    "    return e[1], e[2][2]\n"                                                                             \
    "  end\n"                                                                                                \
    "  local len = redis.call('XLEN', key)\n"                                                                \
    "  if len == 0 then DRY[key] = true return nil end\n"                                                    \
    "  local n = NS[math.min(len, #QS == 1 and WANT or 1, 7)]\n" /* see the top comment */                   \
    "  local res = redis.pcall('XREADGROUP', 'GROUP', G, 'c', 'COUNT', n, 'NOACK', 'STREAMS', key, '>')\n"   \
    "  if type(res) == 'table' and res.err then\n"                                                           \
    "    if not string.find(res.err, 'NOGROUP', 1, true) then return redis.error_reply(res.err) end\n"       \
    "    redis.pcall('XGROUP', 'CREATE', key, G, '0', 'MKSTREAM')\n"                                         \
    "    res = redis.call('XREADGROUP', 'GROUP', G, 'c', 'COUNT', n, 'NOACK', 'STREAMS', key, '>')\n"        \
    "  end\n"                                                                                                \
    "  if not res then DRY[key] = true return nil end\n"                                                     \
    "  b = res[1][2]\n"                                                                                      \
    "  local ms, sq = string.match(b[#b][1], '^(%d+)-(%d+)$')\n"                                             \
    "  redis.call('XTRIM', key, 'MINID', ms .. '-' .. fi(tonumber(sq) + 1))\n"                               \
    "  b.i = 2\n"                                                                                            \
    "  BUF[key] = b\n"                                                                                       \
    "  return b[1][1], b[1][2][2]\n"                                                                         \
    "end\n"                                                                                                  \
    "local function unread()\n" /* entries read for claims that took none: back to the tail */               \
    "  for _, b in pairs(BUF) do\n"                                                                          \
    "    for i = b.i, #b do\n"                                                                               \
    "      local id = b[i][2][2]\n"                                                                          \
    "      local r = redis.call('HMGET', tk(id), 'st', 'sid', 'qu', 'pr')\n"                                 \
    "      local st = tonumber(r[1])\n"                                                                      \
    "      if r[2] == b[i][1] and (st == 0 or st == 1 or st == 5) then ready(id, r[3], r[4]) end\n"          \
    "    end\n"                                                                                              \
    "    b.i = #b + 1\n"                                                                                     \
    "  end\n"                                                                                                \
    "end\n"                                                                                                  \
    "local function allowed(ty, defer)\n"                                                                    \
    "  local lim = LIM[ty]\n"                                                                                \
    "  if lim == nil then\n"                                                                                 \
    "    lim = redis.call('HGET', P .. 'limits', ty)\n"                                                      \
    "    LIM[ty] = lim\n"                                                                                    \
    "  end\n"                                                                                                \
    "  if not lim then return true, false end\n"                                                             \
    "  local c, r, b = string.match(lim, '^(%S+) (%S+) (%S+)$')\n"                                           \
    "  c, r, b = tonumber(c), tonumber(r), tonumber(b)\n"                                                    \
    "  if c > 0 and redis.call('ZCOUNT', P .. 'lr:' .. ty, NOWC, '+inf') >= c then\n"                        \
    "    return false, NOW + defer\n"                                                                        \
    "  end\n"                                                                                                \
    "  if r > 0 then\n"                                                                                      \
    "    local iv = 1e6 / r\n"                                                                               \
    "    local tat = tonumber(redis.call('GET', P .. 'tat:' .. ty) or '0')\n"                                \
    "    if tat < NOW then tat = NOW end\n"                                                                  \
    "    local at = tat - (b - 1) * iv\n"                                                                    \
    "    if at > NOW then return false, math.ceil(at) end\n"                                                 \
    "    redis.call('SET', P .. 'tat:' .. ty, fmt(tat + iv), 'PX', math.ceil((tat + iv - NOW) / 1000) + "    \
    "1000)\n"                                                                                                \
    "  end\n"                                                                                                \
    "  return true, c > 0\n"                                                                                 \
    "end\n"                                                                                                  \
    "local function claim(worker, rr, defer, typelist)\n"                                                    \
    "  if not QS then\n"                                                                                     \
    "    promote(100)\n"                                                                                     \
    "    QS = queues()\n"                                                                                    \
    "  end\n"                                                                                                \
    "  local qs = QS\n"                                                                                      \
    "  local nq = #qs\n"                                                                                     \
    "  if nq == 0 then return false end\n"                                                                   \
    "  local want = nil\n"                                                                                   \
    "  if typelist ~= '' then\n"                                                                             \
    "    want = {}\n"                                                                                        \
    "    for t in string.gmatch(typelist, '[^,]+') do want[t] = true end\n"                                  \
    "  end\n"                                                                                                \
    "  local budget = 64\n"                                                                                  \
    "  local moved = {}\n"                                                                                   \
    "  for pn = 0, 3 do\n"                                                                                   \
    "    local p = NS[pn]\n" /* as a string: sk() and count() concatenate it */                              \
    "    for k = 0, nq - 1 do\n"                                                                             \
    "      local q = qs[(rr + k) % nq + 1]\n"                                                                \
    "      local key = sk(q, p)\n"                                                                           \
    "      while budget > 0 do\n"                                                                            \
    "        budget = budget - 1\n"                                                                          \
    "        local sid, id = read(key)\n"                                                                    \
    "        if type(sid) == 'table' then return sid end\n"                                                  \
    "        if not sid then break end\n"                                                                    \
    "        local r = redis.call('HMGET', tk(id), 'st', 'sid', 'ty', 'lm', 'att', 'pl', 'tc', 'ma', 'to', " \
    "'ca', 'nb')\n"                                                                                          \
    "        local st = tonumber(r[1])\n"                                                                    \
    "        if not st or r[2] ~= sid or not (st == 0 or st == 1 or st == 5) then\n"                         \
    "          -- a stale entry: read is all it takes (NOACK, trimmed)\n"                                    \
    "        elseif want and not want[r[3]] then\n"                                                          \
    "          ready(id, q, p)\n"                                                                            \
    "          if moved[id] then break end\n"                                                                \
    "          moved[id] = true\n"                                                                           \
    "        else\n"                                                                                         \
    "          local ok, x = allowed(r[3], defer)\n"                                                         \
    "          if not ok then\n"                                                                             \
    "            redis.call('HSET', tk(id), 'nb', fi(x))\n"                                                  \
    "            delay(id, x)\n"                                                                             \
    "          else\n"                                                                                       \
    "            local att = tonumber(r[5] or '0') + 1\n"                                                    \
    "            local lease = NOW + tonumber(r[4]) * 1000\n"                                                \
    "            redis.call('HSET', tk(id), 'st', '2', 'att', fi(att), 'wk', worker, 'sa', NOWS, 'lt', "     \
    "x and '1' or '0')\n"                                                                                    \
    "            redis.call('ZADD', P .. 'running', fi(lease), id)\n"                                        \
    "            if x then redis.call('ZADD', P .. 'lr:' .. r[3], fi(lease), id) end\n"                      \
    "            count(q, p, st, -1)\n"                                                                      \
    "            count(q, p, 2, 1)\n"                                                                        \
    "            return {id, r[3], q, r[6], r[7] or '', pn, att, r[8], r[9], r[4], r[10], r[11], NOWS, "     \
    "r[7] "                                                                                                  \
    "and 1 or 0}\n"                                                                                          \
    "          end\n"                                                                                        \
    "        end\n"                                                                                          \
    "      end\n"                                                                                            \
    "    end\n"                                                                                              \
    "  end\n"                                                                                                \
    "  return false\n"                                                                                       \
    "end\n"

/* ARGV[5] id, [6] worker, [7] progress or "". Returns -1 (lease lost) or the cancel flag. */
static rq_fn S_HEARTBEAT = {.name = "heartbeat",
                            .body = "local id = ARGV[5]\n"
                                    "local r = redis.call('HMGET', tk(id), 'st', 'wk', 'lm', 'cr', 'ty')\n"
                                    "if tonumber(r[1]) ~= 2 or r[2] ~= ARGV[6] then return -1 end\n"
                                    "local lease = NOW + tonumber(r[3]) * 1000\n"
                                    "if ARGV[7] ~= '' then\n"
                                    "  redis.call('HSET', tk(id), 'ua', NOWS, 'pg', ARGV[7])\n"
                                    "else\n"
                                    "  redis.call('HSET', tk(id), 'ua', NOWS)\n"
                                    "end\n"
                                    "redis.call('ZADD', P .. 'running', fi(lease), id)\n"
                                    "redis.call('ZADD', P .. 'lr:' .. r[5], 'XX', fi(lease), id)\n"
                                    "if r[4] == '1' then return 1 end\n"
                                    "return 0\n"};

/* Settles a running attempt this worker holds: settle(id, worker, mode, text, error, now RFC 3339,
 * retryable 0|1, jitter [0,1), retry base ms, retry cap ms) with mode c(omplete), x (cancelled),
 * r(elease), f(ail); text = the result JSON (c) or the error as a JSON string (f). Returns -1 (lease
 * lost) or the new state. The record's worker, lease and stream-entry fields are left as they are:
 * nothing reads them unless the state is running, and the next claim or ready() overwrites them. */
#define LUA_SETTLE                                                                                           \
    "local function settle(id, worker, mode, text, errtext, at, retryable, jit, rbase, rcap)\n"              \
    "  local r\n" /* a completion or cancellation needs only the first 7 fields (each costs a scan) */       \
    "  if mode == 'c' or mode == 'x' then\n"                                                                 \
    "    r = redis.call('HMGET', tk(id), 'st', 'wk', 'qu', 'pr', 'lt', 'ty')\n"                              \
    "  else\n"                                                                                               \
    "    r = redis.call('HMGET', tk(id), 'st', 'wk', 'qu', 'pr', 'lt', 'ty', 'att', 'ma', 'es')\n"           \
    "  end\n"                                                                                                \
    "  if tonumber(r[1]) ~= 2 or r[2] ~= worker then return -1 end\n"                                        \
    "  local q, p = r[3], r[4]\n"                                                                            \
    "  redis.call('ZREM', P .. 'running', id)\n"                                                             \
    "  if r[5] ~= '0' then redis.call('ZREM', P .. 'lr:' .. r[6], id) end\n"                                 \
    "  if mode == 'c' then\n"                                                                                \
    "    fin(id, q, p, 2, 3, {'rs', text})\n"                                                                \
    "    return 3\n"                                                                                         \
    "  elseif mode == 'x' then\n"                                                                            \
    "    fin(id, q, p, 2, 7)\n"                                                                              \
    "    return 7\n"                                                                                         \
    "  elseif mode == 'r' then\n"                                                                            \
    "    redis.call('HSET', tk(id), 'st', 0, 'att', math.max(0, tonumber(r[7]) - 1), 'nb', NOWS, 'ua', "     \
    "NOWS)\n"                                                                                                \
    "    count(q, p, 2, -1)\n"                                                                               \
    "    count(q, p, 0, 1)\n"                                                                                \
    "    ready(id, q, p)\n"                                                                                  \
    "    return 0\n"                                                                                         \
    "  end\n"                                                                                                \
    "  local att, ma = tonumber(r[7]), tonumber(r[8])\n"                                                     \
    "  local nxt = 5\n"                                                                                      \
    "  if retryable ~= '1' then nxt = 4 elseif att >= ma then nxt = 6 end\n"                                 \
    "  local es = adderr(r[9], att, at, text)\n"                                                             \
    "  if nxt == 5 then\n"                                                                                   \
    "    local ceil, cap = tonumber(rbase) * 1000, tonumber(rcap) * 1000\n"                                  \
    "    local i = 1\n"                                                                                      \
    "    while i < att and ceil < cap do ceil = ceil * 2 i = i + 1 end\n"                                    \
    "    if ceil > cap then ceil = cap end\n"                                                                \
    "    local b = math.floor(tonumber(jit) * ceil)\n"                                                       \
    "    if b >= ceil then b = ceil - 1 end\n"                                                               \
    "    if b < 0 then b = 0 end\n"                                                                          \
    "    local due = NOW + b\n"                                                                              \
    "    redis.call('HSET', tk(id), 'er', errtext, 'es', es, 'st', 5, 'nb', due, 'ua', NOWS)\n"              \
    "    count(q, p, 2, -1)\n"                                                                               \
    "    count(q, p, 5, 1)\n"                                                                                \
    "    delay(id, due)\n"                                                                                   \
    "    return 5\n"                                                                                         \
    "  end\n"                                                                                                \
    "  fin(id, q, p, 2, nxt, {'er', errtext, 'es', es, 'nb', NOWS})\n"                                       \
    "  if nxt == 6 then dead(id, errtext) end\n"                                                             \
    "  return nxt\n"                                                                                         \
    "end\n"

/* ARGV[5..14]: settle's arguments. */
static rq_fn S_SETTLE = {.name = "settle",
                         .body = "return settle(ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], "
                                 "ARGV[11], ARGV[12], ARGV[13], ARGV[14])\n"};

/* The claims and completions of several worker threads of one process in one call (their group commit,
 * see "Group commit" above): ARGV[5] round-robin counter, [6] concurrency retry us, then 4 per item:
 * task id ("" = a claim only), worker, result JSON, "" or "type,type,..". All the items' completions
 * run first (as complete() would, in order: slots they free are free for the claims), then, for every
 * item whose completion succeeded (or that had none), claim() for its worker, in order. Returns one
 * reply per item: {-1} (lease lost, nothing claimed) or {new state (0 for a claim only), claim's
 * reply}: the analogue of BullMQ's moveToFinished fetching the next job, for several workers. */
static rq_fn S_SETTLE_CLAIM = {
    .name = "settle_claim",
    .body =
        "CD = {}\n" /* count changes are summed and written at the end: a settled task leaves `running` and a
                       claimed one enters it, so in steady state 4 HINCRBY per task become 2 per call */
        "local out, sts = {}, {}\n"
        "for i = 7, #ARGV, 4 do\n"
        "  local st = 0\n"
        "  if ARGV[i] ~= '' then st = settle(ARGV[i], ARGV[i + 1], 'c', ARGV[i + 2], '', '', '0', '0', '0', "
        "'0') "
        "end\n"
        "  sts[#sts + 1] = st\n"
        "end\n"
        "local rr = tonumber(ARGV[5])\n"
        "local left = 0\n"
        "for _, st in ipairs(sts) do if st >= 0 then left = left + 1 end end\n"
        "for k, st in ipairs(sts) do\n"
        "  if st < 0 then\n"
        "    out[k] = {st}\n"
        "  else\n"
        "    local i = 7 + (k - 1) * 4\n"
        "    WANT, left = left, left - 1\n" /* a read takes entries for the claims still to come (read()) */
        "    out[k] = {st, claim(ARGV[i + 1], rr + k - 1, ARGV[6], ARGV[i + 3])}\n"
        "  end\n"
        "end\n"
        "unread()\n"
        "flush()\n"
        "return out\n"};

/* ARGV[5] id. Returns {-404} | {-409, state} | {1, record}. */
static rq_fn S_CANCEL = {.name = "cancel",
                         .body = "local id = ARGV[5]\n"
                                 "local r = redis.call('HMGET', tk(id), 'st', 'qu', 'pr', 'sid')\n"
                                 "local st = tonumber(r[1])\n"
                                 "if not st then return {-404} end\n"
                                 "if st == 0 or st == 1 or st == 5 then\n"
                                 "  redis.call('ZREM', P .. 'delayed', id)\n"
                                 "  unready(id, r[2], r[3], r[4])\n"
                                 "  fin(id, r[2], r[3], st, 7)\n"
                                 "elseif st == 2 then\n"
                                 "  redis.call('HSET', tk(id), 'cr', 1, 'ua', NOWS)\n"
                                 "else\n"
                                 "  return {-409, st}\n"
                                 "end\n"
                                 "return {1, redis.call('HGETALL', tk(id))}\n"};

/* ARGV[5] id. Returns {-404} | {-409, state} | {1, record}. */
static rq_fn S_RETRY = {
    .name = "retry",
    .body = "local id = ARGV[5]\n"
            "local r = redis.call('HMGET', tk(id), 'st', 'qu', 'pr')\n"
            "local st = tonumber(r[1])\n"
            "if not st then return {-404} end\n"
            "if st ~= 4 and st ~= 6 and st ~= 7 then return {-409, st} end\n"
            "local q, p = r[2], r[3]\n"
            "redis.call('ZREM', P .. 'finished', st .. '|' .. p .. '|' .. q .. '|' .. id)\n"
            "redis.call('PERSIST', tk(id))\n"
            "redis.call('HSET', tk(id), 'st', 0, 'att', 0, 'nb', NOWS, 'cr', 0, 'pg', 0, 'ua', NOWS)\n"
            "redis.call('HDEL', tk(id), 'fa')\n"
            "count(q, p, st, -1)\n"
            "count(q, p, 0, 1)\n"
            "ready(id, q, p)\n"
            "return {1, redis.call('HGETALL', tk(id))}\n"};

/* ARGV[5] now as RFC 3339. Returns how many expired leases were settled (at most 100 per call). */
static rq_fn S_RECLAIM = {
    .name = "reclaim",
    .body =
        "local ids = redis.call('ZRANGEBYSCORE', P .. 'running', '-inf', '(' .. ARGV[3], 'LIMIT', 0, 100)\n"
        "local n = 0\n"
        "for _, id in ipairs(ids) do\n"
        "  local r = redis.call('HMGET', tk(id), 'st', 'cr', 'att', 'ma', 'qu', 'pr', 'sid', 'ty', 'es')\n"
        "  redis.call('ZREM', P .. 'running', id)\n"
        "  if tonumber(r[1]) == 2 then\n"
        "    local q, p = r[5], r[6]\n"
        "    unrun(id, r[8])\n"
        "    unready(id, q, p, r[7])\n"
        "    n = n + 1\n"
        "    if r[2] == '1' then\n"
        "      fin(id, q, p, 2, 7)\n"
        "    else\n"
        "      redis.call('HSET', tk(id), 'er', 'lease expired', 'es', adderr(r[9], r[3], ARGV[5], "
        "'\"lease expired\"'))\n"
        "      if tonumber(r[3]) >= tonumber(r[4]) then\n"
        "        fin(id, q, p, 2, 6)\n"
        "        dead(id, 'lease expired')\n"
        "      else\n"
        "        redis.call('HSET', tk(id), 'st', 0, 'nb', NOWS, 'ua', NOWS)\n"
        "        count(q, p, 2, -1)\n"
        "        count(q, p, 0, 1)\n"
        "        ready(id, q, p)\n"
        "      end\n"
        "    end\n"
        "  end\n"
        "end\n"
        "return n\n"};

/* Ready entries of a stream: its length minus the group's pending count. */
#define LUA_READY_COUNT                                                                                      \
    "local function nready(key)\n"                                                                           \
    "  local len = redis.call('XLEN', key)\n"                                                                \
    "  if len == 0 then return 0 end\n"                                                                      \
    "  local pe = redis.pcall('XPENDING', key, G)\n"                                                         \
    "  if type(pe) == 'table' and not pe.err then return len - pe[1] end\n"                                  \
    "  return len\n"                                                                                         \
    "end\n"                                                                                                  \
    "local function delivered(key)\n"                                                                        \
    "  local gs = redis.pcall('XINFO', 'GROUPS', key)\n"                                                     \
    "  if type(gs) == 'table' and not gs.err then\n"                                                         \
    "    for _, g in ipairs(gs) do\n"                                                                        \
    "      local name, last = nil, nil\n"                                                                    \
    "      for i = 1, #g, 2 do\n"                                                                            \
    "        if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + "   \
    "1] "                                                                                                    \
    "end\n"                                                                                                  \
    "      end\n"                                                                                            \
    "      if name == G then return last end\n"                                                              \
    "    end\n"                                                                                              \
    "  end\n"                                                                                                \
    "  return '0-0'\n"                                                                                       \
    "end\n"

/* Returns the earliest time (us) something may be claimable, "" when nothing is pending. */
static rq_fn S_NEXT_WAKEUP = {
    .name = "next_wakeup",
    .body = "local best = nil\n"
            "for _, q in ipairs(queues()) do\n"
            "  for p = 0, 3 do\n"
            "    if nready(sk(q, p)) > 0 then return NOWS end\n"
            "  end\n"
            "end\n"
            "local d = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')\n"
            "if d[2] then best = tonumber(d[2]) end\n"
            "local r = redis.call('ZRANGE', P .. 'running', 0, 0, 'WITHSCORES')\n"
            "if r[2] and (not best or tonumber(r[2]) < best) then best = tonumber(r[2]) end\n"
            "if not best then return '' end\n"
            "return fmt(best)\n"};

/* Returns {counts (flat hash), rows {queue, prio, ready, oldest nb us}...}. */
static rq_fn S_STATS = {
    .name = "stats",
    .body = "promote(1000)\n"
            "local rows = {}\n"
            "for _, q in ipairs(queues()) do\n"
            "  for p = 0, 3 do\n"
            "    local key = sk(q, p)\n"
            "    local n = nready(key)\n"
            "    if n > 0 then\n"
            "      local oldest = '0'\n"
            "      local e = redis.call('XRANGE', key, '(' .. delivered(key), '+', 'COUNT', 1)\n"
            "      if e[1] then oldest = redis.call('HGET', tk(e[1][2][2]), 'nb') or '0' end\n"
            "      rows[#rows + 1] = {q, p, n, oldest}\n"
            "    end\n"
            "  end\n"
            "end\n"
            "return {redis.call('HGETALL', P .. 'counts'), rows}\n"};

/* Returns {earliest due us or "", earliest lease us or "", {key, last id, ...}} after promoting. */
static rq_fn S_WAIT_PREP = {.name = "wait_prep",
                            .body = "promote(100)\n"
                                    "local out = {}\n"
                                    "for _, q in ipairs(queues()) do\n"
                                    "  for p = 0, 3 do\n"
                                    "    local key = sk(q, p)\n"
                                    "    out[#out + 1] = key\n"
                                    "    out[#out + 1] = delivered(key)\n"
                                    "  end\n"
                                    "end\n"
                                    "local w = redis.call('XREVRANGE', P .. 'wake', '+', '-', 'COUNT', 1)\n"
                                    "out[#out + 1] = P .. 'wake'\n"
                                    "out[#out + 1] = w[1] and w[1][1] or '0-0'\n"
                                    "local d = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')\n"
                                    "local r = redis.call('ZRANGE', P .. 'running', 0, 0, 'WITHSCORES')\n"
                                    "return {d[2] or '', r[2] or '', out}\n"};

/* ARGV[5] cursor ("" = newest), [6] limit, [7] state (-1 any), [8] type or "", [9] queue or "".
 * Returns {next cursor or "", record...}. Scans at most 5000 index entries per page: a page of a
 * selective filter may be short (even empty) but then carries a cursor to go on from. */
static rq_fn S_LIST = {
    .name = "list",
    .body = "local maxs = '+inf'\n"
            "if ARGV[5] ~= '' then maxs = '(' .. ARGV[5] end\n"
            "local limit, stf, tyf, quf = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], ARGV[9]\n"
            "local items, cursor, last, scanned = {}, '', nil, 0\n"
            "while true do\n"
            "  if scanned >= 5000 then cursor = last or '' break end\n"
            "  local batch = redis.call('ZREVRANGEBYSCORE', P .. 'index', maxs, '-inf', 'WITHSCORES', "
            "'LIMIT', 0, "
            "200)\n"
            "  if #batch == 0 then break end\n"
            "  local done = false\n"
            "  for i = 1, #batch, 2 do\n"
            "    local id = batch[i]\n"
            "    scanned = scanned + 1\n"
            "    local r = redis.call('HMGET', tk(id), 'st', 'ty', 'qu')\n"
            "    if not r[1] then\n"
            "      redis.call('ZREM', P .. 'index', id)\n"
            "    elseif (stf < 0 or tonumber(r[1]) == stf) and (tyf == '' or r[2] == tyf) and (quf == '' or "
            "r[3] == "
            "quf) then\n"
            "      if #items == limit then cursor = last done = true break end\n"
            "      items[#items + 1] = redis.call('HGETALL', tk(id))\n"
            "    end\n"
            "    last = batch[i + 1]\n"
            "  end\n"
            "  if done then break end\n"
            "  maxs = '(' .. batch[#batch]\n"
            "end\n"
            "local out = {cursor}\n"
            "for _, it in ipairs(items) do out[#out + 1] = it end\n"
            "return out\n"};

/* Deletes up to 500 finished tasks older than keep_finished_ms. Returns how many. */
static rq_fn S_PURGE = {.name = "purge",
                        .body = "local ms = redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', '(' .. "
                                "fmt(NOW - KEEP * 1000), 'LIMIT', 0, "
                                "500)\n"
                                "for _, m in ipairs(ms) do\n"
                                "  local st, p, q, id = string.match(m, '^(%d+)|(%d+)|([^|]+)|(.+)$')\n"
                                "  redis.call('ZREM', P .. 'finished', m)\n"
                                "  if id then\n"
                                "    count(q, p, st, -1)\n"
                                "    redis.call('ZREM', P .. 'index', id)\n"
                                "    redis.call('DEL', tk(id))\n"
                                "  end\n"
                                "end\n"
                                "return #ms\n"};

static rq_fn *const ALL_FNS[] = {&S_ENQUEUE, &S_ENQUEUE_BATCH, &S_HEARTBEAT, &S_SETTLE,      &S_SETTLE_CLAIM,
                                 &S_CANCEL,  &S_RETRY,         &S_RECLAIM,   &S_NEXT_WAKEUP, &S_STATS,
                                 &S_LIST,    &S_WAIT_PREP,     &S_PURGE};
#define LUA_SHARED LUA_PRELUDE LUA_ENQUEUE LUA_CLAIM LUA_SETTLE LUA_READY_COUNT
static char *lib_src; /* the library's code, built once (scripts_init) */
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

/* The one function library of every operation: the shared helpers are top-level locals of the library
 * (created once, at FUNCTION LOAD, not on every call as a script's would be), each operation is a
 * registered function "<lib>_<op>". */
static void lib_code(pk_buf *b, const char *lib)
{
    pk_buf_printf(b, "#!lua name=%s\n%s", lib, LUA_SHARED);
    for (size_t i = 0; i < sizeof ALL_FNS / sizeof *ALL_FNS; i++)
        pk_buf_printf(b, "redis.register_function('%s_%s', function(KEYS, ARGV)\nbegin(ARGV)\n%send)\n", lib,
                      ALL_FNS[i]->name, ALL_FNS[i]->body);
}

/* The library's name carries a hash of its code ("pkq_<12 hex>"): processes of different builds sharing
 * a Redis each call their own code, and never replace each other's. */
static void scripts_init(void)
{
    pk_buf b = PK_BUF_INIT;
    lib_code(&b, "pkq");
    pk_redis_script h = {.src = b.data};
    pk_redis_script_init(&h); /* SHA1 of the code */
    char lib[24];
    snprintf(lib, sizeof lib, "pkq_%.12s", h.sha);
    pk_buf_reset(&b);
    lib_code(&b, lib);
    lib_src = pk_buf_steal(&b, NULL); /* kept for the process's life */
    for (size_t i = 0; i < sizeof ALL_FNS / sizeof *ALL_FNS; i++)
        snprintf(ALL_FNS[i]->fname, sizeof ALL_FNS[i]->fname, "%s_%s", lib, ALL_FNS[i]->name);
}

/* ---- plumbing ------------------------------------------------------------------------------- */

static int64_t now_ns(rq_queue *q)
{
    return pk_clock_now(q->cfg.clock);
}

/* A Redis failure as the queue's error: 503 and retryable unless Redis answered with an error. */
static pk_err *rq_err(pk_err *cause, const char *what)
{
    bool transient = !pk_err_is(cause, "redis_error");
    pk_err *e = pk_err_wrap(cause, "queue_error", transient ? 503 : 500, "the task queue failed (%s)", what);
    e->retryable = transient;
    return e;
}

static pk_err *lease_lost(const char *id)
{
    return pk_err_new("lease_lost", 409, "task '%s' is no longer held by this worker", id);
}

#define MAX_OP_ARGS 16

/* Runs a script with the common arguments (prefix, now, now ceiling, keep) then `args`. */
static pk_err *rq_eval(rq_queue *q, rq_fn *s, const char *what, int64_t now, int nargs,
                       const char *const *args, redisReply **out)
{
    char now_us[24], nowc_us[24], keep[24];
    snprintf(now_us, sizeof now_us, "%lld", (long long)(now / 1000));
    snprintf(nowc_us, sizeof nowc_us, "%lld", (long long)((now + 999) / 1000));
    snprintf(keep, sizeof keep, "%lld", (long long)q->cfg.keep_finished_ms);
    const char *small[4 + MAX_OP_ARGS];
    const char **argv = nargs <= MAX_OP_ARGS ? small : malloc((4 + (size_t)nargs) * sizeof *argv);
    argv[0] = q->prefix;
    argv[1] = now_us;
    argv[2] = nowc_us;
    argv[3] = keep;
    for (int i = 0; i < nargs; i++)
        argv[4 + i] = args[i];
    pk_err *e = pk_redis_fcall(q->r, 0, lib_src, s->fname, 0, 4 + nargs, argv, NULL, out);
    if (argv != small) free(argv);
    return e ? rq_err(e, what) : NULL;
}

/* The same failure for another caller of a group (code, status, retryable, message; not the cause). */
static pk_err *err_copy(const pk_err *e)
{
    pk_err *c = pk_err_new(e->code, e->status, "%s", e->message ? e->message : "");
    c->category = e->category;
    c->retryable = e->retryable;
    c->retry_after_s = e->retry_after_s;
    return c;
}

/* Queues `it` on `line` and waits until it is done (returns false: a leader ran it) or first among the
 * waiting while fewer than q->inflight groups of this line are in flight (returns true: the caller
 * leads; *batch gets up to GROUP_MAX waiting items, the leader first, taken off the line; *n their
 * count; then lead, then gc_finish). */
static bool gc_join(rq_queue *q, gc_line *line, gc_item *it, gc_item **batch, size_t *n)
{
    it->next = NULL;
    it->done = false;
    pthread_cond_init(&it->cv, &q->cv_attr);
    pthread_mutex_lock(&q->gc_mu);
    if (line->tail)
        line->tail->next = it;
    else
        line->head = it;
    line->tail = it;
    line->len++;
    if (line->want && line->len >= line->want) pthread_cond_signal(&line->head->cv); /* a full group */
    while (!it->done && (line->head != it || line->busy >= q->inflight))
        pthread_cond_wait(&it->cv, &q->gc_mu);
    bool lead = !it->done;
    if (lead && line->gather && q->gather_ns > 0 && line->len < line->last_n) {
        /* the callers of the last group are on their way back (their tasks were short): give them
         * up to gather_ns to join, so the group is as large as the last one */
        line->want = line->last_n < GROUP_MAX ? line->last_n : GROUP_MAX;
        int64_t until = pk_mono_ns() + q->gather_ns;
        struct timespec ts = {.tv_sec = until / 1000000000LL, .tv_nsec = until % 1000000000LL};
        while (line->len < line->want)
            if (pthread_cond_timedwait(&it->cv, &q->gc_mu, &ts) == ETIMEDOUT) break;
        line->want = 0;
    }
    if (lead) {
        size_t k = 0;
        gc_item *x = line->head;
        for (; x && k < GROUP_MAX; x = x->next)
            batch[k++] = x;
        line->head = x;
        if (!x) line->tail = NULL;
        line->len -= (int)k;
        line->busy++;
        *n = k;
        /* more than GROUP_MAX waiting and room for another group: its leader goes at once */
        if (line->head && line->busy < q->inflight) pthread_cond_signal(&line->head->cv);
    }
    pthread_mutex_unlock(&q->gc_mu);
    if (!lead) pthread_cond_destroy(&it->cv);
    return lead;
}

/* Marks the batch done (its results are in place), wakes its callers and, as a group slot is free
 * again, the first waiting caller (the next leader). */
static void gc_finish(rq_queue *q, gc_line *line, gc_item **batch, size_t n)
{
    pthread_mutex_lock(&q->gc_mu);
    line->busy--;
    line->last_n = (int)n;
    for (size_t i = 0; i < n; i++) {
        batch[i]->done = true;
        if (i) pthread_cond_signal(&batch[i]->cv);
    }
    if (line->head) pthread_cond_signal(&line->head->cv);
    pthread_mutex_unlock(&q->gc_mu);
    pthread_cond_destroy(&batch[0]->cv);
}

typedef void (*gc_lead_fn)(rq_queue *q, gc_item **batch, size_t n);

/* Runs `it` alone (group commit off), or joins `line` and, when it leads, runs the group. */
static void gc_run(rq_queue *q, gc_line *line, gc_item *it, gc_lead_fn lead)
{
    gc_item *batch[GROUP_MAX];
    size_t n = 0;
    if (!q->group) {
        batch[0] = it;
        lead(q, batch, 1);
    } else if (gc_join(q, line, it, batch, &n)) {
        lead(q, batch, n);
        gc_finish(q, line, batch, n);
    }
}

static int64_t rep_int(const redisReply *r)
{
    if (!r) return 0;
    if (r->type == REDIS_REPLY_INTEGER) return r->integer;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) return strtoll(r->str, NULL, 10);
    return 0;
}

static bool rep_is_str(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_STRING;
}

/* A field of a flat HGETALL reply, or NULL. */
static const redisReply *field(const redisReply *h, const char *name)
{
    if (!h || h->type != REDIS_REPLY_ARRAY) return NULL;
    for (size_t i = 0; i + 1 < h->elements; i += 2)
        if (rep_is_str(h->element[i]) && !strcmp(h->element[i]->str, name)) return h->element[i + 1];
    return NULL;
}

/* ---- JSON output (the same document queue_sqlite.c writes) -------------------------------------- */

static void jw_text(pk_jw *w, const redisReply *v)
{
    if (!rep_is_str(v)) return pk_jw_null(w);
    pk_jw_strn(w, v->str, v->len);
}
static void jw_raw(pk_jw *w, const redisReply *v)
{
    if (!rep_is_str(v)) return pk_jw_null(w);
    pk_jw_raw(w, v->str, v->len);
}
static void jw_time(pk_jw *w, const redisReply *v)
{
    if (!rep_is_str(v)) return pk_jw_null(w);
    char ts[PK_RFC3339_LEN];
    pk_rfc3339(strtoll(v->str, NULL, 10) * 1000, ts);
    pk_jw_str(w, ts);
}

static void task_json(pk_buf *out, const redisReply *h)
{
    pk_jw w;
    pk_jw_init(&w, out);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "id");
    jw_text(&w, field(h, "id"));
    pk_jw_key(&w, "type");
    jw_text(&w, field(h, "ty"));
    pk_jw_key(&w, "queue");
    jw_text(&w, field(h, "qu"));
    pk_jw_key(&w, "priority");
    pk_jw_str(&w, pk_task_priority_name((int)rep_int(field(h, "pr"))));
    pk_jw_key(&w, "state");
    pk_jw_str(&w, pk_task_state_name((pk_task_state)rep_int(field(h, "st"))));
    pk_jw_key(&w, "payload");
    jw_raw(&w, field(h, "pl"));
    pk_jw_key(&w, "attempts");
    pk_jw_int(&w, rep_int(field(h, "att")));
    pk_jw_key(&w, "max_attempts");
    pk_jw_int(&w, rep_int(field(h, "ma")));
    pk_jw_key(&w, "idempotency_key");
    jw_text(&w, field(h, "ik"));
    pk_jw_key(&w, "not_before");
    jw_time(&w, field(h, "nb"));
    pk_jw_key(&w, "timeout_ms");
    pk_jw_int(&w, rep_int(field(h, "to")));
    pk_jw_key(&w, "lease_ms");
    pk_jw_int(&w, rep_int(field(h, "lm")));
    pk_jw_key(&w, "trace_context");
    jw_text(&w, field(h, "tc"));
    pk_jw_key(&w, "progress");
    const redisReply *pg = field(h, "pg"); /* implicit: 1 once succeeded, else 0 until a heartbeat sets it */
    pk_task_state st = (pk_task_state)rep_int(field(h, "st"));
    pk_jw_num(&w, st == PK_TASK_SUCCEEDED ? 1 : rep_is_str(pg) ? strtod(pg->str, NULL) : 0);
    pk_jw_key(&w, "cancel_requested");
    pk_jw_bool(&w, rep_int(field(h, "cr")) != 0);
    pk_jw_key(&w, "result");
    jw_raw(&w, field(h, "rs"));
    pk_jw_key(&w, "error");
    jw_text(&w, field(h, "er"));
    pk_jw_key(&w, "errors");
    const redisReply *es = field(h, "es");
    if (rep_is_str(es))
        pk_jw_raw(&w, es->str, es->len);
    else
        pk_jw_raw(&w, "[]", 2);
    pk_jw_key(&w, "created_at");
    jw_time(&w, field(h, "ca"));
    pk_jw_key(&w, "started_at");
    jw_time(&w, field(h, "sa"));
    pk_jw_key(&w, "finished_at");
    jw_time(&w, field(h, "fa"));
    pk_jw_key(&w, "updated_at");
    /* implicit: the latest of the last explicit update (`ua`), the start and the finish (a claim and a
     * settle write only `sa` / `fa`), else the creation */
    const redisReply *ua = field(h, "ca");
    const char *tf[] = {"ua", "sa", "fa"};
    for (size_t i = 0; i < 3; i++) {
        const redisReply *v = field(h, tf[i]);
        if (rep_is_str(v) && (!rep_is_str(ua) || rep_int(v) > rep_int(ua))) ua = v;
    }
    jw_time(&w, ua);
    pk_jw_obj_close(&w);
}

/* The document of a task the enqueue script just created, from what the caller sent (the script
 * stored exactly this: see S_ENQUEUE), without reading the record back. Times in us, as stored. */
static void new_task_json(pk_buf *out, const char *id, const pk_task_input *in, const char *queue,
                          int64_t max_attempts, int64_t timeout_ms, int64_t lease_ms, int64_t now_us,
                          int64_t nb_us)
{
    char ca[PK_RFC3339_LEN], nbs[PK_RFC3339_LEN];
    bool scheduled = nb_us > now_us;
    pk_rfc3339(now_us * 1000, ca);
    pk_rfc3339((scheduled ? nb_us : now_us) * 1000, nbs);
    pk_jw w;
    pk_jw_init(&w, out);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "id");
    pk_jw_str(&w, id);
    pk_jw_key(&w, "type");
    pk_jw_str(&w, in->type);
    pk_jw_key(&w, "queue");
    pk_jw_str(&w, queue);
    pk_jw_key(&w, "priority");
    pk_jw_str(&w, pk_task_priority_name(in->priority));
    pk_jw_key(&w, "state");
    pk_jw_str(&w, pk_task_state_name(scheduled ? PK_TASK_SCHEDULED : PK_TASK_QUEUED));
    pk_jw_key(&w, "payload");
    const char *pl = in->payload_json ? in->payload_json : "{}";
    pk_jw_raw(&w, pl, strlen(pl));
    pk_jw_key(&w, "attempts");
    pk_jw_int(&w, 0);
    pk_jw_key(&w, "max_attempts");
    pk_jw_int(&w, max_attempts);
    pk_jw_key(&w, "idempotency_key");
    if (in->idempotency_key)
        pk_jw_str(&w, in->idempotency_key);
    else
        pk_jw_null(&w);
    pk_jw_key(&w, "not_before");
    pk_jw_str(&w, nbs);
    pk_jw_key(&w, "timeout_ms");
    pk_jw_int(&w, timeout_ms);
    pk_jw_key(&w, "lease_ms");
    pk_jw_int(&w, lease_ms);
    pk_jw_key(&w, "trace_context");
    if (in->trace_context)
        pk_jw_str(&w, in->trace_context);
    else
        pk_jw_null(&w);
    pk_jw_key(&w, "progress");
    pk_jw_num(&w, 0);
    pk_jw_key(&w, "cancel_requested");
    pk_jw_bool(&w, false);
    pk_jw_key(&w, "result");
    pk_jw_null(&w);
    pk_jw_key(&w, "error");
    pk_jw_null(&w);
    pk_jw_key(&w, "errors");
    pk_jw_raw(&w, "[]", 2);
    pk_jw_key(&w, "created_at");
    pk_jw_str(&w, ca);
    pk_jw_key(&w, "started_at");
    pk_jw_null(&w);
    pk_jw_key(&w, "finished_at");
    pk_jw_null(&w);
    pk_jw_key(&w, "updated_at");
    pk_jw_str(&w, ca);
    pk_jw_obj_close(&w);
}

/* Replies of the form {status, record} / {-404} / {-409, state}. */
static pk_err *status_reply(const redisReply *r, const char *id, const char *verb)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1) return pk_err_internal("bad queue reply");
    int64_t st = rep_int(r->element[0]);
    if (st == -404) return pk_err_not_found("no task with id '%s'", id);
    if (st == -409) {
        pk_task_state s = r->elements > 1 ? (pk_task_state)rep_int(r->element[1]) : PK_TASK_SUCCEEDED;
        if (!strcmp(verb, "retry"))
            return pk_err_new("conflict", 409,
                              "task '%s' is %s: only dead, failed or cancelled tasks can be retried", id,
                              pk_task_state_name(s));
        return pk_err_new("conflict", 409, "task '%s' is %s: nothing to cancel", id, pk_task_state_name(s));
    }
    if (r->elements < 2) return pk_err_internal("bad queue reply");
    return NULL;
}

/* ---- operations ----------------------------------------------------------------------------- */

static void q_close(pk_queue *base)
{
    rq_queue *q = (rq_queue *)base;
    for (int i = 0; i < q->nidle; i++)
        redisFree(q->idle[i]);
    pthread_mutex_destroy(&q->mu);
    pthread_mutex_destroy(&q->gc_mu);
    pthread_condattr_destroy(&q->cv_attr);
    for (size_t i = 0; i < q->cfg.nleases; i++)
        free((char *)q->leases[i].type);
    free(q->leases);
    free(q);
}

/* One enqueue's script arguments (enqueue() in LUA_ENQUEUE), checked and formatted. */
typedef struct enq_args {
    char id[37], prio[8], maxa[16], ttl[24], timeout[24], lease[24], nb[24];
    const char *queue;
    pk_buf ik, tc; /* "=" + key / trace, or empty */
    const char *argv[13];
} enq_args;

static pk_err *enq_args_init(rq_queue *q, const pk_task_input *in, int64_t now, bool want_record, enq_args *a)
{
    memset(a, 0, sizeof *a);
    a->queue = in->queue && *in->queue ? in->queue : "default";
    if (!pk_queue_name_valid(in->type))
        return pk_err_invalid("type must be 1 to 64 characters of [a-z0-9_.-]");
    if (!pk_queue_name_valid(a->queue))
        return pk_err_invalid("queue must be 1 to 64 characters of [a-z0-9_.-]");
    if (in->priority < 0 || in->priority >= PK_PRIO__COUNT) return pk_err_invalid("unknown priority");
    pk_uuid7(a->id);
    snprintf(a->prio, sizeof a->prio, "%d", in->priority);
    snprintf(a->maxa, sizeof a->maxa, "%d",
             in->max_attempts > 0 ? in->max_attempts : q->cfg.default_max_attempts);
    snprintf(a->ttl, sizeof a->ttl, "%lld", (long long)(in->idem_ttl_ms > 0 ? in->idem_ttl_ms : 0));
    snprintf(a->timeout, sizeof a->timeout, "%lld",
             (long long)(in->timeout_ms > 0 ? in->timeout_ms : q->cfg.default_timeout_ms));
    snprintf(a->lease, sizeof a->lease, "%lld", (long long)pk_queue_lease_for(&q->cfg, in->type));
    /* ceiling: a task due at T must not start before T */
    snprintf(a->nb, sizeof a->nb, "%lld",
             (long long)(in->not_before_ns > now ? (in->not_before_ns + 999) / 1000 : 0));
    if (in->idempotency_key) pk_buf_printf(&a->ik, "=%s", in->idempotency_key);
    if (in->trace_context) pk_buf_printf(&a->tc, "=%s", in->trace_context);
    const char *v[13] = {a->id,
                         in->type,
                         a->queue,
                         a->prio,
                         in->payload_json ? in->payload_json : "{}",
                         a->maxa,
                         a->ik.len ? a->ik.data : "",
                         a->ttl,
                         a->timeout,
                         a->lease,
                         a->tc.len ? a->tc.data : "",
                         a->nb,
                         want_record ? "1" : "0"};
    memcpy(a->argv, v, sizeof v);
    return NULL;
}

static void enq_args_free(enq_args *a)
{
    pk_buf_free(&a->ik);
    pk_buf_free(&a->tc);
}

/* One enqueue() reply {created, record or {"id", id}} into *created, id_out and out. */
static pk_err *enq_result(const redisReply *r, const enq_args *a, const pk_task_input *in, int64_t now,
                          pk_buf *out, bool *created, char id_out[37])
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) return pk_err_internal("bad enqueue reply");
    const redisReply *h = r->element[1];
    bool made = rep_int(r->element[0]) == 1;
    if (created) *created = made;
    const redisReply *rid = field(h, "id");
    if (id_out) snprintf(id_out, 37, "%s", rep_is_str(rid) ? rid->str : "");
    if (out && made)
        new_task_json(out, a->id, in, a->queue, strtoll(a->maxa, NULL, 10), strtoll(a->timeout, NULL, 10),
                      strtoll(a->lease, NULL, 10), now / 1000, strtoll(a->nb, NULL, 10));
    else if (out)
        task_json(out, h);
    return NULL;
}

/* One caller's enqueue in a group commit. */
typedef struct enq_op {
    const pk_task_input *in;
    enq_args a;
    pk_buf *out;
    bool *created;
    char *id_out;
    pk_err *err;
} enq_op;

/* Runs a group of enqueues: S_ENQUEUE for one, S_ENQUEUE_BATCH (one script, the items in line order)
 * for more; each caller gets its own result, or its own copy of a failure of the call. */
static void enq_lead(rq_queue *q, gc_item **batch, size_t n)
{
    int64_t now = now_ns(q);
    redisReply *r = NULL;
    pk_err *e = NULL;
    if (n == 1) {
        enq_op *o = batch[0]->op;
        e = rq_eval(q, &S_ENQUEUE, "enqueue", now, 13, o->a.argv, &r);
        o->err = e ? e : enq_result(r, &o->a, o->in, now, o->out, o->created, o->id_out);
        if (r) freeReplyObject(r);
        return;
    }
    const char **args = calloc(13 * n, sizeof *args);
    for (size_t i = 0; i < n; i++)
        memcpy(&args[13 * i], ((enq_op *)batch[i]->op)->a.argv, 13 * sizeof *args);
    e = rq_eval(q, &S_ENQUEUE_BATCH, "enqueue", now, (int)(13 * n), args, &r);
    free(args);
    if (!e && (r->type != REDIS_REPLY_ARRAY || r->elements != n)) e = pk_err_internal("bad enqueue reply");
    for (size_t i = 0; i < n; i++) {
        enq_op *o = batch[i]->op;
        o->err =
            e ? err_copy(e) : enq_result(r->element[i], &o->a, o->in, now, o->out, o->created, o->id_out);
    }
    pk_err_free(e);
    if (r) freeReplyObject(r);
}

static pk_err *q_enqueue(pk_queue *base, const pk_task_input *in, pk_buf *out, bool *created, char id_out[37])
{
    rq_queue *q = (rq_queue *)base;
    if (created) *created = false;
    enq_op o = {.in = in, .out = out, .created = created, .id_out = id_out};
    pk_err *e = enq_args_init(q, in, now_ns(q), out != NULL, &o.a); /* invalid input: not queued */
    if (e) {
        enq_args_free(&o.a);
        return e;
    }
    gc_item it = {.op = &o};
    gc_run(q, &q->enq_line, &it, enq_lead);
    enq_args_free(&o.a);
    return o.err;
}

/* n independent enqueues as one group (enq_lead: one script call per GROUP_MAX), without the line: the
 * caller holds them all already. An invalid input gets its own error and is not sent. */
static void q_enqueue_each(pk_queue *base, const pk_task_input *in, size_t n, pk_buf *out, bool *created,
                           char (*id)[37], pk_err **err)
{
    rq_queue *q = (rq_queue *)base;
    if (!q->group) { /* --no-queue-group-commit: one script call each */
        for (size_t i = 0; i < n; i++)
            err[i] = q_enqueue(base, &in[i], &out[i], &created[i], id[i]);
        return;
    }
    enq_op *ops = calloc(n ? n : 1, sizeof *ops);
    gc_item *items = calloc(n ? n : 1, sizeof *items);
    gc_item *batch[GROUP_MAX];
    size_t m = 0;
    int64_t now = now_ns(q);
    for (size_t i = 0; i < n; i++) {
        created[i] = false;
        id[i][0] = 0;
        ops[i] = (enq_op){.in = &in[i], .out = &out[i], .created = &created[i], .id_out = id[i]};
        err[i] = enq_args_init(q, &in[i], now, true, &ops[i].a);
        if (err[i]) continue;
        items[i].op = &ops[i];
        batch[m++] = &items[i];
        if (m == GROUP_MAX) {
            enq_lead(q, batch, m);
            m = 0;
        }
    }
    if (m) enq_lead(q, batch, m);
    for (size_t i = 0; i < n; i++) {
        if (!err[i]) err[i] = ops[i].err;
        enq_args_free(&ops[i].a);
    }
    free(ops);
    free(items);
}

/* The whole batch in one call (S_ENQUEUE_BATCH, its arguments flat, 13 per task): atomic, all or none. */
static pk_err *q_enqueue_batch(pk_queue *base, const pk_task_input *in, size_t n, pk_buf *out, bool *created)
{
    rq_queue *q = (rq_queue *)base;
    int64_t now = now_ns(q);
    enq_args *a = calloc(n ? n : 1, sizeof *a);
    const char **args = calloc(13 * n + 1, sizeof *args);
    pk_err *e = NULL;
    size_t ready = 0;
    for (; ready < n && !e; ready++) {
        if ((e = enq_args_init(q, &in[ready], now, true, &a[ready]))) {
            pk_err *wrapped = pk_err_invalid("task %zu: %s", ready, e->message);
            pk_err_free(e);
            e = wrapped;
            enq_args_free(&a[ready]);
            break;
        }
        memcpy(&args[13 * ready], a[ready].argv, 13 * sizeof *args);
    }
    redisReply *r = NULL;
    if (!e) e = rq_eval(q, &S_ENQUEUE_BATCH, "enqueue", now, (int)(13 * n), args, &r);
    if (!e && (r->type != REDIS_REPLY_ARRAY || r->elements != n)) e = pk_err_internal("bad enqueue reply");
    if (!e) {
        pk_buf_putc(out, '[');
        for (size_t i = 0; i < n && !e; i++) {
            if (i) pk_buf_putc(out, ',');
            e = enq_result(r->element[i], &a[i], &in[i], now, out, &created[i], NULL);
        }
        pk_buf_putc(out, ']');
    }
    for (size_t i = 0; i < ready; i++)
        enq_args_free(&a[i]);
    free(a);
    free(args);
    if (r) freeReplyObject(r);
    return e;
}

static pk_err *q_get(pk_queue *base, const char *id, pk_buf *out)
{
    rq_queue *q = (rq_queue *)base;
    char key[256];
    snprintf(key, sizeof key, "%st:%s", q->prefix, id);
    const char *argv[] = {"HGETALL", key};
    redisReply *r = NULL;
    pk_err *e = pk_redis_call(q->r, 0, 0, &r, 2, argv, NULL);
    if (e) return rq_err(e, "get");
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0)
        e = pk_err_not_found("no task with id '%s'", id);
    else if (out)
        task_json(out, r);
    freeReplyObject(r);
    return e;
}

static pk_err *q_list(pk_queue *base, const pk_task_filter *f, pk_task_page *out)
{
    rq_queue *q = (rq_queue *)base;
    if (f->cursor) {
        size_t n = strlen(f->cursor);
        if (!n || n > 18 || strspn(f->cursor, "0123456789") != n || f->cursor[0] == '0')
            return pk_err_invalid("invalid cursor");
    }
    int limit = f->limit < 1 ? 20 : f->limit > 100 ? 100 : f->limit;
    char lim[16], st[16];
    snprintf(lim, sizeof lim, "%d", limit);
    snprintf(st, sizeof st, "%d", f->state);
    const char *args[] = {f->cursor ? f->cursor : "", lim, st, f->type ? f->type : "",
                          f->queue ? f->queue : ""};
    redisReply *r = NULL;
    pk_err *e = rq_eval(q, &S_LIST, "list", now_ns(q), 5, args, &r);
    if (e) return e;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
        freeReplyObject(r);
        return pk_err_internal("bad list reply");
    }
    pk_task_page pg = {0};
    pk_buf_putc(&pg.items, '[');
    for (size_t i = 1; i < r->elements; i++) {
        if (pg.count) pk_buf_putc(&pg.items, ',');
        task_json(&pg.items, r->element[i]);
        pg.count++;
    }
    pk_buf_putc(&pg.items, ']');
    if (rep_is_str(r->element[0]) && r->element[0]->len) pg.next_cursor = strdup(r->element[0]->str);
    freeReplyObject(r);
    pk_task_page_free(out);
    *out = pg;
    return NULL;
}

static char *rep_dup(const redisReply *r)
{
    return rep_is_str(r) ? strdup(r->str) : NULL;
}

/* A claim reply ({id, type, ...} or nil) into *out (zeroed first: id[0] == 0 = none). */
static void claim_reply(const redisReply *r, pk_task *out)
{
    memset(out, 0, sizeof *out);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 14) return;
    redisReply **el = r->element;
    snprintf(out->id, sizeof out->id, "%s", rep_is_str(el[0]) ? el[0]->str : "");
    out->type = rep_dup(el[1]);
    out->queue = rep_dup(el[2]);
    out->payload_json = rep_dup(el[3]);
    out->trace_context = rep_int(el[13]) ? rep_dup(el[4]) : NULL;
    out->priority = (int)rep_int(el[5]);
    out->attempts = (int)rep_int(el[6]);
    out->max_attempts = (int)rep_int(el[7]);
    out->timeout_ms = rep_int(el[8]);
    out->lease_ms = rep_int(el[9]);
    out->created_ns = rep_int(el[10]) * 1000;
    out->not_before_ns = rep_int(el[11]) * 1000;
    out->started_ns = rep_int(el[12]) * 1000;
}

/* One worker thread's claim, or completion + claim, in a group commit (S_SETTLE_CLAIM). */
typedef struct claim_op {
    const char *id; /* the task to complete first; NULL: a claim only */
    const char *worker, *result;
    pk_buf types; /* "" or "type,type,.." */
    pk_task *next;
    pk_err *err;
} claim_op;

/* Runs a group of claims and completions as one S_SETTLE_CLAIM call; each caller gets its own result.
 * A claim only that fails in Redis gets that error; a completion whose claim part fails gets none
 * (next stays empty, the worker's next plain claim reports it), as pk_queue_complete_claim says. */
static void claim_lead(rq_queue *q, gc_item **batch, size_t n)
{
    int64_t now = now_ns(q);
    char rr[16], defer[24];
    snprintf(rr, sizeof rr, "%u", atomic_fetch_add(&q->rr, (unsigned)n) % 1000000u);
    snprintf(defer, sizeof defer, "%d", LIMIT_RETRY_MS * 1000);
    const char **args = malloc((2 + 4 * n) * sizeof *args);
    args[0] = rr;
    args[1] = defer;
    bool completes = false;
    for (size_t i = 0; i < n; i++) {
        claim_op *o = batch[i]->op;
        args[2 + 4 * i] = o->id ? o->id : "";
        args[3 + 4 * i] = o->worker;
        args[4 + 4 * i] = o->result ? o->result : "null";
        args[5 + 4 * i] = o->types.len ? o->types.data : "";
        completes |= o->id != NULL;
    }
    redisReply *r = NULL;
    pk_err *e =
        rq_eval(q, &S_SETTLE_CLAIM, completes ? "complete" : "claim", now, (int)(2 + 4 * n), args, &r);
    free(args);
    if (!e && (r->type != REDIS_REPLY_ARRAY || r->elements != n)) e = pk_err_internal("bad claim reply");
    for (size_t i = 0; i < n; i++) {
        claim_op *o = batch[i]->op;
        const redisReply *el = e ? NULL : r->element[i];
        if (e)
            o->err = err_copy(e);
        else if (el->type != REDIS_REPLY_ARRAY || el->elements < 1)
            o->err = pk_err_internal("bad claim reply");
        else if (rep_int(el->element[0]) < 0)
            o->err = lease_lost(o->id ? o->id : "");
        else if (el->elements > 1 && el->element[1]->type == REDIS_REPLY_ERROR && !o->id)
            o->err = rq_err(pk_err_new("redis_error", 500, "%s", el->element[1]->str), "claim");
        else if (el->elements > 1)
            claim_reply(el->element[1], o->next); /* an error element (the claim failed) leaves next empty */
    }
    pk_err_free(e);
    if (r) freeReplyObject(r);
}

static pk_err *claim_run(rq_queue *q, const char *id, const char *worker, const char *result_json,
                         const char *const *types, size_t ntypes, pk_task *next)
{
    memset(next, 0, sizeof *next);
    claim_op o = {.id = id, .worker = worker, .result = result_json, .types = PK_BUF_INIT, .next = next};
    for (size_t i = 0; types && i < ntypes; i++)
        pk_buf_printf(&o.types, "%s%s", i ? "," : "", types[i]);
    gc_item it = {.op = &o};
    gc_run(q, &q->claim_line, &it, claim_lead);
    pk_buf_free(&o.types);
    return o.err;
}

static pk_err *q_claim(pk_queue *base, const char *worker, const char *const *types, size_t ntypes,
                       pk_task *out)
{
    return claim_run((rq_queue *)base, NULL, worker, NULL, types, ntypes, out);
}

static pk_err *q_heartbeat(pk_queue *base, const char *id, const char *worker, double progress, bool *cancel)
{
    rq_queue *q = (rq_queue *)base;
    char pg[32] = "";
    if (progress >= 0) snprintf(pg, sizeof pg, "%.17g", progress > 1.0 ? 1.0 : progress);
    const char *args[] = {id, worker, pg};
    redisReply *r = NULL;
    pk_err *e = rq_eval(q, &S_HEARTBEAT, "heartbeat", now_ns(q), 3, args, &r);
    if (e) return e;
    int64_t v = rep_int(r);
    freeReplyObject(r);
    if (v < 0) return lease_lost(id);
    if (cancel) *cancel = v == 1;
    return NULL;
}

/* One settle of a held task (mode c/x/r/f); *state gets the new state. */
static pk_err *settle(rq_queue *q, const char *id, const char *worker, const char *mode, const char *text,
                      const char *error, bool retryable, pk_task_state *state)
{
    int64_t now = now_ns(q);
    char at[PK_RFC3339_LEN], u[32], base_ms[24], cap_ms[24];
    pk_rfc3339(now, at);
    snprintf(u, sizeof u, "%.17g", *mode == 'f' ? q->cfg.unit_random(q->cfg.random_ud) : 0.0);
    snprintf(base_ms, sizeof base_ms, "%lld", (long long)q->cfg.retry_base_ms);
    snprintf(cap_ms, sizeof cap_ms, "%lld", (long long)q->cfg.retry_cap_ms);
    const char *args[] = {id, worker,  mode,  text ? text : "", error ? error : "", at, retryable ? "1" : "0",
                          u,  base_ms, cap_ms};
    redisReply *r = NULL;
    pk_err *e = rq_eval(q, &S_SETTLE, "settle", now, 10, args, &r);
    if (e) return e;
    int64_t v = rep_int(r);
    freeReplyObject(r);
    if (v < 0) return lease_lost(id);
    if (state) *state = (pk_task_state)v;
    return NULL;
}

static pk_err *q_complete(pk_queue *base, const char *id, const char *worker, const char *result_json)
{
    return settle((rq_queue *)base, id, worker, "c", result_json ? result_json : "null", NULL, false, NULL);
}

/* Complete and claim the next task in one script (S_SETTLE_CLAIM, in a group commit). */
static pk_err *q_complete_claim(pk_queue *base, const char *id, const char *worker, const char *result_json,
                                const char *const *types, size_t ntypes, pk_task *next)
{
    return claim_run((rq_queue *)base, id, worker, result_json ? result_json : "null", types, ntypes, next);
}

static pk_err *q_cancelled(pk_queue *base, const char *id, const char *worker)
{
    return settle((rq_queue *)base, id, worker, "x", NULL, NULL, false, NULL);
}

static pk_err *q_release(pk_queue *base, const char *id, const char *worker)
{
    return settle((rq_queue *)base, id, worker, "r", NULL, NULL, false, NULL);
}

static pk_err *q_fail(pk_queue *base, const char *id, const char *worker, const char *error, bool retryable,
                      pk_task_state *state)
{
    const char *msg = error ? error : "error";
    pk_buf ej = PK_BUF_INIT; /* the error as a JSON string, for the history entry */
    pk_jw w;
    pk_jw_init(&w, &ej);
    pk_jw_str(&w, msg);
    pk_err *e = settle((rq_queue *)base, id, worker, "f", ej.data, msg, retryable, state);
    pk_buf_free(&ej);
    return e;
}

/* cancel and retry: {status, record} replies. */
static pk_err *record_op(rq_queue *q, rq_fn *s, const char *verb, const char *id, pk_buf *out,
                         pk_task_state *state)
{
    const char *args[] = {id};
    redisReply *r = NULL;
    pk_err *e = rq_eval(q, s, verb, now_ns(q), 1, args, &r);
    if (e) return e;
    e = status_reply(r, id, verb);
    if (!e) {
        const redisReply *h = r->element[1];
        if (state) *state = (pk_task_state)rep_int(field(h, "st"));
        if (out) task_json(out, h);
    }
    freeReplyObject(r);
    return e;
}

static pk_err *q_cancel(pk_queue *base, const char *id, pk_buf *out, pk_task_state *state)
{
    return record_op((rq_queue *)base, &S_CANCEL, "cancel", id, out, state);
}

static pk_err *q_retry(pk_queue *base, const char *id, pk_buf *out)
{
    return record_op((rq_queue *)base, &S_RETRY, "retry", id, out, NULL);
}

static pk_err *q_reclaim(pk_queue *base, int *n)
{
    rq_queue *q = (rq_queue *)base;
    *n = 0;
    int64_t now = now_ns(q);
    char at[PK_RFC3339_LEN];
    pk_rfc3339(now, at);
    for (;;) {
        const char *args[] = {at};
        redisReply *r = NULL;
        pk_err *e = rq_eval(q, &S_RECLAIM, "reclaim", now, 1, args, &r);
        if (e) return e;
        int64_t k = rep_int(r);
        freeReplyObject(r);
        *n += (int)k;
        if (k < 100) return NULL;
    }
}

static pk_err *q_next_wakeup(pk_queue *base, int64_t *at)
{
    rq_queue *q = (rq_queue *)base;
    *at = INT64_MAX;
    redisReply *r = NULL;
    pk_err *e = rq_eval(q, &S_NEXT_WAKEUP, "next_wakeup", now_ns(q), 0, NULL, &r);
    if (e) return e;
    if (rep_is_str(r) && r->len) *at = strtoll(r->str, NULL, 10) * 1000;
    freeReplyObject(r);
    return NULL;
}

static pk_err *q_stats(pk_queue *base, pk_queue_stats *out)
{
    rq_queue *q = (rq_queue *)base;
    pk_queue_stats s = {0};
    s.now_ns = now_ns(q);
    redisReply *r = NULL;
    pk_err *e = rq_eval(q, &S_STATS, "stats", s.now_ns, 0, NULL, &r);
    if (e) return e;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        freeReplyObject(r);
        return pk_err_internal("bad stats reply");
    }
    const redisReply *counts = r->element[0], *rows = r->element[1];
    for (size_t i = 0; i + 1 < counts->elements; i += 2) {
        int64_t n = rep_int(counts->element[i + 1]);
        if (n <= 0 || !rep_is_str(counts->element[i])) continue;
        char qn[PK_TASK_QUEUE_MAX + 1];
        int prio, state;
        if (sscanf(counts->element[i]->str, "%64[^:]:%d:%d", qn, &prio, &state) != 3) continue;
        if (state < 0 || state >= PK_TASK__STATES) continue;
        pk_queue_stats_row_for(&s, qn, prio)->counts[state] = n;
    }
    for (size_t i = 0; i < rows->elements; i++) {
        const redisReply *row = rows->element[i];
        if (row->type != REDIS_REPLY_ARRAY || row->elements != 4 || !rep_is_str(row->element[0])) continue;
        pk_queue_stats_row *sr =
            pk_queue_stats_row_for(&s, row->element[0]->str, (int)rep_int(row->element[1]));
        sr->ready = rep_int(row->element[2]);
        sr->oldest_ready_ns = rep_int(row->element[3]) * 1000;
    }
    freeReplyObject(r);
    pk_queue_stats_sort(&s);
    pk_queue_stats_free(out);
    *out = s;
    return NULL;
}

static pk_err *q_purge(pk_queue *base, int *n)
{
    rq_queue *q = (rq_queue *)base;
    *n = 0;
    int64_t now = now_ns(q);
    for (;;) {
        redisReply *r = NULL;
        pk_err *e = rq_eval(q, &S_PURGE, "purge", now, 0, NULL, &r);
        if (e) return e;
        int64_t k = rep_int(r);
        freeReplyObject(r);
        *n += (int)k;
        if (k < 500) return NULL;
    }
}

/* ---- wait ------------------------------------------------------------------------------------ */

static pk_err *conn_get(rq_queue *q, redisContext **c)
{
    pthread_mutex_lock(&q->mu);
    *c = q->nidle ? q->idle[--q->nidle] : NULL;
    pthread_mutex_unlock(&q->mu);
    if (*c) return NULL;
    pk_err *e = pk_redis_connect(q->r, 500, c);
    return e ? rq_err(e, "wait") : NULL;
}

static void conn_put(rq_queue *q, redisContext *c, bool broken)
{
    if (!broken) {
        pthread_mutex_lock(&q->mu);
        if (q->nidle < WAIT_IDLE_CONNS) {
            q->idle[q->nidle++] = c;
            c = NULL;
        }
        pthread_mutex_unlock(&q->mu);
    }
    if (c) redisFree(c);
}

static pk_err *q_wait(pk_queue *base, int64_t timeout_ms)
{
    rq_queue *q = (rq_queue *)base;
    int64_t now = now_ns(q);
    redisReply *r = NULL;
    pk_err *e = rq_eval(q, &S_WAIT_PREP, "wait", now, 0, NULL, &r);
    if (e) return e;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[2]->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return pk_err_internal("bad wait reply");
    }
    int64_t block_ms = timeout_ms;
    for (int i = 0; i < 2; i++) { /* the earliest due time, the earliest lease expiry (+1 us) */
        const redisReply *v = r->element[i];
        if (!rep_is_str(v) || !v->len) continue;
        int64_t at = (strtoll(v->str, NULL, 10) + i) * 1000;
        int64_t ms = at <= now ? 0 : (at - now + 999999) / 1000000;
        if (ms < block_ms) block_ms = ms;
    }
    const redisReply *streams = r->element[2];
    size_t ns = streams->elements / 2;
    if (block_ms <= 0 || !ns) {
        freeReplyObject(r);
        return NULL;
    }
    const char **argv = calloc(6 + 2 * ns, sizeof *argv);
    char blk[24];
    snprintf(blk, sizeof blk, "%lld", (long long)block_ms);
    int ac = 0;
    argv[ac++] = "XREAD";
    argv[ac++] = "COUNT";
    argv[ac++] = "1";
    argv[ac++] = "BLOCK";
    argv[ac++] = blk;
    argv[ac++] = "STREAMS";
    for (size_t i = 0; i < ns; i++)
        argv[ac++] = streams->element[2 * i]->str;
    for (size_t i = 0; i < ns; i++)
        argv[ac++] = streams->element[2 * i + 1]->str;
    redisContext *c = NULL;
    if (!(e = conn_get(q, &c))) {
        struct timeval tv = {(time_t)((block_ms + 2000) / 1000),
                             (suseconds_t)(((block_ms + 2000) % 1000) * 1000)};
        redisSetTimeout(c, tv);
        redisReply *x = redisCommandArgv(c, ac, argv, NULL);
        bool broken = !x || c->err;
        if (x && x->type == REDIS_REPLY_ERROR)
            e = rq_err(pk_err_new("redis_error", 500, "%s", x->str), "wait");
        else if (broken)
            e = rq_err(pk_err_new("redis_unavailable", 503, "%s", c->errstr), "wait");
        if (x) freeReplyObject(x);
        conn_put(q, c, broken);
    }
    free(argv);
    freeReplyObject(r);
    return e;
}

/* ---- worker registry (queue_redis_workers.c: P workers, P workers:info) ------------------------------ */

static pk_err *q_worker_beat(pk_queue *base, const pk_queue_worker_info *w)
{
    rq_queue *q = (rq_queue *)base;
    pk_err *e = pk_queue_redis_worker_beat(q->r, q->prefix, w, PK_QUEUE_WORKER_FORGET_MS);
    return e ? rq_err(e, "worker registry") : NULL;
}

static pk_err *q_worker_leave(pk_queue *base, const char *name)
{
    rq_queue *q = (rq_queue *)base;
    pk_err *e = pk_queue_redis_worker_leave(q->r, q->prefix, name);
    return e ? rq_err(e, "worker registry") : NULL;
}

static pk_err *q_workers_seen(pk_queue *base, int64_t max_age_ms, pk_queue_worker_info **out, size_t *n)
{
    rq_queue *q = (rq_queue *)base;
    pk_err *e = pk_queue_redis_workers_seen(q->r, q->prefix, max_age_ms, out, n);
    return e && !pk_err_is(e, "queue_error") ? rq_err(e, "worker registry") : e;
}

static const pk_queue_ops RQ_OPS = {
    .close = q_close,
    .enqueue = q_enqueue,
    .enqueue_batch = q_enqueue_batch,
    .enqueue_each = q_enqueue_each,
    .get = q_get,
    .list = q_list,
    .claim = q_claim,
    .heartbeat = q_heartbeat,
    .complete = q_complete,
    .complete_claim = q_complete_claim,
    .fail = q_fail,
    .cancelled = q_cancelled,
    .release = q_release,
    .cancel = q_cancel,
    .retry = q_retry,
    .reclaim_expired = q_reclaim,
    .next_wakeup = q_next_wakeup,
    .stats = q_stats,
    .purge = q_purge,
    .wait = q_wait,
    .worker_beat = q_worker_beat,
    .worker_leave = q_worker_leave,
    .workers_seen = q_workers_seen,
};

/* Publishes this process's per-type limits (replacing what an earlier process wrote). */
static pk_err *publish_limits(rq_queue *q)
{
    if (!q->cfg.nlimits) return NULL;
    char key[192];
    snprintf(key, sizeof key, "%slimits", q->prefix);
    const char *del[] = {"DEL", key};
    redisReply *r = NULL;
    pk_err *e = pk_redis_call(q->r, 0, 0, &r, 2, del, NULL);
    if (r) freeReplyObject(r);
    for (size_t i = 0; !e && i < q->cfg.nlimits; i++) {
        const pk_queue_type_limit *l = &q->cfg.limits[i];
        char v[96];
        snprintf(v, sizeof v, "%d %.17g %d", l->concurrency > 0 ? l->concurrency : 0,
                 l->rate_per_s > 0 ? l->rate_per_s : 0.0, l->burst > 0 ? l->burst : 1);
        const char *argv[] = {"HSET", key, l->type, v};
        r = NULL;
        e = pk_redis_call(q->r, 0, 0, &r, 4, argv, NULL);
        if (r) freeReplyObject(r);
    }
    return e ? rq_err(e, "limits") : NULL;
}

pk_err *pk_queue_open_redis(const pk_queue_config *cfg, pk_queue **out)
{
    if (!cfg->redis) return pk_err_new("bad_config", 2, "the Redis queue backend needs a Redis client");
    const char *prefix = cfg->redis_prefix && *cfg->redis_prefix ? cfg->redis_prefix : "pake:";
    if (strlen(prefix) > 120) return pk_err_new("bad_config", 2, "the Redis key prefix is too long");
    pthread_once(&scripts_once, scripts_init);
    rq_queue *q = calloc(1, sizeof *q);
    q->base.ops = &RQ_OPS;
    q->base.backend = "redis";
    q->cfg = *cfg;
    q->r = cfg->redis;
    snprintf(q->prefix, sizeof q->prefix, "%sq:", prefix);
    pk_queue_config_defaults(&q->cfg);
    q->leases = calloc(cfg->nleases ? cfg->nleases : 1, sizeof *q->leases);
    for (size_t i = 0; i < cfg->nleases; i++)
        q->leases[i] = (pk_queue_type_lease){strdup(cfg->leases[i].type), cfg->leases[i].lease_ms};
    q->cfg.leases = q->leases;
    q->cfg.path = NULL;
    q->cfg.redis_prefix = NULL; /* borrowed; q->prefix is the copy */
    pthread_mutex_init(&q->mu, NULL);
    pthread_mutex_init(&q->gc_mu, NULL);
    q->group = !cfg->no_group_commit;
    q->inflight = cfg->group_inflight > 0 ? cfg->group_inflight : PK_QUEUE_GROUP_INFLIGHT;
    q->gather_ns = cfg->group_gather_us < 0 ? 0 : cfg->group_gather_us * 1000;
    q->claim_line.gather = true;
    pthread_condattr_init(&q->cv_attr);
    pthread_condattr_setclock(&q->cv_attr, CLOCK_MONOTONIC);
    pk_err *e = publish_limits(q);
    q->cfg.limits = NULL; /* borrowed; published above */
    q->cfg.nlimits = 0;
    if (e) {
        q_close(&q->base);
        return e;
    }
    *out = &q->base;
    return NULL;
}
