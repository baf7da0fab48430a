/* Unit tests for the HTTP/1.1 request parser. Every input is fed whole,
 * one byte at a time and in chunks of 2, 3 and 7 bytes; all five runs must
 * agree on the state, the bytes used and every result field. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "http_req.h"

static struct http_req *req[5];
static const size_t chunks[5] = { 0, 1, 2, 3, 7 };

static int setup(void **state)
{
	(void)state;
	for (int i = 0; i < 5; i++)
		if ((req[i] = malloc(sizeof(struct http_req))) == NULL)
			return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	for (int i = 0; i < 5; i++)
		free(req[i]);
	return 0;
}

/* Feed s in pieces of chunk bytes (0: all at once) until not MORE. */
static enum http_req_state feed_chunked(struct http_req *r, const char *s, size_t n, size_t chunk, size_t *used)
{
	enum http_req_state st = HTTP_REQ_MORE;
	size_t off = 0;

	*used = 0;
	while (st == HTTP_REQ_MORE && off < n) {
		size_t take = chunk == 0 || n - off < chunk ? n - off : chunk, u = 99999;

		st = http_req_feed(r, s + off, take, &u);
		assert_true(u <= take);
		if (st == HTTP_REQ_MORE)
			assert_int_equal(u, take);
		off += u;
		*used += u;
	}
	return st;
}

static void same_result(const struct http_req *a, const struct http_req *b)
{
	assert_int_equal(a->state, b->state);
	if (a->state == HTTP_REQ_ERROR) {
		assert_int_equal(a->status, b->status);
		assert_string_equal(a->error, b->error);
	} else if (a->state == HTTP_REQ_DONE) {
		assert_string_equal(a->method, b->method);
		assert_string_equal(a->path, b->path);
		assert_string_equal(a->query, b->query);
		assert_int_equal(a->version_minor, b->version_minor);
		assert_int_equal(a->keep_alive, b->keep_alive);
		assert_int_equal(a->body_len, b->body_len);
		assert_memory_equal(a->body, b->body, a->body_len);
		assert_int_equal(a->nfields, b->nfields);
	}
}

/* Parse s (n bytes) five ways; returns the whole-fed request. */
static struct http_req *parse_n(const char *s, size_t n, enum http_req_state want, size_t *used_r)
{
	size_t used[5];

	for (int i = 0; i < 5; i++) {
		http_req_init(req[i]);
		assert_int_equal(feed_chunked(req[i], s, n, chunks[i], &used[i]), want);
		assert_int_equal(used[i], used[0]);
		same_result(req[0], req[i]);
	}
	if (used_r != NULL)
		*used_r = used[0];
	return req[0];
}

static struct http_req *parse(const char *s, enum http_req_state want)
{
	return parse_n(s, strlen(s), want, NULL);
}

static void expect_error(const char *s, int status)
{
	struct http_req *r = parse(s, HTTP_REQ_ERROR);

	if (r->status != status)
		fail_msg("status %d (%s), want %d for: %s", r->status, r->error, status, s);
	assert_non_null(r->error);
}

#define DOVECOT_BODY                                                                                    \
	"{\"device_id\":\"\",\"login\":\"john\",\"protocol\":\"imap\",\"pwhash\":\"0352\",\"remote\":" \
	"\"192.0.2.7\",\"session_id\":\"AbCd\",\"tls\":false}"

/* What Dovecot 2.3's auth policy client sends for an allow check. */
static const char dovecot_allow[] = "POST /?command=allow HTTP/1.1\r\n"
                                    "Host: 127.0.0.1:8089\r\n"
                                    "Date: Mon, 02 Jun 2025 10:00:00 GMT\r\n"
                                    "User-Agent: dovecot/auth-policy-client\r\n"
                                    "X-API-Key:  s3cret\r\n"
                                    "Content-Type: application/json\r\n"
                                    "Content-Length: 118\r\n"
                                    "\r\n" DOVECOT_BODY;

