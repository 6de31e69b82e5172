/*
 * id: identifiers. UUIDv7 for notes (time-ordered, RFC 9562), W3C trace/span ids, request ids.
 * Randomness comes from a per-thread ChaCha-seeded xoshiro state seeded from getrandom(); ids are
 * unguessable enough for correlation, and session ids use pk_random_bytes (OpenSSL RAND_bytes).
 * Thread-safe.
 */
#ifndef PAKE_CORE_ID_H
#define PAKE_CORE_ID_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PK_UUID_LEN 37 /* 36 chars + NUL */
void pk_uuid7(char out[PK_UUID_LEN]);
/* Lower-case canonical 8-4-4-4-12 hex form (any version). */
bool pk_uuid_valid(const char *s, size_t n);

uint64_t pk_rand64(void);                        /* fast, per-thread PRNG */
double pk_rand_unit(void);                       /* [0, 1) */
void pk_random_bytes(void *p, size_t n);         /* cryptographic */
void pk_hex(const void *p, size_t n, char *out); /* writes 2n chars + NUL */
#endif
