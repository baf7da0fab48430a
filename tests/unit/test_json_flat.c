/* Unit tests for the flattening JSON object reader. Every input is fed
 * whole, one byte at a time and in chunks of 2, 3 and 7 bytes; the five
 * runs must give the same callbacks, the same result and the same error. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "json_flat.h"

struct out {
	char s[8192];
	size_t len;
	int calls, stop_at; /* stop_at: refuse that call (1-based), 0 never */
};

static int collect(void *ctx, const char *key, size_t klen, enum json_type type, const char *val, size_t vlen)
{
	static const char *const names[] = { "s", "n", "t", "f", "z" };
	struct out *o = ctx;
	int n;

	assert_int_equal(strlen(key), klen); /* NUL-terminated, no inner NUL */
	assert_int_equal(strlen(val), vlen);
	n = snprintf(o->s + o->len, sizeof(o->s) - o->len, "%s=%s:%s\n", key, names[type], val);
	assert_true(n > 0 && (size_t)n < sizeof(o->s) - o->len);
	o->len += (size_t)n;
	return ++o->calls == o->stop_at ? -1 : 0;
}

/* Parse s in chunks of chunk bytes (0: whole); rc of feed+finish. */
static int run_chunked(const char *s, size_t n, size_t chunk, struct out *o, const char **err)
{
	struct json_flat j;
	size_t off = 0;
	int rc = 0;

	json_flat_init(&j, collect, o);
	while (rc == 0 && off < n) {
		size_t take = chunk == 0 || n - off < chunk ? n - off : chunk;

		rc = json_flat_feed(&j, s + off, take);
		off += take;
	}
	if (rc == 0)
		rc = json_flat_finish(&j);
	else
		assert_int_equal(json_flat_finish(&j), -1);
	*err = rc == 0 ? NULL : j.error;
	if (rc != 0)
		assert_non_null(j.error);
	return rc;
}

static struct out result;
static const char *result_err;

/* Parse n bytes five ways, leave the whole-fed result in result. */
static int parse_n(const char *s, size_t n, int stop_at)
{
	static const size_t chunks[] = { 1, 2, 3, 7 };
	int rc;

	memset(&result, 0, sizeof(result));
	result.stop_at = stop_at;
	rc = run_chunked(s, n, 0, &result, &result_err);
	for (size_t i = 0; i < 4; i++) {
		struct out o;
		const char *err;

		memset(&o, 0, sizeof(o));
		o.stop_at = stop_at;
		assert_int_equal(run_chunked(s, n, chunks[i], &o, &err), rc);
		assert_string_equal(o.s, result.s);
		if (rc != 0)
			assert_string_equal(err, result_err);
	}
	return rc;
}

static void ok(const char *s, const char *want)
{
	if (parse_n(s, strlen(s), 0) != 0)
		fail_msg("refused (%s): %s", result_err, s);
	assert_string_equal(result.s, want);
}

static void bad(const char *s, const char *why)
{
	if (parse_n(s, strlen(s), 0) != -1)
		fail_msg("accepted: %s", s);
	if (why != NULL && strstr(result_err, why) == NULL)
		fail_msg("error \"%s\", want \"%s\" for: %s", result_err, why, s);
}

static void test_dovecot_requests(void **state)
{
	(void)state;
	ok("{\"device_id\":\"\",\"login\":\"john\",\"protocol\":\"imap\",\"pwhash\":\"0352\","
	   "\"remote\":\"192.0.2.7\",\"session_id\":\"AbCd\",\"tls\":false,\"success\":true,"
	   "\"policy_reject\":false}",
	   "device_id=s:\nlogin=s:john\nprotocol=s:imap\npwhash=s:0352\nremote=s:192.0.2.7\n"
	   "session_id=s:AbCd\ntls=f:false\nsuccess=t:true\npolicy_reject=f:false\n");
	/* 2.4 with fail_type, and an attribute named attrs/cos. */
	ok("{\"attrs\":{\"cos\":\"gold\",\"x\":{\"y\":\"z\"}},\"fail_type\":\"credentials\",\"login\":\"j\","
	   "\"tls\":true}\r\n",
	   "attrs/cos=s:gold\nattrs/x/y=s:z\nfail_type=s:credentials\nlogin=s:j\ntls=t:true\n");
}

