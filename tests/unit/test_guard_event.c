/* Unit tests for guard_event: every type round-trips field by field and
 * byte for byte, hostile user names survive, and decode refuses every
 * malformed line with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "guard_event.h"

static struct gev base(enum gev_type type, const char *prefix)
{
	struct gev e;
	const char *why;

	memset(&e, 0, sizeof e);
	e.type = type;
	strcpy(e.node, "nodeA");
	e.time = 1733390000;
	assert_int_equal(cidr_parse(prefix, &e.prefix, &why), 0);
	return e;
}

static void assert_same(const struct gev *a, const struct gev *b)
{
	assert_int_equal(a->type, b->type);
	assert_string_equal(a->node, b->node);
	assert_true(a->time == b->time);
	assert_int_equal(a->prefix.family, b->prefix.family);
	assert_int_equal(a->prefix.prefix, b->prefix.prefix);
	assert_memory_equal(a->prefix.addr, b->prefix.addr, sizeof a->prefix.addr);
	assert_string_equal(a->user, b->user);
	assert_int_equal(a->has_pwkey, b->has_pwkey);
	assert_memory_equal(a->pwkey, b->pwkey, GEV_PWKEY_LEN);
	assert_string_equal(a->proto, b->proto);
	assert_string_equal(a->reason, b->reason);
	assert_true(a->started == b->started);
	assert_true(a->expiry == b->expiry);
	assert_int_equal(a->ban_count, b->ban_count);
	assert_int_equal(a->source, b->source);
	assert_string_equal(a->ban_reason, b->ban_reason);
	assert_int_equal(a->forget, b->forget);
}

/* e encodes to want (when not NULL), decodes back to e, and re-encodes to the same bytes. */
static void round_trip(const struct gev *e, const char *want)
{
	char text[GEV_TEXT_MAX], again[GEV_TEXT_MAX];
	struct gev d;
	const char *why = NULL;
	int n = gev_encode(e, text, sizeof text);

	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(text));
	if (want)
		assert_string_equal(text, want);
	if (gev_decode(text, (size_t)n, &d, &why) != 0)
		fail_msg("decode refused its own encoding (%s): %s", why, text);
	assert_same(e, &d);
	assert_int_equal(gev_encode(&d, again, sizeof again), n);
	assert_string_equal(again, text);
}

static void test_failure(void **state)
{
	struct gev e = base(GEV_FAILURE, "192.0.2.7/32");
	static const uint8_t key[GEV_PWKEY_LEN] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};

	(void)state;
	strcpy(e.user, "alice@example.org");
	e.has_pwkey = true;
	memcpy(e.pwkey, key, sizeof key);
	strcpy(e.proto, "smtp");
	strcpy(e.reason, "auth_failed");
	round_trip(&e, "ig1 F nodeA 1733390000 192.0.2.7/32 alice@example.org 0123456789abcdef smtp auth_failed");

	/* Unknown password key, empty user and reason, an IPv6 /64. */
	e = base(GEV_FAILURE, "2001:db8:1:2::/64");
	strcpy(e.proto, "submission");
	round_trip(&e, "ig1 F nodeA 1733390000 2001:db8:1:2::/64 % - submission %");

	/* pwkey bytes without has_pwkey are not sent. */
	e.pwkey[0] = 0xff;
	{
		char text[GEV_TEXT_MAX];

		assert_true(gev_encode(&e, text, sizeof text) > 0);
		assert_string_equal(text, "ig1 F nodeA 1733390000 2001:db8:1:2::/64 % - submission %");
	}
}

static void test_success(void **state)
{
	struct gev e = base(GEV_SUCCESS, "10.0.0.0/8");

	(void)state;
	strcpy(e.user, "bob");
	round_trip(&e, "ig1 S nodeA 1733390000 10.0.0.0/8 bob");
	e = base(GEV_SUCCESS, "::1/128");
	strcpy(e.node, "mx-2.example_net");
	e.time = 0;
	round_trip(&e, "ig1 S mx-2.example_net 0 ::1/128 %");
}

static void test_ban(void **state)
{
	struct gev e = base(GEV_BAN, "198.51.100.0/24");

	(void)state;
	e.started = 1733390000;
	e.expiry = 1733393600;
	e.ban_count = 3;
	e.source = GUARD_SRC_AUTO;
	strcpy(e.ban_reason, "auth_failed");
	round_trip(&e, "ig1 B nodeA 1733390000 198.51.100.0/24 1733390000 1733393600 3 auto auth_failed");

	e = base(GEV_BAN, "2001:db8::/32");
	e.started = e.expiry = GEV_TIME_MAX;
	e.time = GEV_TIME_MAX;
	e.ban_count = GEV_BAN_COUNT_MAX;
	e.source = GUARD_SRC_MANUAL;
	strcpy(e.ban_reason, "spam run 100%");
	round_trip(&e, "ig1 B nodeA 1099511627776 2001:db8::/32 1099511627776 1099511627776 1000000 manual "
	               "spam%20run%20100%25");

	e = base(GEV_BAN, "0.0.0.0/0");
	round_trip(&e, "ig1 B nodeA 1733390000 0.0.0.0/0 0 0 0 auto %");
}

