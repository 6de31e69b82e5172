/* Unit tests for foundation/metrics: values, labels, cardinality bound, exposition, promtool. */
#include "foundation/metrics.h"
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *const method_status[] = {"method", "status"};

static char *render(pk_metrics *r)
{
    pk_buf b = PK_BUF_INIT;
    pk_metrics_render(r, &b);
    pk_buf_putc(&b, '\0');
    return pk_buf_steal(&b, NULL);
}

/* Number of lines of `text` that equal `line` exactly. */
static int count_line(const char *text, const char *line)
{
    int n = 0;
    size_t len = strlen(line);
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t l = eol ? (size_t)(eol - p) : strlen(p);
        if (l == len && memcmp(p, line, len) == 0) n++;
        p = eol ? eol + 1 : NULL;
    }
    return n;
}

/* Value of the sample line starting with `prefix` followed by a space; NAN if absent. */
static double sample_value(const char *text, const char *prefix)
{
    size_t len = strlen(prefix);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, prefix, len) == 0 && p[len] == ' ') return strtod(p + len + 1, NULL);
        const char *eol = strchr(p, '\n');
        p = eol ? eol + 1 : NULL;
    }
    return NAN;
}

Test(metrics, counter_labels_and_series)
{
    pk_metrics *r = pk_metrics_new();
    pk_metric_family *f = pk_metrics_counter(r, "http_requests_total", "Requests.", 2, method_status);
    cr_assert_not_null(f);
    PK_METRIC_COUNTER_INC(f, "GET", "200");
    PK_METRIC_COUNTER_INC(f, "GET", "200");
    PK_METRIC_COUNTER_INC(f, "POST", "201");
    pk_metric_counter_add(f, PK_LABELS_("GET", "404"), 2, 5);
    cr_assert_eq(pk_metric_family_series_count(f), 3);
    cr_assert_eq(pk_metric_counter_value(pk_metric_series(f, PK_LABELS_("GET", "200"), 2)), 2);
    cr_assert_eq(pk_metric_counter_value(pk_metric_series(f, PK_LABELS_("GET", "404"), 2)), 5);
    /* ("GE","T200") must not collide with ("GET","200"). */
    PK_METRIC_COUNTER_INC(f, "GE", "T200");
    cr_assert_eq(pk_metric_family_series_count(f), 4);
    cr_assert_eq(pk_metric_counter_value(pk_metric_series(f, PK_LABELS_("GET", "200"), 2)), 2);

    char *t = render(r);
    cr_assert_eq(count_line(t, "# HELP http_requests_total Requests."), 1);
    cr_assert_eq(count_line(t, "# TYPE http_requests_total counter"), 1);
    cr_assert_eq(count_line(t, "http_requests_total{method=\"GET\",status=\"200\"} 2"), 1, "%s", t);
    cr_assert_eq(count_line(t, "http_requests_total{method=\"POST\",status=\"201\"} 1"), 1);
    cr_assert_eq(count_line(t, "http_requests_total{method=\"GET\",status=\"404\"} 5"), 1);
    /* Series in creation order. */
    cr_assert_lt(strstr(t, "status=\"200\""), strstr(t, "status=\"201\""));
    free(t);
    pk_metrics_free(r);
}

Test(metrics, gauge_set_add_sub)
{
    pk_metrics *r = pk_metrics_new();
    pk_metric_family *g = pk_metrics_gauge(r, "pake_inflight_requests", "In flight.", 0, NULL);
    pk_metric *s = pk_metric_series(g, NULL, 0);
    pk_metric_set(s, 10);
    pk_metric_gauge_add(s, 2.5);
    pk_metric_gauge_add(s, -5);
    cr_assert_float_eq(pk_metric_gauge_value(s), 7.5, 1e-12);
    char *t = render(r);
    cr_assert_eq(count_line(t, "pake_inflight_requests 7.5"), 1, "%s", t);
    free(t);
    /* Type mismatches are ignored: a counter update on a gauge series does nothing. */
    pk_metric_add(s, 3);
    cr_assert_float_eq(pk_metric_gauge_value(s), 7.5, 1e-12);
    pk_metrics_free(r);
}