static void test_scalars(void **state)
{
	(void)state;
	ok(" \t\r\n{ \"a\" : null ,\n\"b\":true,\"c\":false } \n", "a=z:null\nb=t:true\nc=f:false\n");
	ok("{\"n\":0,\"m\":-0,\"o\":12,\"p\":-3.25,\"q\":1e5,\"r\":1E+2,\"s\":0.5e-10,\"t\":-0.0}",
	   "n=n:0\nm=n:-0\no=n:12\np=n:-3.25\nq=n:1e5\nr=n:1E+2\ns=n:0.5e-10\nt=n:-0.0\n");
	ok("{\"n\":7}", "n=n:7\n");
	ok("{}", "");
	ok("{\"e\":{},\"k\":\"v\"}", "k=s:v\n"); /* empty nested objects say nothing */
	ok("{\"\":\"\"}", "=s:\n");
	ok("{\"a\":1,\"a\":2}", "a=n:1\na=n:2\n"); /* duplicates passed through */
	ok("{\"a\":{\"\":1}}", "a/=n:1\n");
}

static void test_strings(void **state)
{
	(void)state;
	ok("{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}", "s=s:\"\\/\b\f\n\r\t\n");
	ok("{\"s\":\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\"}", "s=s:A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\n");
	ok("{\"s\":\"\\uDBFF\\uDFFF\"}", "s=s:\xf4\x8f\xbf\xbf\n");
	/* Raw UTF-8 at the edges of every range. */
	ok("{\"s\":\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\x7f\"}",
	   "s=s:\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\x7f\n");
	ok("{\"k\\u00e9y\":\"v\"}", "k\xc3\xa9y=s:v\n"); /* escapes in keys too */
	ok("{\"a/b\":1}", "a/b=n:1\n");
}

static void test_syntax_errors(void **state)
{
	(void)state;
	bad("", "incomplete");
	bad("   ", "incomplete");
	bad("{", "incomplete");
	bad("{\"a\":\"b\"", "incomplete");
	bad("{\"a\":{\"b\":1}", "incomplete");
	bad("{\"a\":1", "incomplete");
	bad("{\"a\":tru", "incomplete");
	bad("[1]", "not an object");
	bad("\"s\"", "not an object");
	bad("1", "not an object");
	bad("{\"a\":[1,2]}", "arrays are not supported");
	bad("{\"a\":1}{}", "after the JSON object");
	bad("{\"a\":1} x", "after the JSON object");
	bad("{\"a\":1,}", "member name");
	bad("{,}", "member name");
	bad("{a:1}", "member name");
	bad("{'a':1}", "member name");
	bad("{\"a\" 1}", "':'");
	bad("{\"a\":}", "expected a JSON value");
	bad("{\"a\":1 \"b\":2}", "',' or '}'");
	bad("{\"a\":truex}", "',' or '}'");
	bad("{\"a\":tRue}", "literal");
	bad("{\"a\":nul}", "literal");
	bad("{\"a\":True}", "value");
	bad("{\"a\":01}", "leading zero");
	bad("{\"a\":-}", "number");
	bad("{\"a\":1.}", "number");
	bad("{\"a\":.5}", "value");
	bad("{\"a\":+1}", "value");
	bad("{\"a\":1e}", "number");
	bad("{\"a\":1e+}", "number");
	bad("{\"a\":0x1}", "',' or '}'");
	bad("{\"a\":NaN}", "value");
	assert_int_equal(parse_n("{\"a\":1}\0", 8, 0), -1);
	assert_non_null(strstr(result_err, "after"));
	assert_int_equal(parse_n("{\"a\":\"\0\"}", 9, 0), -1);
	assert_non_null(strstr(result_err, "control character"));
}

static void test_string_errors(void **state)
{
	(void)state;
	bad("{\"a\":\"x\ty\"}", "control character");
	bad("{\"a\":\"x\ny\"}", "control character");
	bad("{\"a\":\"\\x\"}", "bad escape");
	bad("{\"a\":\"\\U0041\"}", "bad escape");
	bad("{\"a\":\"\\u00g1\"}", "\\u escape");
	bad("{\"a\":\"\\u0000\"}", "NUL");
	bad("{\"a\":\"\\ud83d\"}", "surrogate");
	bad("{\"a\":\"\\ud83dx\"}", "surrogate");
	bad("{\"a\":\"\\ud83d\\n\"}", "surrogate");
	bad("{\"a\":\"\\ud83d\\u0041\"}", "surrogate");
	bad("{\"a\":\"\\ude00\"}", "surrogate");
	bad("{\"a\":\"\\ud83d\\ud83d\"}", "surrogate");
	bad("{\"a\":\"\x80\"}", "UTF-8");         /* lone continuation */
	bad("{\"a\":\"\xc0\xaf\"}", "UTF-8");     /* overlong '/' */
	bad("{\"a\":\"\xc1\xbf\"}", "UTF-8");
	bad("{\"a\":\"\xe0\x9f\xbf\"}", "UTF-8"); /* overlong 3 bytes */
	bad("{\"a\":\"\xed\xa0\x80\"}", "UTF-8"); /* encoded surrogate */
	bad("{\"a\":\"\xf0\x8f\xbf\xbf\"}", "UTF-8");
	bad("{\"a\":\"\xf4\x90\x80\x80\"}", "UTF-8"); /* above U+10FFFF */
	bad("{\"a\":\"\xf5\x80\x80\x80\"}", "UTF-8");
	bad("{\"a\":\"\xff\"}", "UTF-8");
	bad("{\"a\":\"\xc3\"}", "UTF-8"); /* truncated by the quote */
	bad("{\"a\":\"\xe2\x82\"}", "UTF-8");
	bad("{\"\xc3\":1}", "UTF-8");
}

