/*
 * clock: time sources. Everything that decides by time (breakers, limiters, caches, deadlines) takes a
 * pk_clock so tests can drive it with a fake clock. pk_clock_real() is monotonic nanoseconds.
 */
#ifndef PAKE_CORE_CLOCK_H
#define PAKE_CORE_CLOCK_H
#include <stddef.h>
#include <stdint.h>

typedef struct pk_clock {
    int64_t (*now_ns)(void *ctx); /* monotonic */
    void *ctx;
} pk_clock;

int64_t pk_mono_ns(void);
int64_t pk_wall_ns(void); /* CLOCK_REALTIME */
const pk_clock *pk_clock_real(void);
/* The wall clock (CLOCK_REALTIME nanoseconds) as a pk_clock: the default of the stores and queues. */
const pk_clock *pk_clock_wall(void);
static inline int64_t pk_clock_now(const pk_clock *c)
{
    return c->now_ns(c->ctx);
}

/* A fake clock for tests: now_ns returns *(int64_t *)ctx. */
int64_t pk_fake_clock_now(void *ctx);

/* RFC 3339 UTC with milliseconds: "2026-11-25T18:41:11.123Z" (needs 25 bytes incl. NUL). */
#define PK_RFC3339_LEN 25
void pk_rfc3339(int64_t wall_ns, char out[PK_RFC3339_LEN]);
/* Parses RFC 3339 (Z or offset, optional fraction); returns 0 and ns since epoch, -1 if invalid. */
int pk_rfc3339_parse(const char *s, int64_t *wall_ns);
#endif
