/* Unit tests for preauth_decode: ID, LOGIN and SASL decoding without a
 * session. Commands come from imap_parser, as in the daemon. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_parser.h"
#include "preauth_decode.h"

static const struct imap_parser_limits lim = {.max_line = 8192, .max_literal = 8192, .max_total = 32768};

/* Parses one command (literals given with {n+}); the parser must be freed. */
static struct imap_parser *parse(const char *in, size_t len, struct imap_command *cmd)
{
	struct imap_parser *p = imap_parser_new(&lim);
	size_t used;

	assert_non_null(p);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in, len, &used, cmd), IMAP_PARSE_COMMAND);
	return p;
}

/* The fields ID passes on (or the BAD text), as one string. */
static void check_id(const char *in, size_t len, bool trusted, bool own, const char *fields, const char *err)
{
	struct imap_command cmd;
	struct imap_parser *p = parse(in, len, &cmd);
	struct preauth_id id;
	const char *e = preauth_decode_id(&cmd, trusted, own, &id);

	if (err) {
		assert_non_null(e);
		assert_string_equal(e, err);
		assert_null(id.fields);
	} else {
		assert_null(e);
		if (fields)
			assert_string_equal(id.fields, fields);
		else
			assert_null(id.fields);
		preauth_id_free(&id);
	}
	imap_parser_free(&p);
}

#define ID(in, trusted, own, fields, err) check_id(in, sizeof(in) - 1, trusted, own, fields, err)

static void test_id_fields(void **state)
{
	(void)state;
	ID("a ID NIL\r\n", false, false, NULL, NULL);
	ID("a ID ()\r\n", false, false, NULL, NULL);
	ID("a ID (\"name\" \"x\\\"y\" os NIL \"v\" {3+}\r\na\\b)\r\n", false, false,
	   "\"name\" \"x\\\"y\" \"os\" NIL \"v\" \"a\\\\b\"", NULL);
	/* Address fields only from a trusted sender, and x-originating-* not
	 * when imapgate sends its own. */
	ID("a ID (\"name\" \"n\" \"X-Originating-IP\" \"192.0.2.1\" \"x-session-id\" \"s\")\r\n", false, false,
	   "\"name\" \"n\"", NULL);
	ID("a ID (\"x-originating-ip\" \"192.0.2.1\" \"x-session-id\" \"s\")\r\n", true, false,
	   "\"x-originating-ip\" \"192.0.2.1\" \"x-session-id\" \"s\"", NULL);
	ID("a ID (\"x-originating-ip\" \"192.0.2.1\" \"x-session-id\" \"s\")\r\n", true, true, "\"x-session-id\" \"s\"",
	   NULL);
	ID("a ID (\"x-originating-ip\" \"192.0.2.1\")\r\n", false, false, NULL, NULL);
	/* Shapes and bounds. */
	ID("a ID\r\n", false, false, NULL, "Invalid ID arguments");
	ID("a ID (\"a\")\r\n", false, false, NULL, "Invalid ID arguments");
	ID("a ID (NIL \"a\")\r\n", false, false, NULL, "Invalid ID arguments");
	ID("a ID (\"\" \"a\")\r\n", false, false, NULL, "Invalid ID arguments");
	ID("a ID ((\"a\") \"a\")\r\n", false, false, NULL, "Invalid ID arguments");
	ID("a ID (\"a\" {3+}\r\na\0b)\r\n", false, false, NULL, "ID strings may not contain NUL, CR or LF");
	ID("a ID (\"a\" {3+}\r\na\r\n)\r\n", false, false, NULL, "ID strings may not contain NUL, CR or LF");
}

static void test_id_origin(void **state)
{
	static const char in[] = "a ID (\"x-originating-ip\" \"192.0.2.1\" \"x-originating-port\" \"4711\")\r\n";
	struct imap_command cmd;
	struct imap_parser *p = parse(in, sizeof(in) - 1, &cmd);
	struct preauth_id id;

	(void)state;
	assert_null(preauth_decode_id(&cmd, true, true, &id));
	assert_non_null(id.origin_ip);
	assert_string_equal(id.origin_ip->data, "192.0.2.1");
	assert_string_equal(id.origin_port->data, "4711");
	assert_null(id.fields);
	assert_false(id.ignored);
	preauth_id_free(&id);
	assert_null(preauth_decode_id(&cmd, false, false, &id));
	assert_null(id.origin_ip);
	assert_true(id.ignored);
	preauth_id_free(&id);
	imap_parser_free(&p);
}

