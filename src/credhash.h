/*
 * credhash — keyed hashes of credentials (HMAC-SHA-256 under a random key
 * made at start and kept only in this process), so that imapgate can tell
 * "the same password again" without keeping any password.
 */
#ifndef IMAPGATE_CREDHASH_H
#define IMAPGATE_CREDHASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CREDHASH_LEN 32

/* Make the process key (getrandom). Returns 0 or -1. Call once at start. */
int credhash_init(void);
/* HMAC(key, user NUL pass) into out. */
void credhash(const char *user, size_t ulen, const char *pass, size_t plen, uint8_t out[CREDHASH_LEN]);
/* Constant-time comparison. */
bool credhash_equal(const uint8_t a[CREDHASH_LEN], const uint8_t b[CREDHASH_LEN]);

#endif
