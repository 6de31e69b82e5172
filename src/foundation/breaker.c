/*
 * Circuit breaker (see breaker.h for the model).
 *
 * Why it looks like this: the server asks a breaker before every outbound call from many offload
 * threads, so allow/record must be cheap and never block for long. Everything lives behind one mutex
 * per breaker, and the critical sections are a handful of integer updates: the COUNT window is a ring of
 * one-byte outcomes with running totals, the TIME window one bucket per second with running totals
 * (buckets are cleared as the clock passes them, amortised O(1)). State changes that time alone causes
 * (OPEN -> HALF_OPEN, HALF_OPEN -> OPEN after max_wait) happen lazily when a caller looks, so there is
 * no timer thread and a fake clock drives everything in tests.
 *
 * Transitions are collected while the lock is held and reported to on_transition after it is
 * released, so a callback may log, count, or even read a snapshot of the same breaker.
 */
#include "foundation/breaker.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS 1000000LL
#define NS_PER_S 1000000000LL
#define MAX_WINDOW 100000

enum { OUT_FAIL = 1, OUT_SLOW = 2 }; /* bits of one COUNT-window slot */

typedef struct bucket {
    int64_t sec; /* epoch second this bucket holds, or INT64_MIN when empty */
    int calls, fails, slows;
} bucket;

typedef struct pending {
    int n;
    pk_breaker_state from[4], to[4];
} pending;

struct pk_breaker {
    pk_breaker_config cfg;
    char *name;
    const pk_clock *clock;
    int min_calls; /* effective minimum */
    pthread_mutex_t mu;

    pk_breaker_state state, prev_state;
    uint64_t epoch;
    int64_t state_since, open_until;

    /* closed-state window */
    uint8_t *ring; /* COUNT */
    int ring_head;
    bucket *buckets; /* TIME */
    int64_t head_sec;
    int calls, fails, slows;

    /* half-open probes */
    int ho_issued, ho_recorded, ho_fails, ho_slows;

    uint64_t n_success, n_failure, n_slow, n_ignored, n_rejected, n_transitions;
};

void pk_breaker_config_init(pk_breaker_config *cfg, const char *name)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->name = name;
    cfg->window_type = PK_WINDOW_COUNT;
    cfg->window_size = 100;
    cfg->minimum_calls = 20;
    cfg->failure_rate_threshold = 50.0;
    cfg->slow_call_duration_ns = 2 * NS_PER_S;
    cfg->slow_call_rate_threshold = 100.0;
    cfg->wait_in_open_ns = 10 * NS_PER_S;
    cfg->permitted_calls_in_half_open = 5;
    cfg->max_wait_in_half_open_ns = 0;
}

static pk_err *validate(const pk_breaker_config *c)
{
    const char *why = NULL;
    if (!c->name || !*c->name)
        why = "name is required";
    else if (c->window_type != PK_WINDOW_COUNT && c->window_type != PK_WINDOW_TIME)
        why = "bad window type";
    else if (c->window_size < 1 || c->window_size > MAX_WINDOW)
        why = "window_size must be 1..100000";
    else if (c->minimum_calls < 1)
        why = "minimum_calls must be >= 1";
    else if (!(c->failure_rate_threshold > 0 && c->failure_rate_threshold <= 100))
        why = "failure_rate_threshold must be in (0, 100]";
    else if (!(c->slow_call_rate_threshold > 0 && c->slow_call_rate_threshold <= 100))
        why = "slow_call_rate_threshold must be in (0, 100]";
    else if (c->slow_call_duration_ns < 1)
        why = "slow_call_duration must be > 0";
    else if (c->wait_in_open_ns < 0)
        why = "wait_in_open must be >= 0";
    else if (c->permitted_calls_in_half_open < 1)
        why = "permitted_calls_in_half_open must be >= 1";
    else if (c->max_wait_in_half_open_ns < 0)
        why = "max_wait_in_half_open must be >= 0";
    if (!why) return NULL;
    return pk_err_new("invalid_config", 500, "breaker %s: %s", c->name ? c->name : "?", why);
}

