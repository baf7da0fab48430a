/* Unit tests for redis_url: guard_redis's forms, escapes, errors, and a
 * display that never shows the password. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "redis_url.h"

static void test_forms(void **state)
{
	struct redis_url u;
	const char *why;
	char shown[600];

	(void)state;
	assert_int_equal(redis_url_parse("redis://127.0.0.1", &u, &why), 0);
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(u.port, 6379);
	assert_int_equal(u.db, 0);
	assert_false(u.unix_socket);
	assert_string_equal(u.password, "");

	assert_int_equal(redis_url_parse("redis://imapgate:s%40cr%3At@redis.example:6380/3", &u, &why), 0);
	assert_string_equal(u.user, "imapgate");
	assert_string_equal(u.password, "s@cr:t");
	assert_string_equal(u.host, "redis.example");
	assert_int_equal(u.port, 6380);
	assert_int_equal(u.db, 3);
	redis_url_display(&u, shown, sizeof(shown));
	assert_string_equal(shown, "redis://imapgate:***@redis.example:6380/3");

	assert_int_equal(redis_url_parse("redis://:only-password@[::1]:7000", &u, &why), 0);
	assert_string_equal(u.user, "");
	assert_string_equal(u.password, "only-password");
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 7000);
	redis_url_display(&u, shown, sizeof(shown));
	assert_string_equal(shown, "redis://:***@[::1]:7000/0");

	/* An '@' in the password without escaping: the last one ends it. */
	assert_int_equal(redis_url_parse("redis://u:p@ss@h", &u, &why), 0);
	assert_string_equal(u.password, "p@ss");
	assert_string_equal(u.host, "h");

	assert_int_equal(redis_url_parse("unix:/run/redis/redis.sock?db=2", &u, &why), 0);
	assert_true(u.unix_socket);
	assert_string_equal(u.host, "/run/redis/redis.sock");
	assert_int_equal(u.db, 2);
	redis_url_display(&u, shown, sizeof(shown));
	assert_string_equal(shown, "unix:/run/redis/redis.sock?db=2");
}

static void test_errors(void **state)
{
	static const char *const bad[] = {
		"127.0.0.1:6379", "http://h", "redis://", "redis://h:0", "redis://h:65536", "redis://h:x",
		"redis://h/x", "redis://u@h", "redis://u:@h", "redis://[::1", "redis://[::1]x", "redis://u:%4@h",
		"redis://u:%00@h", "unix:", "unix:relative.sock", "unix:/s?db=x", "unix:/s?foo=1", "redis://h h",
	};
	struct redis_url u;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *why = NULL;

		if (redis_url_parse(bad[i], &u, &why) != -1)
			fail_msg("accepted: %s", bad[i]);
		assert_non_null(why);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forms),
		cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
