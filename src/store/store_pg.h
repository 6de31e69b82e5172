/*
 * store_pg: the PostgreSQL knowledge store (the pk_store contract of store.h over libpq).
 *
 * Same behaviour as the embedded store: the same validation (store_common.c), the same JSON bytes
 * (key order included), the same error codes, cursors and page semantics, audit log, confidence
 * history, links and idempotency records. Differences a client can see: search scores are
 * ts_rank_cd values (higher is better, as with SQLite, but on another scale) and snippets come from
 * ts_headline over title, content and tags.
 *
 * Connections: a pool for the primary and, optionally, one for a read replica (pg_pool.h). Reads
 * (get, list, search, history, links) go to the replica unless the calling principal wrote within
 * the last read_your_writes_ms (then the primary, so a client always sees its own writes); a replica
 * that cannot be reached falls back to the primary. Writes always go to the primary.
 *
 * Errors beyond store.h: "store_unavailable" 503 retryable when the database cannot be reached (the
 * store breaker counts it), "store_busy" 503 when no connection frees up within the acquisition
 * timeout. Thread-safety as store.h: every function is blocking; call from the offload pool.
 */
#ifndef PAKE_STORE_STORE_PG_H
#define PAKE_STORE_STORE_PG_H
#include "store/store.h"

struct pk_metrics;

typedef struct pk_pg_config {
    const char *url;         /* postgres://user:password@host:port/dbname?sslmode=... (required) */
    const char *replica_url; /* NULL or "": no replica */
    int pool_min, pool_max;  /* per pool; defaults 1 and 10 */
    int acquire_timeout_ms, max_lifetime_ms, idle_timeout_ms, validate_after_ms, leak_threshold_ms;
    int connect_timeout_ms, backoff_max_ms, statement_timeout_ms;
    int read_your_writes_ms;    /* default 5000 */
    const pk_clock *wall_clock; /* timestamps, idempotency expiry; NULL = real time */
    int idem_ttl_s;             /* default 86400 */
    int idem_lease_s;           /* default 60 */
} pk_pg_config;

/* Opens the pools and, unless no_migrate, applies pending migrations (which needs the primary up).
 * Errors: store_error (bad configuration, a schema newer than this binary), store_unavailable. */
pk_err *pk_store_open_pg(const pk_pg_config *cfg, bool no_migrate, pk_store **out);
/* True for a store opened by pk_store_open_pg. */
bool pk_store_is_pg(const pk_store *s);
/* Registers the pools' gauges and histograms in the process metrics registry (call once, after the
 * registry exists; the store must be closed before the registry is freed... or never scraped after). */
void pk_store_pg_bind_metrics(pk_store *s, struct pk_metrics *m);
int pk_store_pg_schema_version_latest(void);
/* The primary's pool, for the other PostgreSQL-backed modules of this layer (vecstore_pg.c); NULL when
 * `s` is not a PostgreSQL store. Owned by the store. */
struct pk_pg_pool *pk_store_pg_primary_pool(pk_store *s);
#endif
