/*
 * stdio transport of MCP (`pake mcp`): newline-delimited JSON-RPC on stdin, only MCP messages on
 * stdout (one per line), logs on stderr.
 *
 * One session for the whole process. The reader thread parses and dispatches each line; requests that
 * need the store run on their own short-lived thread (at most PK_MCP_MAX_INFLIGHT at once, enforced by
 * the dispatcher), so the reader keeps reading and a notifications/cancelled can stop a running call.
 * Writers share stdout under a mutex, a whole line at a time. A batch (2025-03-26 only) is answered as
 * one array: its calls run one after the other on the reader thread. At end of input the reader waits
 * for the calls in flight, then returns.
 */
#include "core/log.h"
#include "mcp/mcp_internal.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct stdio_state {
    int out_fd;
    pthread_mutex_t out_mu;
    pthread_mutex_t mu;
    pthread_cond_t idle;
    int running;
    pk_server *srv;
} stdio_state;

/* A batch collects its calls' answers instead of writing them. */
typedef struct collector {
    pk_buf out;
    int n;
} collector;

static void write_line(stdio_state *st, const char *json, size_t n)
{
    pthread_mutex_lock(&st->out_mu);
    const char *p = json;
    size_t left = n;
    while (left) {
        ssize_t w = write(st->out_fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        p += w;
        left -= (size_t)w;
    }
    while (write(st->out_fd, "\n", 1) < 0 && errno == EINTR) {
    }
    pthread_mutex_unlock(&st->out_mu);
}

static void tx_send(pk_mcp_session *s, pk_mcp_call *c, const char *json, size_t n, bool final)
{
    if (!n) return;
    if (c && final && c->tx) {
        collector *col = c->tx;
        if (col->n++) pk_buf_putc(&col->out, ',');
        pk_buf_append(&col->out, json, n);
        return;
    }
    write_line(s->tx_state, json, n);
}

static void run_inline(stdio_state *st, pk_mcp_call *c)
{
    pk_job j;
    pk_mcp_job_init(&j, st->srv, c);
    c->work(c, &j);
    pk_buf_free(&j.body);
    pk_err_free(j.err);
    free(j.meta_extra);
    pk_mcp_call_finish(c);
}

static void *call_thread(void *p)
{
    pk_mcp_call *c = p;
    stdio_state *st = c->s->tx_state;
    run_inline(st, c);
    pthread_mutex_lock(&st->mu);
    if (--st->running == 0) pthread_cond_broadcast(&st->idle);
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

static bool tx_run(pk_mcp_session *s, pk_mcp_call *c)
{
    stdio_state *st = s->tx_state;
    if (c->tx) { /* part of a batch: run here */
        run_inline(st, c);
        return true;
    }
    pthread_mutex_lock(&st->mu);
    st->running++;
    pthread_mutex_unlock(&st->mu);
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &a, call_thread, c);
    pthread_attr_destroy(&a);
    if (rc != 0) {
        pthread_mutex_lock(&st->mu);
        st->running--;
        pthread_mutex_unlock(&st->mu);
        return false;
    }
    return true;
}

static const pk_mcp_transport STDIO_TX = {tx_send, tx_run, NULL, NULL};

static void handle_line(stdio_state *st, pk_mcp_session *s, pk_req *r, const char *line, size_t n)
{
    cJSON *msg = NULL;
    pk_err *e = pk_json_parse(line, n, st->srv->cfg.json_max_depth, &msg);
    pk_buf out = PK_BUF_INIT;
    if (e) {
        pk_err_free(e);
        pk_mcp_write_error(&out, NULL, -32700, "Parse error: the line is not valid JSON", NULL);
        write_line(st, out.data, out.len);
        pk_buf_free(&out);
        return;
    }
    if (cJSON_IsArray(msg)) {
        pthread_mutex_lock(&s->mu);
        bool allowed = !strcmp(s->version, "2025-03-26") && s->initialize_seen;
        pthread_mutex_unlock(&s->mu);
        if (!allowed || !msg->child) {
            pk_mcp_write_error(&out, NULL, -32600,
                               allowed ? "an empty batch is invalid"
                                       : "JSON-RPC batches are not supported in this revision",
                               NULL);
            write_line(st, out.data, out.len);
        } else {
            collector col = {PK_BUF_INIT, 0};
            for (const cJSON *m = msg->child; m; m = m->next) {
                pk_buf one = PK_BUF_INIT;
                pk_mcp_call *c = NULL;
                pk_mcp_outcome oc = pk_mcp_handle(s, m, r, &one, &c);
                if (oc == PK_MCP_ANSWERED) {
                    if (col.n++) pk_buf_putc(&col.out, ',');
                    pk_buf_append(&col.out, one.data, one.len);
                } else if (oc == PK_MCP_ASYNC) {
                    c->tx = &col;
                    pk_mcp_call_start(c);
                }
                pk_buf_free(&one);
            }
            if (col.n) {
                pk_buf_putc(&out, '[');
                pk_buf_append(&out, col.out.data, col.out.len);
                pk_buf_putc(&out, ']');
                write_line(st, out.data, out.len);
            }
            pk_buf_free(&col.out);
        }
    } else {
        pk_mcp_call *c = NULL;
        pk_mcp_outcome oc = pk_mcp_handle(s, msg, r, &out, &c);
        if (oc == PK_MCP_ANSWERED)
            write_line(st, out.data, out.len);
        else if (oc == PK_MCP_ASYNC)
            pk_mcp_call_start(c);
    }
    pk_buf_free(&out);
    cJSON_Delete(msg);
}

int pk_mcp_stdio_run(pk_server *srv, int in_fd, int out_fd)
{
    stdio_state st = {.out_fd = out_fd, .srv = srv};
    pthread_mutex_init(&st.out_mu, NULL);
    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.idle, NULL);
    pk_mcp_session *s = pk_mcp_session_create(&STDIO_TX, &st);
    /* the guard and the parsers take the request they screen; over stdio it is this stand-in */
    pk_req r;
    memset(&r, 0, sizeof r);
    r.srv = srv;
    snprintf(r.principal, sizeof r.principal, "stdio:%d", (int)getpid());
    snprintf(r.request_id, sizeof r.request_id, "stdio");
    FILE *in = fdopen(dup(in_fd), "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    pk_log_write(PK_LOG_INFO, NULL, NULL, "serving MCP over stdio");
    while (in && (n = getline(&line, &cap, in)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0) continue;
        if (n > srv->cfg.max_body_bytes) {
            pk_buf out = PK_BUF_INIT;
            pk_mcp_write_error(&out, NULL, -32600, "message too large", NULL);
            write_line(&st, out.data, out.len);
            pk_buf_free(&out);
            continue;
        }
        handle_line(&st, s, &r, line, (size_t)n);
    }
    free(line);
    if (in) fclose(in);
    /* end of input: calls already running get a grace period to answer (a client may write its
     * requests and close stdin, as `echo ... | pake mcp` does), then the rest is cancelled */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&st.mu);
    while (st.running && pthread_cond_timedwait(&st.idle, &st.mu, &until) == 0) {
    }
    pthread_mutex_unlock(&st.mu);
    pk_mcp_session_end(s);
    pthread_mutex_lock(&st.mu);
    while (st.running)
        pthread_cond_wait(&st.idle, &st.mu);
    pthread_mutex_unlock(&st.mu);
    pk_mcp_session_unref(s);
    pthread_mutex_destroy(&st.out_mu);
    pthread_mutex_destroy(&st.mu);
    pthread_cond_destroy(&st.idle);
    return 0;
}
