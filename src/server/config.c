/*
 * The settings table drives parsing, environment lookup and --help, so a setting cannot exist
 * without its flag, its variable and its line of documentation.
 */
#include "server/config.h"
#include "ai/ai.h"
#include "core/buf.h"
#include "net/webhook.h"
#include "queue/queue.h"
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { T_STR, T_INT, T_I64, T_DBL, T_BOOL, T_LISTEN } opt_type;

typedef struct opt {
    const char *flag; /* without leading dashes */
    const char *env;
    opt_type type;
    size_t off;
    const char *def;
    const char *help;
} opt;

#define O(f) offsetof(pk_config, f)
static const opt OPTS[] = {
    {"listen", "PAKE_LISTEN", T_LISTEN, 0, "127.0.0.1:8080",
     "HOST:PORT to listen on; port 0 picks a free port (logged)"},
    {"data-dir", "PAKE_DATA_DIR", T_STR, O(data_dir), "./data", "directory of the embedded store"},
    {"threads", "PAKE_THREADS", T_INT, O(threads), "0", "event-loop threads (0 = one per core)"},
    {"offload-threads", "PAKE_OFFLOAD_THREADS", T_INT, O(offload_threads), "0",
     "blocking-work pool size (0 = 4 per core)"},
    {"offload-queue", "PAKE_OFFLOAD_QUEUE", T_INT, O(offload_queue), "4096",
     "queued blocking jobs before 503 overloaded"},
    {"log-level", "PAKE_LOG_LEVEL", T_STR, O(log_level), "info", "debug | info | warn | error | off"},
    {"access-log", "PAKE_ACCESS_LOG", T_BOOL, O(access_log), "true", "one JSON line per request"},
    {"tls-cert", "PAKE_TLS_CERT", T_STR, O(tls_cert), "", "PEM certificate; with --tls-key serves HTTPS"},
    {"tls-key", "PAKE_TLS_KEY", T_STR, O(tls_key), "", "PEM private key"},
    {"http2", "PAKE_HTTP2", T_BOOL, O(http2), "false",
     "offer HTTP/2 over TLS (off: no Rapid Reset fix in Debian h2o)"},
    {"max-body-bytes", "PAKE_MAX_BODY_BYTES", T_I64, O(max_body_bytes), "1048576",
     "largest accepted request body"},
    {"max-header-bytes", "PAKE_MAX_HEADER_BYTES", T_INT, O(max_header_bytes), "65536",
     "largest accepted request head (431 above)"},
    {"json-max-depth", "PAKE_JSON_MAX_DEPTH", T_INT, O(json_max_depth), "32",
     "deepest accepted JSON nesting"},
    {"read-timeout-ms", "PAKE_READ_TIMEOUT_MS", T_INT, O(read_timeout_ms), "10000",
     "a request must arrive within this (slowloris guard)"},
    {"idle-timeout-ms", "PAKE_IDLE_TIMEOUT_MS", T_INT, O(idle_timeout_ms), "60000",
     "idle keep-alive / HTTP/2 connection timeout"},
    {"shutdown-timeout-ms", "PAKE_SHUTDOWN_TIMEOUT_MS", T_INT, O(shutdown_timeout_ms), "10000",
     "in-flight requests (then running tasks) get this long after SIGTERM"},
    {"drain-delay-ms", "PAKE_DRAIN_DELAY_MS", T_INT, O(drain_delay_ms), "0",
     "readiness is 503 this long before the listener closes"},
    {"deadline-ms", "PAKE_DEADLINE_MS", T_INT, O(deadline_ms), "10000", "default request deadline"},
    {"deadline-read-ms", "PAKE_DEADLINE_READ_MS", T_INT, O(deadline_read_ms), "0",
     "deadline of read routes (0 = --deadline-ms)"},
    {"deadline-write-ms", "PAKE_DEADLINE_WRITE_MS", T_INT, O(deadline_write_ms), "0",
     "deadline of write routes (0 = --deadline-ms)"},
    {"deadline-search-ms", "PAKE_DEADLINE_SEARCH_MS", T_INT, O(deadline_search_ms), "0",
     "deadline of search routes (0 = --deadline-ms)"},
    {"deadline-admin-ms", "PAKE_DEADLINE_ADMIN_MS", T_INT, O(deadline_admin_ms), "0",
     "deadline of admin routes (0 = --deadline-ms)"},
    {"server-header", "PAKE_SERVER_HEADER", T_STR, O(server_header), "pake",
     "value of the Server response header (empty: none)"},
    {"idempotency-ttl-s", "PAKE_IDEMPOTENCY_TTL_S", T_INT, O(idempotency_ttl_s), "86400",
     "how long Idempotency-Key responses are replayed"},
    {"rate-read", "PAKE_RATE_READ", T_DBL, O(rl_read_rate), "1000", "read requests per second per principal"},
    {"burst-read", "PAKE_BURST_READ", T_INT, O(rl_read_burst), "2000", "read burst per principal"},
    {"rate-write", "PAKE_RATE_WRITE", T_DBL, O(rl_write_rate), "200",
     "write requests per second per principal"},
    {"burst-write", "PAKE_BURST_WRITE", T_INT, O(rl_write_burst), "400", "write burst per principal"},
    {"rate-search", "PAKE_RATE_SEARCH", T_DBL, O(rl_search_rate), "500", "searches per second per principal"},
    {"burst-search", "PAKE_BURST_SEARCH", T_INT, O(rl_search_burst), "1000", "search burst per principal"},
    {"rate-mcp", "PAKE_RATE_MCP", T_DBL, O(rl_mcp_rate), "500", "MCP requests per second per principal"},
    {"burst-mcp", "PAKE_BURST_MCP", T_INT, O(rl_mcp_burst), "1000", "MCP burst per principal"},
    {"rate-admin", "PAKE_RATE_ADMIN", T_DBL, O(rl_admin_rate), "20",
     "admin requests per second per principal"},
    {"burst-admin", "PAKE_BURST_ADMIN", T_INT, O(rl_admin_burst), "40", "admin burst per principal"},
    {"rate-max-keys", "PAKE_RATE_MAX_KEYS", T_INT, O(rl_max_keys), "100000",
     "principals tracked by the in-process limiter"},
    {"cache-bytes", "PAKE_CACHE_BYTES", T_I64, O(cache_bytes), "67108864",
     "L1 cache size in bytes (0 disables)"},
    {"search-index", "PAKE_SEARCH_INDEX", T_BOOL, O(search_index), "true",
     "embedded store: relevance search from an in-memory index (false: FTS5 only)"},
    {"cache-ttl-ms", "PAKE_CACHE_TTL_MS", T_INT, O(cache_ttl_ms), "300000", "L1 entry time to live"},
    {"cache-negative-ttl-ms", "PAKE_CACHE_NEGATIVE_TTL_MS", T_INT, O(cache_negative_ttl_ms), "5000",
     "L1 time to live of a cached 404"},
    {"guard-rules", "PAKE_GUARD_RULES", T_STR, O(guard_rules), "",
     "guard rule file (empty: the built-in rules)"},
    {"guard-policy", "PAKE_GUARD_POLICY", T_STR, O(guard_policy), "",
     "per-surface overrides, e.g. note=block,search=flag"},
    {"breaker-min-calls", "PAKE_BREAKER_MIN_CALLS", T_INT, O(breaker_min_calls), "20",
     "calls in the window before the store breaker may open"},
    {"breaker-window", "PAKE_BREAKER_WINDOW", T_INT, O(breaker_window), "100",
     "store breaker count-based window size"},
    {"breaker-failure-rate", "PAKE_BREAKER_FAILURE_RATE", T_DBL, O(breaker_failure_rate), "50",
     "failure percentage that opens the breaker"},
    {"breaker-slow-rate", "PAKE_BREAKER_SLOW_RATE", T_DBL, O(breaker_slow_rate), "100",
     "slow-call percentage that opens the breaker"},
    {"breaker-slow-ms", "PAKE_BREAKER_SLOW_MS", T_INT, O(breaker_slow_ms), "2000",
     "a store call slower than this is slow"},
    {"breaker-wait-ms", "PAKE_BREAKER_WAIT_MS", T_INT, O(breaker_wait_ms), "10000",
     "time an open breaker waits before half-open"},
    {"breaker-half-open-calls", "PAKE_BREAKER_HALF_OPEN_CALLS", T_INT, O(breaker_half_open_calls), "5",
     "probe calls in half-open"},
    {"bulkhead-store", "PAKE_BULKHEAD_STORE", T_INT, O(bulkhead_store), "64", "max concurrent store calls"},
    {"bulkhead-wait-ms", "PAKE_BULKHEAD_WAIT_MS", T_INT, O(bulkhead_wait_ms), "100",
     "max wait for a store slot"},
    {"mcp-allowed-origins", "PAKE_MCP_ALLOWED_ORIGINS", T_STR, O(mcp_allowed_origins),
     "localhost,127.0.0.1,[::1]",
     "hosts that Origin and Host may name at /mcp (comma separated, optional :port; * = any)"},
    {"mcp-conformance-fixtures", "PAKE_MCP_CONFORMANCE_FIXTURES", T_BOOL, O(mcp_conformance_fixtures),
     "false", "test only: also serve the MCP conformance suite's fixture tools, resources and prompts"},
    {"redis-url", "PAKE_REDIS_URL", T_STR, O(redis_url), "",
     "redis://[user:password@]host:port/db: L2 cache, cross-instance invalidation, shared rate limits"},
    {"redis-prefix", "PAKE_REDIS_PREFIX", T_STR, O(redis_prefix),
     "pake:", "prefix of every Redis key and channel (one per deployment)"},
    {"redis-pool-size", "PAKE_REDIS_POOL_SIZE", T_INT, O(redis_pool_size), "8",
     "Redis connections per process"},
    {"redis-timeout-ms", "PAKE_REDIS_TIMEOUT_MS", T_INT, O(redis_timeout_ms), "250",
     "Redis command timeout (also bounded by the request deadline)"},
    {"redis-connect-timeout-ms", "PAKE_REDIS_CONNECT_TIMEOUT_MS", T_INT, O(redis_connect_timeout_ms), "500",
     "Redis connect timeout"},
    {"redis-l2-ttl-ms", "PAKE_REDIS_L2_TTL_MS", T_INT, O(redis_l2_ttl_ms), "300000",
     "L2 (Redis) note time to live"},
    {"redis-lease-ms", "PAKE_REDIS_LEASE_MS", T_INT, O(redis_lease_ms), "500",
     "L1 lease: L1 hits need a subscription confirmed within this; writers wait at most this for acks"},
    {"redis-ping-ms", "PAKE_REDIS_PING_MS", T_INT, O(redis_ping_ms), "100",
     "subscriber PING period (renews the L1 lease)"},
    {"redis-breaker-wait-ms", "PAKE_REDIS_BREAKER_WAIT_MS", T_INT, O(redis_breaker_wait_ms), "1000",
     "time the open redis breaker waits before half-open probes"},
    {"redis-ratelimit", "PAKE_REDIS_RATELIMIT", T_BOOL, O(redis_ratelimit), "true",
     "with --redis-url: rate limits shared by all instances (GCRA in Redis)"},
    {"database-url", "PAKE_DATABASE_URL", T_STR, O(database_url), "",
     "postgres://user:password@host:port/db selects the PostgreSQL store (empty: embedded SQLite)"},
    {"database-replica-url", "PAKE_DATABASE_REPLICA_URL", T_STR, O(database_replica_url), "",
     "read replica for searches and reads (writes and read-your-writes use the primary)"},
    {"pg-pool-min", "PAKE_PG_POOL_MIN", T_INT, O(pg_pool_min), "1",
     "database connections kept open per pool"},
    {"pg-pool-max", "PAKE_PG_POOL_MAX", T_INT, O(pg_pool_max), "0",
     "largest database pool (0 = offload threads + 2)"},
    {"pg-acquire-timeout-ms", "PAKE_PG_ACQUIRE_TIMEOUT_MS", T_INT, O(pg_acquire_timeout_ms), "2000",
     "longest wait for a free database connection"},
    {"pg-max-lifetime-ms", "PAKE_PG_MAX_LIFETIME_MS", T_INT, O(pg_max_lifetime_ms), "1800000",
     "database connections are replaced after this age"},
    {"pg-idle-timeout-ms", "PAKE_PG_IDLE_TIMEOUT_MS", T_INT, O(pg_idle_timeout_ms), "600000",
     "idle database connections above the minimum close after this"},
    {"pg-validate-after-ms", "PAKE_PG_VALIDATE_AFTER_MS", T_INT, O(pg_validate_after_ms), "5000",
     "a connection idle this long gets a round trip before use"},
    {"pg-leak-threshold-ms", "PAKE_PG_LEAK_THRESHOLD_MS", T_INT, O(pg_leak_threshold_ms), "10000",
     "a connection held this long is logged with the request id"},
    {"pg-connect-timeout-ms", "PAKE_PG_CONNECT_TIMEOUT_MS", T_INT, O(pg_connect_timeout_ms), "3000",
     "opening a database connection (libpq rounds up to whole seconds, at least 2)"},
    {"pg-backoff-max-ms", "PAKE_PG_BACKOFF_MAX_MS", T_INT, O(pg_backoff_max_ms), "1000",
     "cap of the reconnect backoff (starts at 50 ms, doubles)"},
    {"pg-statement-timeout-ms", "PAKE_PG_STATEMENT_TIMEOUT_MS", T_INT, O(pg_statement_timeout_ms), "30000",
     "server-side statement_timeout backstop (request deadlines apply first)"},
    {"pg-read-your-writes-ms", "PAKE_PG_READ_YOUR_WRITES_MS", T_INT, O(pg_read_your_writes_ms), "5000",
     "with a replica: reads of a principal that wrote this recently go to the primary"},
    {"workers", "PAKE_WORKERS", T_INT, O(workers), "2",
     "task worker threads in `pake serve` and `pake worker` (0 in serve: enqueue only)"},
    {"queue-backend", "PAKE_QUEUE_BACKEND", T_STR, O(queue_backend), "sqlite",
     "task queue: sqlite (DATA_DIR/queue.db) | redis (Redis Streams at --redis-url; scale-out)"},
    {"queue-group-commit", "PAKE_QUEUE_GROUP_COMMIT", T_BOOL, O(queue_group_commit), "true",
     "Redis queue: concurrent enqueues (and worker claims/completions) of a process share one script call"},
    {"queue-group-inflight", "PAKE_QUEUE_GROUP_INFLIGHT", T_INT, O(queue_group_inflight), "1",
     "Redis queue, group commit: most group calls of one kind a process has in flight at once (1..8)"},
    {"queue-group-gather-us", "PAKE_QUEUE_GROUP_GATHER_US", T_INT, O(queue_group_gather_us), "1000",
     "Redis queue: a claim group waits up to this long (us) for the last group's callers (0: never)"},
    {"task-limits", "PAKE_TASK_LIMITS", T_STR, O(task_limits), "",
     "per-type limits shared by all workers, e.g. note.embed=concurrency:4;rate:10/s;burst:20,noop=..."},
    {"worker-name", "PAKE_WORKER_NAME", T_STR, O(worker_name), "",
     "this process in the worker registry (GET /v1/queues); empty: HOST-PID"},
    {"task-max-attempts", "PAKE_TASK_MAX_ATTEMPTS", T_INT, O(task_max_attempts), "3",
     "default attempts of a task before it becomes a dead letter"},
    {"task-timeout-ms", "PAKE_TASK_TIMEOUT_MS", T_INT, O(task_timeout_ms), "30000",
     "default run time limit of one task attempt"},
    {"task-lease-ms", "PAKE_TASK_LEASE_MS", T_INT, O(task_lease_ms), "30000",
     "default task lease: a running task whose worker stops renewing it for this long is reclaimed"},
    {"task-leases", "PAKE_TASK_LEASES", T_STR, O(task_leases), "",
     "per-type leases, e.g. note.embed=60000,noop=5000"},
    {"task-retry-base-ms", "PAKE_TASK_RETRY_BASE_MS", T_INT, O(task_retry_base_ms), "1000",
     "retry backoff base: full jitter in [0, min(cap, base * 2^(attempt-1)))"},
    {"task-retry-cap-ms", "PAKE_TASK_RETRY_CAP_MS", T_INT, O(task_retry_cap_ms), "60000",
     "retry backoff cap"},
    {"task-auto-embed", "PAKE_TASK_AUTO_EMBED", T_BOOL, O(task_auto_embed), "true",
     "enqueue note.embed when a note is created or changed"},
    {"embed-provider", "PAKE_EMBED_PROVIDER", T_STR, O(embed_provider), "local",
     "embeddings: local (built-in feature hashing) or openai (an OpenAI-compatible /v1/embeddings API)"},
    {"embed-url", "PAKE_EMBED_URL", T_STR, O(embed_url), "",
     "base URL of the OpenAI-compatible embeddings API, e.g. http://127.0.0.1:11434/v1"},
    {"embed-model", "PAKE_EMBED_MODEL", T_STR, O(embed_model), "",
     "embedding model name sent to the provider"},
    {"embed-api-key", "PAKE_EMBED_API_KEY", T_STR, O(embed_api_key), "",
     "bearer token for the embeddings API (prefer the environment variable)"},
    {"embed-dims", "PAKE_EMBED_DIMS", T_INT, O(embed_dims), "384",
     "embedding dimensions (the local embedder: 384; a provider's vectors must have this length)"},
    {"vector-hnsw-m", "PAKE_VECTOR_HNSW_M", T_INT, O(vector_hnsw_m), "16",
     "PostgreSQL with pgvector: HNSW links per node (index build; 2..100)"},
    {"vector-hnsw-ef-construction", "PAKE_VECTOR_HNSW_EF_CONSTRUCTION", T_INT, O(vector_hnsw_ef_construction),
     "64", "PostgreSQL with pgvector: HNSW candidate list while building (at least 2 x m, at most 1000)"},
    {"vector-hnsw-ef-search", "PAKE_VECTOR_HNSW_EF_SEARCH", T_INT, O(vector_hnsw_ef_search), "40",
     "PostgreSQL with pgvector: HNSW candidate list per query (1..1000; higher: better recall, slower)"},
    {"chat-url", "PAKE_CHAT_URL", T_STR, O(chat_url), "",
     "base URL of an OpenAI-compatible chat completions API for note.summarize (empty: built-in extractive)"},
    {"chat-model", "PAKE_CHAT_MODEL", T_STR, O(chat_model), "", "chat model name sent to the provider"},
    {"chat-api-key", "PAKE_CHAT_API_KEY", T_STR, O(chat_api_key), "",
     "bearer token for the chat API (prefer the environment variable)"},
    {"ai-timeout-ms", "PAKE_AI_TIMEOUT_MS", T_INT, O(ai_timeout_ms), "30000",
     "time limit of one call to an AI provider"},
    {"workflows", "PAKE_WORKFLOWS", T_STR, O(workflows), "",
     "named workflow webhooks (n8n), e.g. on-new=http://127.0.0.1:5678/webhook/abc,digest=https://..."},
    {"workflow-secret", "PAKE_WORKFLOW_SECRET", T_STR, O(workflow_secret), "",
     "HMAC-SHA256 signing secret of workflow deliveries, at least 16 characters (prefer the environment)"},
    {"workflow-secrets", "PAKE_WORKFLOW_SECRETS", T_STR, O(workflow_secrets), "",
     "per-workflow signing secrets NAME=SECRET,... (override --workflow-secret)"},
    {"workflow-triggers", "PAKE_WORKFLOW_TRIGGERS", T_STR, O(workflow_triggers), "",
     "note events that trigger workflows, e.g. note.created=on-new|digest,note.updated=digest"},
    {"workflow-timeout-ms", "PAKE_WORKFLOW_TIMEOUT_MS", T_INT, O(workflow_timeout_ms), "10000",
     "time limit of one workflow webhook call"},
    {"workflow-breaker-min-calls", "PAKE_WORKFLOW_BREAKER_MIN_CALLS", T_INT, O(workflow_breaker_min_calls),
     "5", "calls in the n8n breaker window (last 20) before it may open at 50% failures"},
    {"workflow-breaker-wait-ms", "PAKE_WORKFLOW_BREAKER_WAIT_MS", T_INT, O(workflow_breaker_wait_ms), "30000",
     "time the open n8n breaker waits before half-open probes"},
    {"hooks", "PAKE_HOOKS", T_STR, O(hooks), "",
     "inbound hooks NAME=SECRET,... accepted at POST /v1/hooks/{name} (prefer the environment)"},
    {"hook-replay-window-s", "PAKE_HOOK_REPLAY_WINDOW_S", T_INT, O(hook_replay_window_s), "300",
     "inbound hooks: largest accepted clock difference of X-Pake-Timestamp; signatures are remembered this "
     "long"},
#ifdef PAKE_FAULT_INJECTION
    {"fault-store-fail-rate", "PAKE_FAULT_STORE_FAIL_RATE", T_STR, O(fault_store_fail_rate), "",
     "test builds: fraction of store calls that fail"},
    {"fault-store-delay-ms", "PAKE_FAULT_STORE_DELAY_MS", T_STR, O(fault_store_delay_ms), "",
     "test builds: delay added to each store call"},
#endif
};
#define NOPTS (sizeof OPTS / sizeof OPTS[0])