static void test_dovecot_allow(void **state)
{
	struct http_req *r;
	size_t used, vlen;
	const char *v;

	(void)state;
	assert_int_equal(strlen(DOVECOT_BODY), 118);
	r = parse_n(dovecot_allow, strlen(dovecot_allow), HTTP_REQ_DONE, &used);
	assert_int_equal(used, strlen(dovecot_allow));
	assert_string_equal(r->method, "POST");
	assert_int_equal(r->method_len, 4);
	assert_string_equal(r->path, "/");
	assert_int_equal(r->path_len, 1);
	assert_string_equal(r->query, "command=allow");
	assert_int_equal(r->query_len, 13);
	assert_int_equal(r->version_minor, 1);
	assert_true(r->keep_alive);
	assert_int_equal(r->body_len, 118);
	assert_string_equal(r->body, DOVECOT_BODY);
	/* Two spaces after the colon, and any case for the name. */
	v = http_req_header(r, "x-api-key", &vlen);
	assert_non_null(v);
	assert_string_equal(v, "s3cret");
	assert_int_equal(vlen, 6);
	assert_string_equal(http_req_header(r, "USER-AGENT", NULL), "dovecot/auth-policy-client");
	assert_string_equal(http_req_header(r, "Content-Type", NULL), "application/json");
	assert_null(http_req_header(r, "Authorization", &vlen));
	assert_null(http_req_header(r, "X-API-Ke", &vlen));
	assert_true(http_query_param(r->query, r->query_len, "command", &v, &vlen));
	assert_int_equal(vlen, 5);
	assert_memory_equal(v, "allow", 5);
	/* Once done, more bytes are not taken. */
	assert_int_equal(http_req_feed(r, "GET", 3, &used), HTTP_REQ_DONE);
	assert_int_equal(used, 0);
}

static void test_keep_alive_pipelined(void **state)
{
	char two[1024];
	const char *report = "POST /policy?x=1&command=report HTTP/1.1\r\nHost: h\r\nContent-Length: 28\r\n"
	                     "Connection: close\r\n\r\n{\"success\":false,\"tls\":true}\r\n";
	size_t first = strlen(dovecot_allow), used, vlen;
	struct http_req *r;
	const char *v;

	(void)state;
	snprintf(two, sizeof(two), "%s%s", dovecot_allow, report);
	for (int i = 0; i < 5; i++) {
		size_t u;

		http_req_init(req[i]);
		assert_int_equal(feed_chunked(req[i], two, strlen(two), chunks[i], &u), HTTP_REQ_DONE);
		assert_int_equal(u, first);
		assert_string_equal(req[i]->query, "command=allow");
		assert_true(req[i]->keep_alive);
		http_req_reset(req[i]);
		assert_int_equal(feed_chunked(req[i], two + first, strlen(two) - first, chunks[i], &u),
		                 HTTP_REQ_DONE);
		/* The body is 28 bytes: the CRLF after it is not this request's. */
		assert_int_equal(u, strlen(report) - 2);
		assert_string_equal(req[i]->path, "/policy");
		assert_int_equal(req[i]->body_len, 28);
		assert_false(req[i]->keep_alive);
		assert_true(http_query_param(req[i]->query, req[i]->query_len, "command", &v, &vlen));
		assert_int_equal(vlen, 6);
		assert_memory_equal(v, "report", 6);
		/* The stray CRLF is skipped as an empty line before a third one. */
		http_req_reset(req[i]);
		assert_int_equal(feed_chunked(req[i], "\r\nGET / HTTP/1.0\r\n\r\n", 20, chunks[i], &u),
		                 HTTP_REQ_DONE);
		assert_int_equal(u, 20);
	}
	r = req[0];
	http_req_reset(r);
	assert_int_equal(http_req_feed(r, "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET", 30, &used), HTTP_REQ_DONE);
	assert_int_equal(used, 27);
}

