/*
 * httpc.c: libcurl easy interface, one handle per call (see httpc.h). The body callback enforces the
 * size cap by aborting the transfer; the header callback picks Retry-After and Content-Type. Time left
 * to the caller's deadline bounds CURLOPT_TIMEOUT_MS so an outbound call never outlives its request.
 */
#include "net/httpc.h"
#include "core/clock.h"
#include <curl/curl.h>
#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

typedef struct sink {
    pk_httpc_resp *resp;
    size_t max;
    bool too_large;
} sink;

static size_t on_body(char *ptr, size_t size, size_t n, void *ud)
{
    sink *s = ud;
    size_t len = size * n;
    if (s->resp->body.len + len > s->max) {
        s->too_large = true;
        return 0; /* aborts the transfer */
    }
    pk_buf_append(&s->resp->body, ptr, len);
    return len;
}

static int64_t parse_retry_after(const char *v, size_t len)
{
    char tmp[64];
    if (len >= sizeof tmp) return -1;
    memcpy(tmp, v, len);
    tmp[len] = 0;
    char *end;
    long secs = strtol(tmp, &end, 10);
    if (end != tmp && *end == 0) return secs < 0 ? -1 : (int64_t)secs * 1000;
    time_t at = curl_getdate(tmp, NULL);
    if (at < 0) return -1;
    int64_t d = ((int64_t)at - (int64_t)time(NULL)) * 1000;
    return d < 0 ? 0 : d;
}

static size_t on_header(char *buf, size_t size, size_t n, void *ud)
{
    sink *s = ud;
    size_t len = size * n;
    const char *colon = memchr(buf, ':', len);
    if (!colon) return len;
    size_t name_len = (size_t)(colon - buf);
    const char *v = colon + 1;
    const char *end = buf + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && isspace((unsigned char)end[-1]))
        end--;
    size_t vlen = (size_t)(end - v);
    if (name_len == 11 && strncasecmp(buf, "retry-after", 11) == 0) {
        s->resp->retry_after_ms = parse_retry_after(v, vlen);
    } else if (name_len == 12 && strncasecmp(buf, "content-type", 12) == 0) {
        if (vlen >= sizeof s->resp->content_type) vlen = sizeof s->resp->content_type - 1;
        memcpy(s->resp->content_type, v, vlen);
        s->resp->content_type[vlen] = 0;
    }
    return len;
}

pk_err *pk_httpc_do(const pk_httpc_req *req, pk_httpc_resp *resp)
{
    pthread_once(&g_once, global_init);
    memset(resp, 0, sizeof *resp);
    resp->retry_after_ms = -1;
    if (!req->url || (strncmp(req->url, "http://", 7) != 0 && strncmp(req->url, "https://", 8) != 0))
        return pk_err_new("bad_config", 400, "outbound URL must start with http:// or https://");
    const char *method = req->method ? req->method : "POST";
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0 && strcmp(method, "PUT") != 0 &&
        strcmp(method, "DELETE") != 0)
        return pk_err_new("bad_config", 400, "unsupported outbound method %s", method);

    int64_t timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : 10000;
    if (req->deadline_ns) {
        int64_t left = (req->deadline_ns - pk_mono_ns()) / 1000000;
        if (left <= 0) return pk_err_new("upstream_timeout", 504, "deadline passed before the outbound call");
        if (left < timeout_ms) timeout_ms = left;
    }
    int64_t connect_ms = req->connect_timeout_ms > 0 ? req->connect_timeout_ms : 2000;
    if (connect_ms > timeout_ms) connect_ms = timeout_ms;

    CURL *c = curl_easy_init();
    if (!c) return pk_err_new("upstream_unavailable", 503, "cannot create an HTTP client handle");
    sink s = {.resp = resp, .max = req->max_response_bytes ? req->max_response_bytes : (size_t)8 << 20};
    struct curl_slist *hl = NULL;
    for (size_t i = 0; i < req->nheaders; i++)
        hl = curl_slist_append(hl, req->headers[i]);
    hl = curl_slist_append(hl, "Expect:"); /* no 100-continue round trip */

    curl_easy_setopt(c, CURLOPT_URL, req->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &s);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "pake");
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body ? req->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
    }
    CURLcode rc = curl_easy_perform(c);
    pk_err *e = NULL;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
    } else if (s.too_large) {
        e = pk_err_new("upstream_too_large", 502, "response larger than %zu bytes", s.max);
        e->retryable = false;
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        e = pk_err_new("upstream_timeout", 504, "outbound call timed out after %lld ms",
                       (long long)timeout_ms);
        e->retryable = true;
    } else if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL) {
        e = pk_err_new("bad_config", 400, "bad outbound URL: %s", curl_easy_strerror(rc));
    } else {
        e = pk_err_new("upstream_unavailable", 503, "outbound call failed: %s", curl_easy_strerror(rc));
        e->retryable = true;
    }
    if (e) pk_buf_free(&resp->body);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return e;
}

void pk_httpc_resp_free(pk_httpc_resp *resp)
{
    pk_buf_free(&resp->body);
}
