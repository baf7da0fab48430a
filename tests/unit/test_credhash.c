/* Unit tests for the keyed credential hash. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "credhash.h"

static void test_same_input_same_hash(void **state)
{
	uint8_t a[CREDHASH_LEN], b[CREDHASH_LEN];

	(void)state;
	assert_int_equal(credhash_init(), 0);
	credhash("bob", 3, "secret", 6, a);
	credhash("bob", 3, "secret", 6, b);
	assert_true(credhash_equal(a, b));
}

static void test_inputs_are_separated(void **state)
{
	uint8_t a[CREDHASH_LEN], b[CREDHASH_LEN], c[CREDHASH_LEN];

	(void)state;
	credhash("bob", 3, "secret", 6, a);
	credhash("bobs", 4, "ecret", 5, b); /* same bytes, other split */
	credhash("bob", 3, "secreT", 6, c);
	assert_false(credhash_equal(a, b));
	assert_false(credhash_equal(a, c));
}

static void test_key_is_per_process(void **state)
{
	uint8_t a[CREDHASH_LEN], b[CREDHASH_LEN];

	(void)state;
	credhash("bob", 3, "secret", 6, a);
	assert_int_equal(credhash_init(), 0); /* a new key, as a restart makes */
	credhash("bob", 3, "secret", 6, b);
	assert_false(credhash_equal(a, b));
	/* Not a plain SHA-256 of the input either. */
	assert_memory_not_equal(a, "\x2b\xb8\x0d\x53\x7b\x1d\xa3\xe3", 8);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_input_same_hash),
		cmocka_unit_test(test_inputs_are_separated),
		cmocka_unit_test(test_key_is_per_process),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