Test(metrics, histogram_cumulative_buckets)
{
    pk_metrics *r = pk_metrics_new();
    static const double bounds[] = {0.05, 0.1, 1};
    static const char *const route[] = {"route"};
    pk_metric_family *h = pk_metrics_histogram(r, "req_seconds", "Latency.", 1, route, bounds, 3);
    cr_assert_not_null(h);
    double obs[] = {0.01, 0.05, 0.07, 0.5, 2, 3};
    for (size_t i = 0; i < 6; i++)
        PK_METRIC_OBSERVE(h, obs[i], "/v1/notes");
    PK_METRIC_OBSERVE(h, NAN, "/v1/notes"); /* ignored */
    pk_metric *s = pk_metric_series(h, PK_LABELS_("/v1/notes"), 1);
    cr_assert_eq(pk_metric_histogram_count(s), 6);
    cr_assert_float_eq(pk_metric_histogram_sum(s), 5.63, 1e-9);
    char *t = render(r);
    cr_assert_eq(count_line(t, "req_seconds_bucket{route=\"/v1/notes\",le=\"0.05\"} 2"), 1, "%s", t);
    cr_assert_eq(count_line(t, "req_seconds_bucket{route=\"/v1/notes\",le=\"0.1\"} 3"), 1, "%s", t);
    cr_assert_eq(count_line(t, "req_seconds_bucket{route=\"/v1/notes\",le=\"1\"} 4"), 1, "%s", t);
    cr_assert_eq(count_line(t, "req_seconds_bucket{route=\"/v1/notes\",le=\"+Inf\"} 6"), 1, "%s", t);
    cr_assert_eq(count_line(t, "req_seconds_count{route=\"/v1/notes\"} 6"), 1, "%s", t);
    cr_assert_float_eq(sample_value(t, "req_seconds_sum{route=\"/v1/notes\"}"), 5.63, 1e-9);
    free(t);
    pk_metrics_free(r);
}

Test(metrics, default_latency_buckets_render_short)
{
    cr_assert_eq(pk_metrics_latency_buckets_len, 17);
    cr_assert_float_eq(pk_metrics_latency_buckets[0], 0.00005, 1e-15);
    cr_assert_float_eq(pk_metrics_latency_buckets[16], 10, 1e-15);
    pk_metrics *r = pk_metrics_new();
    pk_metric_family *h = pk_metrics_histogram(r, "lat_seconds", "L.", 0, NULL, pk_metrics_latency_buckets,
                                               pk_metrics_latency_buckets_len);
    pk_metric_observe(pk_metric_series(h, NULL, 0), 0.0003);
    char *t = render(r);
    cr_assert_eq(count_line(t, "lat_seconds_bucket{le=\"5e-05\"} 0"), 1, "%s", t);
    cr_assert_eq(count_line(t, "lat_seconds_bucket{le=\"0.00025\"} 0"), 1, "%s", t);
    cr_assert_eq(count_line(t, "lat_seconds_bucket{le=\"0.0005\"} 1"), 1, "%s", t);
    cr_assert_eq(count_line(t, "lat_seconds_bucket{le=\"2.5\"} 1"), 1, "%s", t);
    free(t);
    pk_metrics_free(r);
}

Test(metrics, escaping)
{
    pk_metrics *r = pk_metrics_new();
    static const char *const l[] = {"path"};
    pk_metric_family *f =
        pk_metrics_counter(r, "esc_total", "Help with \\ backslash\nand newline \"q\".", 1, l);
    PK_METRIC_COUNTER_INC(f, "a\\b\"c\nd");
    char *t = render(r);
    cr_assert_eq(count_line(t, "# HELP esc_total Help with \\\\ backslash\\nand newline \"q\"."), 1, "%s", t);
    cr_assert_eq(count_line(t, "esc_total{path=\"a\\\\b\\\"c\\nd\"} 1"), 1, "%s", t);
    free(t);
    pk_metrics_free(r);
}

Test(metrics, invalid_utf8_label_is_sanitized_once)
{
    pk_metrics *r = pk_metrics_new();
    static const char *const l[] = {"v"};
    pk_metric_family *f = pk_metrics_counter(r, "u_total", "U.", 1, l);
    for (int i = 0; i < 3; i++)
        PK_METRIC_COUNTER_INC(f, "x\xff"
                                 "y");
    PK_METRIC_COUNTER_INC(f, "x?y"); /* the sanitized spelling is the same series */
    cr_assert_eq(pk_metric_family_series_count(f), 1);
    char *t = render(r);
    cr_assert_eq(count_line(t, "u_total{v=\"x?y\"} 4"), 1, "%s", t);
    free(t);
    pk_metrics_free(r);
}

