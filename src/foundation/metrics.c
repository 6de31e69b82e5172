/*
 * metrics.c: the Prometheus registry behind foundation/metrics.h.
 *
 * Why this shape: metric updates sit on every request path, on every loop thread, so an update must
 * not take a lock. Each family keeps its series in an open-addressing hash table (linear probing,
 * load factor <= 1/2) whose slots are atomic pointers. Readers load the table pointer with acquire
 * semantics and probe it without locking; a series is fully built before its pointer is published
 * with a release store, so a reader that sees the pointer sees the whole series. Creating a series
 * (rare: once per label tuple) takes the family mutex, re-checks, inserts, and grows the table when
 * needed by building a bigger copy and publishing it. Old tables are never freed while the registry
 * lives (a reader may still be probing one); they are kept on a retired list, at most as large in
 * total as the current table, and freed with the registry.
 *
 * Values are relaxed atomics: counters are integer fetch-adds, gauges and histogram sums are doubles
 * stored as their bit patterns and updated with a compare-and-swap loop. Histogram buckets are stored
 * non-cumulatively (one increment per observation) and summed at scrape time; the count is the sum of
 * the buckets, so _count always equals the +Inf bucket in one scrape.
 *
 * Rendering walks families in registration order and series in creation order (a list appended under
 * the family mutex), holding the registry lock and each family's mutex in turn.
 */
#include "foundation/metrics.h"
#include "core/utf8.h"
#include <assert.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

const double pk_metrics_latency_buckets[] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
const size_t pk_metrics_latency_buckets_len = sizeof pk_metrics_latency_buckets / sizeof(double);

struct pk_metric {
    pk_metric_family *fam;
    uint64_t hash;
    char **values; /* fam->nlabels sanitized copies, in one allocation with the struct */
    pk_metric_fn fn;
    void *fn_ctx;
    _Atomic uint64_t v;   /* counter value, or gauge double bits */
    _Atomic uint64_t sum; /* histogram sum, double bits */
    struct pk_metric *next;
    _Atomic uint64_t buckets[]; /* histogram: nbounds + 1 (last is the +Inf bucket) */
};

typedef struct series_table {
    size_t mask;
    struct series_table *retired_next;
    _Atomic(pk_metric *) slots[];
} series_table;

struct pk_metric_family {
    pk_metrics *reg;
    char *name;
    char *help;
    pk_metric_type type;
    size_t nlabels;
    char *label_names[PK_METRICS_MAX_LABELS];
    double *bounds;
    size_t nbounds;
    size_t max_series;

    pthread_mutex_t mu; /* guards creation: table growth, list append, overflow series */
    _Atomic(series_table *) table;
    series_table *retired;
    pk_metric *head, *tail;
    _Atomic size_t nseries;
    _Atomic(pk_metric *) overflow;
    _Atomic uint64_t overflows;
    struct pk_metric_family *next;
};

struct pk_metrics {
    pthread_mutex_t mu; /* guards the family list, registration and rendering */
    pk_metric_family *head, *tail;
    size_t max_series;
    bool process;
    double boot_time_s; /* btime from /proc/stat, read at pk_metrics_register_process */
};

/* ---------------------------------------------------------------------------------------------- */
/* small helpers                                                                                   */

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, dbits(bitsd(old) + v), memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
}

static uint64_t hash_values(const char *const *values, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++) {
            h ^= *p;
            h *= 0x100000001b3ULL;
        }
        h ^= 0xff; /* separator: ("ab","c") and ("a","bc") differ */
        h *= 0x100000001b3ULL;
    }
    return h;
}

static bool series_matches(const pk_metric *s, uint64_t h, const char *const *values, size_t n)
{
    if (s->hash != h) return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->values[i], values[i]) != 0) return false;
    return true;
}

static bool valid_name(const char *s, bool allow_colon)
{
    if (!s || !*s) return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':') ||
                  (p != s && c >= '0' && c <= '9');
        if (!ok) return false;
    }
    return true;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (!d) abort();
    memcpy(d, s, n + 1);
    return d;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n, sz);
    if (!p) abort();
    return p;
}