static void test_connection_semantics(void **state)
{
	struct http_req *r;

	(void)state;
	r = parse("GET / HTTP/1.0\r\n\r\n", HTTP_REQ_DONE);
	assert_int_equal(r->version_minor, 0);
	assert_false(r->keep_alive);
	r = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", HTTP_REQ_DONE);
	assert_true(r->keep_alive);
	r = parse("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", HTTP_REQ_DONE);
	assert_false(r->keep_alive);
	r = parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: TE,  CLOSE \r\n\r\n", HTTP_REQ_DONE);
	assert_false(r->keep_alive);
	r = parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\nConnection: x\r\n\r\n", HTTP_REQ_DONE);
	assert_true(r->keep_alive);
	r = parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: close\r\n\r\n", HTTP_REQ_DONE);
	assert_false(r->keep_alive);
}

static void test_shapes(void **state)
{
	struct http_req *r;
	size_t vlen;

	(void)state;
	/* GET without a body; no query; a leading empty line skipped. */
	r = parse("\r\nGET /status HTTP/1.1\r\nHost: x\r\n\r\n", HTTP_REQ_DONE);
	assert_string_equal(r->method, "GET");
	assert_string_equal(r->path, "/status");
	assert_string_equal(r->query, "");
	assert_int_equal(r->query_len, 0);
	assert_int_equal(r->body_len, 0);
	assert_string_equal(r->body, "");
	/* Empty query after '?'; percent-escapes kept as they are. */
	r = parse("GET /a%20b? HTTP/1.1\r\nHost: x\r\n\r\n", HTTP_REQ_DONE);
	assert_string_equal(r->path, "/a%20b");
	assert_string_equal(r->query, "");
	/* A POST with Content-Length: 0; the same Content-Length twice. */
	r = parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", HTTP_REQ_DONE);
	assert_int_equal(r->body_len, 0);
	r = parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length:3\r\n\r\nabc", HTTP_REQ_DONE);
	assert_string_equal(r->body, "abc");
	r = parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 003\r\n\r\nabc", HTTP_REQ_DONE);
	assert_int_equal(r->body_len, 3);
	/* Tabs trimmed, inner spaces kept, empty values, obs-text allowed. */
	r = parse("GET / HTTP/1.1\r\nHost: x\r\nX-A:\t a  b \t\r\nX-Empty:\r\nX-Hi: \xc3\xa9\r\n\r\n",
	          HTTP_REQ_DONE);
	assert_string_equal(http_req_header(r, "x-a", &vlen), "a  b");
	assert_int_equal(vlen, 4);
	assert_string_equal(http_req_header(r, "X-Empty", &vlen), "");
	assert_int_equal(vlen, 0);
	assert_string_equal(http_req_header(r, "x-hi", NULL), "\xc3\xa9");
	/* A body holding NUL bytes is returned whole. */
	r = parse_n("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\na\0b", 50, HTTP_REQ_DONE, NULL);
	assert_int_equal(r->body_len, 3);
	assert_memory_equal(r->body, "a\0b", 3);
	/* Incomplete requests ask for more, at every stage. */
	parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nab", HTTP_REQ_MORE);
	parse("POST / HTTP/1.1\r\nHost: x\r\n", HTTP_REQ_MORE);
	parse("POST / HTTP/1.1\r", HTTP_REQ_MORE);
	parse("\r\n", HTTP_REQ_MORE);
}

