#include "core/err.h"
#include "core/buf.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static pk_err_category category_for(int status)
{
    if (status == 409 || status == 412) return PK_CAT_CONFLICT;
    if (status == 413 || status == 429) return PK_CAT_LIMIT;
    if (status == 503) return PK_CAT_UNAVAILABLE;
    if (status == 504) return PK_CAT_TIMEOUT;
    if (status >= 500) return PK_CAT_INTERNAL;
    return PK_CAT_CLIENT;
}

static pk_err *err_vnew(const char *code, int status, const char *fmt, va_list ap)
{
    pk_err *e = calloc(1, sizeof *e);
    if (!e) abort();
    e->code = code;
    e->status = status;
    e->category = category_for(status);
    e->retryable = status == 503 || status == 504 || status == 429;
    pk_buf b = PK_BUF_INIT;
    pk_buf_vprintf(&b, fmt, ap);
    e->message = pk_buf_steal(&b, NULL);
    return e;
}

pk_err *pk_err_new(const char *code, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pk_err *e = err_vnew(code, status, fmt, ap);
    va_end(ap);
    return e;
}

pk_err *pk_err_wrap(pk_err *cause, const char *code, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pk_err *e = err_vnew(code, status, fmt, ap);
    va_end(ap);
    e->cause = cause;
    if (cause) e->retryable = cause->retryable;
    return e;
}

void pk_err_add_field(pk_err *e, const char *field, const char *fmt, ...)
{
    pk_field_error *f = realloc(e->fields, (e->nfields + 1) * sizeof *f);
    if (!f) abort();
    e->fields = f;
    pk_buf b = PK_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    pk_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    f[e->nfields].field = strdup(field);
    f[e->nfields].message = pk_buf_steal(&b, NULL);
    e->nfields++;
}

void pk_err_free(pk_err *e)
{
    while (e) {
        pk_err *c = e->cause;
        for (size_t i = 0; i < e->nfields; i++) {
            free(e->fields[i].field);
            free(e->fields[i].message);
        }
        free(e->fields);
        free(e->message);
        free(e->extra_json);
        free(e);
        e = c;
    }
}

bool pk_err_is(const pk_err *e, const char *code)
{
    for (; e; e = e->cause)
        if (strcmp(e->code, code) == 0) return true;
    return false;
}

const char *pk_err_title(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return status >= 500 ? "Server Error" : "Client Error";
    }
}