/* ---------------------------------------------------------------------------------------------- */
/* registry                                                                                        */

pk_metrics *pk_metrics_new(void)
{
    pk_metrics *r = xcalloc(1, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    r->max_series = PK_METRICS_MAX_SERIES_DEFAULT;
    return r;
}

static void family_free(pk_metric_family *f)
{
    for (pk_metric *s = f->head, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    free(atomic_load(&f->table));
    for (series_table *t = f->retired, *next; t; t = next) {
        next = t->retired_next;
        free(t);
    }
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->label_names[i]);
    pthread_mutex_destroy(&f->mu);
    free(f->bounds);
    free(f->name);
    free(f->help);
    free(f);
}

void pk_metrics_free(pk_metrics *r)
{
    if (!r) return;
    for (pk_metric_family *f = r->head, *next; f; f = next) {
        next = f->next;
        family_free(f);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void pk_metrics_set_max_series(pk_metrics *r, size_t n)
{
    pthread_mutex_lock(&r->mu);
    r->max_series = n ? n : 1;
    pthread_mutex_unlock(&r->mu);
}

static series_table *table_new(size_t cap)
{
    series_table *t = xcalloc(1, sizeof *t + cap * sizeof(t->slots[0]));
    t->mask = cap - 1;
    for (size_t i = 0; i < cap; i++)
        atomic_init(&t->slots[i], NULL);
    return t;
}

static bool same_shape(const pk_metric_family *f, pk_metric_type type, size_t nlabels,
                       const char *const *label_names, const double *bounds, size_t nbounds)
{
    if (f->type != type || f->nlabels != nlabels || f->nbounds != nbounds) return false;
    for (size_t i = 0; i < nlabels; i++)
        if (strcmp(f->label_names[i], label_names[i]) != 0) return false;
    for (size_t i = 0; i < nbounds; i++)
        if (f->bounds[i] != bounds[i]) return false;
    return true;
}

static bool valid_shape(pk_metric_type type, const char *name, size_t nlabels, const char *const *label_names,
                        const double *bounds, size_t nbounds)
{
    if (!valid_name(name, true) || nlabels > PK_METRICS_MAX_LABELS) return false;
    if (nlabels && !label_names) return false;
    for (size_t i = 0; i < nlabels; i++) {
        const char *l = label_names[i];
        if (!valid_name(l, false) || strncmp(l, "__", 2) == 0) return false;
        if (type == PK_METRIC_HISTOGRAM && strcmp(l, "le") == 0) return false;
        for (size_t j = 0; j < i; j++)
            if (strcmp(l, label_names[j]) == 0) return false;
    }
    if (type == PK_METRIC_HISTOGRAM) {
        if (!bounds || nbounds == 0 || nbounds > PK_METRICS_MAX_BUCKETS) return false;
        for (size_t i = 0; i < nbounds; i++) {
            if (!isfinite(bounds[i])) return false;
            if (i > 0 && !(bounds[i] > bounds[i - 1])) return false;
        }
    }
    return true;
}

static pk_metric_family *family_register(pk_metrics *r, pk_metric_type type, const char *name,
                                         const char *help, size_t nlabels, const char *const *label_names,
                                         const double *bounds, size_t nbounds)
{
    if (!r || !valid_shape(type, name, nlabels, label_names, bounds, nbounds)) return NULL;
    pthread_mutex_lock(&r->mu);
    for (pk_metric_family *f = r->head; f; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            bool same = same_shape(f, type, nlabels, label_names, bounds, nbounds);
            pthread_mutex_unlock(&r->mu);
            return same ? f : NULL;
        }
    }
    pk_metric_family *f = xcalloc(1, sizeof *f);
    f->reg = r;
    f->name = xstrdup(name);
    f->help = xstrdup(help ? help : "");
    f->type = type;
    f->nlabels = nlabels;
    for (size_t i = 0; i < nlabels; i++)
        f->label_names[i] = xstrdup(label_names[i]);
    if (type == PK_METRIC_HISTOGRAM) {
        f->bounds = xcalloc(nbounds, sizeof(double));
        memcpy(f->bounds, bounds, nbounds * sizeof(double));
        f->nbounds = nbounds;
    }
    f->max_series = r->max_series;
    pthread_mutex_init(&f->mu, NULL);
    atomic_init(&f->table, table_new(16));
    atomic_init(&f->nseries, 0);
    atomic_init(&f->overflow, NULL);
    atomic_init(&f->overflows, 0);
    if (r->tail)
        r->tail->next = f;
    else
        r->head = f;
    r->tail = f;
    pthread_mutex_unlock(&r->mu);
    return f;
}

pk_metric_family *pk_metrics_counter(pk_metrics *r, const char *name, const char *help, size_t nlabels,
                                     const char *const *label_names)
{
    return family_register(r, PK_METRIC_COUNTER, name, help, nlabels, label_names, NULL, 0);
}

pk_metric_family *pk_metrics_gauge(pk_metrics *r, const char *name, const char *help, size_t nlabels,
                                   const char *const *label_names)
{
    return family_register(r, PK_METRIC_GAUGE, name, help, nlabels, label_names, NULL, 0);
}

pk_metric_family *pk_metrics_histogram(pk_metrics *r, const char *name, const char *help, size_t nlabels,
                                       const char *const *label_names, const double *bounds, size_t nbounds)
{
    return family_register(r, PK_METRIC_HISTOGRAM, name, help, nlabels, label_names, bounds, nbounds);
}

/* ---------------------------------------------------------------------------------------------- */
/* series lookup and creation                                                                      */

static pk_metric *table_find(series_table *t, uint64_t h, const char *const *values, size_t n)
{
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        pk_metric *s = atomic_load_explicit(&t->slots[i], memory_order_acquire);
        if (!s) return NULL;
        if (series_matches(s, h, values, n)) return s;
    }
}

static void table_put(series_table *t, pk_metric *s)
{
    size_t i = s->hash & t->mask;
    while (atomic_load_explicit(&t->slots[i], memory_order_relaxed))
        i = (i + 1) & t->mask;
    atomic_store_explicit(&t->slots[i], s, memory_order_release);
}

/* Copies `v` replacing bytes of invalid UTF-8 sequences with '?'. */
static void copy_sanitized(char *dst, const char *v, size_t len)
{
    const unsigned char *p = (const unsigned char *)v;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t k = pk_utf8_decode(p + i, len - i, &cp);
        if (k == 0) {
            dst[i++] = '?';
        } else {
            memcpy(dst + i, p + i, k);
            i += k;
        }
    }
    dst[len] = '\0';
}

