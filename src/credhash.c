/*
 * credhash — HMAC-SHA-256 of (user, password) under a per-process random
 * key. Never MD5, never an unkeyed hash, never the password itself: a hash
 * that leaks (core dump, memory) cannot be checked offline without the key,
 * which dies with the process.
 */
#include "credhash.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static uint8_t key[32];
static bool have_key;

int credhash_init(void)
{
	size_t got = 0;

	while (got < sizeof(key)) {
		ssize_t r = getrandom(key + got, sizeof(key) - got, 0);

		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	have_key = true;
	return 0;
}

void credhash(const char *user, size_t ulen, const char *pass, size_t plen, uint8_t out[CREDHASH_LEN])
{
	HMAC_CTX *ctx;
	unsigned len = CREDHASH_LEN;
	static const uint8_t sep = 0;

	if (!have_key)
		(void)credhash_init();
	/* HMAC_* is deprecated in OpenSSL 3 but remains the shortest correct
	 * call; EVP_MAC would do the same in four times the code. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	ctx = HMAC_CTX_new();
	if (ctx == NULL || HMAC_Init_ex(ctx, key, sizeof(key), EVP_sha256(), NULL) != 1 ||
	    HMAC_Update(ctx, (const uint8_t *)user, ulen) != 1 || HMAC_Update(ctx, &sep, 1) != 1 ||
	    HMAC_Update(ctx, (const uint8_t *)pass, plen) != 1 || HMAC_Final(ctx, out, &len) != 1) {
		/* Never let two different passwords compare equal by accident.
		 * 32 bytes from a ready pool do not fail; if they ever did, a
		 * known value could match: stop rather than risk it. */
		if (getrandom(out, CREDHASH_LEN, 0) != (ssize_t)CREDHASH_LEN)
			abort();
	}
	HMAC_CTX_free(ctx);
#pragma GCC diagnostic pop
}

bool credhash_equal(const uint8_t a[CREDHASH_LEN], const uint8_t b[CREDHASH_LEN])
{
	return CRYPTO_memcmp(a, b, CREDHASH_LEN) == 0;
}