static void window_clear(pk_breaker *b)
{
    b->calls = b->fails = b->slows = 0;
    b->ring_head = 0;
    b->head_sec = INT64_MIN;
    if (b->ring) memset(b->ring, 0, (size_t)b->cfg.window_size);
    if (b->buckets)
        for (int i = 0; i < b->cfg.window_size; i++)
            b->buckets[i] = (bucket){INT64_MIN, 0, 0, 0};
}

pk_err *pk_breaker_new(const pk_breaker_config *cfg, const pk_clock *clock, pk_breaker **out)
{
    *out = NULL;
    pk_err *e = validate(cfg);
    if (e) return e;
    pk_breaker *b = calloc(1, sizeof *b);
    if (!b) abort();
    b->cfg = *cfg;
    b->name = strdup(cfg->name);
    if (!b->name) abort();
    b->cfg.name = b->name;
    b->clock = clock;
    b->min_calls = cfg->minimum_calls;
    if (cfg->window_type == PK_WINDOW_COUNT) {
        if (b->min_calls > cfg->window_size) b->min_calls = cfg->window_size;
        b->ring = calloc((size_t)cfg->window_size, 1);
        if (!b->ring) abort();
    } else {
        b->buckets = calloc((size_t)cfg->window_size, sizeof *b->buckets);
        if (!b->buckets) abort();
    }
    window_clear(b);
    pthread_mutex_init(&b->mu, NULL);
    b->state = b->prev_state = PK_BREAKER_CLOSED;
    b->state_since = pk_clock_now(clock);
    *out = b;
    return NULL;
}

void pk_breaker_free(pk_breaker *b)
{
    if (!b) return;
    pthread_mutex_destroy(&b->mu);
    free(b->ring);
    free(b->buckets);
    free(b->name);
    free(b);
}

const char *pk_breaker_name(const pk_breaker *b)
{
    return b->name;
}
const pk_breaker_config *pk_breaker_get_config(const pk_breaker *b)
{
    return &b->cfg;
}

const char *pk_breaker_state_name(pk_breaker_state s)
{
    switch (s) {
    case PK_BREAKER_CLOSED:
        return "closed";
    case PK_BREAKER_OPEN:
        return "open";
    case PK_BREAKER_HALF_OPEN:
        return "half_open";
    case PK_BREAKER_FORCED_OPEN:
        return "forced_open";
    case PK_BREAKER_DISABLED:
        return "disabled";
    }
    return "unknown";
}

static int bucket_index(int64_t sec, int n)
{
    return (int)(((sec % n) + n) % n);
}

/* TIME window: moves the head to the current second, clearing every bucket the clock has passed. */
static void window_advance(pk_breaker *b, int64_t now)
{
    if (!b->buckets) return;
    int64_t sec = now / NS_PER_S;
    if (b->head_sec != INT64_MIN && sec <= b->head_sec) return;
    int n = b->cfg.window_size;
    int64_t from = b->head_sec == INT64_MIN || sec - b->head_sec > n ? sec - n + 1 : b->head_sec + 1;
    for (int64_t s = from; s <= sec; s++) {
        bucket *k = &b->buckets[bucket_index(s, n)];
        b->calls -= k->calls;
        b->fails -= k->fails;
        b->slows -= k->slows;
        *k = (bucket){s, 0, 0, 0};
    }
    b->head_sec = sec;
}

