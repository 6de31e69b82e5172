/*
 * config: every setting of `pake serve` (and the commands that share it) in one table. Each setting
 * has a flag (--listen), an environment variable (PAKE_LISTEN) and a default; precedence is
 * flag > environment > default. `pake serve --help` prints the table. The parsed values live in a
 * pk_config that is filled once at start and read-only afterwards (shared by all threads).
 */
#ifndef PAKE_SERVER_CONFIG_H
#define PAKE_SERVER_CONFIG_H
#include "core/err.h"
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct pk_config {
    char *listen_host;
    int listen_port;
    char *data_dir;
    int threads;         /* event loops; 0 = one per core */
    int offload_threads; /* blocking-work pool; 0 = auto */
    int offload_queue;   /* max queued jobs before 503 */
    char *log_level;
    char *tls_cert, *tls_key;
    bool http2; /* allow HTTP/2 over TLS (h2c over cleartext is always on) */
    int64_t max_body_bytes;
    int json_max_depth;
    int max_header_bytes;
    int read_timeout_ms; /* whole request head+body must arrive within (slowloris) */
    int idle_timeout_ms; /* keep-alive / HTTP/2 idle */
    int shutdown_timeout_ms;
    int drain_delay_ms; /* readiness reports 503 this long before the listener closes */
    int deadline_ms;    /* default per-request deadline */
    int deadline_read_ms, deadline_write_ms, deadline_search_ms, deadline_admin_ms;
    char *server_header;
    bool access_log;
    int idempotency_ttl_s;
    /* rate limits per route class: rate per second and burst */
    double rl_read_rate, rl_write_rate, rl_search_rate, rl_mcp_rate, rl_admin_rate;
    int rl_read_burst, rl_write_burst, rl_search_burst, rl_mcp_burst, rl_admin_burst;
    int rl_max_keys;
    int64_t cache_bytes;
    bool search_index;
    int cache_ttl_ms, cache_negative_ttl_ms;
    char *guard_rules;
    char *guard_policy; /* e.g. "search=block,note=flag" */
    /* breaker (store) */
    int breaker_min_calls, breaker_window, breaker_wait_ms, breaker_half_open_calls, breaker_slow_ms;
    double breaker_failure_rate, breaker_slow_rate;
    int bulkhead_store, bulkhead_wait_ms;
    char *mcp_allowed_origins;     /* hosts Origin/Host may name at /mcp (comma separated, "*" = any) */
    bool mcp_conformance_fixtures; /* test only: the conformance suite's fixture tools */
    /* Redis (distributed mode; empty url = off) */
    char *redis_url;
    char *redis_prefix;
    int redis_pool_size, redis_timeout_ms, redis_connect_timeout_ms, redis_l2_ttl_ms, redis_lease_ms,
        redis_ping_ms, redis_breaker_wait_ms;
    bool redis_ratelimit;
    /* PostgreSQL store (selected by a non-empty database_url; see docs/postgres.md) */
    char *database_url, *database_replica_url;
    int pg_pool_min, pg_pool_max, pg_acquire_timeout_ms, pg_max_lifetime_ms, pg_idle_timeout_ms;
    int pg_validate_after_ms, pg_leak_threshold_ms, pg_connect_timeout_ms, pg_backoff_max_ms;
    int pg_statement_timeout_ms, pg_read_your_writes_ms;
    /* task queue and workers (src/tasks/, docs/tasks.md) */
    int workers;
    int task_max_attempts, task_timeout_ms, task_lease_ms, task_retry_base_ms, task_retry_cap_ms;
    char *task_leases;
    bool task_auto_embed;
    /* AI providers (src/ai/, docs/tasks.md): "local" built-ins or an OpenAI-compatible HTTP API */
    char *embed_provider, *embed_url, *embed_model, *embed_api_key;
    int embed_dims;
    /* vector search on PostgreSQL with pgvector (docs/postgres.md) */
    int vector_hnsw_m, vector_hnsw_ef_construction, vector_hnsw_ef_search;
    char *chat_url, *chat_model, *chat_api_key;
    int ai_timeout_ms;
    /* workflows (n8n) and inbound hooks (docs/n8n.md); secrets never appear in logs or --help */
    char *workflows, *workflow_secret, *workflow_secrets, *workflow_triggers, *hooks;
    int workflow_timeout_ms, workflow_breaker_min_calls, workflow_breaker_wait_ms, hook_replay_window_s;
    struct pk_webhook_config *webhooks; /* the lists above, parsed and validated (net/webhook.h); owned */
    char *queue_backend;                /* "sqlite" | "redis" (validated) */
    bool queue_group_commit;            /* Redis queue: group commit (pk_queue_config.no_group_commit) */
    int queue_group_inflight;           /* Redis queue: groups in flight per line (1..8) */
    int queue_group_gather_us;          /* Redis queue: claim group gather wait (0..10000 us) */
    char *task_limits;                  /* pk_queue_limits_parse grammar (validated) */
    char *worker_name;                  /* registry name of this process; empty = HOST-PID */
    char *fault_store_fail_rate;        /* test builds only */
    char *fault_store_delay_ms;         /* test builds only */
} pk_config;

/* Fills defaults, then env, then argv (argv[0] is the command name). Returns an error for unknown
 * flags or bad values; sets *help when --help was given. */
pk_err *pk_config_parse(pk_config *c, int argc, char **argv, bool *help);
void pk_config_usage(FILE *out, const char *command);
void pk_config_free(pk_config *c);
#endif
