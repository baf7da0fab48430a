/* Unit tests for the PROXY protocol parser, fed whole and one byte at a time. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "proxy_proto.h"

/* Parse data growing one byte at a time; every prefix must say MORE. */
static enum proxy_status parse_bytewise(const uint8_t *p, size_t len, struct proxy_info *info, size_t *used,
                                        const char **why)
{
	for (size_t i = 1; i < len; i++) {
		enum proxy_status st = proxy_parse(p, i, info, used, why);

		if (st != PROXY_MORE)
			return st;
	}
	return proxy_parse(p, len, info, used, why);
}

static void check_v4(const struct sockaddr_storage *ss, const char *ip, unsigned port)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
	char buf[INET_ADDRSTRLEN];

	assert_int_equal(sin->sin_family, AF_INET);
	inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
	assert_string_equal(buf, ip);
	assert_int_equal(ntohs(sin->sin_port), port);
}

static void check_v6(const struct sockaddr_storage *ss, const char *ip, unsigned port)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
	char buf[INET6_ADDRSTRLEN];

	assert_int_equal(sin6->sin6_family, AF_INET6);
	inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
	assert_string_equal(buf, ip);
	assert_int_equal(ntohs(sin6->sin6_port), port);
}

static void test_v1_tcp4(void **state)
{
	const char *h = "PROXY TCP4 192.0.2.7 127.0.0.1 40312 1143\r\na NOOP\r\n";
	struct proxy_info info;
	size_t used = 0;
	const char *why;

	(void)state;
	assert_int_equal(parse_bytewise((const uint8_t *)h, strlen(h), &info, &used, &why), PROXY_DONE);
	assert_int_equal(used, strlen("PROXY TCP4 192.0.2.7 127.0.0.1 40312 1143\r\n"));
	assert_false(info.local);
	check_v4(&info.src, "192.0.2.7", 40312);
	check_v4(&info.dst, "127.0.0.1", 1143);
}

static void test_v1_tcp6_and_unknown(void **state)
{
	const char *h = "PROXY TCP6 2001:db8::1 ::1 5555 143\r\n";
	const char *u = "PROXY UNKNOWN\r\n";
	struct proxy_info info;
	size_t used;
	const char *why;

	(void)state;
	assert_int_equal(proxy_parse((const uint8_t *)h, strlen(h), &info, &used, &why), PROXY_DONE);
	check_v6(&info.src, "2001:db8::1", 5555);
	assert_int_equal(proxy_parse((const uint8_t *)u, strlen(u), &info, &used, &why), PROXY_DONE);
	assert_true(info.local);
	assert_int_equal(used, strlen(u));
}

static void test_v1_errors(void **state)
{
	static const char *bad[] = {
		"PROXY TCP4 192.0.2.7 127.0.0.1 40312\r\n",        /* missing port */
		"PROXY TCP4 192.0.2.7 127.0.0.1 40312 99999\r\n",  /* port range */
		"PROXY TCP4 ::1 127.0.0.1 1 2\r\n",                /* family mismatch */
		"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",              /* protocol */
		"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",                /* bare LF */
		"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",             /* leading zero */
		"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 extra\r\n",
		"a LOGIN bob pw\r\n",                              /* no header */
		"GET / HTTP/1.0\r\n",
	};
	struct proxy_info info;
	size_t used;
	const char *why;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse_bytewise((const uint8_t *)bad[i], strlen(bad[i]), &info, &used, &why),
		                 PROXY_ERROR);
		assert_non_null(why);
	}
}

static void test_v1_too_long(void **state)
{
	char line[200];
	struct proxy_info info;
	size_t used;
	const char *why;

	(void)state;
	memset(line, 'A', sizeof(line));
	memcpy(line, "PROXY TCP4 ", 11);
	assert_int_equal(proxy_parse((const uint8_t *)line, sizeof(line), &info, &used, &why), PROXY_ERROR);
	assert_string_equal(why, "PROXY v1 line too long");
}

static const uint8_t sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