/* Builds a series with sanitized copies of `values`. Caller holds f->mu. */
static pk_metric *series_new(pk_metric_family *f, const char *const *values, size_t n)
{
    size_t nb = f->type == PK_METRIC_HISTOGRAM ? f->nbounds + 1 : 0;
    size_t head = sizeof(pk_metric) + nb * sizeof(_Atomic uint64_t);
    head = (head + sizeof(char *) - 1) / sizeof(char *) * sizeof(char *);
    size_t total = head + n * sizeof(char *);
    for (size_t i = 0; i < n; i++)
        total += strlen(values[i]) + 1;
    pk_metric *s = xcalloc(1, total);
    s->fam = f;
    s->values = (char **)((char *)s + head);
    char *p = (char *)(s->values + n);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(values[i]);
        copy_sanitized(p, values[i], len);
        s->values[i] = p;
        p += len + 1;
    }
    s->hash = hash_values((const char *const *)s->values, n);
    atomic_init(&s->v, f->type == PK_METRIC_COUNTER ? 0 : dbits(0.0));
    atomic_init(&s->sum, dbits(0.0));
    for (size_t i = 0; i < nb; i++)
        atomic_init(&s->buckets[i], 0);
    return s;
}

/* Inserts a new series into the table (growing it first when needed) and the creation-order list.
 * Caller holds f->mu. */
