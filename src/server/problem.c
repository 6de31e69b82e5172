/*
 * The one place an error becomes an RFC 9457 problem document. `type` is a stable URI per code
 * (https://pake.dev/problems/<code>, documented in docs/api.md), `code` repeats it as a plain token,
 * field errors (422) go in `errors`, and every problem carries request_id and trace_id.
 */
#include "core/json.h"
#include "server/server.h"
#include <string.h>

void pk_problem_render(pk_buf *out, const pk_err *e, const char *instance, const char *request_id,
                       const char *trace_id)
{
    pk_jw w;
    pk_jw_init(&w, out);
    pk_jw_obj_open(&w);
    pk_jw_key(&w, "type");
    pk_buf t = PK_BUF_INIT;
    pk_buf_printf(&t, "https://pake.dev/problems/%s", e->code);
    pk_jw_str(&w, t.data);
    pk_buf_free(&t);
    pk_jw_key(&w, "title");
    pk_jw_str(&w, pk_err_title(e->status));
    pk_jw_key(&w, "status");
    pk_jw_int(&w, e->status);
    pk_jw_key(&w, "detail");
    pk_jw_str(&w, e->message);
    pk_jw_key(&w, "instance");
    pk_jw_str(&w, instance ? instance : "");
    pk_jw_key(&w, "code");
    pk_jw_str(&w, e->code);
    pk_jw_key(&w, "retryable");
    pk_jw_bool(&w, e->retryable);
    pk_jw_key(&w, "request_id");
    pk_jw_str(&w, request_id);
    pk_jw_key(&w, "trace_id");
    pk_jw_str(&w, trace_id);
    if (e->nfields) {
        pk_jw_key(&w, "errors");
        pk_jw_arr_open(&w);
        for (size_t i = 0; i < e->nfields; i++) {
            pk_jw_obj_open(&w);
            pk_jw_key(&w, "field");
            pk_jw_str(&w, e->fields[i].field);
            pk_jw_key(&w, "message");
            pk_jw_str(&w, e->fields[i].message);
            pk_jw_obj_close(&w);
        }
        pk_jw_arr_close(&w);
    }
    if (e->extra_json) {
        pk_buf_putc(out, ',');
        pk_buf_puts(out, e->extra_json);
    }
    pk_jw_obj_close(&w);
}
