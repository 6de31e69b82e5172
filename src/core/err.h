/*
 * err: the one error value of PAKE. Every layer returns `pk_err *` (NULL means success) and carries
 * it up, adding context with pk_err_wrap. It is rendered exactly once, at the HTTP edge, as an RFC 9457
 * problem document (server/problem.c), or as a JSON-RPC / tool error by the MCP layer.
 *
 * An error has a stable machine code ("not_found", "validation_failed", ...), a category, the HTTP
 * status it maps to, a retryable flag (may a caller try again unchanged?), a human message, optional
 * field errors (validation) and a cause chain. Errors are heap objects owned by whoever holds the
 * pointer; pk_err_free frees the whole chain.
 */
#ifndef PAKE_CORE_ERR_H
#define PAKE_CORE_ERR_H
#include <stdbool.h>
#include <stddef.h>

typedef enum {
    PK_CAT_CLIENT,      /* the request is wrong (4xx) */
    PK_CAT_CONFLICT,    /* state conflict: 409, 412 */
    PK_CAT_LIMIT,       /* rate limit, size limit */
    PK_CAT_UNAVAILABLE, /* dependency down, breaker open, bulkhead full (503) */
    PK_CAT_TIMEOUT,     /* deadline exceeded (504) */
    PK_CAT_INTERNAL,    /* a bug or unexpected failure (500) */
} pk_err_category;

typedef struct pk_field_error {
    char *field; /* JSON pointer-ish path: "title", "tags[2]" */
    char *message;
} pk_field_error;

typedef struct pk_err {
    const char *code; /* static string, stable across versions */
    pk_err_category category;
    int status;
    bool retryable;
    int retry_after_s; /* > 0: render a Retry-After header */
    char *message;
    pk_field_error *fields;
    size_t nfields;
    char *extra_json; /* optional JSON members appended to the problem ("\"k\":v,...") */
    struct pk_err *cause;
} pk_err;

pk_err *pk_err_new(const char *code, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Adds context: returns a new error with the given code/message whose cause is `cause`. */
pk_err *pk_err_wrap(pk_err *cause, const char *code, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void pk_err_add_field(pk_err *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pk_err_free(pk_err *e);
/* True when `e` or any cause has this code. */
bool pk_err_is(const pk_err *e, const char *code);
const char *pk_err_title(int status);

/* Common constructors. */
#define pk_err_not_found(...) pk_err_new("not_found", 404, __VA_ARGS__)
#define pk_err_invalid(...) pk_err_new("validation_failed", 422, __VA_ARGS__)
#define pk_err_bad_request(...) pk_err_new("bad_request", 400, __VA_ARGS__)
#define pk_err_internal(...) pk_err_new("internal", 500, __VA_ARGS__)
#define pk_err_unavailable(...) pk_err_new("unavailable", 503, __VA_ARGS__)
#endif