static void series_publish(pk_metric_family *f, pk_metric *s)
{
    series_table *t = atomic_load_explicit(&f->table, memory_order_relaxed);
    size_t count = atomic_load_explicit(&f->nseries, memory_order_relaxed);
    if ((count + 1) * 2 > t->mask + 1) {
        series_table *bigger = table_new((t->mask + 1) * 2);
        for (pk_metric *it = f->head; it; it = it->next)
            table_put(bigger, it);
        t->retired_next = f->retired;
        f->retired = t;
        atomic_store_explicit(&f->table, bigger, memory_order_release);
        t = bigger;
    }
    table_put(t, s);
    if (f->tail)
        f->tail->next = s;
    else
        f->head = s;
    f->tail = s;
    atomic_store_explicit(&f->nseries, count + 1, memory_order_release);
}

static bool values_valid_utf8(const char *const *values, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!pk_utf8_valid(values[i], strlen(values[i]))) return false;
    return true;
}

/* Returns the overflow series, creating it on first need. Caller holds f->mu. */
static pk_metric *overflow_series(pk_metric_family *f)
{
    pk_metric *o = atomic_load_explicit(&f->overflow, memory_order_acquire);
    if (o) return o;
    const char *vals[PK_METRICS_MAX_LABELS];
    for (size_t i = 0; i < f->nlabels; i++)
        vals[i] = PK_METRICS_OVERFLOW_VALUE;
    o = table_find(atomic_load_explicit(&f->table, memory_order_relaxed), hash_values(vals, f->nlabels), vals,
                   f->nlabels);
    if (!o) {
        o = series_new(f, vals, f->nlabels);
        series_publish(f, o);
    }
    atomic_store_explicit(&f->overflow, o, memory_order_release);
    return o;
}

/* Slow path: find or create under the family mutex. `fn` non-NULL binds a callback series and fails
 * (NULL) if the series exists or the family is full. */
static pk_metric *series_create(pk_metric_family *f, uint64_t h, const char *const *values, size_t n,
                                pk_metric_fn fn, void *ctx)
{
    pthread_mutex_lock(&f->mu);
    const char *const *key = values;
    char *clean[PK_METRICS_MAX_LABELS] = {0};
    if (!values_valid_utf8(values, n)) {
        for (size_t i = 0; i < n; i++) {
            size_t len = strlen(values[i]);
            clean[i] = malloc(len + 1);
            if (!clean[i]) abort();
            copy_sanitized(clean[i], values[i], len);
        }
        key = (const char *const *)clean;
        h = hash_values(key, n);
    }
    series_table *t = atomic_load_explicit(&f->table, memory_order_relaxed);
    pk_metric *s = table_find(t, h, key, n);
    if (s) {
        if (fn) s = NULL;
    } else if (atomic_load_explicit(&f->nseries, memory_order_relaxed) >= f->max_series) {
        if (!fn) {
            atomic_fetch_add_explicit(&f->overflows, 1, memory_order_relaxed);
            s = overflow_series(f);
        }
    } else {
        s = series_new(f, key, n);
        s->fn = fn;
        s->fn_ctx = ctx;
        series_publish(f, s);
    }
    pthread_mutex_unlock(&f->mu);
    for (size_t i = 0; i < n; i++)
        free(clean[i]);
    return s;
}

pk_metric *pk_metric_series(pk_metric_family *f, const char *const *values, size_t n)
{
    if (!f) return NULL;
    if (n != f->nlabels || (n && !values)) {
        assert(!"label value count does not match the family");
        return NULL;
    }
    uint64_t h = hash_values(values, n);
    pk_metric *s = table_find(atomic_load_explicit(&f->table, memory_order_acquire), h, values, n);
    if (s) return s;
    /* A full family: skip the lock for label sets that will be refused anyway. */
    if (atomic_load_explicit(&f->nseries, memory_order_acquire) >= f->max_series) {
        pk_metric *o = atomic_load_explicit(&f->overflow, memory_order_acquire);
        if (o) {
            atomic_fetch_add_explicit(&f->overflows, 1, memory_order_relaxed);
            return o;
        }
    }
    return series_create(f, h, values, n, NULL, NULL);
}

