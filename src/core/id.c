#include "core/id.h"
#include "core/clock.h"
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static _Thread_local uint64_t rng_s[4];
static _Thread_local bool rng_seeded;

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t pk_rand64(void)
{
    if (!rng_seeded) {
        while (getrandom(rng_s, sizeof rng_s, 0) != (ssize_t)sizeof rng_s) {
        }
        rng_seeded = true;
    }
    uint64_t *s = rng_s;
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

double pk_rand_unit(void)
{
    return (double)(pk_rand64() >> 11) * 0x1.0p-53;
}

void pk_random_bytes(void *p, size_t n)
{
    if (RAND_bytes(p, (int)n) != 1) {
        while (getrandom(p, n, 0) != (ssize_t)n) {
        }
    }
}

void pk_hex(const void *p, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * n] = '\0';
}

void pk_uuid7(char out[PK_UUID_LEN])
{
    unsigned char b[16];
    uint64_t ms = (uint64_t)(pk_wall_ns() / 1000000);
    uint64_t r1 = pk_rand64(), r2 = pk_rand64();
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    memcpy(b + 6, &r1, 2);
    memcpy(b + 8, &r2, 8);
    b[6] = (unsigned char)(0x70 | (b[6] & 0x0F));
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3F));
    char hex[33];
    pk_hex(b, 16, hex);
    memcpy(out, hex, 8);
    out[8] = '-';
    memcpy(out + 9, hex + 8, 4);
    out[13] = '-';
    memcpy(out + 14, hex + 12, 4);
    out[18] = '-';
    memcpy(out + 19, hex + 16, 4);
    out[23] = '-';
    memcpy(out + 24, hex + 20, 12);
    out[36] = '\0';
}

bool pk_uuid_valid(const char *s, size_t n)
{
    if (n != 36) return false;
    for (size_t i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}