static void test_v2_tcp4_with_tlv(void **state)
{
	uint8_t h[16 + 12 + 7 + 4];
	struct proxy_info info;
	size_t used;
	const char *why;

	(void)state;
	memcpy(h, sig, 12);
	h[12] = 0x21; /* v2 PROXY */
	h[13] = 0x11; /* TCP4 */
	h[14] = 0;
	h[15] = 12 + 7; /* addresses + one TLV */
	memcpy(h + 16, "\xc0\x00\x02\x09", 4);
	memcpy(h + 20, "\x7f\x00\x00\x01", 4);
	memcpy(h + 24, "\x9d\x90", 2); /* 40336 */
	memcpy(h + 26, "\x04\x77", 2); /* 1143 */
	memcpy(h + 28, "\x04\x00\x04" "abcd", 7); /* PP2_TYPE_NOOP */
	memcpy(h + 35, "a NO", 4);
	assert_int_equal(parse_bytewise(h, sizeof(h), &info, &used, &why), PROXY_DONE);
	assert_int_equal(used, 35);
	check_v4(&info.src, "192.0.2.9", 40336);
	check_v4(&info.dst, "127.0.0.1", 1143);
}

static void test_v2_tcp6_and_local(void **state)
{
	uint8_t h[16 + 36];
	struct proxy_info info;
	size_t used;
	const char *why;

	(void)state;
	memcpy(h, sig, 12);
	h[12] = 0x21;
	h[13] = 0x21;
	h[14] = 0;
	h[15] = 36;
	memset(h + 16, 0, 36);
	h[16] = 0x20, h[17] = 0x01, h[18] = 0x0d, h[19] = 0xb8, h[31] = 0x05; /* 2001:db8::5 */
	h[47] = 1;                                                          /* ::1 */
	h[48] = 0x13, h[49] = 0x88;                                         /* 5000 */
	h[50] = 0x00, h[51] = 0x8f;                                         /* 143 */
	assert_int_equal(parse_bytewise(h, sizeof(h), &info, &used, &why), PROXY_DONE);
	check_v6(&info.src, "2001:db8::5", 5000);
	check_v6(&info.dst, "::1", 143);

	h[12] = 0x20; /* LOCAL */
	h[15] = 0;
	assert_int_equal(proxy_parse(h, 16, &info, &used, &why), PROXY_DONE);
	assert_true(info.local);
	assert_int_equal(used, 16);
}

static void test_v2_errors(void **state)
{
	uint8_t h[16 + 12];
	struct proxy_info info;
	size_t used;
	const char *why;

	(void)state;
	memcpy(h, sig, 12);
	h[12] = 0x31; /* version 3 */
	h[13] = 0x11;
	h[14] = 0;
	h[15] = 12;
	assert_int_equal(proxy_parse(h, sizeof(h), &info, &used, &why), PROXY_ERROR);
	h[12] = 0x22; /* command 2 */
	assert_int_equal(proxy_parse(h, sizeof(h), &info, &used, &why), PROXY_ERROR);
	h[12] = 0x21;
	h[15] = 8; /* too short for IPv4 */
	assert_int_equal(proxy_parse(h, 24, &info, &used, &why), PROXY_ERROR);
	h[14] = 0xff; /* huge */
	assert_int_equal(proxy_parse(h, 16, &info, &used, &why), PROXY_ERROR);
	assert_string_equal(why, "PROXY v2 header too long");
	h[14] = 0;
	h[15] = 12;
	h[13] = 0x31; /* AF_UNIX */
	assert_int_equal(proxy_parse(h, sizeof(h), &info, &used, &why), PROXY_ERROR);
	/* A partial header waits. */
	assert_int_equal(proxy_parse(h, 14, &info, &used, &why), PROXY_MORE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_tcp4),        cmocka_unit_test(test_v1_tcp6_and_unknown),
		cmocka_unit_test(test_v1_errors),      cmocka_unit_test(test_v1_too_long),
		cmocka_unit_test(test_v2_tcp4_with_tlv), cmocka_unit_test(test_v2_tcp6_and_local),
		cmocka_unit_test(test_v2_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