/* A maximal ID (RFC 2971 section 3.3), every octet needing an escape. */
static void test_id_maximal(void **state)
{
	size_t cap = 70000, n = 0;
	char *in = malloc(cap);
	struct imap_command cmd;
	struct imap_parser *p;
	struct preauth_id id;

	(void)state;
	assert_non_null(in);
	n += (size_t)snprintf(in + n, cap - n, "a ID (");
	for (int i = 0; i < IMAP_ID_PAIRS_MAX; i++) {
		n += (size_t)snprintf(in + n, cap - n, "%s\"f%02d%027d\" \"", i ? " " : "", i, 0);
		for (int j = 0; j < IMAP_ID_VALUE_MAX; j++) {
			in[n++] = '\\';
			in[n++] = '"';
		}
		in[n++] = '"';
	}
	n += (size_t)snprintf(in + n, cap - n, ")\r\n");
	p = parse(in, n, &cmd);
	assert_null(preauth_decode_id(&cmd, false, false, &id));
	assert_non_null(id.fields);
	/* What goes to the backend is the client's pairs, as sent. */
	assert_int_equal(strlen(id.fields), n - strlen("a ID (") - strlen(")\r\n"));
	assert_memory_equal(id.fields, in + 6, strlen(id.fields));
	preauth_id_free(&id);
	imap_parser_free(&p);
	free(in);
}

static void test_login_args(void **state)
{
	static const char ok[] = "a LOGIN bob {3+}\r\np\0w\r\n", bad[] = "a LOGIN bob\r\n", list[] = "a LOGIN (b) c\r\n";
	struct imap_command cmd;
	const struct imap_arg *user, *pass;
	struct imap_parser *p = parse(ok, sizeof(ok) - 1, &cmd);

	(void)state;
	assert_true(preauth_decode_login(&cmd, &user, &pass));
	assert_string_equal(user->data, "bob");
	assert_int_equal(pass->len, 3);
	imap_parser_free(&p);
	p = parse(bad, sizeof(bad) - 1, &cmd);
	assert_false(preauth_decode_login(&cmd, &user, &pass));
	imap_parser_free(&p);
	p = parse(list, sizeof(list) - 1, &cmd);
	assert_false(preauth_decode_login(&cmd, &user, &pass));
	imap_parser_free(&p);
}

static void test_base64(void **state)
{
	char out[16];

	(void)state;
	assert_int_equal(preauth_b64_decode("Ym9i", 4, out, sizeof(out)), 3);
	assert_memory_equal(out, "bob", 3);
	assert_int_equal(preauth_b64_decode("Ym8=", 4, out, sizeof(out)), 2);
	assert_int_equal(preauth_b64_decode("Yg==", 4, out, sizeof(out)), 1);
	assert_int_equal(preauth_b64_decode("", 0, out, sizeof(out)), 0);
	assert_int_equal(preauth_b64_decode("Ym9", 3, out, sizeof(out)), -1);      /* no padding */
	assert_int_equal(preauth_b64_decode("Y===", 4, out, sizeof(out)), -1);     /* too much */
	assert_int_equal(preauth_b64_decode("Yg==Ym9i", 8, out, sizeof(out)), -1); /* '=' inside */
	assert_int_equal(preauth_b64_decode("Ym 9", 4, out, sizeof(out)), -1);
	assert_int_equal(preauth_b64_decode("Ym\0i", 4, out, sizeof(out)), -1);
	assert_int_equal(preauth_b64_decode("Ym9iYm9i", 8, out, 5), -1); /* out too small */
	assert_int_equal(preauth_sasl_response("=", 1, out, sizeof(out)), 0);
	assert_int_equal(preauth_sasl_response("==", 2, out, sizeof(out)), -1);
}

static void test_sasl_plain(void **state)
{
	const char *user, *pass;
	size_t ulen, plen;

	(void)state;
	assert_int_equal(preauth_sasl_plain("\0bob\0pw", 7, &user, &ulen, &pass, &plen), PREAUTH_PLAIN_OK);
	assert_int_equal(ulen, 3);
	assert_memory_equal(user, "bob", 3);
	assert_int_equal(plen, 2);
	assert_memory_equal(pass, "pw", 2);
	assert_int_equal(preauth_sasl_plain("bob\0bob\0", 8, &user, &ulen, &pass, &plen), PREAUTH_PLAIN_OK);
	assert_int_equal(plen, 0);
	assert_int_equal(preauth_sasl_plain("eve\0bob\0pw", 10, &user, &ulen, &pass, &plen), PREAUTH_PLAIN_AUTHZID);
	assert_int_equal(preauth_sasl_plain("bo\0bob\0pw", 9, &user, &ulen, &pass, &plen), PREAUTH_PLAIN_AUTHZID);
	assert_int_equal(preauth_sasl_plain("\0bob", 4, &user, &ulen, &pass, &plen), PREAUTH_PLAIN_MALFORMED);
	assert_int_equal(preauth_sasl_plain("", 0, &user, &ulen, &pass, &plen), PREAUTH_PLAIN_MALFORMED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_id_fields),  cmocka_unit_test(test_id_origin), cmocka_unit_test(test_id_maximal),
	    cmocka_unit_test(test_login_args), cmocka_unit_test(test_base64),    cmocka_unit_test(test_sasl_plain),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