int pk_metric_bind_fn(pk_metric_family *f, const char *const *values, size_t n, pk_metric_fn fn, void *ctx)
{
    if (!f || !fn || f->type == PK_METRIC_HISTOGRAM || n != f->nlabels || (n && !values)) return -1;
    return series_create(f, hash_values(values, n), values, n, fn, ctx) ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------------- */
/* updates                                                                                         */

void pk_metric_inc(pk_metric *s)
{
    pk_metric_add(s, 1);
}

void pk_metric_add(pk_metric *s, uint64_t v)
{
    if (s && s->fam->type == PK_METRIC_COUNTER) atomic_fetch_add_explicit(&s->v, v, memory_order_relaxed);
}

void pk_metric_set(pk_metric *s, double v)
{
    if (s && s->fam->type == PK_METRIC_GAUGE) atomic_store_explicit(&s->v, dbits(v), memory_order_relaxed);
}

void pk_metric_gauge_add(pk_metric *s, double v)
{
    if (s && s->fam->type == PK_METRIC_GAUGE) atomic_add_double(&s->v, v);
}

void pk_metric_observe(pk_metric *s, double v)
{
    if (!s || s->fam->type != PK_METRIC_HISTOGRAM || isnan(v)) return;
    const pk_metric_family *f = s->fam;
    size_t i = 0;
    while (i < f->nbounds && v > f->bounds[i])
        i++;
    atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
    atomic_add_double(&s->sum, v);
}

void pk_metric_counter_add(pk_metric_family *f, const char *const *values, size_t n, uint64_t v)
{
    pk_metric_add(pk_metric_series(f, values, n), v);
}

void pk_metric_gauge_set(pk_metric_family *f, const char *const *values, size_t n, double v)
{
    pk_metric_set(pk_metric_series(f, values, n), v);
}

void pk_metric_gauge_add_to(pk_metric_family *f, const char *const *values, size_t n, double v)
{
    pk_metric_gauge_add(pk_metric_series(f, values, n), v);
}

void pk_metric_histogram_observe(pk_metric_family *f, const char *const *values, size_t n, double v)
{
    pk_metric_observe(pk_metric_series(f, values, n), v);
}

/* ---------------------------------------------------------------------------------------------- */
/* reads                                                                                           */

uint64_t pk_metric_counter_value(const pk_metric *s)
{
    if (!s) return 0;
    if (s->fn) return (uint64_t)s->fn(s->fn_ctx);
    return atomic_load_explicit(&s->v, memory_order_relaxed);
}

double pk_metric_gauge_value(const pk_metric *s)
{
    if (!s) return 0;
    if (s->fn) return s->fn(s->fn_ctx);
    return bitsd(atomic_load_explicit(&s->v, memory_order_relaxed));
}

uint64_t pk_metric_histogram_count(const pk_metric *s)
{
    if (!s || s->fam->type != PK_METRIC_HISTOGRAM) return 0;
    uint64_t c = 0;
    for (size_t i = 0; i <= s->fam->nbounds; i++)
        c += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
    return c;
}

double pk_metric_histogram_sum(const pk_metric *s)
{
    return s ? bitsd(atomic_load_explicit(&s->sum, memory_order_relaxed)) : 0;
}

size_t pk_metric_family_series_count(const pk_metric_family *f)
{
    return f ? atomic_load_explicit(&((pk_metric_family *)f)->nseries, memory_order_acquire) : 0;
}

uint64_t pk_metric_family_overflows(const pk_metric_family *f)
{
    return f ? atomic_load_explicit(&((pk_metric_family *)f)->overflows, memory_order_relaxed) : 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* exposition                                                                                      */

/* Shortest decimal that reads back as the same double; Prometheus spellings for the specials. */
static void put_double(pk_buf *b, double v)
{
    if (isnan(v)) {
        pk_buf_puts(b, "NaN");
        return;
    }
    if (isinf(v)) {
        pk_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) break;
    }
    pk_buf_puts(b, tmp);
}

static void put_escaped(pk_buf *b, const char *s, bool quotes)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\')
            pk_buf_puts(b, "\\\\");
        else if (*p == '\n')
            pk_buf_puts(b, "\\n");
        else if (quotes && *p == '"')
            pk_buf_puts(b, "\\\"");
        else
            pk_buf_putc(b, *p);
    }
}