static void test_errors(void **state)
{
	static const struct {
		const char *s;
		int status;
	} cases[] = {
		/* 400: syntax */
		{ "GET / HTTP/1.1\nHost: x\r\n\r\n", 400 },                  /* bare LF */
		{ "GET / HTTP/1.1\r\nHost: x\n\r\n", 400 },                  /* bare LF */
		{ "GET / HTTP/1.1\r\nHost: x\r\rn\r\n", 400 },                /* bare CR */
		{ "GET /\rx HTTP/1.1\r\nHost: x\r\n\r\n", 400 },             /* bare CR */
		{ "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400 },                /* two spaces */
		{ "GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400 },                /* trailing space */
		{ "GET /\r\n\r\n", 400 },                                    /* HTTP/0.9 */
		{ "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400 },                 /* method char */
		{ " GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400 },                /* empty method */
		{ "GET x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400 },                /* target */
		{ "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400 },                 /* asterisk-form */
		{ "GET http://a/ HTTP/1.1\r\nHost: x\r\n\r\n", 400 },         /* absolute-form */
		{ "GET /a#f HTTP/1.1\r\nHost: x\r\n\r\n", 400 },              /* fragment */
		{ "GET /a%2 HTTP/1.1\r\nHost: x\r\n\r\n", 400 },              /* short escape */
		{ "GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400 },             /* bad escape */
		{ "GET /a\"b HTTP/1.1\r\nHost: x\r\n\r\n", 400 },             /* quote */
		{ "GET / http/1.1\r\nHost: x\r\n\r\n", 400 },                 /* case */
		{ "GET / HTTP/1.10\r\nHost: x\r\n\r\n", 400 },
		{ "GET / HTTP/11\r\nHost: x\r\n\r\n", 400 },
		{ "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400 },        /* two empty lines */
		{ "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400 },                /* space before colon */
		{ "GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 400 },
		{ "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400 }, /* obs-fold */
		{ "GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400 },
		{ "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400 },
		{ "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", 400 },          /* empty name */
		{ "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01\r\n\r\n", 400 },   /* control char */
		{ "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7f\r\n\r\n", 400 },
		{ "GET / HTTP/1.1\r\n\r\n", 400 },                           /* no Host */
		{ "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400 },      /* two Hosts */
		{ "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", 400 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", 400 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", 400 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\n", 400 },
		/* 411, 413, 501, 505 */
		{ "POST /?command=allow HTTP/1.1\r\nHost: x\r\n\r\n{}", 411 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16385\r\n\r\n", 413 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 413 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501 },
		{ "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 501 },
		{ "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505 },
		{ "GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505 },
		{ "GET / HTTP/0.9\r\n\r\n", 505 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_error(cases[i].s, cases[i].status);
	/* After an error nothing more is taken. */
	{
		size_t used;

		assert_int_equal(http_req_feed(req[0], "GET", 3, &used), HTTP_REQ_ERROR);
		assert_int_equal(used, 0);
	}
}

/* Build "GET /aaa… HTTP/1.1" with a request line of exactly n bytes. */
static char *long_line(size_t n)
{
	char *s = malloc(n + 64);
	size_t t = n - strlen("GET  HTTP/1.1");

	assert_non_null(s);
	memcpy(s, "GET /", 5);
	memset(s + 5, 'a', t - 1);
	strcpy(s + 4 + t, " HTTP/1.1\r\nHost: x\r\n\r\n");
	return s;
}

static void test_request_line_limit(void **state)
{
	char *s;
	size_t used;
	struct http_req *r;

	(void)state;
	s = long_line(HTTP_REQ_LINE_MAX);
	r = parse(s, HTTP_REQ_DONE);
	assert_int_equal(r->path_len, HTTP_REQ_LINE_MAX - strlen("GET  HTTP/1.1"));
	free(s);
	s = long_line(HTTP_REQ_LINE_MAX + 1);
	r = parse_n(s, strlen(s), HTTP_REQ_ERROR, &used);
	assert_int_equal(r->status, 414);
	/* Refused at the first byte too many, not at the end of the line. */
	assert_int_equal(used, HTTP_REQ_LINE_MAX + 1);
	free(s);
}

/* A request whose header section (CRLFs included) is exactly n bytes. */
static char *big_headers(size_t n)
{
	const char *head = "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ";
	size_t hl = strlen(head) - strlen("GET / HTTP/1.1\r\n");
	size_t pad = n - hl - 2 - 2; /* the X-Pad CRLF, the final CRLF */
	char *s = malloc(n + 64);

	assert_non_null(s);
	strcpy(s, head);
	memset(s + strlen(head), 'p', pad);
	strcpy(s + strlen(head) + pad, "\r\n\r\n");
	return s;
}

static void test_header_limits(void **state)
{
	char *s;
	char buf[4096];
	size_t o;
	struct http_req *r;

	(void)state;
	s = big_headers(HTTP_REQ_HEADERS_MAX);
	r = parse(s, HTTP_REQ_DONE);
	assert_int_equal(strlen(http_req_header(r, "x-pad", NULL)), HTTP_REQ_HEADERS_MAX - strlen("Host: x\r\nX-Pad: \r\n\r\n"));
	free(s);
	s = big_headers(HTTP_REQ_HEADERS_MAX + 1);
	assert_int_equal(parse(s, HTTP_REQ_ERROR)->status, 431);
	free(s);
	/* 64 fields pass, 65 do not. */
	o = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: x\r\n");
	for (int i = 1; i < HTTP_REQ_FIELDS_MAX; i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, "X-F%d: %d\r\n", i, i);
	strcpy(buf + o, "\r\n");
	r = parse(buf, HTTP_REQ_DONE);
	assert_int_equal(r->nfields, HTTP_REQ_FIELDS_MAX);
	assert_string_equal(http_req_header(r, "x-f63", NULL), "63");
	strcpy(buf + o, "X-One: more\r\n\r\n");
	assert_int_equal(parse(buf, HTTP_REQ_ERROR)->status, 431);
}

static void test_body_limit(void **state)
{
	const char *head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16384\r\n\r\n";
	size_t hl = strlen(head), used;
	char *s = malloc(hl + HTTP_REQ_BODY_MAX + 10);
	struct http_req *r;

	(void)state;
	assert_non_null(s);
	memcpy(s, head, hl);
	memset(s + hl, 'b', HTTP_REQ_BODY_MAX + 10);
	r = parse_n(s, hl + HTTP_REQ_BODY_MAX + 10, HTTP_REQ_DONE, &used);
	assert_int_equal(used, hl + HTTP_REQ_BODY_MAX);
	assert_int_equal(r->body_len, HTTP_REQ_BODY_MAX);
	assert_int_equal(r->body[HTTP_REQ_BODY_MAX], '\0');
	free(s);
}

static void test_query_param(void **state)
{
	const char *q = "a=1&command=allow&empty=&flag&%63ommand=x&command=second&c%3Dd=e";
	const char *v;
	size_t vlen, n = strlen(q);

	(void)state;
	assert_true(http_query_param(q, n, "command", &v, &vlen));
	assert_int_equal(vlen, 5);
	assert_memory_equal(v, "allow", 5);
	assert_true(http_query_param(q, n, "a", &v, &vlen));
	assert_int_equal(vlen, 1);
	assert_true(http_query_param(q, n, "empty", &v, &vlen));
	assert_int_equal(vlen, 0);
	assert_true(http_query_param(q, n, "flag", &v, &vlen));
	assert_int_equal(vlen, 0);
	assert_true(http_query_param(q, n, "c%3Dd", &v, &vlen));
	assert_memory_equal(v, "e", 1);
	assert_false(http_query_param(q, n, "comm", &v, &vlen));
	assert_false(http_query_param(q, n, "", &v, &vlen));
	assert_false(http_query_param(q, n, "allow", &v, &vlen));
	assert_false(http_query_param("", 0, "command", &v, &vlen));
	assert_true(http_query_param("&&command=report&", 17, "command", &v, &vlen));
	assert_int_equal(vlen, 6);
	/* Only qlen bytes are looked at. */
	assert_false(http_query_param("command=allow", 6, "command", &v, &vlen));
	assert_true(http_query_param("command=allow", 9, "command", &v, &vlen));
	assert_int_equal(vlen, 1);
	assert_true(http_query_param("x=%zz%&command=a%20b", 20, "command", &v, &vlen));
	assert_int_equal(vlen, 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dovecot_allow),      cmocka_unit_test(test_keep_alive_pipelined),
		cmocka_unit_test(test_connection_semantics), cmocka_unit_test(test_shapes),
		cmocka_unit_test(test_errors),             cmocka_unit_test(test_request_line_limit),
		cmocka_unit_test(test_header_limits),      cmocka_unit_test(test_body_limit),
		cmocka_unit_test(test_query_param),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
