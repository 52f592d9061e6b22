/* SHA-256 (FIPS 180-4): streaming and one-shot, with lowercase hex output.
 *
 * Used to name and verify stored blobs (adapters, base weights, training data). Pure C, no I/O.
 */
#ifndef CLAD_CORE_SHA256_H
#define CLAD_CORE_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_SIZE 32
#define SHA256_HEX_SIZE 65 /* 64 hex digits and the terminating NUL */

typedef struct sha256_ctx {
    uint32_t h[8];       /* chaining state */
    uint64_t n_bytes;    /* bytes hashed so far */
    uint8_t block[64];   /* partial block */
    size_t n_block;      /* bytes in block */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
/* Writes the digest; the context must be initialised again before reuse. */
void sha256_final(sha256_ctx *c, uint8_t digest[SHA256_DIGEST_SIZE]);

/* One shot: hex = lowercase hex SHA-256 of data[0..n). data may be NULL when n == 0. */
void sha256_hex(const void *data, size_t n, char hex[SHA256_HEX_SIZE]);
void sha256_digest_to_hex(const uint8_t digest[SHA256_DIGEST_SIZE], char hex[SHA256_HEX_SIZE]);
/* True when s is exactly 64 lowercase hex digits (the form sha256_hex writes). */
bool sha256_hex_valid(const char *s);

#endif
