/*
 * policy_hash — Dovecot's auth policy password hash (auth-policy.c), so a
 * policy server can compute the same value for a known password, or test
 * itself against Dovecot's output.
 *
 * The truncation is a right shift of the big-endian digest prefix: keep
 * ceil(N/8) bytes, shift right by 8*ceil(N/8) - N bits. That is what
 * Dovecot's buffer_truncate_rshift_bits() does; here it is written as a
 * plain multi-byte shift. Never logs, never keeps the digest.
 */
#include "policy_hash.h"

#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

static const EVP_MD *mech_md(const char *mech)
{
	if (mech == NULL || *mech == '\0' || strcasecmp(mech, "sha256") == 0)
		return EVP_sha256();
	if (strcasecmp(mech, "sha512") == 0)
		return EVP_sha512();
	if (strcasecmp(mech, "sha1") == 0)
		return EVP_sha1();
	if (strcasecmp(mech, "md5") == 0)
		return EVP_md5();
	/* md4 is Dovecot's own code there; OpenSSL 3 hides it in the
	 * legacy provider, so it is refused rather than half-supported. */
	return NULL;
}

unsigned policy_hash_mech_bits(const char *mech)
{
	const EVP_MD *md = mech_md(mech);

	return md == NULL ? 0 : (unsigned)EVP_MD_get_size(md) * 8;
}

const char *policy_hash_check(const char *mech, unsigned truncate_bits)
{
	unsigned bits = policy_hash_mech_bits(mech);

	if (bits == 0) {
		if (mech != NULL && strcasecmp(mech, "md4") == 0)
			return "auth_policy_hash_mech md4 is not supported; use sha256 (the default)";
		return "unknown auth_policy_hash_mech (known: md5, sha1, sha256, sha512)";
	}
	if (truncate_bits >= bits)
		return "auth_policy_hash_truncate must be smaller than the digest size in bits";
	return NULL;
}

/* Keep the top nbits of d (big-endian) right-aligned in ceil(nbits/8) bytes. */
static size_t truncate_rshift(uint8_t *d, size_t dlen, unsigned nbits)
{
	size_t n = (nbits + 7) / 8;
	unsigned shift = (unsigned)(n * 8 - nbits);

	if (nbits == 0 || n > dlen)
		return dlen;
	if (shift != 0) {
		for (size_t i = n - 1; i > 0; i--)
			d[i] = (uint8_t)((d[i] >> shift) | (d[i - 1] << (8 - shift)));
		d[0] = (uint8_t)(d[0] >> shift);
	}
	return n;
}

int policy_hash(const char *mech, unsigned truncate_bits, const char *nonce, size_t nonce_len, const char *login,
                size_t login_len, const char *pw, size_t pw_len, char *hex, size_t hexsz)
{
	static const char digits[] = "0123456789abcdef";
	static const uint8_t sep = 0;
	uint8_t d[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	size_t n;
	EVP_MD_CTX *ctx;
	int ok;

	if (policy_hash_check(mech, truncate_bits) != NULL)
		return -1;
	ctx = EVP_MD_CTX_new();
	ok = ctx != NULL && EVP_DigestInit_ex(ctx, mech_md(mech), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, nonce, nonce_len) == 1 && EVP_DigestUpdate(ctx, login, login_len) == 1 &&
	     EVP_DigestUpdate(ctx, &sep, 1) == 1 && EVP_DigestUpdate(ctx, pw, pw_len) == 1 &&
	     EVP_DigestFinal_ex(ctx, d, &dlen) == 1;
	EVP_MD_CTX_free(ctx);
	n = ok ? truncate_rshift(d, dlen, truncate_bits) : 0;
	if (!ok || hex == NULL || hexsz < 2 * n + 1) {
		explicit_bzero(d, sizeof(d));
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		hex[2 * i] = digits[d[i] >> 4];
		hex[2 * i + 1] = digits[d[i] & 0xf];
	}
	hex[2 * n] = '\0';
	explicit_bzero(d, sizeof(d));
	return (int)(2 * n);
}
