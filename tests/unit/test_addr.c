/* Unit tests for addr: CIDR parsing and matching, host:port splitting,
 * address formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "addr.h"

static struct sockaddr_storage ss;

static const struct sockaddr *sa4(const char *ip, unsigned port)
{
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;
	memset(&ss, 0, sizeof ss);
	s->sin_family = AF_INET;
	s->sin_port = htons((uint16_t)port);
	assert_int_equal(inet_pton(AF_INET, ip, &s->sin_addr), 1);
	return (const struct sockaddr *)&ss;
}

static const struct sockaddr *sa6(const char *ip, unsigned port)
{
	struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
	memset(&ss, 0, sizeof ss);
	s->sin6_family = AF_INET6;
	s->sin6_port = htons((uint16_t)port);
	assert_int_equal(inet_pton(AF_INET6, ip, &s->sin6_addr), 1);
	return (const struct sockaddr *)&ss;
}

static void assert_cidr(const char *in, int family, const char *addr, unsigned prefix)
{
	struct cidr c;
	uint8_t want[16] = {0};
	const char *why = NULL;

	assert_int_equal(cidr_parse(in, &c, &why), 0);
	assert_null(why);
	assert_int_equal(c.family, family);
	assert_int_equal(c.prefix, prefix);
	assert_int_equal(inet_pton(family, addr, want), 1);
	assert_memory_equal(c.addr, want, 16);
}

static void assert_cidr_bad(const char *in, const char *msg)
{
	struct cidr c, before;
	const char *why = NULL;

	memset(&c, 0xa5, sizeof c);
	before = c;
	assert_int_equal(cidr_parse(in, &c, &why), -1);
	assert_non_null(why);
	assert_string_equal(why, msg);
	assert_memory_equal(&c, &before, sizeof c); /* untouched */
}

static void test_cidr_parse_ok(void **state)
{
	(void)state;
	assert_cidr("1.2.3.4", AF_INET, "1.2.3.4", 32);
	assert_cidr("10.1.2.3/8", AF_INET, "10.0.0.0", 8); /* host bits zeroed */
	assert_cidr("10.0.31.255/20", AF_INET, "10.0.16.0", 20);
	assert_cidr("192.168.1.1/0", AF_INET, "0.0.0.0", 0);
	assert_cidr("192.168.1.1/32", AF_INET, "192.168.1.1", 32);
	assert_cidr("::1", AF_INET6, "::1", 128);
	assert_cidr("2001:db8:ffff::1/32", AF_INET6, "2001:db8::", 32);
	assert_cidr("2001:db8::ff/121", AF_INET6, "2001:db8::80", 121);
	assert_cidr("::/0", AF_INET6, "::", 0);
	/* v4-mapped prefixes become IPv4 prefixes */
	assert_cidr("::ffff:10.9.8.7/104", AF_INET, "10.0.0.0", 8);
	assert_cidr("::ffff:10.9.8.7", AF_INET, "10.9.8.7", 32);
	/* but a mapped prefix shorter than 96 stays IPv6 */
	assert_cidr("::ffff:10.9.8.7/80", AF_INET6, "::", 80);
}

static void test_cidr_parse_bad(void **state)
{
	(void)state;
	assert_cidr_bad("", "empty address");
	assert_cidr_bad("/24", "empty address");
	assert_cidr_bad("1.2.3.4/33", "prefix length too long");
	assert_cidr_bad("::1/129", "prefix length too long");
	assert_cidr_bad("1.2.3.4/999", "prefix length too long");
	assert_cidr_bad("1.2.3.4/", "bad prefix length");
	assert_cidr_bad("1.2.3.4/2x", "bad prefix length");
	assert_cidr_bad("1.2.3.4/-1", "bad prefix length");
	assert_cidr_bad("1.2.3.4/+8", "bad prefix length");
	assert_cidr_bad("1.2.3.4/0008", "bad prefix length");
	assert_cidr_bad("1.2.3.4/8/8", "bad prefix length");
	assert_cidr_bad("1.2.3", "not an IPv4 address");
	assert_cidr_bad("1.2.3.256", "not an IPv4 address");
	assert_cidr_bad("localhost", "not an IPv4 address");
	assert_cidr_bad("1.2.3.4 ", "not an IPv4 address");
	assert_cidr_bad(" 1.2.3.4", "not an IPv4 address");
	assert_cidr_bad("::g", "not an IPv6 address");
	assert_cidr_bad("1:2:3:4:5:6:7:8:9", "not an IPv6 address");
	assert_cidr_bad("[::1]", "not an IPv6 address");
	assert_cidr_bad("1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa", "address too long");

	struct cidr c;
	assert_int_equal(cidr_parse("nope", &c, NULL), -1); /* why may be NULL */
}