static void test_unban(void **state)
{
	struct gev e = base(GEV_UNBAN, "192.0.2.0/24");

	(void)state;
	round_trip(&e, "ig1 U nodeA 1733390000 192.0.2.0/24 keep");
	e = base(GEV_UNBAN, "fe80::/10");
	e.forget = true;
	round_trip(&e, "ig1 U nodeA 1733390000 fe80::/10 forget");
	/* IPv6 with an embedded IPv4 tail, as inet_ntop writes it. */
	e = base(GEV_UNBAN, "::1.2.3.4/128");
	e.forget = true;
	round_trip(&e, "ig1 U nodeA 1733390000 ::1.2.3.4/128 forget");
}

static void test_hostile_users(void **state)
{
	struct gev e = base(GEV_FAILURE, "2001:db8::/64");
	char all[GUARD_USER_MAX];
	char text[GEV_TEXT_MAX];
	struct gev d;
	const char *why;

	(void)state;
	strcpy(e.proto, "imap");
	strcpy(e.reason, "auth failed\t%");
	strcpy(e.user, "a b%c\r\n\"x\" ");
	round_trip(&e, "ig1 F nodeA 1733390000 2001:db8::/64 a%20b%25c%0D%0A\"x\"%20 - imap "
	               "auth%20failed%09%25");
	strcpy(e.user, "j\xc3\xbcrgen@m\xc3\xbcller.de");
	round_trip(&e, "ig1 F nodeA 1733390000 2001:db8::/64 j%C3%BCrgen@m%C3%BCller.de - imap "
	               "auth%20failed%09%25");
	strcpy(e.user, "%");
	round_trip(&e, NULL);
	strcpy(e.user, "%25");
	round_trip(&e, NULL);
	strcpy(e.user, "-");
	round_trip(&e, NULL);

	/* 255 bytes, every value 0x01..0xff once: the longest user, all escapes but the printable. */
	for (int i = 0; i < GUARD_USER_MAX - 1; i++)
		all[i] = (char)(i + 1);
	all[GUARD_USER_MAX - 1] = '\0';
	memcpy(e.user, all, sizeof all);
	e.has_pwkey = true;
	memset(e.pwkey, 0xff, sizeof e.pwkey);
	strcpy(e.node, "n23456789012345678901234567890123456789012345678901234567890123");
	strcpy(e.reason, "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80");
	strcpy(e.proto, "abcdefghijk");
	e.prefix.family = AF_INET6;
	memset(e.prefix.addr, 0xff, 16);
	e.prefix.addr[15] = 0xfe;
	e.prefix.prefix = 128;
	round_trip(&e, NULL);
	assert_true(gev_encode(&e, text, sizeof text) < GEV_TEXT_MAX);
	assert_int_equal(gev_decode(text, strlen(text), &d, &why), 0);
	assert_memory_equal(d.user, all, sizeof all);

	/* Every 255-byte run of a single byte still fits. */
	for (int c = 1; c < 256; c++) {
		memset(e.user, c, GUARD_USER_MAX - 1);
		round_trip(&e, NULL);
	}
}

