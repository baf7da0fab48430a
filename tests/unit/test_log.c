/* Unit tests for log_sanitize: peer text made safe for one key=value line. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "log.h"

static void test_sanitize_escapes(void **state)
{
	char out[64];

	(void)state;
	log_sanitize("bob", 3, out, sizeof(out));
	assert_string_equal(out, "bob");
	/* Spaces, quotes, '=', backslashes, CR/LF, NUL and 8-bit are escaped:
	 * a user name can never fake another key or another line. */
	log_sanitize("a b\"c=d\\e\r\nf\0\xc3", 14, out, sizeof(out));
	assert_string_equal(out, "a\\x20b\\x22c\\x3dd\\x5ce\\x0d\\x0af\\x00\\xc3");
	log_sanitize_text("cert verify failed: a=b", 23, out, sizeof(out));
	assert_string_equal(out, "cert verify failed: a=b");
}

static void test_sanitize_truncates(void **state)
{
	char out[12];

	(void)state;
	log_sanitize("abcdefghijklmnop", 16, out, sizeof(out));
	assert_string_equal(out, "abcdefgh...");
	log_sanitize("\n\n\n\n", 4, out, sizeof(out));
	assert_string_equal(out, "\\x0a\\x0a...");
	assert_true(strlen(out) < sizeof(out));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sanitize_escapes),
		cmocka_unit_test(test_sanitize_truncates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