static void window_add(pk_breaker *b, int64_t now, bool fail, bool slow)
{
    if (b->ring) {
        int n = b->cfg.window_size;
        if (b->calls == n) { /* full: the oldest outcome leaves */
            uint8_t old = b->ring[b->ring_head];
            b->calls--;
            b->fails -= (old & OUT_FAIL) != 0;
            b->slows -= (old & OUT_SLOW) != 0;
        }
        b->ring[b->ring_head] = (uint8_t)((fail ? OUT_FAIL : 0) | (slow ? OUT_SLOW : 0));
        b->ring_head = (b->ring_head + 1) % n;
    } else {
        window_advance(b, now);
        bucket *k = &b->buckets[bucket_index(b->head_sec, b->cfg.window_size)];
        k->calls++;
        k->fails += fail;
        k->slows += slow;
    }
    b->calls++;
    b->fails += fail;
    b->slows += slow;
}

static bool over_threshold(const pk_breaker *b, int calls, int fails, int slows)
{
    if (calls <= 0) return false;
    return (double)fails * 100.0 / calls >= b->cfg.failure_rate_threshold ||
           (double)slows * 100.0 / calls >= b->cfg.slow_call_rate_threshold;
}

static void set_state(pk_breaker *b, pk_breaker_state to, int64_t now, pending *p)
{
    pk_breaker_state from = b->state;
    if (from == to) return;
    b->prev_state = from;
    b->state = to;
    b->epoch++;
    b->state_since = now;
    b->n_transitions++;
    if (to == PK_BREAKER_OPEN) b->open_until = now + b->cfg.wait_in_open_ns;
    if (to == PK_BREAKER_HALF_OPEN) b->ho_issued = b->ho_recorded = b->ho_fails = b->ho_slows = 0;
    if (to == PK_BREAKER_CLOSED || to == PK_BREAKER_FORCED_OPEN || to == PK_BREAKER_DISABLED) window_clear(b);
    if (p->n < 4) {
        p->from[p->n] = from;
        p->to[p->n] = to;
        p->n++;
    }
}

static void fire(pk_breaker *b, const pending *p)
{
    if (!b->cfg.on_transition) return;
    for (int i = 0; i < p->n; i++)
        b->cfg.on_transition(b->cfg.on_transition_ud, b->name, p->from[i], p->to[i]);
}

/* HALF_OPEN for longer than max_wait (probes lost or hanging): back to OPEN. */
static void check_half_open_timeout(pk_breaker *b, int64_t now, pending *p)
{
    if (b->state == PK_BREAKER_HALF_OPEN && b->cfg.max_wait_in_half_open_ns > 0 &&
        now - b->state_since >= b->cfg.max_wait_in_half_open_ns)
        set_state(b, PK_BREAKER_OPEN, now, p);
}

static int64_t ceil_ms(int64_t ns)
{
    return ns <= 0 ? 0 : (ns + NS_PER_MS - 1) / NS_PER_MS;
}

static int64_t retry_after_locked(const pk_breaker *b, int64_t now)
{
    switch (b->state) {
    case PK_BREAKER_OPEN:
        return ceil_ms(b->open_until - now);
    case PK_BREAKER_FORCED_OPEN:
        return ceil_ms(b->cfg.wait_in_open_ns);
    case PK_BREAKER_HALF_OPEN:
        return 1000;
    default:
        return 0;
    }
}

bool pk_breaker_allow(pk_breaker *b, pk_breaker_permit *permit)
{
    pending p = {0};
    bool ok = false;
    pthread_mutex_lock(&b->mu);
    int64_t now = pk_clock_now(b->clock);
    if (b->state == PK_BREAKER_OPEN && now >= b->open_until) set_state(b, PK_BREAKER_HALF_OPEN, now, &p);
    check_half_open_timeout(b, now, &p);
    switch (b->state) {
    case PK_BREAKER_CLOSED:
    case PK_BREAKER_DISABLED:
        ok = true;
        break;
    case PK_BREAKER_HALF_OPEN:
        if (b->ho_issued < b->cfg.permitted_calls_in_half_open) {
            b->ho_issued++;
            ok = true;
        }
        break;
    case PK_BREAKER_OPEN:
    case PK_BREAKER_FORCED_OPEN:
        break;
    }
    permit->epoch = b->epoch;
    permit->state = b->state;
    permit->retry_after_ms = ok ? 0 : retry_after_locked(b, now);
    if (!ok) b->n_rejected++;
    pthread_mutex_unlock(&b->mu);
    fire(b, &p);
    return ok;
}

