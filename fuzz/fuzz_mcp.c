/* libFuzzer target: the MCP JSON-RPC message handling (src/mcp/dispatch.c) and everything a message
 * can reach: lifecycle, lists and cursors, tools/call argument validation (the REST parsers and the
 * guard), resources, prompts, completion, subscriptions, cancellation, responses to server requests.
 * The input is one message or a batch; it is dispatched on a fresh initialized session. Store calls go
 * to a stub store (no I/O) whose answers are fixed, and async work runs inline. Every reply must be
 * valid JSON. */
#include "mcp/mcp_internal.h"
#include "server/config.h"
#include "server/services.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char NOTE[] =
    "{\"id\":\"01900000-0000-7000-8000-000000000001\",\"title\":\"t\",\"content\":\"c\","
    "\"type\":\"note\",\"status\":\"active\",\"tags\":[],\"version\":1}";

static pk_err *nf(void)
{
    return pk_err_not_found("stub store: nothing here");
}
static void st_close(pk_store *s) {}
static pk_err *st_migrate(pk_store *s, int *a, int *b)
{
    return NULL;
}
static pk_err *st_ping(pk_store *s, const pk_op_ctx *c)
{
    return NULL;
}
static pk_err *st_create(pk_store *s, const pk_op_ctx *c, const pk_note_input *in, pk_buf *out)
{
    pk_buf_puts(out, NOTE);
    return NULL;
}
static pk_err *st_get(pk_store *s, const pk_op_ctx *c, const char *id, pk_buf *out, int64_t *v)
{
    if (id[35] == '1') {
        pk_buf_puts(out, NOTE);
        *v = 1;
        return NULL;
    }
    return nf();
}
static pk_err *st_update(pk_store *s, const pk_op_ctx *c, const char *id, int64_t iv, const pk_note_input *in,
                         pk_buf *out)
{
    return st_get(s, c, id, out, &iv);
}
static pk_err *st_delete(pk_store *s, const pk_op_ctx *c, const char *id, int64_t iv)
{
    return id[35] == '1' ? NULL : nf();
}
static pk_err *st_page(pk_store *s, const pk_op_ctx *c, const pk_note_query *q, pk_page *out)
{
    if (q->cursor) return pk_err_invalid("bad cursor");
    pk_buf_puts(&out->items, "[");
    pk_buf_puts(&out->items, NOTE);
    pk_buf_puts(&out->items, "]");
    out->count = 1;
    out->next_cursor = strdup("next");
    return NULL;
}
static pk_err *st_history(pk_store *s, const pk_op_ctx *c, const char *id, pk_buf *out)
{
    pk_buf_puts(out, "{\"note_id\":\"x\",\"events\":[],\"confidence_history\":[]}");
    return NULL;
}
static pk_err *st_link(pk_store *s, const pk_op_ctx *c, const char *a, const char *b, const char *t,
                       double st, const char *md, pk_buf *out)
{
    pk_buf_puts(out, "{\"id\":\"l\",\"source_id\":\"a\",\"target_id\":\"b\",\"type\":\"related\"}");
    return NULL;
}
static pk_err *st_links(pk_store *s, const pk_op_ctx *c, const char *id, pk_buf *out)
{
    pk_buf_puts(out, "[]");
    return NULL;
}
static const pk_store_ops STUB = {st_close,  st_migrate, st_ping, st_create, st_get,
                                  st_update, st_delete,  st_page, st_page,   st_history,
                                  st_link,   st_links,   NULL,    NULL,      NULL};

static void tx_send(pk_mcp_session *s, pk_mcp_call *c, const char *json, size_t n, bool final)
{
    if (!n) return;
    cJSON *v = cJSON_ParseWithLength(json, n);
    if (!v) abort(); /* the server must only ever send valid JSON */
    cJSON_Delete(v);
}

static pk_server srv;

static bool tx_run(pk_mcp_session *s, pk_mcp_call *c)
{
    pk_job j;
    pk_mcp_job_init(&j, &srv, c);
    c->work(c, &j);
    pk_buf_free(&j.body);
    pk_err_free(j.err);
    pk_mcp_call_finish(c);
    return true;
}

static const pk_mcp_transport TX = {tx_send, tx_run, NULL, NULL};

static void setup(void)
{
    static pk_store store = {&STUB, "stub", NULL, NULL};
    char *argv[] = {"fuzz", "--cache-bytes", "0", NULL};
    bool help = false;
    pk_err *e = pk_config_parse(&srv.cfg, 3, argv, &help);
    if (e) abort();
    srv.store = &store;
    if (pk_services_init(&srv)) abort();
    pk_mcp_init(&srv, false); /* fixtures sleep and wait for clients: not for the fuzzer */
}

static void dispatch(pk_mcp_session *s, pk_req *r, const cJSON *m)
{
    pk_buf out = PK_BUF_INIT;
    pk_mcp_call *c = NULL;
    if (pk_mcp_handle(s, m, r, &out, &c) == PK_MCP_ASYNC)
        pk_mcp_call_start(c);
    else if (out.len)
        tx_send(s, NULL, out.data, out.len, true);
    pk_buf_free(&out);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The services (with the guard's rule databases, seconds to compile under the sanitizers) start once
 * here, outside the per-input timeout. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pk_mcp_session *s = pk_mcp_session_create(&TX, NULL);
    pk_req r;
    memset(&r, 0, sizeof r);
    r.srv = &srv;
    strcpy(r.principal, "fuzz");
    cJSON *init = cJSON_Parse("{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{"
                              "\"protocolVersion\":\"2025-03-26\",\"capabilities\":{}}}");
    dispatch(s, &r, init);
    cJSON_Delete(init);
    cJSON *msg = NULL;
    pk_err *e = pk_json_parse((const char *)data, size, 32, &msg);
    if (!e) {
        if (cJSON_IsArray(msg))
            for (const cJSON *m = msg->child; m; m = m->next)
                dispatch(s, &r, m);
        else
            dispatch(s, &r, msg);
        cJSON_Delete(msg);
    }
    pk_err_free(e);
    pk_mcp_session_end(s);
    pk_mcp_session_unref(s);
    return 0;
}