static void test_cidr_match(void **state)
{
	struct cidr c;
	(void)state;

	assert_int_equal(cidr_parse("10.0.16.0/20", &c, NULL), 0);
	assert_true(cidr_match(&c, sa4("10.0.16.0", 1)));
	assert_true(cidr_match(&c, sa4("10.0.31.255", 1)));
	assert_false(cidr_match(&c, sa4("10.0.32.0", 1)));
	assert_false(cidr_match(&c, sa4("10.0.15.255", 1)));
	/* v4-mapped counts as IPv4, v4-compatible and other v6 do not */
	assert_true(cidr_match(&c, sa6("::ffff:10.0.20.1", 1)));
	assert_false(cidr_match(&c, sa6("::ffff:10.0.32.1", 1)));
	assert_false(cidr_match(&c, sa6("::10.0.20.1", 1)));
	assert_false(cidr_match(&c, sa6("::ffff:0:10.0.20.1", 1)));

	assert_int_equal(cidr_parse("0.0.0.0/0", &c, NULL), 0);
	assert_true(cidr_match(&c, sa4("255.255.255.255", 1)));
	assert_true(cidr_match(&c, sa6("::ffff:1.2.3.4", 1)));
	assert_false(cidr_match(&c, sa6("2001:db8::1", 1)));

	assert_int_equal(cidr_parse("2001:db8::/33", &c, NULL), 0);
	assert_true(cidr_match(&c, sa6("2001:db8:7fff::1", 1)));
	assert_false(cidr_match(&c, sa6("2001:db8:8000::1", 1)));
	assert_false(cidr_match(&c, sa4("32.1.13.184", 1)));

	assert_int_equal(cidr_parse("::/0", &c, NULL), 0);
	assert_true(cidr_match(&c, sa6("fe80::1", 1)));
	assert_false(cidr_match(&c, sa4("1.2.3.4", 1)));

	/* written as a mapped address, matches both forms of the client */
	assert_int_equal(cidr_parse("::ffff:127.0.0.1", &c, NULL), 0);
	assert_true(cidr_match(&c, sa4("127.0.0.1", 1)));
	assert_true(cidr_match(&c, sa6("::ffff:127.0.0.1", 1)));
	assert_false(cidr_match(&c, sa4("127.0.0.2", 1)));

	struct sockaddr_un un = {.sun_family = AF_UNIX};
	assert_false(cidr_match(&c, (const struct sockaddr *)&un));
}