static void test_encode_errors(void **state)
{
	struct gev ok = base(GEV_FAILURE, "192.0.2.7/32"), e;
	char text[GEV_TEXT_MAX];
	int n;

	(void)state;
	strcpy(ok.user, "alice");
	strcpy(ok.proto, "imap");
	strcpy(ok.reason, "auth_failed");
	n = gev_encode(&ok, text, sizeof text);
	assert_int_equal(n, (int)strlen("ig1 F nodeA 1733390000 192.0.2.7/32 alice - imap auth_failed"));

	/* Buffer too small: every size below n+1 fails, n+1 works. */
	for (int sz = 0; sz <= n; sz++) {
		memset(text, 'x', sizeof text);
		assert_int_equal(gev_encode(&ok, text, (size_t)sz), -1);
	}
	assert_int_equal(gev_encode(&ok, text, (size_t)n + 1), n);

	e = ok;
	e.type = 'X';
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e = ok;
	e.node[0] = '\0';
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e = ok;
	strcpy(e.node, "node A");
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e = ok;
	memset(e.node, 'a', sizeof e.node); /* no NUL */
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e = ok;
	e.time = GEV_TIME_MAX + 1;
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e = ok;
	e.prefix.addr[3] = 7;
	e.prefix.prefix = 24; /* host bits set */
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e = ok;
	e.prefix.prefix = 33;
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e = ok;
	e.prefix.family = AF_UNIX;
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e = ok;
	e.prefix.family = AF_INET6; /* ::ffff:c000:207/128 is stored as IPv4 */
	memset(e.prefix.addr, 0, 16);
	e.prefix.addr[10] = e.prefix.addr[11] = 0xff;
	memcpy(e.prefix.addr + 12, "\xc0\x00\x02\x07", 4);
	e.prefix.prefix = 128;
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e = ok;
	memset(e.user, 'u', sizeof e.user);
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e = ok;
	strcpy(e.proto, "IMAP");
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e = ok;
	e.proto[0] = '\0';
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e = ok;
	memset(e.reason, 'r', sizeof e.reason);
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);

	e = base(GEV_BAN, "192.0.2.0/24");
	e.started = 10;
	e.expiry = 9;
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e.expiry = GEV_TIME_MAX + 1;
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e.expiry = 10;
	e.ban_count = GEV_BAN_COUNT_MAX + 1;
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e.ban_count = 1;
	e.source = (enum guard_source)7;
	assert_int_equal(gev_encode(&e, text, sizeof text), -1);
	e.source = GUARD_SRC_MANUAL;
	assert_true(gev_encode(&e, text, sizeof text) > 0);
}