Test(metrics, registration_rules)
{
    pk_metrics *r = pk_metrics_new();
    static const char *const le[] = {"le"};
    static const char *const dunder[] = {"__x"};
    static const char *const dup[] = {"a", "a"};
    static const char *const bad[] = {"1a"};
    static const double b_ok[] = {1, 2};
    static const double b_bad[] = {2, 1};
    cr_assert_null(pk_metrics_counter(r, "", "h", 0, NULL));
    cr_assert_null(pk_metrics_counter(r, "9abc", "h", 0, NULL));
    cr_assert_null(pk_metrics_counter(r, "a-b", "h", 0, NULL));
    cr_assert_null(pk_metrics_counter(r, "ok_total", "h", 1, dunder));
    cr_assert_null(pk_metrics_counter(r, "ok_total", "h", 2, dup));
    cr_assert_null(pk_metrics_counter(r, "ok_total", "h", 1, bad));
    cr_assert_null(pk_metrics_histogram(r, "h_seconds", "h", 1, le, b_ok, 2));
    cr_assert_null(pk_metrics_histogram(r, "h_seconds", "h", 0, NULL, b_bad, 2));
    cr_assert_null(pk_metrics_histogram(r, "h_seconds", "h", 0, NULL, NULL, 0));
    pk_metric_family *a = pk_metrics_counter(r, "ns:ok_total", "h", 1, method_status);
    cr_assert_not_null(a);
    cr_assert_eq(pk_metrics_counter(r, "ns:ok_total", "other help", 1, method_status), a);
    cr_assert_null(pk_metrics_gauge(r, "ns:ok_total", "h", 1, method_status));
    cr_assert_null(pk_metrics_counter(r, "ns:ok_total", "h", 2, method_status));
    /* Update functions tolerate NULL. */
    pk_metric_counter_add(NULL, NULL, 0, 1);
    pk_metric_inc(NULL);
    pk_metric_observe(NULL, 1);
    pk_metrics_free(r);
}

Test(metrics, overflow_series_bounds_cardinality)
{
    pk_metrics *r = pk_metrics_new();
    pk_metrics_set_max_series(r, 3);
    static const char *const l[] = {"user"};
    pk_metric_family *f = pk_metrics_counter(r, "per_user_total", "U.", 1, l);
    char v[16];
    for (int i = 0; i < 10; i++) {
        snprintf(v, sizeof v, "u%d", i);
        for (int k = 0; k <= i; k++)
            PK_METRIC_COUNTER_INC(f, v);
    }
    /* u0..u2 fit; u3..u9 (4+5+...+10 = 49 updates) land in the overflow series. */
    cr_assert_eq(pk_metric_family_series_count(f), 4);
    cr_assert_eq(pk_metric_family_overflows(f), 49);
    pk_metric *o = pk_metric_series(f, PK_LABELS_(PK_METRICS_OVERFLOW_VALUE), 1);
    cr_assert_eq(pk_metric_counter_value(o), 49);
    /* Existing series keep working when full. */
    PK_METRIC_COUNTER_INC(f, "u1");
    cr_assert_eq(pk_metric_counter_value(pk_metric_series(f, PK_LABELS_("u1"), 1)), 3);
    cr_assert_eq(pk_metric_family_overflows(f), 49);
    char *t = render(r);
    cr_assert_eq(count_line(t, "per_user_total{user=\"_overflow\"} 49"), 1, "%s", t);
    cr_assert_eq(count_line(t, "pake_metrics_series_overflow_total{family=\"per_user_total\"} 49"), 1, "%s",
                 t);
    free(t);
    pk_metrics_free(r);
}

static double fake_bytes(void *ctx)
{
    return *(double *)ctx;
}

Test(metrics, callback_series)
{
    pk_metrics *r = pk_metrics_new();
    static const char *const l[] = {"tier"};
    pk_metric_family *g = pk_metrics_gauge(r, "pake_cache_bytes", "Cache size.", 1, l);
    double bytes = 1234;
    cr_assert_eq(pk_metric_bind_fn(g, PK_LABELS_("l1"), 1, fake_bytes, &bytes), 0);
    cr_assert_eq(pk_metric_bind_fn(g, PK_LABELS_("l1"), 1, fake_bytes, &bytes), -1); /* exists */
    cr_assert_eq(pk_metric_bind_fn(g, PK_LABELS_("l1", "x"), 2, fake_bytes, &bytes), -1);
    pk_metric_family *h = pk_metrics_histogram(r, "x_seconds", "X.", 0, NULL, pk_metrics_latency_buckets, 3);
    cr_assert_eq(pk_metric_bind_fn(h, NULL, 0, fake_bytes, &bytes), -1);
    char *t = render(r);
    cr_assert_eq(count_line(t, "pake_cache_bytes{tier=\"l1\"} 1234"), 1, "%s", t);
    free(t);
    bytes = 99;
    t = render(r);
    cr_assert_eq(count_line(t, "pake_cache_bytes{tier=\"l1\"} 99"), 1, "%s", t);
    free(t);
    pk_metrics_free(r);
}