static void test_cidr_list(void **state)
{
	struct cidr_list l;
	const char *why = NULL;
	(void)state;

	assert_int_equal(cidr_list_parse("127.0.0.0/8, ::1/128\t192.168.0.0/16,,", &l, &why), 0);
	assert_int_equal(l.n, 3);
	assert_int_equal(l.items[0].family, AF_INET);
	assert_int_equal(l.items[1].family, AF_INET6);
	assert_int_equal(l.items[2].prefix, 16);
	assert_true(cidr_list_match(&l, sa4("127.9.9.9", 1)));
	assert_true(cidr_list_match(&l, sa6("::ffff:192.168.4.4", 1)));
	assert_true(cidr_list_match(&l, sa6("::1", 1)));
	assert_false(cidr_list_match(&l, sa6("::2", 1)));
	assert_false(cidr_list_match(&l, sa4("10.0.0.1", 1)));

	struct cidr_list empty = {.n = 0};
	assert_false(cidr_list_match(&empty, sa4("127.0.0.1", 1)));

	/* errors leave the list untouched */
	l.n = 3;
	assert_int_equal(cidr_list_parse("", &l, &why), -1);
	assert_string_equal(why, "empty address list");
	assert_int_equal(cidr_list_parse(" , \t,", &l, &why), -1);
	assert_string_equal(why, "empty address list");
	assert_int_equal(cidr_list_parse("1.2.3.4, 5.6.7.8/40", &l, &why), -1);
	assert_string_equal(why, "prefix length too long");
	assert_int_equal(cidr_list_parse("1.2.3.4;5.6.7.8", &l, &why), -1);
	assert_string_equal(why, "not an IPv4 address");
	assert_int_equal(cidr_list_parse("::1 aaaa:bbbb:cccc:dddd:eeee:ffff:1111:2222:3333:4444:5555", &l, &why),
	                 -1);
	assert_string_equal(why, "address too long");
	assert_int_equal(l.n, 3);

	char buf[2048] = "";
	for (int i = 0; i < CIDR_LIST_MAX; i++)
		snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "10.0.0.%d ", i);
	assert_int_equal(cidr_list_parse(buf, &l, &why), 0);
	assert_int_equal(l.n, CIDR_LIST_MAX);
	assert_true(cidr_list_match(&l, sa4("10.0.0.63", 1)));
	assert_false(cidr_list_match(&l, sa4("10.0.0.64", 1)));
	strcat(buf, "10.0.0.64");
	assert_int_equal(cidr_list_parse(buf, &l, &why), -1);
	assert_string_equal(why, "too many addresses");
}

static void assert_split(const char *in, const char *host, const char *port)
{
	char h[64], p[16];
	const char *why = NULL;

	assert_int_equal(addr_split_hostport(in, h, sizeof h, p, sizeof p, &why), 0);
	assert_null(why);
	assert_string_equal(h, host);
	assert_string_equal(p, port);
}

static void assert_split_bad(const char *in, const char *msg)
{
	char h[64] = "x", p[16] = "y";
	const char *why = NULL;

	assert_int_equal(addr_split_hostport(in, h, sizeof h, p, sizeof p, &why), -1);
	assert_non_null(why);
	assert_string_equal(why, msg);
	assert_string_equal(h, "x");
	assert_string_equal(p, "y");
}

static void test_split_hostport(void **state)
{
	(void)state;
	assert_split("127.0.0.1:1143", "127.0.0.1", "1143");
	assert_split("[::1]:1143", "::1", "1143");
	assert_split("[2001:db8::1]:imap", "2001:db8::1", "imap");
	assert_split("[::]:993", "::", "993");
	assert_split("*:1143", "", "1143");
	assert_split(":1143", "", "1143");
	assert_split("1143", "", "1143");
	assert_split("imap.example.org:imaps", "imap.example.org", "imaps");

	assert_split_bad("[::1]", "expected ':PORT' after ']'");
	assert_split_bad("[::1]1143", "expected ':PORT' after ']'");
	assert_split_bad("[::1:1143", "missing ']'");
	assert_split_bad("[]:1143", "not an IPv6 address in [ ]");
	assert_split_bad("[1.2.3.4]:1143", "not an IPv6 address in [ ]");
	assert_split_bad("[host]:1143", "not an IPv6 address in [ ]");
	assert_split_bad("::1:1143", "an IPv6 address must be written in [ ]");
	assert_split_bad("1.2.3.4:", "missing port");
	assert_split_bad("[::1]:", "missing port");
	assert_split_bad("", "missing port");
	assert_split_bad("a b:1143", "bad host name");
	assert_split_bad("a/b:1143", "bad host name");
	assert_split_bad("**:1143", "bad host name");
	assert_split_bad("1.2.3.4:12345678901234567", "port too long");
	assert_split_bad("a123456789012345678901234567890123456789012345678901234567890123:1",
	                 "host name too long");

	char h[4], p[4];
	const char *why;
	assert_int_equal(addr_split_hostport("abc:123", h, sizeof h, p, sizeof p, &why), 0);
	assert_int_equal(addr_split_hostport("abcd:1", h, sizeof h, p, sizeof p, &why), -1);
	assert_string_equal(why, "host name too long");
	assert_int_equal(addr_split_hostport("a:1234", h, sizeof h, p, sizeof p, &why), -1);
	assert_string_equal(why, "port too long");
}