void pk_breaker_record(pk_breaker *b, const pk_breaker_permit *permit, pk_breaker_outcome outcome,
                       int64_t duration_ns)
{
    if (permit->state == PK_BREAKER_DISABLED) return; /* disabled: record nothing */
    bool fail = outcome == PK_OUTCOME_FAILURE;
    bool slow = outcome != PK_OUTCOME_IGNORED && duration_ns > b->cfg.slow_call_duration_ns;
    pending p = {0};
    pthread_mutex_lock(&b->mu);
    int64_t now = pk_clock_now(b->clock);
    if (outcome == PK_OUTCOME_IGNORED)
        b->n_ignored++;
    else if (fail)
        b->n_failure++;
    else
        b->n_success++;
    b->n_slow += slow;
    check_half_open_timeout(b, now, &p);
    if (permit->epoch == b->epoch) {
        if (b->state == PK_BREAKER_CLOSED && outcome != PK_OUTCOME_IGNORED) {
            window_add(b, now, fail, slow);
            if (b->calls >= b->min_calls && over_threshold(b, b->calls, b->fails, b->slows))
                set_state(b, PK_BREAKER_OPEN, now, &p);
        } else if (b->state == PK_BREAKER_HALF_OPEN) {
            if (outcome == PK_OUTCOME_IGNORED) {
                b->ho_issued--; /* the probe said nothing: give the permit back */
            } else {
                b->ho_recorded++;
                b->ho_fails += fail;
                b->ho_slows += slow;
                if (b->ho_recorded >= b->cfg.permitted_calls_in_half_open) {
                    bool bad = over_threshold(b, b->ho_recorded, b->ho_fails, b->ho_slows);
                    set_state(b, bad ? PK_BREAKER_OPEN : PK_BREAKER_CLOSED, now, &p);
                }
            }
        }
    }
    pthread_mutex_unlock(&b->mu);
    fire(b, &p);
}

pk_breaker_outcome pk_breaker_outcome_of(const pk_err *err)
{
    if (!err) return PK_OUTCOME_SUCCESS;
    switch (err->category) {
    case PK_CAT_CLIENT:
    case PK_CAT_CONFLICT:
    case PK_CAT_LIMIT:
        return PK_OUTCOME_IGNORED;
    default:
        return PK_OUTCOME_FAILURE;
    }
}

int64_t pk_breaker_retry_after_ms(pk_breaker *b)
{
    pthread_mutex_lock(&b->mu);
    int64_t ms = retry_after_locked(b, pk_clock_now(b->clock));
    pthread_mutex_unlock(&b->mu);
    return ms;
}

static void operator_set(pk_breaker *b, pk_breaker_state to)
{
    pending p = {0};
    pthread_mutex_lock(&b->mu);
    int64_t now = pk_clock_now(b->clock);
    if (b->state == to) {
        window_clear(b); /* reset while CLOSED still clears the window */
        b->epoch++;      /* results of calls issued before belong to the old window */
    }
    set_state(b, to, now, &p);
    pthread_mutex_unlock(&b->mu);
    fire(b, &p);
}

void pk_breaker_force_open(pk_breaker *b)
{
    operator_set(b, PK_BREAKER_FORCED_OPEN);
}
void pk_breaker_disable(pk_breaker *b)
{
    operator_set(b, PK_BREAKER_DISABLED);
}
void pk_breaker_reset(pk_breaker *b)
{
    operator_set(b, PK_BREAKER_CLOSED);
}

pk_breaker_state pk_breaker_get_state(pk_breaker *b)
{
    pthread_mutex_lock(&b->mu);
    pk_breaker_state s = b->state;
    pthread_mutex_unlock(&b->mu);
    return s;
}