static pk_err *set_value(pk_config *c, const opt *o, const char *v, const char *src)
{
    char *end = NULL;
    void *p = (char *)c + o->off;
    errno = 0;
    switch (o->type) {
    case T_STR:
        free(*(char **)p);
        *(char **)p = strdup(v);
        return NULL;
    case T_INT: {
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < 0 || x > 1000000000)
            return pk_err_new("bad_config", 2, "%s: --%s expects a non-negative integer, got '%s'", src,
                              o->flag, v);
        *(int *)p = (int)x;
        return NULL;
    }
    case T_I64: {
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || x < 0)
            return pk_err_new("bad_config", 2, "%s: --%s expects a non-negative integer, got '%s'", src,
                              o->flag, v);
        *(int64_t *)p = x;
        return NULL;
    }
    case T_DBL: {
        double x = strtod(v, &end);
        if (errno || end == v || *end || x < 0)
            return pk_err_new("bad_config", 2, "%s: --%s expects a non-negative number, got '%s'", src,
                              o->flag, v);
        *(double *)p = x;
        return NULL;
    }
    case T_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on"))
            *(bool *)p = true;
        else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off"))
            *(bool *)p = false;
        else
            return pk_err_new("bad_config", 2, "%s: --%s expects true or false, got '%s'", src, o->flag, v);
        return NULL;
    case T_LISTEN: {
        const char *colon = strrchr(v, ':');
        if (!colon || colon == v)
            return pk_err_new("bad_config", 2, "%s: --listen expects HOST:PORT, got '%s'", src, v);
        long port = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || *end || port < 0 || port > 65535)
            return pk_err_new("bad_config", 2, "%s: --listen port must be 0..65535, got '%s'", src, v);
        const char *h = v;
        size_t hl = (size_t)(colon - v);
        if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') h++, hl -= 2;
        free(c->listen_host);
        c->listen_host = pk_strndup(h, hl);
        c->listen_port = (int)port;
        return NULL;
    }
    }
    return NULL;
}