static void put_header(pk_buf *b, const char *name, const char *help, const char *type)
{
    pk_buf_printf(b, "# HELP %s ", name);
    put_escaped(b, help, false);
    pk_buf_printf(b, "\n# TYPE %s %s\n", name, type);
}

/* name{l1="v1",...[,le="x"]} */
static void put_series_name(pk_buf *b, const pk_metric *s, const char *suffix, const char *le)
{
    const pk_metric_family *f = s->fam;
    pk_buf_puts(b, f->name);
    pk_buf_puts(b, suffix);
    if (f->nlabels == 0 && !le) return;
    pk_buf_putc(b, '{');
    for (size_t i = 0; i < f->nlabels; i++) {
        if (i) pk_buf_putc(b, ',');
        pk_buf_printf(b, "%s=\"", f->label_names[i]);
        put_escaped(b, s->values[i], true);
        pk_buf_putc(b, '"');
    }
    if (le) pk_buf_printf(b, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    pk_buf_putc(b, '}');
}

static void render_histogram(pk_buf *b, const pk_metric *s)
{
    const pk_metric_family *f = s->fam;
    uint64_t cum = 0;
    for (size_t i = 0; i <= f->nbounds; i++) {
        cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        pk_buf tmp = PK_BUF_INIT;
        if (i < f->nbounds)
            put_double(&tmp, f->bounds[i]);
        else
            pk_buf_puts(&tmp, "+Inf");
        put_series_name(b, s, "_bucket", tmp.data);
        pk_buf_free(&tmp);
        pk_buf_printf(b, " %llu\n", (unsigned long long)cum);
    }
    put_series_name(b, s, "_sum", NULL);
    pk_buf_putc(b, ' ');
    put_double(b, pk_metric_histogram_sum(s));
    pk_buf_putc(b, '\n');
    put_series_name(b, s, "_count", NULL);
    pk_buf_printf(b, " %llu\n", (unsigned long long)cum);
}

static void render_family(pk_buf *b, pk_metric_family *f)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    put_header(b, f->name, f->help, type_names[f->type]);
    pthread_mutex_lock(&f->mu);
    for (const pk_metric *s = f->head; s; s = s->next) {
        if (f->type == PK_METRIC_HISTOGRAM) {
            render_histogram(b, s);
            continue;
        }
        put_series_name(b, s, "", NULL);
        pk_buf_putc(b, ' ');
        if (f->type == PK_METRIC_COUNTER && !s->fn)
            pk_buf_printf(b, "%llu", (unsigned long long)pk_metric_counter_value(s));
        else if (s->fn)
            put_double(b, s->fn(s->fn_ctx));
        else
            put_double(b, pk_metric_gauge_value(s));
        pk_buf_putc(b, '\n');
    }
    pthread_mutex_unlock(&f->mu);
}

static void render_overflows(pk_buf *b, pk_metrics *r)
{
    put_header(b, "pake_metrics_series_overflow_total",
               "Updates sent to a family's overflow series because the family reached its series limit.",
               "counter");
    for (pk_metric_family *f = r->head; f; f = f->next) {
        uint64_t n = pk_metric_family_overflows(f);
        if (n)
            pk_buf_printf(b, "pake_metrics_series_overflow_total{family=\"%s\"} %llu\n", f->name,
                          (unsigned long long)n);
    }
}

