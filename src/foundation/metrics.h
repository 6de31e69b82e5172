/*
 * metrics: a Prometheus metrics registry (counters, gauges, histograms with labels) and its text
 * exposition (format 0.0.4, what `GET /metrics` serves).
 *
 * Model
 *   A registry (pk_metrics) holds metric families. Families are registered once, at start, by the
 *   module that owns them (pk_metrics_counter / _gauge / _histogram); registration returns a family
 *   pointer that stays valid until pk_metrics_free. A family has a fixed list of label names; each
 *   distinct tuple of label values is a series, created on first use.
 *
 *   Hot path: pk_metric_counter_add(fam, values, n) (and friends) hash the label values, find the
 *   series in a lock-free open-addressing table, and update it with a relaxed atomic. The family
 *   mutex is taken only to create a series that does not exist yet. Code that updates the same series
 *   very often can look it up once with pk_metric_series() and keep the pointer (series live as long
 *   as the registry), which skips hashing entirely.
 *
 *   Callback series (pk_metric_bind_fn) have no stored value: a function is called at scrape time
 *   (cache bytes, breaker state, pool size). Process metrics (process_cpu_seconds_total, ...) and the
 *   build-info gauge are provided ready-made (pk_metrics_register_process, _build_info).
 *
 * Cardinality bound
 *   Each family holds at most max_series series (default PK_METRICS_MAX_SERIES_DEFAULT, set with
 *   pk_metrics_set_max_series before registering). Once a family is full, updates for a new label
 *   set go to one overflow series whose every label value is "_overflow" (so sums over a family stay
 *   right), and every update so redirected is counted in
 *   pake_metrics_series_overflow_total{family="<name>"} (rendered only for families that overflowed).
 *   Callback series are never redirected: pk_metric_bind_fn fails on a full family. Label values that are not
 * valid UTF-8 have their invalid bytes replaced by '?' when the series is created.
 *
 * Values
 *   Counters are unsigned 64-bit integers (monotonic; add only). Gauges and histogram sums are
 *   doubles updated with a compare-and-swap loop. Histogram buckets are fixed at registration (upper
 *   bounds, strictly increasing, +Inf implied); NaN observations are ignored. pk_metrics_latency_buckets is a
 * default set for latencies in seconds, 50 us .. 10 s.
 *
 * Exposition
 *   pk_metrics_render appends the text format to a pk_buf: families in registration order, each with
 *   HELP and TYPE lines, series in creation order, label values escaped (\\, \", \n), histograms as
 *   cumulative _bucket{le=...} lines ending with le="+Inf", then _sum and _count. Its output passes
 *   `promtool check metrics` (tests/unit/test_metrics.c checks it).
 *
 * Errors
 *   Registration returns NULL for an invalid metric or label name (Prometheus syntax; "le" is reserved
 *   for histograms, names starting with "__" are reserved), for bad buckets, or for a name already
 *   registered with a different type or label set. Registering the same name again with the same
 *   shape returns the existing family (so init code may run twice). Passing a number of label values
 *   different from the family's label count is a caller bug: the update is ignored (assert in debug
 *   builds). Update functions accept a NULL family or series and do nothing.
 *
 * Thread-safety
 *   Everything is thread-safe. Registration and rendering take the registry lock; updates are
 *   lock-free once the series exists. Callback functions run on the rendering thread, under the
 *   registry lock: they must be quick and must not call back into the registry.
 */
#ifndef PAKE_FOUNDATION_METRICS_H
#define PAKE_FOUNDATION_METRICS_H
#include "core/buf.h"
#include <stddef.h>
#include <stdint.h>

#define PK_METRICS_MAX_SERIES_DEFAULT 10000
#define PK_METRICS_MAX_LABELS 8
#define PK_METRICS_MAX_BUCKETS 64
#define PK_METRICS_OVERFLOW_VALUE "_overflow"
#define PK_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct pk_metrics pk_metrics;
typedef struct pk_metric_family pk_metric_family;
typedef struct pk_metric pk_metric; /* one series: a family plus one tuple of label values */

typedef enum { PK_METRIC_COUNTER, PK_METRIC_GAUGE, PK_METRIC_HISTOGRAM } pk_metric_type;

/* Default histogram buckets for latencies in seconds: 50 us .. 10 s (17 bounds). */
extern const double pk_metrics_latency_buckets[];
extern const size_t pk_metrics_latency_buckets_len;

