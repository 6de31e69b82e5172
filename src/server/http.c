/*
 * The runtime: h2o configuration, listeners, loop threads, signals and graceful shutdown.
 *
 * Listeners: one socket per loop, all bound to the same address with SO_REUSEPORT so the kernel
 * spreads connections over the loops. With port 0 the first bind picks the port and the others reuse
 * it. Shutdown (SIGTERM/SIGINT): readiness turns 503 (draining), after --drain-delay-ms the listeners
 * close, in-flight requests get --shutdown-timeout-ms to finish, then the loops stop and the process
 * exits 0. Accepted writes are committed before they are acknowledged, so none is lost.
 */
#include "core/clock.h"
#include "core/log.h"
#include "server/loop.h"
#include "server/offload.h"
#include "server/request.h"
#include "server/server.h"
#include "server/services.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct ctrl_msg {
    h2o_multithread_message_t msg;
    int what; /* 1 = close listener, 2 = exit loop */
} ctrl_msg;

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    pk_loop *l = H2O_STRUCT_FROM_MEMBER(pk_loop, ctx, req->conn->ctx);
    pk_request_dispatch(l, req);
    return 0;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    if (err) return;
    pk_loop *l = listener->data;
    for (int i = 0; i < 16; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (!sock) break;
        h2o_accept(&l->accept_ctx, sock);
    }
}

static void on_jobs(h2o_multithread_receiver_t *recv, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        pk_request_job_returned((pk_job *)m);
    }
}

static void close_listener(pk_loop *l)
{
    if (l->listener) {
        h2o_socket_read_stop(l->listener);
        h2o_socket_close(l->listener);
        l->listener = NULL;
    }
}

static void on_ctrl(h2o_multithread_receiver_t *recv, h2o_linklist_t *messages)
{
    pk_loop *l = H2O_STRUCT_FROM_MEMBER(pk_loop, ctrl_receiver, recv);
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        ctrl_msg *c = (ctrl_msg *)m;
        if (c->what == 1) {
            close_listener(l);
            /* keep-alive connections close after their current request; HTTP/2 gets GOAWAY */
            h2o_context_request_shutdown(&l->ctx);
        }
        if (c->what == 2) {
            close_listener(l);
            l->exit_loop = true;
        }
        free(c);
    }
}

void pk_loop_post(pk_loop *l, pk_job *j)
{
    h2o_multithread_send_message(&l->jobs_receiver, &j->msg);
}

static void send_ctrl(pk_loop *l, int what)
{
    ctrl_msg *c = calloc(1, sizeof *c);
    c->what = what;
    h2o_multithread_send_message(&l->ctrl_receiver, &c->msg);
}

static pk_err *open_listener(pk_server *s, int *port_inout, int *fd_out)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    char port[16];
    snprintf(port, sizeof port, "%d", *port_inout);
    int rc = getaddrinfo(s->cfg.listen_host, port, &hints, &res);
    if (rc != 0)
        return pk_err_new("bad_config", 2, "cannot resolve listen host '%s': %s", s->cfg.listen_host,
                          gai_strerror(rc));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        freeaddrinfo(res);
        return pk_err_new("listen_failed", 2, "cannot listen on %s:%d: %s", s->cfg.listen_host, *port_inout,
                          strerror(e));
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port_inout = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return NULL;
}

static pk_err *setup_tls(pk_server *s)
{
    if (!*s->cfg.tls_cert) return NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, s->cfg.tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, s->cfg.tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char buf[256];
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        SSL_CTX_free(ctx);
        return pk_err_new("bad_config", 2, "cannot load TLS certificate/key: %s", buf);
    }
    if (s->cfg.http2) h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols);
    s->ssl_ctx = ctx;
    return NULL;
}

