/* Unit tests for notify: NOTIFY_SOCKET addresses (path or @abstract) and
 * the WATCHDOG_USEC/WATCHDOG_PID rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "notify.h"

static void test_address_path(void **state)
{
	struct sockaddr_un sun;
	socklen_t len;

	(void)state;
	assert_int_equal(notify_address("/run/systemd/notify", &sun, &len), 0);
	assert_int_equal(sun.sun_family, AF_UNIX);
	assert_string_equal(sun.sun_path, "/run/systemd/notify");
	assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + strlen("/run/systemd/notify") + 1);
}

static void test_address_abstract(void **state)
{
	struct sockaddr_un sun;
	socklen_t len;

	(void)state;
	assert_int_equal(notify_address("@sd-notify/x", &sun, &len), 0);
	/* A leading NUL, the name without its '@', no trailing NUL counted. */
	assert_int_equal(sun.sun_path[0], '\0');
	assert_memory_equal(sun.sun_path + 1, "sd-notify/x", 11);
	assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + 12);
}

static void test_address_bad(void **state)
{
	struct sockaddr_un sun;
	socklen_t len;
	char longpath[sizeof(sun.sun_path) + 2];

	(void)state;
	assert_int_equal(notify_address(NULL, &sun, &len), -1);
	assert_int_equal(notify_address("", &sun, &len), -1);
	assert_int_equal(notify_address("@", &sun, &len), -1);
	assert_int_equal(notify_address("relative/sock", &sun, &len), -1);
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(notify_address(longpath, &sun, &len), -1);
	longpath[sizeof(sun.sun_path) - 1] = '\0'; /* 107 characters and the NUL: fits */
	assert_int_equal(notify_address(longpath, &sun, &len), 0);
}

static void test_watchdog(void **state)
{
	(void)state;
	assert_int_equal(notify_watchdog_usec("400000", NULL, 42), 400000);
	assert_int_equal(notify_watchdog_usec("400000", "", 42), 400000);
	assert_int_equal(notify_watchdog_usec("400000", "42", 42), 400000);
	assert_int_equal(notify_watchdog_usec("400000", "43", 42), 0);
	assert_int_equal(notify_watchdog_usec("400000", "42x", 42), 0);
	assert_int_equal(notify_watchdog_usec(NULL, NULL, 42), 0);
	assert_int_equal(notify_watchdog_usec("0", NULL, 42), 0);
	assert_int_equal(notify_watchdog_usec("-5", NULL, 42), 0);
	assert_int_equal(notify_watchdog_usec("30s", NULL, 42), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_address_path),
		cmocka_unit_test(test_address_abstract),
		cmocka_unit_test(test_address_bad),
		cmocka_unit_test(test_watchdog),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