pk_metrics *pk_metrics_new(void);
/* Frees the registry, its families and series. No other thread may use it any more. */
void pk_metrics_free(pk_metrics *r);
/* Applies to families registered afterwards. n >= 1. */
void pk_metrics_set_max_series(pk_metrics *r, size_t n);

/* ---- registration (at start) ----
 * `name` and `help` are copied. `label_names` holds `nlabels` names (<= PK_METRICS_MAX_LABELS); it
 * may be NULL when nlabels is 0. */
pk_metric_family *pk_metrics_counter(pk_metrics *r, const char *name, const char *help, size_t nlabels,
                                     const char *const *label_names);
pk_metric_family *pk_metrics_gauge(pk_metrics *r, const char *name, const char *help, size_t nlabels,
                                   const char *const *label_names);
/* `bounds`: nbounds (1..PK_METRICS_MAX_BUCKETS) finite, strictly increasing upper bounds; copied. */
pk_metric_family *pk_metrics_histogram(pk_metrics *r, const char *name, const char *help, size_t nlabels,
                                       const char *const *label_names, const double *bounds, size_t nbounds);

/* Adds a callback series to a counter or gauge family: fn(ctx) is called at every scrape and its
 * result rendered as the value. Returns 0, or -1 (wrong family type, wrong label count, series
 * already exists, family full). `ctx` is borrowed and must outlive the registry. */
typedef double (*pk_metric_fn)(void *ctx);
int pk_metric_bind_fn(pk_metric_family *f, const char *const *values, size_t n, pk_metric_fn fn, void *ctx);

/* process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds, process_start_time_seconds: read from /proc at scrape time.
 * Calling it twice has no further effect. */
void pk_metrics_register_process(pk_metrics *r);
/* pake_build_info{version="<version>"} 1 */
void pk_metrics_register_build_info(pk_metrics *r, const char *version);

/* ---- update (hot path) ----
 * `values` holds `n` label values (n must equal the family's label count; values may be NULL when
 * n is 0). The series is created on first use. */
pk_metric *pk_metric_series(pk_metric_family *f, const char *const *values, size_t n);

void pk_metric_inc(pk_metric *s);                 /* counter += 1 */
void pk_metric_add(pk_metric *s, uint64_t v);     /* counter += v */
void pk_metric_set(pk_metric *s, double v);       /* gauge = v */
void pk_metric_gauge_add(pk_metric *s, double v); /* gauge += v (v may be negative) */
void pk_metric_observe(pk_metric *s, double v);   /* histogram: one observation */

void pk_metric_counter_add(pk_metric_family *f, const char *const *values, size_t n, uint64_t v);
void pk_metric_gauge_set(pk_metric_family *f, const char *const *values, size_t n, double v);
void pk_metric_gauge_add_to(pk_metric_family *f, const char *const *values, size_t n, double v);
void pk_metric_histogram_observe(pk_metric_family *f, const char *const *values, size_t n, double v);

/* Convenience for literal label values: PK_METRIC_COUNTER_INC(fam, "GET", "200"). At least one label
 * value; for label-less families pass NULL, 0 to the functions above. */
#define PK_LABELS_(...) ((const char *const[]){__VA_ARGS__})
#define PK_NLABELS_(...) (sizeof(PK_LABELS_(__VA_ARGS__)) / sizeof(const char *))
#define PK_METRIC_COUNTER_INC(f, ...)                                                                        \
    pk_metric_counter_add((f), PK_LABELS_(__VA_ARGS__), PK_NLABELS_(__VA_ARGS__), 1)
#define PK_METRIC_OBSERVE(f, v, ...)                                                                         \
    pk_metric_histogram_observe((f), PK_LABELS_(__VA_ARGS__), PK_NLABELS_(__VA_ARGS__), (v))
#define PK_METRIC_GAUGE_SET(f, v, ...)                                                                       \
    pk_metric_gauge_set((f), PK_LABELS_(__VA_ARGS__), PK_NLABELS_(__VA_ARGS__), (v))

/* ---- read (tests, admin) ---- */
uint64_t pk_metric_counter_value(const pk_metric *s);
double pk_metric_gauge_value(const pk_metric *s);
uint64_t pk_metric_histogram_count(const pk_metric *s);
double pk_metric_histogram_sum(const pk_metric *s);
size_t pk_metric_family_series_count(const pk_metric_family *f);
uint64_t pk_metric_family_overflows(const pk_metric_family *f);

/* ---- exposition ---- */
/* Appends the whole registry in text format 0.0.4 to `out`. */
void pk_metrics_render(pk_metrics *r, pk_buf *out);
#endif