static void test_limits(void **state)
{
	char s[4096], want[4096];
	int rc;

	(void)state;
	/* A 128-byte key passes, 129 does not. */
	snprintf(s, sizeof(s), "{\"%0128d\":1}", 0);
	snprintf(want, sizeof(want), "%0128d=n:1\n", 0);
	ok(s, want);
	snprintf(s, sizeof(s), "{\"%0129d\":1}", 0);
	bad(s, "key too long");
	/* The limit is on the flattened key. */
	snprintf(s, sizeof(s), "{\"%0100d\":{\"%027d\":1}}", 0, 0);
	snprintf(want, sizeof(want), "%0100d/%027d=n:1\n", 0, 0);
	ok(s, want);
	snprintf(s, sizeof(s), "{\"%0100d\":{\"%028d\":1}}", 0, 0);
	bad(s, "key too long");
	/* A 1024-byte value passes, 1025 does not; after unescaping. */
	snprintf(s, sizeof(s), "{\"v\":\"%01024d\"}", 0);
	snprintf(want, sizeof(want), "v=s:%01024d\n", 0);
	ok(s, want);
	snprintf(s, sizeof(s), "{\"v\":\"%01025d\"}", 0);
	bad(s, "value too long");
	snprintf(s, sizeof(s), "{\"v\":\"%01022d\\u00e9\"}", 0); /* 1022 + 2 bytes */
	snprintf(want, sizeof(want), "v=s:%01022d\xc3\xa9\n", 0);
	ok(s, want);
	snprintf(s, sizeof(s), "{\"v\":\"%01023d\\u00e9\"}", 0);
	bad(s, "value too long");
	snprintf(s, sizeof(s), "{\"v\":1%01024d}", 0);
	bad(s, "value too long");
	/* Four levels of objects, not five. */
	ok("{\"a\":{\"b\":{\"c\":{\"d\":true}}}}", "a/b/c/d=t:true\n");
	bad("{\"a\":{\"b\":{\"c\":{\"d\":{}}}}}", "nested too deep");
	/* Depth goes back down: siblings after a deep branch. */
	ok("{\"a\":{\"b\":{\"c\":{\"d\":1}},\"e\":2},\"f\":3}", "a/b/c/d=n:1\na/e=n:2\nf=n:3\n");
	rc = parse_n("{\"a\":1}", 7, 0);
	assert_int_equal(rc, 0);
}

static void test_callback_stops(void **state)
{
	(void)state;
	assert_int_equal(parse_n("{\"a\":1,\"b\":\"x\",\"c\":true}", 24, 2), -1);
	assert_string_equal(result.s, "a=n:1\nb=s:x\n");
	assert_non_null(strstr(result_err, "refused"));
	/* A number is reported when the byte after it arrives. */
	assert_int_equal(parse_n("{\"a\":12}", 8, 1), -1);
	assert_string_equal(result.s, "a=n:12\n");
}

static void test_offset_and_sticky_error(void **state)
{
	struct json_flat j;
	struct out o;

	(void)state;
	memset(&o, 0, sizeof(o));
	json_flat_init(&j, collect, &o);
	assert_int_equal(json_flat_feed(&j, "{\"a\":1", 6), 0);
	assert_int_equal(j.offset, 6);
	assert_int_equal(json_flat_feed(&j, "x}", 2), -1);
	assert_int_equal(j.offset, 6); /* the 'x' */
	assert_int_equal(json_flat_feed(&j, "}", 1), -1);
	assert_int_equal(json_flat_finish(&j), -1);
	assert_non_null(strstr(j.error, "',' or '}'"));
	/* A NULL callback just checks the syntax. */
	json_flat_init(&j, NULL, NULL);
	assert_int_equal(json_flat_feed(&j, "{\"a\":[", 6), -1);
	json_flat_init(&j, NULL, NULL);
	assert_int_equal(json_flat_feed(&j, "{\"a\":1}", 7), 0);
	assert_int_equal(json_flat_finish(&j), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dovecot_requests),       cmocka_unit_test(test_scalars),
		cmocka_unit_test(test_strings),                cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_string_errors),          cmocka_unit_test(test_limits),
		cmocka_unit_test(test_callback_stops),         cmocka_unit_test(test_offset_and_sticky_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
