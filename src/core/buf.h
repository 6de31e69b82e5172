/*
 * buf: a growable byte buffer. The universal output type of PAKE: JSON writers, store results and
 * HTTP bodies are all built in a pk_buf. A buffer owns its bytes; pk_buf_free releases them.
 * Allocation failure aborts (PAKE treats OOM as fatal, like Redis).
 * Not thread-safe: one owner at a time.
 */
#ifndef PAKE_CORE_BUF_H
#define PAKE_CORE_BUF_H
#include <stddef.h>
#include <stdarg.h>

typedef struct pk_buf {
    char *data; /* always NUL-terminated when cap > 0 */
    size_t len;
    size_t cap;
} pk_buf;

#define PK_BUF_INIT                                                                                          \
    {                                                                                                        \
        NULL, 0, 0                                                                                           \
    }

/* Makes room for `extra` more bytes and the NUL (the slow path of pk_buf_reserve). */
void pk_buf_grow(pk_buf *b, size_t extra);
/* Inline: JSON writers call these for every key and value. */
static inline void pk_buf_reserve(pk_buf *b, size_t extra)
{
    if (b->len + extra + 1 > b->cap) pk_buf_grow(b, extra);
}
static inline void pk_buf_putc(pk_buf *b, char c)
{
    pk_buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}
void pk_buf_append(pk_buf *b, const void *data, size_t len);
void pk_buf_puts(pk_buf *b, const char *s);
void pk_buf_printf(pk_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pk_buf_vprintf(pk_buf *b, const char *fmt, va_list ap);
void pk_buf_reset(pk_buf *b); /* len = 0, keeps memory */
void pk_buf_free(pk_buf *b);
/* Takes the bytes out of the buffer (caller frees with free()); the buffer becomes empty. */
char *pk_buf_steal(pk_buf *b, size_t *len);
/* Returns a malloc'd NUL-terminated copy of [s, s+n). */
char *pk_strndup(const char *s, size_t n);
#endif