void pk_breaker_snapshot_get(pk_breaker *b, pk_breaker_snapshot *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&b->mu);
    int64_t now = pk_clock_now(b->clock);
    window_advance(b, now);
    int calls = b->calls, fails = b->fails, slows = b->slows, min = b->min_calls;
    bool probes = b->state == PK_BREAKER_HALF_OPEN ||
                  (b->state == PK_BREAKER_OPEN && b->prev_state == PK_BREAKER_HALF_OPEN);
    if (probes) {
        calls = b->ho_recorded;
        fails = b->ho_fails;
        slows = b->ho_slows;
        min = b->cfg.permitted_calls_in_half_open;
    }
    out->state = b->state;
    out->buffered_calls = calls;
    out->failed_calls = fails;
    out->slow_calls = slows;
    out->failure_rate = calls >= min && calls > 0 ? (double)fails * 100.0 / calls : -1;
    out->slow_call_rate = calls >= min && calls > 0 ? (double)slows * 100.0 / calls : -1;
    out->half_open_outstanding = b->state == PK_BREAKER_HALF_OPEN ? b->ho_issued - b->ho_recorded : 0;
    out->successful = b->n_success;
    out->failed = b->n_failure;
    out->slow = b->n_slow;
    out->ignored = b->n_ignored;
    out->rejected = b->n_rejected;
    out->transitions = b->n_transitions;
    out->time_in_state_ns = now - b->state_since;
    pthread_mutex_unlock(&b->mu);
}

static void rate_json(pk_jw *w, const char *key, double v)
{
    pk_jw_key(w, key);
    if (v < 0)
        pk_jw_null(w);
    else
        pk_jw_num(w, v);
}

void pk_breaker_write_json(pk_breaker *b, pk_jw *w)
{
    pk_breaker_snapshot s;
    pk_breaker_snapshot_get(b, &s);
    const pk_breaker_config *c = &b->cfg;
    pk_jw_obj_open(w);
    pk_jw_key(w, "name");
    pk_jw_str(w, b->name);
    pk_jw_key(w, "state");
    pk_jw_str(w, pk_breaker_state_name(s.state));
    rate_json(w, "failure_rate", s.failure_rate);
    rate_json(w, "slow_call_rate", s.slow_call_rate);
    pk_jw_key(w, "buffered_calls");
    pk_jw_int(w, s.buffered_calls);
    pk_jw_key(w, "failed_calls");
    pk_jw_int(w, s.failed_calls);
    pk_jw_key(w, "slow_calls");
    pk_jw_int(w, s.slow_calls);
    pk_jw_key(w, "time_in_state_ms");
    pk_jw_int(w, s.time_in_state_ns / NS_PER_MS);
    pk_jw_key(w, "transitions");
    pk_jw_int(w, (int64_t)s.transitions);
    pk_jw_key(w, "calls");
    pk_jw_obj_open(w);
    pk_jw_key(w, "success");
    pk_jw_int(w, (int64_t)s.successful);
    pk_jw_key(w, "failure");
    pk_jw_int(w, (int64_t)s.failed);
    pk_jw_key(w, "slow");
    pk_jw_int(w, (int64_t)s.slow);
    pk_jw_key(w, "ignored");
    pk_jw_int(w, (int64_t)s.ignored);
    pk_jw_key(w, "rejected");
    pk_jw_int(w, (int64_t)s.rejected);
    pk_jw_obj_close(w);
    pk_jw_key(w, "config");
    pk_jw_obj_open(w);
    pk_jw_key(w, "window_type");
    pk_jw_str(w, c->window_type == PK_WINDOW_COUNT ? "count" : "time");
    pk_jw_key(w, "window_size");
    pk_jw_int(w, c->window_size);
    pk_jw_key(w, "minimum_calls");
    pk_jw_int(w, c->minimum_calls);
    pk_jw_key(w, "failure_rate_threshold");
    pk_jw_num(w, c->failure_rate_threshold);
    pk_jw_key(w, "slow_call_duration_ms");
    pk_jw_int(w, c->slow_call_duration_ns / NS_PER_MS);
    pk_jw_key(w, "slow_call_rate_threshold");
    pk_jw_num(w, c->slow_call_rate_threshold);
    pk_jw_key(w, "wait_in_open_ms");
    pk_jw_int(w, c->wait_in_open_ns / NS_PER_MS);
    pk_jw_key(w, "permitted_calls_in_half_open");
    pk_jw_int(w, c->permitted_calls_in_half_open);
    pk_jw_key(w, "max_wait_in_half_open_ms");
    pk_jw_int(w, c->max_wait_in_half_open_ns / NS_PER_MS);
    pk_jw_obj_close(w);
    pk_jw_obj_close(w);
}

