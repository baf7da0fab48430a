/*
 * policy_hash — the "pwhash" field Dovecot's auth policy client sends:
 * H(nonce || login || 0x00 || password), truncated to the top N bits and
 * hex-encoded. Pure: no I/O, no logging, no global state.
 */
#ifndef IMAPGATE_POLICY_HASH_H
#define IMAPGATE_POLICY_HASH_H

#include <stddef.h>

/* Longest hex string (SHA-512, untruncated) plus its NUL. */
#define POLICY_HASH_HEX_MAX 129

/*
 * Digest size in bits of mech ("md5", "sha1", "sha256", "sha512"; case
 * does not matter; NULL or "" mean the default, sha256). 0 when the
 * mechanism is unknown or unsupported (md4: see policy_hash_check).
 */
unsigned policy_hash_mech_bits(const char *mech);

/*
 * Check a (mech, truncate_bits) pair as Dovecot's config check does.
 * Returns NULL when usable, else a static English sentence for the
 * operator: unknown mechanism, md4 unsupported, or truncate_bits not
 * smaller than the digest size.
 */
const char *policy_hash_check(const char *mech, unsigned truncate_bits);

/*
 * Hash nonce || login || 0x00 || pw with mech; keep the top truncate_bits
 * bits right-aligned in ceil(truncate_bits/8) bytes (0 = the whole
 * digest) and write them as lowercase hex plus NUL into hex (hexsz bytes,
 * POLICY_HASH_HEX_MAX always suffices). Returns the hex length, or -1 if
 * policy_hash_check() refuses the pair, hex is too small, or OpenSSL
 * fails. Never blocks; the intermediate digest is wiped.
 */
int policy_hash(const char *mech, unsigned truncate_bits, const char *nonce, size_t nonce_len, const char *login,
                size_t login_len, const char *pw, size_t pw_len, char *hex, size_t hexsz);

#endif