static void test_format(void **state)
{
	char buf[ADDR_STRLEN];
	(void)state;

	addr_format_ip(sa4("192.0.2.1", 143), buf, sizeof buf);
	assert_string_equal(buf, "192.0.2.1");
	assert_int_equal(addr_port((const struct sockaddr *)&ss), 143);
	addr_format_ip(sa6("2001:db8::1", 1143), buf, sizeof buf);
	assert_string_equal(buf, "2001:db8::1");
	assert_int_equal(addr_port((const struct sockaddr *)&ss), 1143);
	addr_format_ip(sa6("::ffff:192.0.2.7", 65535), buf, sizeof buf);
	assert_string_equal(buf, "192.0.2.7");
	assert_int_equal(addr_port((const struct sockaddr *)&ss), 65535);
	addr_format_ip(sa6("::1", 0), buf, sizeof buf);
	assert_string_equal(buf, "::1");

	char small[5];
	addr_format_ip(sa4("192.0.2.1", 1), small, sizeof small);
	assert_string_equal(small, "192.");
	memset(small, 'z', sizeof small);
	addr_format_ip(sa4("192.0.2.1", 1), small, 0);
	assert_int_equal(small[0], 'z');

	struct sockaddr_un un = {.sun_family = AF_UNIX};
	addr_format_ip((const struct sockaddr *)&un, buf, sizeof buf);
	assert_string_equal(buf, "?");
	assert_int_equal(addr_port((const struct sockaddr *)&un), 0);
}

static void test_client_key(void **state)
{
	uint8_t a[ADDR_CLIENT_KEY_LEN], b[ADDR_CLIENT_KEY_LEN];
	static const uint8_t v4[ADDR_CLIENT_KEY_LEN] = {4, 192, 0, 2, 7, 0, 0, 0, 0};
	static const uint8_t v6[ADDR_CLIENT_KEY_LEN] = {6, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2};
	(void)state;

	/* IPv4: the whole address, the port ignored; v4-mapped v6 is the same client. */
	addr_client_key(sa4("192.0.2.7", 143), a);
	assert_memory_equal(a, v4, sizeof v4);
	addr_client_key(sa6("::ffff:192.0.2.7", 993), b);
	assert_memory_equal(a, b, sizeof a);
	addr_client_key(sa4("192.0.2.8", 143), b);
	assert_memory_not_equal(a, b, sizeof a);

	/* IPv6: one /64 is one client, whatever its interface identifier... */
	addr_client_key(sa6("2001:db8:1:2::1", 1), a);
	assert_memory_equal(a, v6, sizeof v6);
	addr_client_key(sa6("2001:db8:1:2:ffff:ffff:ffff:ffff", 2), b);
	assert_memory_equal(a, b, sizeof a);
	/* ...and the next /64 (a bit in the last byte of the prefix) another. */
	addr_client_key(sa6("2001:db8:1:3::1", 1), b);
	assert_memory_not_equal(a, b, sizeof a);
	addr_client_key(sa6("2001:db8:1:2::", 1), b);
	assert_memory_equal(a, b, sizeof a);

	/* Families never collide: 0.0.0.0 and :: differ in byte 0. */
	addr_client_key(sa4("0.0.0.0", 0), a);
	addr_client_key(sa6("::", 0), b);
	assert_memory_not_equal(a, b, sizeof a);
	addr_client_key(sa6("::1", 0), a);
	assert_memory_equal(a, b, sizeof a); /* ::1 and :: share ::/64 */

	struct sockaddr_un un = {.sun_family = AF_UNIX};
	memset(a, 0xaa, sizeof a);
	addr_client_key((const struct sockaddr *)&un, a);
	memset(b, 0, sizeof b);
	assert_memory_equal(a, b, sizeof a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cidr_parse_ok),  cmocka_unit_test(test_cidr_parse_bad),
		cmocka_unit_test(test_cidr_match),     cmocka_unit_test(test_cidr_list),
		cmocka_unit_test(test_split_hostport), cmocka_unit_test(test_format),
		cmocka_unit_test(test_client_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