/* ---- registry ---- */

struct pk_breaker_registry {
    pthread_mutex_t mu;
    pk_breaker **items;
    size_t n, cap;
};

pk_breaker_registry *pk_breaker_registry_new(void)
{
    pk_breaker_registry *r = calloc(1, sizeof *r);
    if (!r) abort();
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

void pk_breaker_registry_free(pk_breaker_registry *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++)
        pk_breaker_free(r->items[i]);
    free(r->items);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static pk_breaker *find_locked(pk_breaker_registry *r, const char *name, size_t len)
{
    for (size_t i = 0; i < r->n; i++) {
        const char *n = r->items[i]->name;
        if (strlen(n) == len && memcmp(n, name, len) == 0) return r->items[i];
    }
    return NULL;
}

pk_err *pk_breaker_registry_add(pk_breaker_registry *r, pk_breaker *b)
{
    pthread_mutex_lock(&r->mu);
    if (find_locked(r, b->name, strlen(b->name))) {
        pthread_mutex_unlock(&r->mu);
        pk_err *e = pk_err_new("conflict", 409, "breaker %s already registered", b->name);
        pk_breaker_free(b);
        return e;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        r->items = realloc(r->items, r->cap * sizeof *r->items);
        if (!r->items) abort();
    }
    r->items[r->n++] = b;
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

pk_breaker *pk_breaker_registry_get(pk_breaker_registry *r, const char *name, size_t namelen)
{
    pthread_mutex_lock(&r->mu);
    pk_breaker *b = find_locked(r, name, namelen);
    pthread_mutex_unlock(&r->mu);
    return b;
}

size_t pk_breaker_registry_count(pk_breaker_registry *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void pk_breaker_registry_each(pk_breaker_registry *r, void (*fn)(void *ud, pk_breaker *b), void *ud)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++)
        fn(ud, r->items[i]);
    pthread_mutex_unlock(&r->mu);
}

static void write_one(void *ud, pk_breaker *b)
{
    pk_breaker_write_json(b, ud);
}

void pk_breaker_registry_write_json(pk_breaker_registry *r, pk_jw *w)
{
    pk_jw_arr_open(w);
    pk_breaker_registry_each(r, write_one, w);
    pk_jw_arr_close(w);
}

pk_err *pk_breaker_registry_apply(pk_breaker_registry *r, const char *name, size_t namelen,
                                  const char *action)
{
    pk_breaker *b = pk_breaker_registry_get(r, name, namelen);
    if (!b) return pk_err_not_found("no breaker named '%.*s'", (int)(namelen > 200 ? 200 : namelen), name);
    if (strcmp(action, "force-open") == 0)
        pk_breaker_force_open(b);
    else if (strcmp(action, "disable") == 0)
        pk_breaker_disable(b);
    else if (strcmp(action, "reset") == 0)
        pk_breaker_reset(b);
    else
        return pk_err_bad_request("unknown breaker action '%s' (force-open, disable, reset)", action);
    return NULL;
}
