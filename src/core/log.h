/*
 * log: JSON lines on stderr, one object per event: {"ts","level","msg", ...context}.
 * Thread-safe (one write(2) per line). The level is a process-wide setting made once at start.
 * Request-scoped lines carry request_id, trace_id and span_id through pk_log_ctx.
 */
#ifndef PAKE_CORE_LOG_H
#define PAKE_CORE_LOG_H
#include "core/buf.h"

typedef enum { PK_LOG_DEBUG, PK_LOG_INFO, PK_LOG_WARN, PK_LOG_ERROR, PK_LOG_OFF } pk_log_level;

typedef struct pk_log_ctx {
    const char *request_id;
    const char *trace_id;
    const char *span_id;
} pk_log_ctx;

void pk_log_set_level(pk_log_level l);
pk_log_level pk_log_get_level(void);
int pk_log_parse_level(const char *s, pk_log_level *out); /* 0 ok, -1 unknown */
static inline int pk_log_enabled(pk_log_level l)
{
    return l >= pk_log_get_level();
}

/* `fields_json` is NULL or extra members already serialised: "\"k\":1,\"s\":\"x\"". */
void pk_log_write(pk_log_level l, const pk_log_ctx *ctx, const char *fields_json, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define pk_log_info(...) pk_log_write(PK_LOG_INFO, NULL, NULL, __VA_ARGS__)
#define pk_log_warn(...) pk_log_write(PK_LOG_WARN, NULL, NULL, __VA_ARGS__)
#define pk_log_error(...) pk_log_write(PK_LOG_ERROR, NULL, NULL, __VA_ARGS__)
#define pk_log_debug(...) pk_log_write(PK_LOG_DEBUG, NULL, NULL, __VA_ARGS__)
#endif