static void test_decode_errors(void **state)
{
	static const char *const bad[] = {
		"",
		"ig2 F nodeA 1 192.0.2.7/32 a - imap x",
		"IG1 S nodeA 1 192.0.2.7/32 a",
		"ig1",
		"ig1 X nodeA 1 192.0.2.7/32 a",
		"ig1 FS nodeA 1 192.0.2.7/32 a",
		"ig1 f nodeA 1 192.0.2.7/32 a - imap x",
		"ig1 S nodeA 1 192.0.2.7/32",                 /* too few */
		"ig1 S nodeA 1 192.0.2.7/32 a b",             /* too many */
		"ig1 F nodeA 1 192.0.2.7/32 a - imap",
		"ig1 B nodeA 1 192.0.2.0/24 1 2 3 auto x y",
		"ig1 U nodeA 1 192.0.2.0/24",
		"ig1 S nodeA 1 192.0.2.7/32 a ",              /* trailing space */
		" ig1 S nodeA 1 192.0.2.7/32 a",              /* leading space */
		"ig1 S nodeA  1 192.0.2.7/32 a",              /* double space */
		"ig1 S nodeA 1 192.0.2.7/32 a\n",             /* newline */
		"ig1\tS nodeA 1 192.0.2.7/32 a",              /* tab */
		"ig1 S n\xc3\xa9 1 192.0.2.7/32 a",           /* 8-bit byte */
		"ig1 S node/A 1 192.0.2.7/32 a",
		"ig1 S n234567890123456789012345678901234567890123456789012345678901234 1 192.0.2.7/32 a",
		"ig1 S nodeA +1 192.0.2.7/32 a",
		"ig1 S nodeA -1 192.0.2.7/32 a",
		"ig1 S nodeA 01 192.0.2.7/32 a",
		"ig1 S nodeA 1x 192.0.2.7/32 a",
		"ig1 S nodeA 1099511627777 192.0.2.7/32 a",   /* 2^40 + 1 */
		"ig1 S nodeA 99999999999999999999999 192.0.2.7/32 a",
		"ig1 S nodeA 1 192.0.2.7 a",                  /* no length */
		"ig1 S nodeA 1 192.0.2.7/24 a",               /* host bits */
		"ig1 S nodeA 1 192.0.2.0/33 a",
		"ig1 S nodeA 1 192.0.2.0/024 a",
		"ig1 S nodeA 1 2001:db8::/129 a",
		"ig1 S nodeA 1 2001:DB8::/64 a",              /* upper case */
		"ig1 S nodeA 1 2001:db8:0:0::/64 a",          /* not compressed */
		"ig1 S nodeA 1 ::ffff:192.0.2.7/128 a",       /* v4-mapped */
		"ig1 S nodeA 1 192.0.2.256/32 a",
		"ig1 S nodeA 1 example.org/32 a",
		"ig1 S nodeA 1 192.0.2.7/32 a%4",
		"ig1 S nodeA 1 192.0.2.7/32 a%",
		"ig1 S nodeA 1 192.0.2.7/32 a%zz",
		"ig1 S nodeA 1 192.0.2.7/32 a%c3",            /* lower-case hex */
		"ig1 S nodeA 1 192.0.2.7/32 a%00",
		"ig1 S nodeA 1 192.0.2.7/32 %41",             /* needless escape */
		"ig1 S nodeA 1 192.0.2.7/32 %%",
		"ig1 S nodeA 1 192.0.2.7/32 alice%40example.org", /* '@' is printable: never escaped */
		"ig1 F nodeA 1 192.0.2.7/32 a 0123456789ABCDEF imap x",
		"ig1 F nodeA 1 192.0.2.7/32 a 0123456789abcde imap x",
		"ig1 F nodeA 1 192.0.2.7/32 a 0123456789abcdef0 imap x",
		"ig1 F nodeA 1 192.0.2.7/32 a 0123456789abcdeg imap x",
		"ig1 F nodeA 1 192.0.2.7/32 a -- imap x",
		"ig1 F nodeA 1 192.0.2.7/32 a - IMAP x",
		"ig1 F nodeA 1 192.0.2.7/32 a - im_ap x",
		"ig1 F nodeA 1 192.0.2.7/32 a - abcdefghijkl x", /* 12 bytes */
		"ig1 F nodeA 1 192.0.2.7/32 a - % x",
		"ig1 F nodeA 1 192.0.2.7/32 a - imap 0123456789abcdef", /* reason 16 bytes */
		"ig1 B nodeA 1 192.0.2.0/24 2 1 1 auto x",    /* expiry < started */
		"ig1 B nodeA 1 192.0.2.0/24 1 1099511627777 1 auto x",
		"ig1 B nodeA 1 192.0.2.0/24 1 2 1000001 auto x",
		"ig1 B nodeA 1 192.0.2.0/24 1 2 1 Auto x",
		"ig1 B nodeA 1 192.0.2.0/24 1 2 1 0 x",
		"ig1 U nodeA 1 192.0.2.0/24 yes",
		"ig1 U nodeA 1 192.0.2.0/24 Forget",
	};
	struct gev e;
	char big[GEV_TEXT_MAX + 8];
	char user[2 * GUARD_USER_MAX];
	const char *why;

	(void)state;
	assert_true(sizeof bad / sizeof bad[0] >= 25);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		why = NULL;
		if (gev_decode(bad[i], strlen(bad[i]), &e, &why) != -1)
			fail_msg("accepted: %s", bad[i]);
		if (why == NULL)
			fail_msg("no reason for: %s", bad[i]);
	}

	/* A NUL byte inside (len counts it). */
	why = NULL;
	assert_int_equal(gev_decode("ig1 S nodeA 1 192.0.2.7/32 a\0b", 30, &e, &why), -1);
	assert_non_null(why);

	/* A user of 256 bytes. */
	memset(user, 'u', GUARD_USER_MAX);
	user[GUARD_USER_MAX] = '\0';
	snprintf(big, sizeof big, "ig1 S nodeA 1 192.0.2.7/32 %s", user);
	why = NULL;
	assert_int_equal(gev_decode(big, strlen(big), &e, &why), -1);
	assert_string_equal(why, "string too long");
	/* ...and of 255 is fine. */
	big[strlen(big) - 1] = '\0';
	assert_int_equal(gev_decode(big, strlen(big), &e, &why), 0);
	assert_int_equal(strlen(e.user), GUARD_USER_MAX - 1);

	/* Longer than any encoding. */
	memset(big, 'a', sizeof big);
	memcpy(big, "ig1 S nodeA 1 192.0.2.7/32 ", 27);
	why = NULL;
	assert_int_equal(gev_decode(big, GEV_TEXT_MAX, &e, &why), -1);
	assert_string_equal(why, "line too long");

	/* Reasons name the problem. */
	assert_int_equal(gev_decode("ig2 S nodeA 1 192.0.2.7/32 a", 28, &e, &why), -1);
	assert_string_equal(why, "unknown version (not ig1)");
	assert_int_equal(gev_decode("ig1 Q nodeA 1 192.0.2.7/32 a", 28, &e, &why), -1);
	assert_string_equal(why, "unknown event type");
}

/* The decoder reads only len bytes: a line cut short is judged as cut. */
static void test_length_bound(void **state)
{
	static const char line[] = "ig1 U nodeA 1733390000 192.0.2.0/24 forgetXYZ";
	struct gev e;
	const char *why;

	(void)state;
	assert_int_equal(gev_decode(line, sizeof line - 4, &e, &why), 0);
	assert_true(e.forget);
	assert_int_equal(gev_decode(line, sizeof line - 1, &e, &why), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_failure),        cmocka_unit_test(test_success),
		cmocka_unit_test(test_ban),            cmocka_unit_test(test_unban),
		cmocka_unit_test(test_hostile_users),  cmocka_unit_test(test_encode_errors),
		cmocka_unit_test(test_decode_errors),  cmocka_unit_test(test_length_bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
