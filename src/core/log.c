#include "core/log.h"
#include "core/clock.h"
#include "core/json.h"
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static _Atomic int g_level = PK_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void pk_log_set_level(pk_log_level l)
{
    atomic_store(&g_level, (int)l);
}
pk_log_level pk_log_get_level(void)
{
    return (pk_log_level)atomic_load(&g_level);
}

int pk_log_parse_level(const char *s, pk_log_level *out)
{
    for (int i = 0; i <= PK_LOG_OFF; i++)
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (pk_log_level)i;
            return 0;
        }
    if (strcasecmp(s, "warning") == 0) {
        *out = PK_LOG_WARN;
        return 0;
    }
    return -1;
}

void pk_log_write(pk_log_level l, const pk_log_ctx *ctx, const char *fields_json, const char *fmt, ...)
{
    if (!pk_log_enabled(l) || l == PK_LOG_OFF) return;
    char ts[PK_RFC3339_LEN];
    pk_rfc3339(pk_wall_ns(), ts);
    pk_buf msg = PK_BUF_INIT, line = PK_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    pk_buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    pk_buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts, level_names[l]);
    pk_json_escape(&line, msg.data ? msg.data : "", msg.len);
    pk_buf_putc(&line, '"');
    if (ctx) {
        if (ctx->request_id) pk_buf_printf(&line, ",\"request_id\":\"%s\"", ctx->request_id);
        if (ctx->trace_id) pk_buf_printf(&line, ",\"trace_id\":\"%s\"", ctx->trace_id);
        if (ctx->span_id) pk_buf_printf(&line, ",\"span_id\":\"%s\"", ctx->span_id);
    }
    if (fields_json && *fields_json) {
        pk_buf_putc(&line, ',');
        pk_buf_puts(&line, fields_json);
    }
    pk_buf_puts(&line, "}\n");
    ssize_t off = 0;
    while ((size_t)off < line.len) {
        ssize_t w = write(2, line.data + off, line.len - (size_t)off);
        if (w <= 0) break;
        off += w;
    }
    pk_buf_free(&msg);
    pk_buf_free(&line);
}