Test(metrics, process_and_build_info)
{
    pk_metrics *r = pk_metrics_new();
    pk_metrics_register_process(r);
    pk_metrics_register_process(r);
    pk_metrics_register_build_info(r, "1.2.3");
    pk_metrics_register_build_info(r, "1.2.3");
    char *t = render(r);
    cr_assert_eq(count_line(t, "pake_build_info{version=\"1.2.3\"} 1"), 1, "%s", t);
    cr_assert_eq(count_line(t, "# TYPE process_cpu_seconds_total counter"), 1, "%s", t);
    cr_assert_geq(sample_value(t, "process_cpu_seconds_total"), 0);
    cr_assert_gt(sample_value(t, "process_resident_memory_bytes"), 1 << 20);
    cr_assert_geq(sample_value(t, "process_virtual_memory_bytes"),
                  sample_value(t, "process_resident_memory_bytes"));
    cr_assert_gt(sample_value(t, "process_open_fds"), 2);
    cr_assert_geq(sample_value(t, "process_max_fds"), sample_value(t, "process_open_fds"));
    double start = sample_value(t, "process_start_time_seconds");
    double now = (double)time(NULL);
    cr_assert(start > now - 3600 && start <= now + 2, "start %f now %f", start, now);
    free(t);
    pk_metrics_free(r);
}

typedef struct {
    pk_metric_family *c, *h, *g;
    int id;
} worker_arg;

#define THREADS 4
#define ITERS 20000
#define LABELSETS 64

static void *hammer(void *p)
{
    worker_arg *a = p;
    char v[16];
    for (int i = 0; i < ITERS; i++) {
        snprintf(v, sizeof v, "k%d", (i * 7 + a->id) % LABELSETS);
        PK_METRIC_COUNTER_INC(a->c, v);
        PK_METRIC_OBSERVE(a->h, 0.001 * (i % 10), v);
        pk_metric_gauge_add_to(a->g, NULL, 0, 1);
        pk_metric_gauge_add_to(a->g, NULL, 0, -0.5);
    }
    return NULL;
}

Test(metrics, concurrent_updates_are_exact)
{
    pk_metrics *r = pk_metrics_new();
    static const char *const l[] = {"k"};
    pk_metric_family *c = pk_metrics_counter(r, "c_total", "C.", 1, l);
    pk_metric_family *h = pk_metrics_histogram(r, "h_seconds", "H.", 1, l, pk_metrics_latency_buckets,
                                               pk_metrics_latency_buckets_len);
    pk_metric_family *g = pk_metrics_gauge(r, "g", "G.", 0, NULL);
    pthread_t th[THREADS];
    worker_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (worker_arg){c, h, g, i};
        pthread_create(&th[i], NULL, hammer, &args[i]);
    }
    /* Scrape while the workers run: rendering must not disturb updates. */
    for (int i = 0; i < 20; i++)
        free(render(r));
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(pk_metric_family_series_count(c), LABELSETS);
    cr_assert_eq(pk_metric_family_series_count(h), LABELSETS);
    uint64_t total = 0, hcount = 0;
    char v[16];
    for (int k = 0; k < LABELSETS; k++) {
        snprintf(v, sizeof v, "k%d", k);
        total += pk_metric_counter_value(pk_metric_series(c, PK_LABELS_(v), 1));
        hcount += pk_metric_histogram_count(pk_metric_series(h, PK_LABELS_(v), 1));
    }
    cr_assert_eq(total, (uint64_t)THREADS * ITERS);
    cr_assert_eq(hcount, (uint64_t)THREADS * ITERS);
    cr_assert_float_eq(pk_metric_gauge_value(pk_metric_series(g, NULL, 0)), THREADS * ITERS * 0.5, 1e-6);
    pk_metrics_free(r);
}

/* ---- promtool: the real Prometheus linter over a registry with every kind of metric ---- */

static const char *find_promtool(void)
{
    static const char *const candidates[] = {"/usr/bin/promtool", "/usr/local/bin/promtool"};
    for (size_t i = 0; i < 2; i++)
        if (access(candidates[i], X_OK) == 0) return candidates[i];
    return NULL;
}

static double two(void *ctx)
{
    return 2;
}

