/* utf8: strict UTF-8 validation (RFC 3629: no overlongs, no surrogates, max U+10FFFF). */
#ifndef PAKE_CORE_UTF8_H
#define PAKE_CORE_UTF8_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
bool pk_utf8_valid(const char *s, size_t n);
/* Decodes one code point at s (n bytes left); returns its length or 0 when invalid. */
size_t pk_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* Number of code points in valid UTF-8. */
size_t pk_utf8_count(const char *s, size_t n);
#endif
