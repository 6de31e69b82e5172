/*
 * `pake <command>`: serve, worker, mcp, migrate, routes, guard, version, help. Every
 * setting is a flag and a PAKE_* environment variable (server/config.c); commands print their own
 * --help.
 */
#include "cli/cli.h"
#include "core/log.h"
#include "guard/guard.h"
#include "server/config.h"
#include "server/server.h"
#include "mcp/mcp.h"
#include "server/services.h"
#include "store/store_pg.h"
#include "tasks/tasks.h"
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fputs("pake " PAKE_VERSION " - knowledge engine server\n\n"
          "Usage: pake <command> [options]\n\n"
          "Commands:\n"
          "  serve     run the HTTP server (REST v1, MCP at /mcp, health, metrics)\n"
          "  mcp       serve MCP over stdio (newline-delimited JSON-RPC; same store options as serve)\n"
          "  worker    run task workers only (no HTTP): scale out over the shared queue (Redis or queue.db)\n"
          "  migrate   apply pending schema migrations to the store and exit\n"
          "  routes    print the route table as JSON\n"
          "  guard     security guard tools: eval, scan, fit, check-rules\n"
          "  version   print the version\n"
          "  help      this text\n\n"
          "Run 'pake <command> --help' for the options of a command.\n",
          out);
}

static const char WORKER_HELP[] =
    "pake worker: runs --workers task worker threads against the configured queue, with the same store\n"
    "settings as `pake serve` (the handlers read and write notes), and no HTTP listener. Logs are JSON\n"
    "lines on stderr.\n\n"
    "  queue     --queue-backend redis --redis-url URL (normal: any number of workers on any machine), or\n"
    "            sqlite (default): DATA_DIR/queue.db, shared by the processes of one machine\n"
    "  limits    --task-limits TYPE=concurrency:N;rate:R/s;burst:B,... apply to all workers together\n"
    "  shutdown  SIGTERM or SIGINT: stop claiming, let running tasks finish for --shutdown-timeout-ms,\n"
    "            release the rest back to the queue, leave the worker registry, exit 0\n"
    "  registry  each process beats every second; GET /v1/queues lists them under workers_seen\n\n"
    "Example: pake worker --queue-backend redis --redis-url redis://10.0.0.5:6379/0 --workers 8\n\n";

static int config_or_exit(pk_config *c, int argc, char **argv, const char *cmd, int *rc)
{
    bool help = false;
    pk_err *e = pk_config_parse(c, argc, argv, &help);
    if (e) {
        fprintf(stderr, "pake %s: %s\n", cmd, e->message);
        pk_err_free(e);
        *rc = 2;
        return -1;
    }
    if (help) {
        if (!strcmp(cmd, "worker")) fputs(WORKER_HELP, stdout);
        pk_config_usage(stdout, cmd);
        *rc = 0;
        return -1;
    }
    pk_log_level lvl;
    if (pk_log_parse_level(c->log_level, &lvl)) {
        fprintf(stderr, "pake %s: --log-level must be debug, info, warn, error or off\n", cmd);
        *rc = 2;
        return -1;
    }
    pk_log_set_level(lvl);
    return 0;
}

static pk_err *open_store(const pk_config *c, bool no_migrate, pk_store **out)
{
    if (c->database_url && *c->database_url) {
        pk_pg_config pc = {.url = c->database_url,
                           .replica_url = c->database_replica_url,
                           .pool_min = c->pg_pool_min,
                           .pool_max = c->pg_pool_max ? c->pg_pool_max : c->offload_threads + 2,
                           .acquire_timeout_ms = c->pg_acquire_timeout_ms,
                           .max_lifetime_ms = c->pg_max_lifetime_ms,
                           .idle_timeout_ms = c->pg_idle_timeout_ms,
                           .validate_after_ms = c->pg_validate_after_ms,
                           .leak_threshold_ms = c->pg_leak_threshold_ms,
                           .connect_timeout_ms = c->pg_connect_timeout_ms,
                           .backoff_max_ms = c->pg_backoff_max_ms,
                           .statement_timeout_ms = c->pg_statement_timeout_ms,
                           .read_your_writes_ms = c->pg_read_your_writes_ms,
                           .idem_ttl_s = c->idempotency_ttl_s};
        return pk_store_open_pg(&pc, no_migrate, out);
    }
    pk_sqlite_config sc = {.data_dir = c->data_dir,
                           .busy_timeout_ms = 5000,
                           .max_connections = c->offload_threads + 2,
                           .idem_ttl_s = c->idempotency_ttl_s,
                           .search_index = c->search_index && !no_migrate};
    return pk_store_open_sqlite(&sc, no_migrate, out);
}

