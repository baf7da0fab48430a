/* Unit tests for Dovecot's auth policy pwhash. Expected values were
 * computed independently with Python's hashlib:
 *   m = b"s3cr3t-nonce" + b"john@example.com\0hunter2"
 *   d = hashlib.new(mech, m).digest(); nb = (n + 7) // 8
 *   (int.from_bytes(d[:nb], "big") >> (nb * 8 - n)).to_bytes(nb, "big").hex()
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "policy_hash.h"

#define NONCE "s3cr3t-nonce"
#define LOGIN "john@example.com"
#define PW "hunter2"

static const char *h(const char *mech, unsigned bits, char *out)
{
	int n = policy_hash(mech, bits, NONCE, strlen(NONCE), LOGIN, strlen(LOGIN), PW, strlen(PW), out,
	                    POLICY_HASH_HEX_MAX);

	assert_true(n >= 0);
	assert_int_equal((size_t)n, strlen(out));
	return out;
}

static void test_reference_vector(void **state)
{
	char out[POLICY_HASH_HEX_MAX];

	(void)state;
	/* dovecot-auth-policy.md section 1: SHA-256 starts 3526cc88. */
	assert_string_equal(h("sha256", 12, out), "0352");
	assert_string_equal(h(NULL, 12, out), "0352"); /* default mech */
	assert_string_equal(h("", 16, out), "3526");
	assert_string_equal(h("SHA256", 16, out), "3526");
}

static void test_odd_truncations(void **state)
{
	char out[POLICY_HASH_HEX_MAX];

	(void)state;
	/* 0x3526 >> 3 = 0x06a4 */
	assert_string_equal(h("sha256", 13, out), "06a4");
	assert_string_equal(h("sha256", 1, out), "00");
	assert_string_equal(h("sha256", 7, out), "1a");
	assert_string_equal(h("sha256", 8, out), "35");
	assert_string_equal(h("sha256", 9, out), "006a");
	assert_string_equal(h("sha256", 255, out),
	                    "1a9366444ae59fe0bd5473dac51e447efcc28958743e046b4cd355d9b6fc0a1c");
	assert_string_equal(h("sha1", 20, out), "0ddd85");
	assert_string_equal(h("md5", 13, out), "1cfc");
}

static void test_whole_digests(void **state)
{
	char out[POLICY_HASH_HEX_MAX];

	(void)state;
	assert_string_equal(h("md5", 0, out), "e7e37fce89f1c08e3e8fe60effcf9a82");
	assert_string_equal(h("sha1", 0, out), "ddd8526192bb7431f43183811dd93152b1494963");
	assert_string_equal(h("sha256", 0, out), "3526cc8895cb3fc17aa8e7b58a3c88fdf98512b0e87c08d699a6abb36df81438");
	assert_string_equal(h("sha512", 0, out),
	                    "be81fa51b4dfc99cbb8ffc541e22f4af4404f609455e7884d981be59c20640e2"
	                    "833258665b712d4632987dfa8fd17c5da73bb6eb0e0f7a4ca917b25477ce0714");
	assert_int_equal(strlen(out) + 1, POLICY_HASH_HEX_MAX);
	/* One bit short of SHA-512: the whole digest shifted right by one. */
	assert_string_equal(h("sha512", 511, out),
	                    "5f40fd28da6fe4ce5dc7fe2a0f117a57a2027b04a2af3c426cc0df2ce1032071"
	                    "41992c332db896a3194c3efd47e8be2ed39ddb758707bd26548bd92a3be7038a");
}

static void test_no_password(void **state)
{
	char out[POLICY_HASH_HEX_MAX];

	(void)state;
	/* Non-plaintext mechanisms: the hash covers nonce || login || 0. */
	assert_int_equal(policy_hash("sha256", 12, NONCE, strlen(NONCE), LOGIN, strlen(LOGIN), NULL, 0, out,
	                             sizeof(out)),
	                 4);
	assert_string_equal(out, "0b81");
}

static void test_mechs_and_errors(void **state)
{
	char out[POLICY_HASH_HEX_MAX];

	(void)state;
	assert_int_equal(policy_hash_mech_bits("md5"), 128);
	assert_int_equal(policy_hash_mech_bits("sha1"), 160);
	assert_int_equal(policy_hash_mech_bits("sha256"), 256);
	assert_int_equal(policy_hash_mech_bits(NULL), 256);
	assert_int_equal(policy_hash_mech_bits("sha512"), 512);
	assert_int_equal(policy_hash_mech_bits("md4"), 0);
	assert_int_equal(policy_hash_mech_bits("sha3-256"), 0);
	assert_null(policy_hash_check("sha256", 12));
	assert_non_null(strstr(policy_hash_check("md4", 12), "md4 is not supported"));
	assert_non_null(strstr(policy_hash_check("whirlpool", 12), "unknown"));
	assert_non_null(strstr(policy_hash_check("sha256", 256), "smaller"));
	assert_non_null(strstr(policy_hash_check("md5", 200), "smaller"));
	assert_int_equal(policy_hash("md4", 12, "n", 1, "u", 1, "p", 1, out, sizeof(out)), -1);
	assert_int_equal(policy_hash("sha256", 256, "n", 1, "u", 1, "p", 1, out, sizeof(out)), -1);
	/* Output buffer: 4 hex digits need 5 bytes. */
	assert_int_equal(policy_hash("sha256", 12, "n", 1, "u", 1, "p", 1, out, 4), -1);
	assert_int_equal(policy_hash("sha256", 12, "n", 1, "u", 1, "p", 1, out, 5), 4);
	assert_int_equal(policy_hash("sha256", 0, "n", 1, "u", 1, "p", 1, out, 64), -1);
}

static void test_login_is_separated(void **state)
{
	char a[POLICY_HASH_HEX_MAX], b[POLICY_HASH_HEX_MAX];

	(void)state;
	/* Same bytes, other split between login and password. */
	assert_int_equal(policy_hash("sha256", 0, "n", 1, "bob", 3, "secret", 6, a, sizeof(a)), 64);
	assert_int_equal(policy_hash("sha256", 0, "n", 1, "bobs", 4, "ecret", 5, b, sizeof(b)), 64);
	assert_string_not_equal(a, b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reference_vector), cmocka_unit_test(test_odd_truncations),
		cmocka_unit_test(test_whole_digests),    cmocka_unit_test(test_no_password),
		cmocka_unit_test(test_mechs_and_errors), cmocka_unit_test(test_login_is_separated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