static void fill_everything(pk_metrics *r)
{
    static const char *const route_status[] = {"route", "status"};
    static const char *const dep[] = {"dependency"};
    pk_metrics_set_max_series(r, 5);
    pk_metric_family *c =
        pk_metrics_counter(r, "pake_http_requests_total", "HTTP requests served.", 2, route_status);
    PK_METRIC_COUNTER_INC(c, "/v1/notes", "200");
    PK_METRIC_COUNTER_INC(c, "/v1/notes/{id}", "404");
    PK_METRIC_COUNTER_INC(c, "we\"ird\\ro\nute", "500");
    PK_METRIC_COUNTER_INC(c, "x\xfe", "500");
    for (int i = 0; i < 5; i++) {
        char v[8];
        snprintf(v, sizeof v, "%d", 600 + i);
        PK_METRIC_COUNTER_INC(c, "/v1/overflowing", v);
    }
    pk_metrics_counter(r, "pake_unused_total", "Registered but never updated.", 0, NULL);
    pk_metric_family *g =
        pk_metrics_gauge(r, "pake_breaker_state", "Breaker state: 0 closed, 1 open, 2 half-open.", 1, dep);
    PK_METRIC_GAUGE_SET(g, 1, "store");
    PK_METRIC_GAUGE_SET(g, -0.25, "redis");
    pk_metric_bind_fn(g, PK_LABELS_("ai"), 1, two, NULL);
    pk_metric_family *cg = pk_metrics_counter(r, "pake_cache_evictions_total", "Evictions.", 0, NULL);
    pk_metric_bind_fn(cg, NULL, 0, two, NULL);
    pk_metric_family *h =
        pk_metrics_histogram(r, "pake_http_request_duration_seconds", "Request latency.", 1, route_status,
                             pk_metrics_latency_buckets, pk_metrics_latency_buckets_len);
    PK_METRIC_OBSERVE(h, 0.0002, "/v1/notes");
    PK_METRIC_OBSERVE(h, 20, "/v1/notes");
    PK_METRIC_OBSERVE(h, 0.003, "/v1/search");
    pk_metric_family *h0 = pk_metrics_histogram(r, "pake_store_query_seconds", "Store query time.", 0, NULL,
                                                pk_metrics_latency_buckets, 4);
    pk_metric_observe(pk_metric_series(h0, NULL, 0), 0.00001);
    pk_metrics_register_build_info(r, "0.1.0");
    pk_metrics_register_process(r);
}

Test(metrics, promtool_check_metrics_is_clean, .timeout = 30)
{
    const char *promtool = find_promtool();
    if (!promtool)
        cr_skip_test("promtool not installed (Debian package 'prometheus'); skipping the lint check");
    pk_metrics *r = pk_metrics_new();
    fill_everything(r);
    char *text = render(r);
    pk_metrics_free(r);
    cr_assert(strstr(text, "_overflow"), "the fixture should exercise the overflow series");

    char in_path[] = "/tmp/pk_metrics_in_XXXXXX";
    char out_path[] = "/tmp/pk_metrics_out_XXXXXX";
    int in_fd = mkstemp(in_path), out_fd = mkstemp(out_path);
    cr_assert(in_fd >= 0 && out_fd >= 0);
    cr_assert_eq(write(in_fd, text, strlen(text)), (ssize_t)strlen(text));
    close(in_fd);
    close(out_fd);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s check metrics < %s > %s 2>&1", promtool, in_path, out_path);
    int st = system(cmd);
    FILE *fp = fopen(out_path, "r");
    char report[4096] = {0};
    size_t n = fp ? fread(report, 1, sizeof report - 1, fp) : 0;
    if (fp) fclose(fp);
    unlink(in_path);
    unlink(out_path);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "promtool exit %d: %s\n--- input ---\n%s", st, report,
              text);
    cr_assert_eq(n, 0, "promtool reported:\n%s\n--- input ---\n%s", report, text);
    free(text);
}

/* And promtool must be able to fail: a counter without _total and a bad line are reported. */
Test(metrics, promtool_detects_problems, .timeout = 30)
{
    const char *promtool = find_promtool();
    if (!promtool) cr_skip_test("promtool not installed; skipping");
    char cmd[512];
    snprintf(
        cmd, sizeof cmd,
        "printf '# HELP bad_counter x\\n# TYPE bad_counter counter\\nbad_counter 1\\n' | %s check metrics "
        ">/dev/null 2>&1",
        promtool);
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0, "promtool should flag a counter without _total");
}