/* The server context without HTTP listeners (store, foundation services, Redis when configured), as
 * `pake serve`, `pake mcp` and `pake worker` all need it. */
static pk_err *open_context(pk_server *srv)
{
    pk_err *e = open_store(&srv->cfg, false, &srv->store);
    if (!e) e = pk_services_init(srv);
    if (!e) pk_store_pg_bind_metrics(srv->store, pk_services_metrics(srv));
    if (!e) pk_store_sqlite_bind_metrics(srv->store, pk_services_metrics(srv));
    return e;
}

static void close_context(pk_server *srv)
{
    pk_services_dispose(srv);
    if (srv->store) pk_store_close(srv->store);
    pk_config_free(&srv->cfg);
}

static pk_tasks_config tasks_config(const pk_config *c, const char *kind)
{
    return (pk_tasks_config){.workers = c->workers,
                             .max_attempts = c->task_max_attempts,
                             .timeout_ms = c->task_timeout_ms,
                             .lease_ms = c->task_lease_ms,
                             .leases = c->task_leases,
                             .retry_base_ms = c->task_retry_base_ms,
                             .retry_cap_ms = c->task_retry_cap_ms,
                             .auto_embed = c->task_auto_embed,
                             .embed_dims = c->embed_dims,
                             .hnsw_m = c->vector_hnsw_m,
                             .hnsw_ef_construction = c->vector_hnsw_ef_construction,
                             .hnsw_ef_search = c->vector_hnsw_ef_search,
                             .backend = c->queue_backend,
                             .no_group_commit = !c->queue_group_commit,
                             .group_inflight = c->queue_group_inflight,
                             .group_gather_us = c->queue_group_gather_us,
                             .limits = c->task_limits,
                             .kind = kind,
                             .name = c->worker_name};
}

static int cmd_serve(int argc, char **argv)
{
    static pk_server srv;
    int rc = 0;
    if (config_or_exit(&srv.cfg, argc, argv, "serve", &rc)) return rc;
    pk_err *e = open_context(&srv);
    if (!e) pk_mcp_init(&srv, srv.cfg.mcp_conformance_fixtures);
    pk_tasks *tasks = NULL;
    if (!e) {
        pk_tasks_config tc = tasks_config(&srv.cfg, "serve");
        e = pk_tasks_init(&srv, &tc, &tasks);
    }
    if (!e) e = pk_server_init(&srv);
    if (e) {
        const pk_err *why = e; /* the innermost cause says what failed (e.g. the database's message) */
        while (why->cause)
            why = why->cause;
        pk_log_write(PK_LOG_ERROR, NULL, NULL, "cannot start: %s%s%s", e->message, why != e ? ": " : "",
                     why != e ? why->message : "");
        fprintf(stderr, "pake serve: %s%s%s\n", e->message, why != e ? ": " : "",
                why != e ? why->message : "");
        pk_err_free(e);
        return 1;
    }
    pk_tasks_start(tasks);
    rc = pk_server_run(&srv);
    /* the server has drained: workers stop claiming, finish or release in-flight tasks by the deadline */
    pk_tasks_stop(tasks, srv.cfg.shutdown_timeout_ms);
    pk_tasks_dispose(tasks);
    pk_server_dispose(&srv);
    close_context(&srv);
    return rc;
}

/* `pake mcp`: MCP over stdio. stdout carries only MCP messages; logs go to stderr (as always). */
static int cmd_mcp(int argc, char **argv)
{
    static pk_server srv;
    int rc = 0;
    if (config_or_exit(&srv.cfg, argc, argv, "mcp", &rc)) return rc;
    pk_err *e = open_context(&srv);
    if (e) {
        fprintf(stderr, "pake mcp: %s\n", e->message);
        pk_err_free(e);
        return 1;
    }
    pk_mcp_init(&srv, srv.cfg.mcp_conformance_fixtures);
    rc = pk_mcp_stdio_run(&srv, STDIN_FILENO, STDOUT_FILENO);
    close_context(&srv);
    return rc;
}