pk_err *pk_server_init(pk_server *s)
{
    pk_err *e;
    s->started_wall_ns = pk_wall_ns();
    h2o_config_init(&s->h2oconf);
    s->h2oconf.server_name = h2o_iovec_init(s->cfg.server_header, strlen(s->cfg.server_header));
    /* h2o's own limit is one byte above ours so that our handler answers 413 as problem+json for any
     * body that declares or sends more than the limit; h2o still refuses anything larger. */
    s->h2oconf.max_request_entity_size = (size_t)s->cfg.max_body_bytes + 1;
    s->h2oconf.http1.req_timeout = (uint64_t)s->cfg.read_timeout_ms;
    s->h2oconf.http1.upgrade_to_http2 = 1;
    s->h2oconf.http2.idle_timeout = (uint64_t)s->cfg.idle_timeout_ms;
    s->h2oconf.http2.graceful_shutdown_timeout = (uint64_t)s->cfg.shutdown_timeout_ms;
    h2o_hostconf_t *host =
        h2o_config_register_host(&s->h2oconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *h = h2o_create_handler(path, sizeof *h);
    h->on_req = on_req;
    pk_problem_filter_register(path);
    pk_problem_filter_register(&host->fallback_path);
    if ((e = setup_tls(s))) return e;

    s->pool = pk_offload_pool_new(s->cfg.offload_threads, s->cfg.offload_queue);
    s->nloops = s->cfg.threads;
    s->loops = calloc((size_t)s->nloops, sizeof *s->loops);
    int port = s->cfg.listen_port;
    for (int i = 0; i < s->nloops; i++) {
        pk_loop *l = &s->loops[i];
        l->srv = s;
        l->index = i;
        if ((e = open_listener(s, &port, &l->listen_fd))) return e;
    }
    s->listen_port = port;
    return NULL;
}

static void *loop_main(void *arg)
{
    pk_loop *l = arg;
    pk_server *s = l->srv;
    l->evloop = h2o_evloop_create();
    h2o_context_init(&l->ctx, l->evloop, &s->h2oconf);
    l->accept_ctx.ctx = &l->ctx;
    l->accept_ctx.hosts = s->h2oconf.hosts;
    l->accept_ctx.ssl_ctx = s->ssl_ctx;
    l->queue = h2o_multithread_create_queue(l->evloop);
    h2o_multithread_register_receiver(l->queue, &l->jobs_receiver, on_jobs);
    h2o_multithread_register_receiver(l->queue, &l->ctrl_receiver, on_ctrl);
    for (int c = 0; c < PK_RC__COUNT; c++)
        h2o_timeout_init(l->evloop, &l->deadline_timeouts[c],
                         (uint64_t)pk_services_deadline_ms(s, (pk_route_class)c));
    l->listener = h2o_evloop_socket_create(l->evloop, l->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    l->listener->data = l;
    h2o_socket_read_start(l->listener, on_accept);
    while (!l->exit_loop)
        h2o_evloop_run(l->evloop, INT32_MAX);
    h2o_evloop_run(l->evloop, 0); /* messages that arrived with the exit request */
    return NULL;
}

static void log_listening(pk_server *s)
{
    char fields[256];
    const char *h = s->cfg.listen_host;
    bool v6 = strchr(h, ':') != NULL;
    snprintf(fields, sizeof fields,
             "\"address\":\"%s%s%s:%d\",\"threads\":%d,\"offload_threads\":%d,\"tls\":%s", v6 ? "[" : "", h,
             v6 ? "]" : "", s->listen_port, s->nloops, s->cfg.offload_threads, s->ssl_ctx ? "true" : "false");
    pk_log_write(PK_LOG_INFO, NULL, fields, "listening");
}

int pk_server_run(pk_server *s)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    for (int i = 0; i < s->nloops; i++)
        pthread_create(&s->loops[i].thread, NULL, loop_main, &s->loops[i]);
    log_listening(s);

    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) continue;
        if (sig == SIGHUP) {
            pk_services_reload(s);
            continue;
        }
        pk_log_write(PK_LOG_INFO, NULL, NULL, "shutdown requested (signal %d): draining", sig);
        break;
    }
    atomic_store(&s->draining, true);
    if (s->cfg.drain_delay_ms > 0) usleep((useconds_t)s->cfg.drain_delay_ms * 1000);
    for (int i = 0; i < s->nloops; i++)
        send_ctrl(&s->loops[i], 1);
    int64_t until = pk_mono_ns() + (int64_t)s->cfg.shutdown_timeout_ms * 1000000;
    while (atomic_load(&s->inflight) > 0 && pk_mono_ns() < until)
        usleep(5000);
    long left = atomic_load(&s->inflight);
    atomic_store(&s->stopping, true);
    /* finish (or skip, when past their deadline) the jobs still in the pool; their results reach the
     * loops, which free them before exiting */
    pk_offload_pool_stop(s->pool);
    for (int i = 0; i < s->nloops; i++)
        send_ctrl(&s->loops[i], 2);
    for (int i = 0; i < s->nloops; i++)
        pthread_join(s->loops[i].thread, NULL);
    pk_offload_pool_free(s->pool);
    s->pool = NULL;
    if (left > 0)
        pk_log_write(PK_LOG_WARN, NULL, NULL, "shutdown deadline passed with %ld requests in flight", left);
    pk_log_write(PK_LOG_INFO, NULL, NULL, "stopped");
    return 0;
}

void pk_server_dispose(pk_server *s)
{
    if (s->pool) pk_offload_pool_free(s->pool);
    free(s->loops);
    if (s->ssl_ctx) SSL_CTX_free(s->ssl_ctx);
}