void pk_config_free(pk_config *c)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (OPTS[i].type == T_STR) {
            char **p = (char **)((char *)c + OPTS[i].off);
            free(*p);
            *p = NULL;
        }
    free(c->listen_host);
    c->listen_host = NULL;
    if (c->webhooks) pk_webhook_config_free(c->webhooks);
    free(c->webhooks);
    c->webhooks = NULL;
}

pk_err *pk_config_parse(pk_config *c, int argc, char **argv, bool *help)
{
    memset(c, 0, sizeof *c);
    *help = false;
    pk_err *e;
    for (size_t i = 0; i < NOPTS; i++)
        if ((e = set_value(c, &OPTS[i], OPTS[i].def, "default"))) return e;
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = getenv(OPTS[i].env);
        if (v && (e = set_value(c, &OPTS[i], v, OPTS[i].env))) return e;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            *help = true;
            return NULL;
        }
        if (strncmp(arg, "--", 2) != 0)
            return pk_err_new("bad_config", 2, "unexpected argument '%s' (see --help)", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        const opt *o = NULL;
        bool negated = false;
        for (size_t i = 0; i < NOPTS && !o; i++) {
            if (strlen(OPTS[i].flag) == nl && !strncmp(OPTS[i].flag, name, nl))
                o = &OPTS[i];
            else if (OPTS[i].type == T_BOOL && nl == strlen(OPTS[i].flag) + 3 && !strncmp(name, "no-", 3) &&
                     !strncmp(name + 3, OPTS[i].flag, nl - 3))
                o = &OPTS[i], negated = true;
        }
        if (!o) return pk_err_new("bad_config", 2, "unknown option '--%.*s' (see --help)", (int)nl, name);
        const char *v;
        if (eq)
            v = eq + 1;
        else if (o->type == T_BOOL)
            v = negated ? "false" : "true";
        else if (a + 1 < argc)
            v = argv[++a];
        else
            return pk_err_new("bad_config", 2, "option --%s needs a value", o->flag);
        if ((e = set_value(c, o, v, "flag"))) return e;
    }
    if (c->threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->threads = n > 0 ? (int)n : 1;
    }
    if (c->offload_threads == 0)
        c->offload_threads = 4 * (int)(sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1);
    if (c->threads > 256) return pk_err_new("bad_config", 2, "--threads must be at most 256");
    if (c->offload_threads > 1024)
        return pk_err_new("bad_config", 2, "--offload-threads must be at most 1024");
    if (c->max_body_bytes < 1) return pk_err_new("bad_config", 2, "--max-body-bytes must be positive");
    if (c->json_max_depth < 1 || c->json_max_depth > 60)
        return pk_err_new("bad_config", 2, "--json-max-depth must be 1..60");
    if ((*c->tls_cert != 0) != (*c->tls_key != 0))
        return pk_err_new("bad_config", 2, "--tls-cert and --tls-key go together");
    if (c->deadline_ms < 1) return pk_err_new("bad_config", 2, "--deadline-ms must be positive");
    if (c->vector_hnsw_m < 2 || c->vector_hnsw_m > 100)
        return pk_err_new("bad_config", 2, "--vector-hnsw-m must be 2..100");
    if (c->vector_hnsw_ef_construction < 2 * c->vector_hnsw_m || c->vector_hnsw_ef_construction > 1000)
        return pk_err_new("bad_config", 2, "--vector-hnsw-ef-construction must be 2 x --vector-hnsw-m..1000");
    if (c->vector_hnsw_ef_search < 1 || c->vector_hnsw_ef_search > 1000)
        return pk_err_new("bad_config", 2, "--vector-hnsw-ef-search must be 1..1000");
    if (*c->redis_url && (c->redis_lease_ms < 2 * c->redis_ping_ms || c->redis_ping_ms < 1))
        return pk_err_new("bad_config", 2, "--redis-lease-ms must be at least twice --redis-ping-ms");
    if (c->queue_group_inflight < 1 || c->queue_group_inflight > 8)
        return pk_err_new("bad_config", 2, "--queue-group-inflight must be 1..8");
    if (c->queue_group_gather_us < 0 || c->queue_group_gather_us > 10000)
        return pk_err_new("bad_config", 2, "--queue-group-gather-us must be 0..10000");
    if (c->ai_timeout_ms < 1) return pk_err_new("bad_config", 2, "--ai-timeout-ms must be positive");
    pk_ai_config ac = {.embed_provider = c->embed_provider,
                       .embed_url = c->embed_url,
                       .embed_model = c->embed_model,
                       .embed_dims = c->embed_dims,
                       .chat_url = c->chat_url,
                       .chat_model = c->chat_model};
    pk_err *ae = pk_ai_config_check(&ac);
    if (ae) return ae;
    if (c->hook_replay_window_s < 1)
        return pk_err_new("bad_config", 2, "--hook-replay-window-s must be positive");
    if (c->workflow_timeout_ms < 1)
        return pk_err_new("bad_config", 2, "--workflow-timeout-ms must be positive");
    if (c->workflow_breaker_min_calls < 1 || c->workflow_breaker_min_calls > 20)
        return pk_err_new("bad_config", 2, "--workflow-breaker-min-calls must be 1..20");
    pk_webhook_settings ws = {.workflows = c->workflows,
                              .secret = c->workflow_secret,
                              .secrets = c->workflow_secrets,
                              .triggers = c->workflow_triggers,
                              .hooks = c->hooks};
    c->webhooks = malloc(sizeof *c->webhooks);
    if ((e = pk_webhook_config_parse(&ws, c->webhooks))) return e;
    if (strcmp(c->queue_backend, "sqlite") != 0 && strcmp(c->queue_backend, "redis") != 0)
        return pk_err_new("bad_config", 2, "--queue-backend must be sqlite or redis, got '%s'",
                          c->queue_backend);
    if (!strcmp(c->queue_backend, "redis") && !*c->redis_url)
        return pk_err_new("bad_config", 2, "--queue-backend redis needs --redis-url (PAKE_REDIS_URL)");
    pk_queue_type_limit *limits = NULL;
    size_t nlimits = 0;
    char *lbuf = NULL;
    if ((e = pk_queue_limits_parse(c->task_limits, &limits, &nlimits, &lbuf))) return e;
    free(limits);
    free(lbuf);
    if (strlen(c->worker_name) > 63)
        return pk_err_new("bad_config", 2, "--worker-name must be at most 63 bytes");
    return NULL;
}

void pk_config_usage(FILE *out, const char *command)
{
    fprintf(out, "Usage: pake %s [options]\n\nOptions (flag, environment variable, default):\n", command);
    for (size_t i = 0; i < NOPTS; i++) {
        const opt *o = &OPTS[i];
        fprintf(out, "  --%-26s %-30s default: %s\n      %s\n", o->flag, o->env, *o->def ? o->def : "(empty)",
                o->help);
    }
}