/* `pake worker`: task workers without HTTP. SIGTERM/SIGINT (and SIGHUP) are blocked in every thread
 * (the mask is set before any thread starts, so all inherit it) and taken by sigwait on the main
 * thread: SIGHUP reloads the guard rules as in serve; SIGTERM/SIGINT run the same graceful stop as
 * `pake serve` after its drain. */
static int cmd_worker(int argc, char **argv)
{
    static pk_server srv;
    int rc = 0;
    if (config_or_exit(&srv.cfg, argc, argv, "worker", &rc)) return rc;
    if (srv.cfg.workers < 1) {
        fprintf(stderr, "pake worker: --workers must be at least 1\n");
        pk_config_free(&srv.cfg);
        return 2;
    }
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    pk_err *e = open_context(&srv);
    pk_tasks *tasks = NULL;
    if (!e) {
        pk_tasks_config tc = tasks_config(&srv.cfg, "worker");
        e = pk_tasks_init(&srv, &tc, &tasks);
    }
    if (e) {
        pk_log_write(PK_LOG_ERROR, NULL, NULL, "cannot start: %s", e->message);
        fprintf(stderr, "pake worker: %s\n", e->message);
        rc = pk_err_is(e, "bad_config") ? 2 : 1;
        pk_err_free(e);
        close_context(&srv);
        return rc;
    }
    pk_tasks_start(tasks);
    int sig = 0;
    while (sigwait(&stop, &sig) == 0 && sig == SIGHUP) /* as in serve: reload the guard's rule file */
        pk_services_reload(&srv);
    pk_log_info("signal %d: stopping workers (running tasks get %d ms, then are released)", sig,
                srv.cfg.shutdown_timeout_ms);
    pk_tasks_stop(tasks, srv.cfg.shutdown_timeout_ms);
    pk_tasks_dispose(tasks);
    close_context(&srv);
    pk_log_info("workers stopped");
    return 0;
}

static int cmd_migrate(int argc, char **argv)
{
    pk_config c;
    int rc = 0;
    if (config_or_exit(&c, argc, argv, "migrate", &rc)) return rc;
    pk_store *st = NULL;
    pk_err *e = open_store(&c, true, &st);
    int from = 0, to = 0;
    if (!e) e = pk_store_migrate(st, &from, &to);
    if (e) {
        fprintf(stderr, "pake migrate: %s\n", e->message);
        pk_err_free(e);
        rc = 1;
    } else {
        printf("{\"store\":\"%s\",\"from_version\":%d,\"to_version\":%d}\n", st->backend, from, to);
    }
    if (st) pk_store_close(st);
    pk_config_free(&c);
    return rc;
}

static int cmd_routes(void)
{
    pk_buf b = PK_BUF_INIT;
    pk_jw w;
    pk_jw_init(&w, &b);
    pk_jw_arr_open(&w);
    for (size_t i = 0; i < pk_routes_count; i++) {
        const pk_route *r = &pk_routes[i];
        pk_jw_obj_open(&w);
        pk_jw_key(&w, "method");
        pk_jw_str(&w, r->method);
        pk_jw_key(&w, "path");
        pk_jw_str(&w, r->pattern);
        pk_jw_key(&w, "class");
        pk_jw_str(&w, pk_route_class_name(r->cls));
        pk_jw_key(&w, "operation_id");
        pk_jw_str(&w, r->operation_id);
        pk_jw_key(&w, "deprecated");
        pk_jw_bool(&w, r->flags & PK_ROUTE_DEPRECATED);
        pk_jw_obj_close(&w);
    }
    pk_jw_arr_close(&w);
    puts(b.data);
    pk_buf_free(&b);
    return 0;
}

int pk_cli_main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "mcp")) return cmd_mcp(argc - 1, argv + 1);
    if (!strcmp(cmd, "worker")) return cmd_worker(argc - 1, argv + 1);
    if (!strcmp(cmd, "migrate")) return cmd_migrate(argc - 1, argv + 1);
    if (!strcmp(cmd, "routes")) return cmd_routes();
    if (!strcmp(cmd, "guard")) return pk_guard_cli(argc - 1, argv + 1);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        puts("pake " PAKE_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "pake: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