/* ---- process metrics (Prometheus client conventions) ---- */

typedef struct proc_stat {
    double cpu_s;
    double start_ticks;
    bool ok;
} proc_stat;

static proc_stat read_proc_stat(void)
{
    proc_stat ps = {0};
    char buf[2048];
    FILE *fp = fopen("/proc/self/stat", "r");
    if (!fp) return ps;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses: parse after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p) return ps;
    p++;
    unsigned long long utime = 0, stime = 0, start = 0;
    /* after ")": state(3) ... utime(14) stime(15) ... starttime(22) */
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 14) utime = strtoull(tok, NULL, 10);
        if (field == 15) stime = strtoull(tok, NULL, 10);
        if (field == 22) {
            start = strtoull(tok, NULL, 10);
            break;
        }
    }
    if (field != 22) return ps;
    double hz = (double)sysconf(_SC_CLK_TCK);
    ps.cpu_s = (double)(utime + stime) / hz;
    ps.start_ticks = (double)start / hz;
    ps.ok = true;
    return ps;
}

static double read_boot_time(void)
{
    FILE *fp = fopen("/proc/stat", "r");
    if (!fp) return 0;
    char line[256];
    double bt = 0;
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, "btime ", 6) == 0) {
            bt = strtod(line + 6, NULL);
            break;
        }
    }
    fclose(fp);
    return bt;
}

static long count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory stream itself */
}

static void put_process_metric(pk_buf *b, const char *name, const char *help, const char *type, double v)
{
    put_header(b, name, help, type);
    pk_buf_puts(b, name);
    pk_buf_putc(b, ' ');
    put_double(b, v);
    pk_buf_putc(b, '\n');
}

static void render_process(pk_buf *b, pk_metrics *r)
{
    proc_stat ps = read_proc_stat();
    if (ps.ok) {
        put_process_metric(b, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                           "counter", ps.cpu_s);
    }
    FILE *fp = fopen("/proc/self/statm", "r");
    unsigned long long vm_pages = 0, rss_pages = 0;
    if (fp) {
        int got = fscanf(fp, "%llu %llu", &vm_pages, &rss_pages);
        fclose(fp);
        if (got == 2) {
            double page = (double)sysconf(_SC_PAGESIZE);
            put_process_metric(b, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge",
                               (double)rss_pages * page);
            put_process_metric(b, "process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge",
                               (double)vm_pages * page);
        }
    }
    long fds = count_open_fds();
    if (fds >= 0)
        put_process_metric(b, "process_open_fds", "Number of open file descriptors.", "gauge", (double)fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        double max = rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
        put_process_metric(b, "process_max_fds", "Maximum number of open file descriptors.", "gauge", max);
    }
    if (ps.ok && r->boot_time_s > 0) {
        put_process_metric(b, "process_start_time_seconds",
                           "Start time of the process since unix epoch in seconds.", "gauge",
                           r->boot_time_s + ps.start_ticks);
    }
}

void pk_metrics_register_process(pk_metrics *r)
{
    pthread_mutex_lock(&r->mu);
    if (!r->process) {
        r->process = true;
        r->boot_time_s = read_boot_time();
    }
    pthread_mutex_unlock(&r->mu);
}

void pk_metrics_register_build_info(pk_metrics *r, const char *version)
{
    static const char *const labels[] = {"version"};
    pk_metric_family *f =
        pk_metrics_gauge(r, "pake_build_info", "PAKE build information; the value is always 1.", 1, labels);
    const char *vals[] = {version ? version : "unknown"};
    pk_metric_gauge_set(f, vals, 1, 1);
}

void pk_metrics_render(pk_metrics *r, pk_buf *out)
{
    pthread_mutex_lock(&r->mu);
    for (pk_metric_family *f = r->head; f; f = f->next)
        render_family(out, f);
    render_overflows(out, r);
    if (r->process) render_process(out, r);
    pthread_mutex_unlock(&r->mu);
}
