/* Unit tests for imap_parser: every input is fed all at once, one byte at a
 * time and in small chunks, and all three must give the same results at the
 * same stream offsets as well as the expected ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_parser.h"

static const struct imap_parser_limits def_lim = {
	.max_line = 8192,
	.max_literal = 8192,
	.max_total = 16384,
};

/* ---- rendering results as text ---- */

struct sbuf {
	char *s;
	size_t len, cap;
};

static void sb_putc(struct sbuf *b, char c)
{
	if (b->len + 2 > b->cap) {
		b->cap = b->cap ? b->cap * 2 : 128;
		b->s = realloc(b->s, b->cap);
		assert_non_null(b->s);
	}
	b->s[b->len++] = c;
	b->s[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
	while (*s)
		sb_putc(b, *s++);
}

/* Printable bytes as they are, others as \xNN. */
static void sb_bytes(struct sbuf *b, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f) {
			sb_putc(b, (char)c);
		} else {
			char hex[8];
			snprintf(hex, sizeof hex, "\\x%02x", c);
			sb_puts(b, hex);
		}
	}
}

static const char *err_name(enum imap_parse_error e)
{
	switch (e) {
	case IMAP_ERR_NONE:
		return "NONE";
	case IMAP_ERR_BAD_TAG:
		return "BAD_TAG";
	case IMAP_ERR_NO_COMMAND:
		return "NO_COMMAND";
	case IMAP_ERR_SYNTAX:
		return "SYNTAX";
	case IMAP_ERR_LITERAL_TOO_BIG:
		return "LITERAL_TOO_BIG";
	case IMAP_ERR_LINE_TOO_LONG:
		return "LINE_TOO_LONG";
	case IMAP_ERR_TOO_MANY_ARGS:
		return "TOO_MANY_ARGS";
	case IMAP_ERR_ID_LIMIT:
		return "ID_LIMIT";
	}
	return "?";
}

/* Checks the invariants of a COMMAND and renders it. */
static void render_command(struct sbuf *b, const struct imap_command *cmd)
{
	assert_non_null(cmd->tag);
	assert_non_null(cmd->name);
	assert_true(strlen(cmd->tag) >= 1 && strlen(cmd->tag) <= IMAP_TAG_MAX);
	assert_true(strlen(cmd->name) >= 1);
	assert_true(cmd->n_args <= IMAP_MAX_ARGS);
	sb_puts(b, "CMD ");
	sb_puts(b, cmd->tag);
	sb_putc(b, ' ');
	sb_puts(b, cmd->name);
	for (size_t i = 0; i < cmd->n_args; i++) {
		const struct imap_arg *a = &cmd->args[i];
		assert_non_null(a->data);
		assert_int_equal(a->data[a->len], '\0');
		sb_putc(b, ' ');
		switch (a->type) {
		case IMAP_ARG_ATOM:
			assert_int_equal(strlen(a->data), a->len);
			sb_puts(b, "A:");
			break;
		case IMAP_ARG_QUOTED:
			assert_int_equal(strlen(a->data), a->len);
			sb_puts(b, "Q:");
			break;
		case IMAP_ARG_LITERAL:
			sb_puts(b, "L:");
			break;
		case IMAP_ARG_LIST_START:
			assert_string_equal(a->data, "(");
			sb_putc(b, '(');
			continue;
		case IMAP_ARG_LIST_END:
			assert_string_equal(a->data, ")");
			sb_putc(b, ')');
			continue;
		}
		sb_bytes(b, a->data, a->len);
	}
}

static char *render(struct imap_parser *p, enum imap_parse_status st,
                    const struct imap_command *cmd)
{
	struct sbuf b = {0};
	const char *tag = NULL, *msg = NULL;
	enum imap_parse_error e;
	char num[32];

	switch (st) {
	case IMAP_PARSE_COMMAND:
		render_command(&b, cmd);
		break;
	case IMAP_PARSE_LINE:
		assert_non_null(cmd->line);
		assert_int_equal(cmd->line[cmd->line_len], '\0');
		sb_puts(&b, "LINE ");
		sb_bytes(&b, cmd->line, cmd->line_len);
		break;
	case IMAP_PARSE_LITERAL:
		snprintf(num, sizeof num, "LIT %zu", imap_parser_literal_size(p));
		sb_puts(&b, num);
		break;
	case IMAP_PARSE_ERROR:
		e = imap_parser_error(p, &tag, &msg);
		assert_int_not_equal(e, IMAP_ERR_NONE);
		assert_non_null(msg);
		assert_string_not_equal(msg, "Parser buffer full");
		sb_puts(&b, "ERR ");
		sb_puts(&b, err_name(e));
		sb_putc(&b, ' ');
		sb_puts(&b, tag ? tag : "-");
		if (e == IMAP_ERR_BAD_TAG)
			assert_null(tag);
		break;
	case IMAP_PARSE_MORE:
		fail_msg("MORE is not a result");
	}
	return b.s;
}

struct run {
	char *res[1024];
	size_t off[1024]; /* stream offset just after each result */
	size_t n;
};

static void run_free(struct run *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->res[i]);
	r->n = 0;
}

/* Feeds in in pieces of chunk bytes (0: all that is left each time). After
 * a COMMAND named AUTHENTICATE the next line is expected raw, as the daemon
 * does. */
static void run_input(const struct imap_parser_limits *lim, const uint8_t *in, size_t len,
                      size_t chunk, struct run *r)
{
	struct imap_parser *p = imap_parser_new(lim);
	struct imap_command cmd;
	size_t pos = 0;

	assert_non_null(p);
	r->n = 0;
	while (pos < len) {
		size_t n = chunk && chunk < len - pos ? chunk : len - pos;
		size_t used = (size_t)-1;
		enum imap_parse_status st = imap_parser_feed(p, in + pos, n, &used, &cmd);

		assert_true(used <= n);
		pos += used;
		if (st == IMAP_PARSE_MORE) {
			assert_int_equal(used, n);
			continue;
		}
		assert_true(used > 0);
		assert_true(r->n < 1024);
		r->res[r->n] = render(p, st, &cmd);
		r->off[r->n++] = pos;
		if (st == IMAP_PARSE_COMMAND && strcasecmp(cmd.name, "AUTHENTICATE") == 0)
			imap_parser_expect_line(p);
	}
	imap_parser_free(&p);
	assert_null(p);
}

static void check_input(const struct imap_parser_limits *lim, const uint8_t *in, size_t len,
                        const char *const *expect)
{
	static const size_t chunks[] = {0, 1, 2, 3, 7, 64};
	struct run ref, r;
	size_t n_expect = 0;

	run_input(lim, in, len, 0, &ref);
	while (expect[n_expect] != NULL)
		n_expect++;
	for (size_t i = 0; i < ref.n || i < n_expect; i++) {
		if (i >= ref.n)
			fail_msg("missing result %zu: %s", i, expect[i]);
		if (i >= n_expect)
			fail_msg("unexpected result %zu: %s", i, ref.res[i]);
		assert_string_equal(ref.res[i], expect[i]);
	}
	for (size_t c = 1; c < sizeof chunks / sizeof chunks[0]; c++) {
		run_input(lim, in, len, chunks[c], &r);
		assert_int_equal(r.n, ref.n);
		for (size_t i = 0; i < r.n; i++) {
			assert_string_equal(r.res[i], ref.res[i]);
			assert_int_equal(r.off[i], ref.off[i]);
		}
		run_free(&r);
	}
	run_free(&ref);
}

#define EXPECT(...) ((const char *const[]){__VA_ARGS__, NULL})
#define CHECK_LIM(lim, in, ...) check_input(lim, (const uint8_t *)(in), sizeof(in) - 1, EXPECT(__VA_ARGS__))
#define CHECK(in, ...) CHECK_LIM(&def_lim, in, __VA_ARGS__)
#define NOTHING NULL

/* ---- commands that parse ---- */

static void test_login_atoms(void **state)
{
	(void)state;
	CHECK("a LOGIN user pass\r\n", "CMD a LOGIN A:user A:pass");
	CHECK("A001 login joe@example.com s3cr3t!\r\n", "CMD A001 login A:joe@example.com A:s3cr3t!");
	CHECK("a NOOP\r\n", "CMD a NOOP");
	CHECK("a] CAPABILITY\r\n", "CMD a] CAPABILITY");
	CHECK("a  LOGIN   user    pass  \r\n", "CMD a LOGIN A:user A:pass");
}

static void test_login_quoted(void **state)
{
	(void)state;
	CHECK("a LOGIN \"user\" \"pa ss\"\r\n", "CMD a LOGIN Q:user Q:pa ss");
	CHECK("a LOGIN \"us\\\"er\" \"p\\\\w\"\r\n", "CMD a LOGIN Q:us\"er Q:p\\w");
	CHECK("a LOGIN \"\" \"\"\r\n", "CMD a LOGIN Q: Q:");
	CHECK("a LOGIN \"caf\xc3\xa9\" \"{5}\"\r\n", "CMD a LOGIN Q:caf\\xc3\\xa9 Q:{5}");
	CHECK("a LOGIN \"a(b)c\" \"%*]\"\r\n", "CMD a LOGIN Q:a(b)c Q:%*]");
}

static void test_login_literal(void **state)
{
	(void)state;
	CHECK("a LOGIN {4}\r\nuser {6}\r\nsecret\r\n", "LIT 4", "LIT 6",
	      "CMD a LOGIN L:user L:secret");
	CHECK("a LOGIN user {6}\r\nsecret\r\n", "LIT 6", "CMD a LOGIN A:user L:secret");
	CHECK("a LOGIN {4}\r\nuser pass\r\n", "LIT 4", "CMD a LOGIN L:user A:pass");
	CHECK("a LOGIN {4}\r\nuser \"p w\"\r\n", "LIT 4", "CMD a LOGIN L:user Q:p w");
	CHECK("a LOGIN {3}\r\n\r\n\" {0}\r\n\r\n", "LIT 3", "LIT 0", "CMD a LOGIN L:\\x0d\\x0a\" L:");
}

static void test_login_literal_plus(void **state)
{
	(void)state;
	CHECK("a LOGIN {4+}\r\nuser {6+}\r\nsecret\r\n", "CMD a LOGIN L:user L:secret");
	CHECK("a LOGIN {4+}\r\nuser {6}\r\nsecret\r\n", "LIT 6", "CMD a LOGIN L:user L:secret");
	CHECK("a LOGIN {0+}\r\n {0+}\r\n\r\n", "CMD a LOGIN L: L:");
	CHECK("a LOGIN {004+}\r\nuser x\r\n", "CMD a LOGIN L:user A:x");
}

static void test_literal8_and_tilde(void **state)
{
	(void)state;
	CHECK("a X ~{3}\r\nabc ~atom ~\r\n", "LIT 3", "CMD a X L:abc A:~atom A:~");
	CHECK("a X ~{2+}\r\nab (~)\r\n", "CMD a X L:ab ( A:~ )");
	CHECK("a X ~\r\n", "CMD a X A:~");
}

static void test_literal_nul_and_binary(void **state)
{
	static const uint8_t in[] = "a LOGIN {3}\r\na\0b {1+}\r\n\0 {4}\r\n\r\n\r\n\r\n";
	struct imap_parser *p = imap_parser_new(&def_lim);
	struct imap_command cmd;
	size_t used, pos = 0;
	enum imap_parse_status st;

	(void)state;
	check_input(&def_lim, in, sizeof in - 1,
	            EXPECT("LIT 3", "LIT 4", "CMD a LOGIN L:a\\x00b L:\\x00 L:\\x0d\\x0a\\x0d\\x0a"));

	/* The literal keeps its NULs: len, not strlen. */
	st = imap_parser_feed(p, in, sizeof in - 1, &used, &cmd);
	assert_int_equal(st, IMAP_PARSE_LITERAL);
	assert_int_equal(imap_parser_literal_size(p), 3);
	pos += used;
	st = imap_parser_feed(p, in + pos, sizeof in - 1 - pos, &used, &cmd);
	assert_int_equal(st, IMAP_PARSE_LITERAL);
	assert_int_equal(imap_parser_literal_size(p), 4);
	pos += used;
	st = imap_parser_feed(p, in + pos, sizeof in - 1 - pos, &used, &cmd);
	assert_int_equal(st, IMAP_PARSE_COMMAND);
	assert_int_equal(pos + used, sizeof in - 1);
	assert_int_equal(cmd.n_args, 3);
	assert_int_equal(cmd.args[0].type, IMAP_ARG_LITERAL);
	assert_int_equal(cmd.args[0].len, 3);
	assert_memory_equal(cmd.args[0].data, "a\0b", 4);
	assert_int_equal(cmd.args[1].len, 1);
	assert_int_equal(cmd.args[1].data[0], '\0');
	assert_int_equal(cmd.args[2].len, 4);
	imap_parser_free(&p);
}

static void test_id_list_nil(void **state)
{
	(void)state;
	CHECK("a ID (\"name\" \"Roundcube\" \"version\" \"1.6\" \"x-originating-ip\" "
	      "\"192.0.2.1\")\r\n",
	      "CMD a ID ( Q:name Q:Roundcube Q:version Q:1.6 Q:x-originating-ip Q:192.0.2.1 )");
	CHECK("a ID NIL\r\n", "CMD a ID A:NIL");
	CHECK("a ID ()\r\n", "CMD a ID ( )");
	CHECK("a ID (\"name\" NIL \"os\" {5}\r\nLinux)\r\n", "LIT 5",
	      "CMD a ID ( Q:name A:NIL Q:os L:Linux )");
	CHECK("a ID ( \"a\" \"b\" )\r\n", "CMD a ID ( Q:a Q:b )");
}

/* ---- ID: RFC 2971's bounds, not max_line ---- */

enum id_form { ID_QUOTED, ID_ESCAPED, ID_SYNC, ID_NONSYNC, ID_ATOM };

/* One ID string of n octets in the given form, on the wire (in) and as
 * rendered (expect); a sync literal's "LIT n" result goes to lits. */
static void id_string(struct sbuf *in, struct sbuf *expect, struct sbuf *lits, enum id_form f, char fill,
                      size_t n)
{
	char hdr[32];

	sb_putc(in, ' ');
	sb_putc(expect, ' ');
	switch (f) {
	case ID_QUOTED:
	case ID_ESCAPED:
		sb_putc(in, '"');
		for (size_t i = 0; i < n; i++) {
			if (f == ID_ESCAPED)
				sb_putc(in, '\\');
			sb_putc(in, f == ID_ESCAPED ? '"' : fill);
		}
		sb_putc(in, '"');
		sb_puts(expect, "Q:");
		break;
	case ID_SYNC:
	case ID_NONSYNC:
		snprintf(hdr, sizeof hdr, "{%zu%s}\r\n", n, f == ID_NONSYNC ? "+" : "");
		sb_puts(in, hdr);
		for (size_t i = 0; i < n; i++)
			sb_putc(in, fill);
		sb_puts(expect, "L:");
		if (f == ID_SYNC) {
			snprintf(hdr, sizeof hdr, "LIT %zu", n);
			sb_puts(lits, hdr);
			sb_putc(lits, '\n');
		}
		break;
	case ID_ATOM:
		for (size_t i = 0; i < n; i++)
			sb_putc(in, fill);
		sb_puts(expect, "A:");
		break;
	}
	for (size_t i = 0; i < n; i++)
		sb_putc(expect, f == ID_ESCAPED ? '"' : fill);
}

/* "a ID (" pairs ")" CRLF "b NOOP" CRLF, and what it must give. */
static void check_id(const struct imap_parser_limits *lim, size_t pairs, size_t field_len, size_t value_len,
                     const enum id_form *forms, size_t n_forms, const char *error)
{
	struct sbuf in = {0}, expect = {0}, lits = {0};
	const char *res[128];
	size_t n = 0;
	char *l, *next;

	sb_puts(&in, "a ID (");
	sb_puts(&expect, "CMD a ID (");
	for (size_t i = 0; i < pairs; i++) {
		id_string(&in, &expect, &lits, forms[(2 * i) % n_forms], (char)('a' + i % 26), field_len);
		id_string(&in, &expect, &lits, forms[(2 * i + 1) % n_forms], (char)('A' + i % 26), value_len);
	}
	sb_puts(&in, ")\r\nb NOOP\r\n");
	sb_puts(&expect, " )");
	for (l = lits.s; error == NULL && l != NULL && *l; l = next) {
		next = strchr(l, '\n');
		*next++ = '\0';
		res[n++] = l;
	}
	res[n++] = error ? error : expect.s;
	res[n++] = "CMD b NOOP";
	res[n] = NULL;
	check_input(lim, (const uint8_t *)in.s, in.len, res);
	free(in.s);
	free(expect.s);
	free(lits.s);
}

static void test_id_rfc_maxima(void **state)
{
	static const enum id_form quoted[] = {ID_QUOTED}, escaped[] = {ID_ESCAPED},
	                          mixed[] = {ID_ATOM, ID_SYNC, ID_QUOTED, ID_NONSYNC, ID_ESCAPED};
	static const struct imap_parser_limits small = {.max_line = 512, .max_literal = 8192, .max_total = 1024};

	(void)state;
	/* 30 pairs, 30-octet fields, 1024-octet values: about 32 KB on one
	 * line, far over max_line, and accepted as it is. */
	check_id(&def_lim, IMAP_ID_PAIRS_MAX, IMAP_ID_FIELD_MAX, IMAP_ID_VALUE_MAX, quoted, 1, NULL);
	/* Every octet escaped: twice as long on the wire. */
	check_id(&def_lim, IMAP_ID_PAIRS_MAX, IMAP_ID_FIELD_MAX, IMAP_ID_VALUE_MAX, escaped, 1, NULL);
	/* Atoms, literals {n} and {n+}, quoted strings, mixed. */
	check_id(&def_lim, IMAP_ID_PAIRS_MAX, IMAP_ID_FIELD_MAX, IMAP_ID_VALUE_MAX, mixed, 5, NULL);
	/* The smallest limits the configuration allows do not shrink it. */
	check_id(&small, IMAP_ID_PAIRS_MAX, IMAP_ID_FIELD_MAX, IMAP_ID_VALUE_MAX, escaped, 1, NULL);
	check_id(&small, IMAP_ID_PAIRS_MAX, IMAP_ID_FIELD_MAX, IMAP_ID_VALUE_MAX, mixed, 5, NULL);
}

static void test_id_over_rfc_maxima(void **state)
{
	static const enum id_form quoted[] = {ID_QUOTED}, atom[] = {ID_ATOM}, escaped[] = {ID_ESCAPED},
	                          nonsync[] = {ID_NONSYNC};

	(void)state;
	/* One pair, one octet too many: a tagged error, then the next command. */
	check_id(&def_lim, IMAP_ID_PAIRS_MAX + 1, 4, 8, quoted, 1, "ERR ID_LIMIT a");
	check_id(&def_lim, IMAP_ID_PAIRS_MAX + 1, IMAP_ID_FIELD_MAX, IMAP_ID_VALUE_MAX, quoted, 1,
	         "ERR ID_LIMIT a");
	check_id(&def_lim, 2, IMAP_ID_FIELD_MAX, IMAP_ID_VALUE_MAX + 1, quoted, 1, "ERR ID_LIMIT a");
	check_id(&def_lim, 2, IMAP_ID_FIELD_MAX, IMAP_ID_VALUE_MAX + 1, atom, 1, "ERR ID_LIMIT a");
	check_id(&def_lim, 2, IMAP_ID_FIELD_MAX, IMAP_ID_VALUE_MAX + 1, escaped, 1, "ERR ID_LIMIT a");
	check_id(&def_lim, 2, IMAP_ID_FIELD_MAX + 1, 8, quoted, 1, "ERR ID_LIMIT a");
	check_id(&def_lim, 2, IMAP_ID_FIELD_MAX + 1, 8, escaped, 1, "ERR ID_LIMIT a");
	/* A literal over the bound is refused at its header: {n+} is drained,
	 * {n} gets no '+' (so the client sends none of it). */
	check_id(&def_lim, 2, IMAP_ID_FIELD_MAX, IMAP_ID_VALUE_MAX + 1, nonsync, 1, "ERR ID_LIMIT a");
	CHECK("a ID (\"name\" {1025}\r\nb NOOP\r\n", "ERR ID_LIMIT a", "CMD b NOOP");
	CHECK("a ID ({31}\r\nb NOOP\r\n", "ERR ID_LIMIT a", "CMD b NOOP");
	CHECK("a ID (\"name\" {1024}\r\n", "LIT 1024");
	/* Other commands keep max_line and max_literal. */
	CHECK_LIM(&((struct imap_parser_limits){.max_line = 32, .max_literal = 64, .max_total = 128}),
	          "a IDX (\"name\" \"0123456789012345678901234\")\r\nb NOOP\r\n", "ERR LINE_TOO_LONG a",
	          "CMD b NOOP");
}

static void test_id_error_messages(void **state)
{
	static const struct {
		const char *in, *msg;
	} cases[] = {
		{"a ID (\"0123456789012345678901234567890\" \"v\")\r\n",
		 "ID field name too long (RFC 2971: at most 30 octets)"},
		{"a id (f {1025+}\r\n", "ID value too long (RFC 2971: at most 1024 octets)"},
		{"a ID (1 1 2 2 3 3 4 4 5 5 6 6 7 7 8 8 9 9 10 10 11 11 12 12 13 13 14 14 15 15 16 16 17 17 "
		 "18 18 19 19 20 20 21 21 22 22 23 23 24 24 25 25 26 26 27 27 28 28 29 29 30 30 31 31)\r\n",
		 "Too many ID fields (RFC 2971: at most 30 pairs)"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct imap_parser *p = imap_parser_new(&def_lim);
		struct imap_command cmd;
		const char *tag, *msg;
		size_t used;

		assert_int_equal(imap_parser_feed(p, (const uint8_t *)cases[i].in, strlen(cases[i].in), &used, &cmd),
		                 IMAP_PARSE_ERROR);
		assert_int_equal(imap_parser_error(p, &tag, &msg), IMAP_ERR_ID_LIMIT);
		assert_string_equal(tag, "a");
		assert_string_equal(msg, cases[i].msg);
		imap_parser_free(&p);
	}
}

/* A rejected command is bounded while it is discarded as it would have
 * been: an endless line is not read until auth_timeout. */
static void test_discard_bounded(void **state)
{
	const struct imap_parser_limits lim = {.max_line = 32, .max_literal = 16, .max_total = 64};
	struct imap_parser *p = imap_parser_new(&def_lim);
	struct imap_command cmd;
	const char *tag, *msg;
	uint8_t *big = malloc(1 << 20);
	size_t used, pos;

	(void)state;
	assert_non_null(big);
	/* An invalid tag, then over max_line: the second error ends it. */
	CHECK_LIM(&lim, "***xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	          "ERR BAD_TAG -", "ERR LINE_TOO_LONG -");
	CHECK_LIM(&lim, "a X \x01xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	          "ERR SYNTAX a", "ERR LINE_TOO_LONG a");
	/* Exactly max_line is still only discarded. */
	CHECK_LIM(&lim, "***xxxxxxxxxxxxxxxxxxxxxxxxxxx\r\nb NOOP\r\n", "ERR BAD_TAG -", "CMD b NOOP");
	/* Lines and drained literals together: bounded by max_total. */
	CHECK_LIM(&lim, "a X \x01 {20+}\r\n01234567890123456789 {24+}\r\n012345678901234567890123\r\nb NOOP\r\n",
	          "ERR SYNTAX a", "ERR LINE_TOO_LONG a", "CMD b NOOP");
	CHECK_LIM(&lim, "a X \x01 {20+}\r\n01234567890123456789 {10+}\r\n0123456789\r\nb NOOP\r\n", "ERR SYNTAX a",
	          "CMD b NOOP");
	/* A literal no command could hold is not drained. */
	CHECK("a LOGIN {18446744073709551615+}\r\nb NOOP\r\n", "ERR LINE_TOO_LONG a");
	/* An ID line is bounded by its RFC 2971 maximum. */
	memset(big, ' ', 1 << 20);
	memcpy(big, "a ID (", 6);
	assert_int_equal(imap_parser_feed(p, big, 1 << 20, &used, &cmd), IMAP_PARSE_ERROR);
	assert_int_equal(used, IMAP_ID_WIRE_MAX + 1);
	assert_int_equal(imap_parser_error(p, &tag, &msg), IMAP_ERR_LINE_TOO_LONG);
	imap_parser_reset(p);
	/* 1 MiB without a line end, from an invalid tag: refused after max_line. */
	memset(big, 'x', 1 << 20);
	assert_int_equal(imap_parser_feed(p, big, 1 << 20, &used, &cmd), IMAP_PARSE_ERROR);
	assert_int_equal(imap_parser_error(p, &tag, &msg), IMAP_ERR_BAD_TAG);
	pos = used;
	assert_int_equal(imap_parser_feed(p, big + pos, (1 << 20) - pos, &used, &cmd), IMAP_PARSE_ERROR);
	assert_int_equal(pos + used, def_lim.max_line + 1);
	assert_int_equal(imap_parser_error(p, &tag, &msg), IMAP_ERR_LINE_TOO_LONG);
	assert_null(tag);
	assert_string_equal(msg, "Line too long");
	imap_parser_free(&p);
	free(big);
}

static void test_lists_nested(void **state)
{
	(void)state;
	CHECK("a X (1 (2 (3)) ())\r\n", "CMD a X ( A:1 ( A:2 ( A:3 ) ) ( ) )");
	CHECK("a X ((((((((x))))))))\r\n", "CMD a X ( ( ( ( ( ( ( ( A:x ) ) ) ) ) ) ) )");
	CHECK("a X (((((((((x)))))))))\r\n", "ERR SYNTAX a");
	CHECK("a X (1\r\n", "ERR SYNTAX a");
	CHECK("a X 1)\r\nb NOOP\r\n", "ERR SYNTAX a", "CMD b NOOP");
	CHECK("a X ((1)\r\nb NOOP\r\n", "ERR SYNTAX a", "CMD b NOOP");
	CHECK("a X (1))\r\n", "ERR SYNTAX a");
	CHECK("a X (a)(b)\r\n", "ERR SYNTAX a");
	CHECK("a X a(b)\r\n", "ERR SYNTAX a");
	CHECK("a X (\"a\"\"b\")\r\n", "ERR SYNTAX a");
	/* The line break inside a list is a literal's, not the command's end. */
	CHECK("a X ({1}\r\nx)\r\n", "LIT 1", "CMD a X ( L:x )");
}

static void test_list_patterns_and_atoms(void **state)
{
	(void)state;
	CHECK("a LIST \"\" *\r\n", "CMD a LIST Q: A:*");
	CHECK("a LIST \"\" %/]x\r\n", "CMD a LIST Q: A:%/]x");
	CHECK("a FETCH 1:* BODY[]\r\n", "CMD a FETCH A:1:* A:BODY[]");
	CHECK("a X a\"b\r\n", "ERR SYNTAX a");
	CHECK("a X a\\b\r\n", "ERR SYNTAX a");
	CHECK("a X \x80\r\n", "ERR SYNTAX a");
	CHECK("a X a\x7f\r\n", "ERR SYNTAX a");
	CHECK("a X a\tb\r\n", "ERR SYNTAX a");
	CHECK("a X ab{5}\r\n", "ERR SYNTAX a");
	CHECK("a N\xc3\xa9 x\r\n", "ERR SYNTAX a");
	CHECK("a NOOP\"\r\n", "ERR SYNTAX a");
}

static void test_authenticate_sasl_ir(void **state)
{
	(void)state;
	CHECK("a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n",
	      "CMD a AUTHENTICATE A:PLAIN A:AGFsaWNlAHNlY3JldA==");
	CHECK("a AUTHENTICATE PLAIN =\r\n", "CMD a AUTHENTICATE A:PLAIN A:=");
	/* The next line is raw: the run helper asks for it after AUTHENTICATE. */
	CHECK("a AUTHENTICATE PLAIN AGE=\r\nb NOOP\r\n", "CMD a AUTHENTICATE A:PLAIN A:AGE=",
	      "LINE b NOOP");
}

static void test_expect_line(void **state)
{
	(void)state;
	CHECK("a AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\nb NOOP\r\n",
	      "CMD a AUTHENTICATE A:PLAIN", "LINE AGFsaWNlAHNlY3JldA==", "CMD b NOOP");
	CHECK("a AUTHENTICATE LOGIN\r\n\r\n\r\n", "CMD a AUTHENTICATE A:LOGIN", "LINE ");
	CHECK("a AUTHENTICATE PLAIN\r\n*\nb NOOP\n", "CMD a AUTHENTICATE A:PLAIN", "LINE *",
	      "CMD b NOOP");
	/* Raw means raw: no tokenizing, literal headers or odd bytes included. */
	CHECK("a AUTHENTICATE X\r\n{5+} \"\x01\x80(\r\nb NOOP\r\n", "CMD a AUTHENTICATE A:X",
	      "LINE {5+} \"\\x01\\x80(", "CMD b NOOP");
	CHECK("a AUTHENTICATE PLAIN\r\nab\rc\r\nb NOOP\r\n", "CMD a AUTHENTICATE A:PLAIN",
	      "ERR SYNTAX -", "CMD b NOOP");
}

static void test_expect_line_too_long(void **state)
{
	const struct imap_parser_limits lim = {.max_line = 32, .max_literal = 64, .max_total = 128};
	char in[256];
	int n;

	(void)state;
	n = snprintf(in, sizeof in, "a AUTHENTICATE PLAIN\r\n%s\r\nb NOOP\r\n",
	             "0123456789012345678901234567890123456789");
	check_input(&lim, (const uint8_t *)in, (size_t)n,
	            EXPECT("CMD a AUTHENTICATE A:PLAIN", "ERR LINE_TOO_LONG -", "CMD b NOOP"));
	/* 30 bytes + CRLF = 32 fits, 31 + CRLF does not. */
	n = snprintf(in, sizeof in, "a AUTHENTICATE PLAIN\r\n%s\r\n",
	             "012345678901234567890123456789");
	check_input(&lim, (const uint8_t *)in, (size_t)n,
	            EXPECT("CMD a AUTHENTICATE A:PLAIN", "LINE 012345678901234567890123456789"));
	n = snprintf(in, sizeof in, "a AUTHENTICATE PLAIN\r\n%s\r\n",
	             "0123456789012345678901234567890");
	check_input(&lim, (const uint8_t *)in, (size_t)n,
	            EXPECT("CMD a AUTHENTICATE A:PLAIN", "ERR LINE_TOO_LONG -"));
}

static void test_pipelined_consumed(void **state)
{
	static const char in[] = "a NOOP\r\nb LOGIN x y\r\n\r\nc LOGOUT\r\n";
	struct imap_parser *p = imap_parser_new(&def_lim);
	struct imap_command cmd;
	size_t used, len = sizeof in - 1, pos = 0;

	(void)state;
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in, len, &used, &cmd),
	                 IMAP_PARSE_COMMAND);
	assert_int_equal(used, 8);
	assert_string_equal(cmd.tag, "a");
	assert_string_equal(cmd.name, "NOOP");
	assert_int_equal(cmd.n_args, 0);
	assert_null(cmd.line);
	pos += used;
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in + pos, len - pos, &used, &cmd),
	                 IMAP_PARSE_COMMAND);
	assert_int_equal(used, 13);
	assert_string_equal(cmd.tag, "b");
	assert_string_equal(cmd.args[1].data, "y");
	pos += used;
	/* The blank line is skipped within the same call. */
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in + pos, len - pos, &used, &cmd),
	                 IMAP_PARSE_COMMAND);
	assert_int_equal(pos + used, len);
	assert_string_equal(cmd.name, "LOGOUT");
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in, 0, &used, &cmd), IMAP_PARSE_MORE);
	assert_int_equal(used, 0);
	imap_parser_free(&p);

	CHECK("a NOOP\r\nb LOGIN x y\r\n\r\nc LOGOUT\r\n", "CMD a NOOP", "CMD b LOGIN A:x A:y",
	      "CMD c LOGOUT");
}

static void test_literal_result_consumed(void **state)
{
	static const char in[] = "a LOGIN {5}\r\nhello {2}\r\nxy\r\n";
	struct imap_parser *p = imap_parser_new(&def_lim);
	struct imap_command cmd;
	size_t used, len = sizeof in - 1, pos = 0;

	(void)state;
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in, len, &used, &cmd),
	                 IMAP_PARSE_LITERAL);
	assert_int_equal(used, 13);
	assert_int_equal(imap_parser_literal_size(p), 5);
	pos += used;
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in + pos, 3, &used, &cmd),
	                 IMAP_PARSE_MORE);
	assert_int_equal(used, 3);
	pos += used;
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in + pos, len - pos, &used, &cmd),
	                 IMAP_PARSE_LITERAL);
	assert_int_equal(imap_parser_literal_size(p), 2);
	pos += used;
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in + pos, len - pos, &used, &cmd),
	                 IMAP_PARSE_COMMAND);
	assert_string_equal(cmd.args[0].data, "hello");
	assert_string_equal(cmd.args[1].data, "xy");
	imap_parser_free(&p);
}

static void test_blank_lines(void **state)
{
	(void)state;
	CHECK("\r\n\n\r\na NOOP\r\n\r\n", "CMD a NOOP");
	CHECK("\r\n\r\n", NOTHING);
	CHECK("\n", NOTHING);
	CHECK(" \r\na NOOP\r\n", "ERR BAD_TAG -", "CMD a NOOP");
}

/* ---- rejected commands ---- */

static void test_invalid_tags(void **state)
{
	(void)state;
	CHECK("* LOGIN a b\r\nc NOOP\r\n", "ERR BAD_TAG -", "CMD c NOOP");
	CHECK("+ NOOP\r\n", "ERR BAD_TAG -");
	CHECK("a+b NOOP\r\n", "ERR BAD_TAG -");
	CHECK("a%b NOOP\r\n", "ERR BAD_TAG -");
	CHECK("(a) NOOP\r\n", "ERR BAD_TAG -");
	CHECK("a{1} NOOP\r\n", "ERR BAD_TAG -");
	CHECK("a\"b NOOP\r\n", "ERR BAD_TAG -");
	CHECK("a\\b NOOP\r\n", "ERR BAD_TAG -");
	CHECK(" a NOOP\r\n", "ERR BAD_TAG -");
	CHECK("a\tNOOP\r\n", "ERR BAD_TAG -");
	CHECK("t\xc3\xa9 NOOP\r\n", "ERR BAD_TAG -");
	CHECK("a\0 NOOP\r\nb NOOP\r\n", "ERR BAD_TAG -", "CMD b NOOP");
	CHECK("\x7f NOOP\r\n", "ERR BAD_TAG -");
	/* A bad tag's literal is drained with the rest of its command. */
	CHECK("* LOGIN {10+}\r\nx LOGOUT\r\n\r\nb NOOP\r\n", "ERR BAD_TAG -", "CMD b NOOP");
}

static void test_tag_length(void **state)
{
	char in[256];
	char tag[IMAP_TAG_MAX + 2];
	char expect[128];

	(void)state;
	memset(tag, 'T', sizeof tag);
	tag[IMAP_TAG_MAX] = '\0';
	snprintf(in, sizeof in, "%s NOOP\r\n", tag);
	snprintf(expect, sizeof expect, "CMD %s NOOP", tag);
	check_input(&def_lim, (const uint8_t *)in, strlen(in), EXPECT(expect));

	tag[IMAP_TAG_MAX] = 'T';
	tag[IMAP_TAG_MAX + 1] = '\0';
	snprintf(in, sizeof in, "%s NOOP\r\nb NOOP\r\n", tag);
	check_input(&def_lim, (const uint8_t *)in, strlen(in), EXPECT("ERR BAD_TAG -", "CMD b NOOP"));
}

static void test_bad_tag_reported_early(void **state)
{
	static const char in[] = "ab*cdef NOOP";
	struct imap_parser *p = imap_parser_new(&def_lim);
	struct imap_command cmd;
	const char *tag = "x", *msg = NULL;
	size_t used;

	(void)state;
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in, sizeof in - 1, &used, &cmd),
	                 IMAP_PARSE_ERROR);
	assert_int_equal(used, 3);
	assert_int_equal(imap_parser_error(p, &tag, &msg), IMAP_ERR_BAD_TAG);
	assert_null(tag);
	assert_string_equal(msg, "Invalid tag");
	imap_parser_free(&p);
}

static void test_missing_command(void **state)
{
	struct imap_parser *p = imap_parser_new(&def_lim);
	struct imap_command cmd;
	const char *tag = NULL, *msg = NULL;
	size_t used;

	(void)state;
	CHECK("a\r\nb NOOP\r\n", "ERR NO_COMMAND a", "CMD b NOOP");
	CHECK("a \r\n", "ERR NO_COMMAND a");
	CHECK("a    \n", "ERR NO_COMMAND a");
	CHECK("a (x)\r\n", "ERR NO_COMMAND a");
	CHECK("a \"LOGIN\"\r\n", "ERR NO_COMMAND a");
	CHECK("a {5+}\r\nb NOP\r\nc NOOP\r\n", "ERR NO_COMMAND a", "CMD c NOOP");

	assert_int_equal(imap_parser_feed(p, (const uint8_t *)"tag1\r\n", 6, &used, &cmd),
	                 IMAP_PARSE_ERROR);
	assert_int_equal(imap_parser_error(p, &tag, &msg), IMAP_ERR_NO_COMMAND);
	assert_string_equal(tag, "tag1");
	assert_string_equal(msg, "Missing command");
	/* The error's tag survives the next command. */
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)"b NOOP\r\n", 8, &used, &cmd),
	                 IMAP_PARSE_COMMAND);
	assert_int_equal(imap_parser_error(p, &tag, &msg), IMAP_ERR_NO_COMMAND);
	assert_string_equal(tag, "tag1");
	imap_parser_free(&p);
}

static void test_bad_quoted(void **state)
{
	(void)state;
	CHECK("a LOGIN \"a\\b\" x\r\nb NOOP\r\n", "ERR SYNTAX a", "CMD b NOOP");
	CHECK("a LOGIN \"abc\r\nb NOOP\r\n", "ERR SYNTAX a", "CMD b NOOP");
	CHECK("a LOGIN \"abc\nb NOOP\r\n", "ERR SYNTAX a", "CMD b NOOP");
	CHECK("a LOGIN \"a\0b\" x\r\n", "ERR SYNTAX a");
	CHECK("a LOGIN \"a\\\r\n", "ERR SYNTAX a");
	CHECK("a LOGIN \"x\"y\r\n", "ERR SYNTAX a");
	/* The rest of a rejected line may end in a literal: it is drained. */
	CHECK("a LOGIN \"bad\\q\" {10+}\r\nx LOGOUT\r\n\r\nb NOOP\r\n", "ERR SYNTAX a",
	      "CMD b NOOP");
}

static void test_error_messages(void **state)
{
	static const struct {
		const char *in;
		enum imap_parse_error e;
		const char *msg;
	} cases[] = {
	    {"* NOOP\r\n", IMAP_ERR_BAD_TAG, "Invalid tag"},
	    {"a\r\n", IMAP_ERR_NO_COMMAND, "Missing command"},
	    {"a X \"\\x\"\r\n", IMAP_ERR_SYNTAX, "Invalid quoted string"},
	    {"a X {99999}\r\n", IMAP_ERR_LITERAL_TOO_BIG, "Literal too big"},
	    {"a X (\r\n", IMAP_ERR_SYNTAX, "Unbalanced parentheses"},
	    {"a X {}\r\n", IMAP_ERR_SYNTAX, "Invalid literal"},
	};
	struct imap_command cmd;

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct imap_parser *p = imap_parser_new(&def_lim);
		const char *tag, *msg;
		size_t used;

		assert_int_equal(
		    imap_parser_feed(p, (const uint8_t *)cases[i].in, strlen(cases[i].in), &used, &cmd),
		    IMAP_PARSE_ERROR);
		assert_int_equal(imap_parser_error(p, &tag, &msg), cases[i].e);
		assert_string_equal(msg, cases[i].msg);
		imap_parser_free(&p);
	}
}

static void test_literal_too_big_sync(void **state)
{
	const struct imap_parser_limits lim = {.max_line = 64, .max_literal = 16, .max_total = 48};
	struct imap_parser *p = imap_parser_new(&lim);
	struct imap_command cmd;
	size_t used;

	(void)state;
	CHECK_LIM(&lim, "a LOGIN {16}\r\n0123456789abcdef\r\n", "LIT 16",
	          "CMD a LOGIN L:0123456789abcdef");
	/* No '+' is sent, so the client sends no literal: what follows is new. */
	CHECK_LIM(&lim, "a LOGIN {17}\r\nb NOOP\r\n", "ERR LITERAL_TOO_BIG a", "CMD b NOOP");
	CHECK_LIM(&lim, "a LOGIN {17}\nb NOOP\n", "ERR LITERAL_TOO_BIG a", "CMD b NOOP");
	/* Within max_literal but over what is left of max_total. */
	CHECK_LIM(&lim, "a LOGIN {16}\r\n0123456789abcdef {16}\r\nb NOOP\r\n", "LIT 16",
	          "ERR LITERAL_TOO_BIG a", "CMD b NOOP");
	/* The error comes when the header line ends, before any literal byte. */
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)"a LOGIN {17}\r\nxx", 16, &used, &cmd),
	                 IMAP_PARSE_ERROR);
	assert_int_equal(used, 14);
	imap_parser_free(&p);
}

static void test_literal_too_big_nonsync_drained(void **state)
{
	const struct imap_parser_limits lim = {.max_line = 64, .max_literal = 16, .max_total = 48};

	(void)state;
	/* The drained octets hold a command line: it must not run. */
	CHECK_LIM(&lim, "a LOGIN {20+}\r\nx LOGOUT\r\nx LOGOUT\r\n\r\nb NOOP\r\n",
	          "ERR LITERAL_TOO_BIG a", "CMD b NOOP");
	/* The rest of the command after the literal, another literal included. */
	CHECK_LIM(&lim, "a LOGIN {17+}\r\nx LOGOUT\r\nx LOGOUT {5+}\r\ny LOG\r\n\r\nb NOOP\r\n",
	          "ERR LITERAL_TOO_BIG a", "CMD b NOOP");
	/* ... as long as the whole stays within max_total: then the caller
	 * is told to close (LINE_TOO_LONG), what follows is still skipped. */
	CHECK_LIM(&lim, "a LOGIN {17+}\r\nx LOGOUT\r\nx LOGOUT {10+}\r\ny LOGOUT\r\n\r\nb NOOP\r\n",
	          "ERR LITERAL_TOO_BIG a", "ERR LINE_TOO_LONG a", "CMD b NOOP");
	/* A synchronising literal in the rest ends it: the client waits. */
	CHECK_LIM(&lim, "a LOGIN {17+}\r\n0123456789abcdef! {3}\r\nb NOOP\r\n",
	          "ERR LITERAL_TOO_BIG a", "CMD b NOOP");
	/* Big but representable: over any bound, so the caller closes. */
	CHECK("a LOGIN {18446744073709551615+}\r\nb NOOP\r\nc NOOP\r\n", "ERR LINE_TOO_LONG a");
	CHECK("a LOGIN {8193+}\r\nb NOOP\r\n", "ERR LITERAL_TOO_BIG a");
}

static void test_literal_size_syntax(void **state)
{
	(void)state;
	CHECK("a X {}\r\nb NOOP\r\n", "ERR SYNTAX a", "CMD b NOOP");
	CHECK("a X {+}\r\n", "ERR SYNTAX a");
	CHECK("a X { 5}\r\n", "ERR SYNTAX a");
	CHECK("a X {5x}\r\n", "ERR SYNTAX a");
	CHECK("a X {-1}\r\n", "ERR SYNTAX a");
	CHECK("a X {0x10}\r\n", "ERR SYNTAX a");
	CHECK("a X {5++}\r\n", "ERR SYNTAX a");
	CHECK("a X {5\r\n", "ERR SYNTAX a");
	CHECK("a X {5}x\r\n", "ERR SYNTAX a");
	CHECK("a X {5} \r\n", "ERR SYNTAX a");
	CHECK("a X {5}\rx\r\nb NOOP\r\n", "ERR SYNTAX a", "CMD b NOOP");
	CHECK("a X ~{}\r\n", "ERR SYNTAX a");
	CHECK("a X ~~{1}\r\n", "ERR SYNTAX a");
	/* One over UINT64_MAX, and 21 digits: not a size, nothing drained. */
	CHECK("a X {18446744073709551616+}\r\nb NOOP\r\n", "ERR SYNTAX a", "CMD b NOOP");
	CHECK("a X {000000000000000000001+}\r\nb NOOP\r\n", "ERR SYNTAX a", "CMD b NOOP");
	CHECK("a X {99999999999999999999999999999999999999}\r\nb NOOP\r\n", "ERR SYNTAX a",
	      "CMD b NOOP");
	/* 20 digits with leading zeros is a valid size. */
	CHECK("a X {00000000000000000001}\r\nx\r\n", "LIT 1", "CMD a X L:x");
}

static void test_line_too_long(void **state)
{
	const struct imap_parser_limits lim = {.max_line = 32, .max_literal = 64, .max_total = 128};
	struct imap_parser *p = imap_parser_new(&lim);
	struct imap_command cmd;
	uint8_t big[100];
	const char *tag = "x", *msg;
	size_t used;

	(void)state;
	memset(big, 'a', sizeof big);
	memcpy(big, "a LOGIN ", 8);
	/* Refused at the 33rd byte, long before any line end. */
	assert_int_equal(imap_parser_feed(p, big, sizeof big, &used, &cmd), IMAP_PARSE_ERROR);
	assert_int_equal(used, 33);
	assert_int_equal(imap_parser_error(p, &tag, &msg), IMAP_ERR_LINE_TOO_LONG);
	assert_string_equal(tag, "a");
	assert_string_equal(msg, "Line too long");
	/* Then discarded up to the line end. */
	assert_int_equal(imap_parser_feed(p, big, sizeof big, &used, &cmd), IMAP_PARSE_MORE);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)"aaa\r\nb NOOP\r\n", 13, &used, &cmd),
	                 IMAP_PARSE_COMMAND);
	assert_string_equal(cmd.tag, "b");
	imap_parser_free(&p);

	/* 30 bytes + CRLF is exactly max_line; one more is too long. */
	CHECK_LIM(&lim, "a LOGIN 0123456789 01234567890\r\n",
	          "CMD a LOGIN A:0123456789 A:01234567890");
	CHECK_LIM(&lim, "a LOGIN 0123456789 012345678901\r\nb NOOP\r\n", "ERR LINE_TOO_LONG a",
	          "CMD b NOOP");
	CHECK_LIM(&lim, "a LOGIN 0123456789 0123456789012\nb NOOP\n", "ERR LINE_TOO_LONG a",
	          "CMD b NOOP");
	/* An over-long tag is never echoed. */
	CHECK_LIM(&lim, "0123456789012345678901234567890123456789 NOOP\r\n", "ERR LINE_TOO_LONG -");
	/* Each line of a command counts alone; the literal does not count. */
	CHECK_LIM(&lim, "a LOGIN 0123456789 {40+}\r\n"
	                "0123456789012345678901234567890123456789 012345678901234567890123456\r\n",
	          "CMD a LOGIN A:0123456789 L:0123456789012345678901234567890123456789 "
	          "A:012345678901234567890123456");
}

static void test_command_too_long(void **state)
{
	const struct imap_parser_limits lim = {.max_line = 32, .max_literal = 64, .max_total = 64};

	(void)state;
	/* Lines and literals together are over max_total. */
	CHECK_LIM(&lim, "a X {20+}\r\n01234567890123456789 {10+}\r\n0123456789 0123456789ABCDEF\r\nb NOOP\r\n",
	          "ERR LINE_TOO_LONG a", "CMD b NOOP");
	CHECK_LIM(&lim, "a X {20+}\r\n01234567890123456789 {10+}\r\n0123456789 01234\r\n",
	          "CMD a X L:01234567890123456789 L:0123456789 A:01234");
}

static void test_bare_lf(void **state)
{
	(void)state;
	CHECK("a NOOP\nb LOGIN {3}\nabc\nc LOGIN {1+}\nx y\n", "CMD a NOOP", "LIT 3",
	      "CMD b LOGIN L:abc", "CMD c LOGIN L:x A:y");
}

static void test_bare_cr(void **state)
{
	(void)state;
	CHECK("a NOOP\rb NOOP\r\nc NOOP\r\n", "ERR SYNTAX a", "CMD c NOOP");
	CHECK("a NOOP\r\r\nc NOOP\r\n", "ERR SYNTAX a", "CMD c NOOP");
	CHECK("\rb NOOP\r\nc NOOP\r\n", "ERR SYNTAX -", "CMD c NOOP");
	CHECK("a\rb NOOP\r\n", "ERR SYNTAX -");
	CHECK("a X a\rb\r\n", "ERR SYNTAX a");
}

static void test_too_many_args(void **state)
{
	char in[1024];
	char expect[1024];
	size_t n = 0, e = 0;

	(void)state;
	n += (size_t)snprintf(in + n, sizeof in - n, "a X");
	e += (size_t)snprintf(expect + e, sizeof expect - e, "CMD a X");
	for (int i = 0; i < IMAP_MAX_ARGS; i++) {
		n += (size_t)snprintf(in + n, sizeof in - n, " %d", i);
		e += (size_t)snprintf(expect + e, sizeof expect - e, " A:%d", i);
	}
	check_input(&def_lim, (const uint8_t *)in, n, EXPECT(NULL));
	memcpy(in + n, "\r\n", 2);
	check_input(&def_lim, (const uint8_t *)in, n + 2, EXPECT(expect));
	memcpy(in + n, " x\r\nb NOOP\r\n", 12);
	check_input(&def_lim, (const uint8_t *)in, n + 12, EXPECT("ERR TOO_MANY_ARGS a", "CMD b NOOP"));
	memcpy(in + n, " {5+}\r\nx OOPS\r\nb NOOP\r\n", 23);
	check_input(&def_lim, (const uint8_t *)in, n + 23, EXPECT("ERR TOO_MANY_ARGS a", "CMD b NOOP"));

	/* List markers count as tokens. */
	n = (size_t)snprintf(in, sizeof in, "a X");
	for (int i = 0; i < IMAP_MAX_ARGS / 2; i++)
		n += (size_t)snprintf(in + n, sizeof in - n, " ()");
	memcpy(in + n, "\r\n", 2);
	{
		struct run r;
		run_input(&def_lim, (const uint8_t *)in, n + 2, 0, &r);
		assert_int_equal(r.n, 1);
		assert_int_equal(strncmp(r.res[0], "CMD a X ( )", 11), 0);
		run_free(&r);
	}
	memcpy(in + n, " ()\r\n", 5);
	check_input(&def_lim, (const uint8_t *)in, n + 5, EXPECT("ERR TOO_MANY_ARGS a"));
}

static void test_reset_and_free(void **state)
{
	struct imap_parser *p = imap_parser_new(&def_lim);
	struct imap_parser *none = NULL;
	struct imap_command cmd;
	const char *tag, *msg;
	size_t used;

	(void)state;
	assert_int_equal(imap_parser_error(p, &tag, &msg), IMAP_ERR_NONE);
	assert_null(tag);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)"a LOGIN {5}\r\nhel", 16, &used, &cmd),
	                 IMAP_PARSE_LITERAL);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)"hel", 3, &used, &cmd),
	                 IMAP_PARSE_MORE);
	imap_parser_reset(p);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)"b NOOP\r\n", 8, &used, &cmd),
	                 IMAP_PARSE_COMMAND);
	assert_string_equal(cmd.tag, "b");
	/* Reset also forgets a pending drain and a pending raw line. */
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)"a X {99999+}\r\n", 14, &used, &cmd),
	                 IMAP_PARSE_ERROR);
	imap_parser_expect_line(p);
	imap_parser_reset(p);
	assert_int_equal(imap_parser_error(p, NULL, NULL), IMAP_ERR_NONE);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)"c NOOP\r\n", 8, &used, &cmd),
	                 IMAP_PARSE_COMMAND);
	assert_string_equal(cmd.tag, "c");
	imap_parser_free(&p);
	assert_null(p);
	imap_parser_free(&none);
}

static void test_tiny_limits(void **state)
{
	const struct imap_parser_limits zero = {0, 0, 0};
	const struct imap_parser_limits small = {.max_line = 10, .max_literal = 0, .max_total = 12};

	(void)state;
	CHECK_LIM(&zero, "a NOOP\r\nb NOOP\r\n", "ERR LINE_TOO_LONG -", "ERR LINE_TOO_LONG -");
	CHECK_LIM(&small, "a NOOP\r\n", "CMD a NOOP");
	CHECK_LIM(&small, "a X {0}\r\n\r\n", "LIT 0", "CMD a X L:");
	CHECK_LIM(&small, "a X {1}\r\nb NOOP\r\n", "ERR LITERAL_TOO_BIG a", "CMD b NOOP");
	CHECK_LIM(&small, "a X {0}\r\n x\r\n", "LIT 0", "ERR LINE_TOO_LONG a");
}

/* Random streams built from IMAP-ish pieces: the three feeding modes must
 * agree whatever comes. */
static void test_random_streams(void **state)
{
	static const char *const pieces[] = {
	    "a ", "b1 ", "LOGIN ", "NOOP", "AUTHENTICATE ", "PLAIN", " ", "  ", "\r\n", "\n",
	    "\r", "\"", "\\", "\\\"", "(", ")", "{", "}", "+", "~", "{3}\r\n", "{2+}\r\n",
	    "{0}\r\n", "{20+}\r\n", "{99999999999999999999}", "x", "NIL", "*", "%", "]",
	    "\0", "\x80", "é", "abc", "{5}", "\r\n\r\n", "x LOGOUT\r\n"};
	const struct imap_parser_limits lims[] = {
	    {.max_line = 16, .max_literal = 8, .max_total = 32},
	    {.max_line = 64, .max_literal = 16, .max_total = 64},
	    def_lim,
	};
	uint32_t seed = 12345;
	uint8_t in[512];

	(void)state;
	for (int iter = 0; iter < 3000; iter++) {
		size_t n = 0;
		struct run ref, r;
		const struct imap_parser_limits *lim = &lims[iter % 3];

		while (n < sizeof in - 32) {
			seed = seed * 1103515245u + 12345u;
			size_t k = (seed >> 16) % (sizeof pieces / sizeof pieces[0]);
			size_t pl = pieces[k][0] == '\0' ? 1 : strlen(pieces[k]);
			memcpy(in + n, pieces[k], pl);
			n += pl;
			if ((seed >> 8) % 64 == 0)
				break;
		}
		run_input(lim, in, n, 0, &ref);
		for (size_t chunk = 1; chunk <= 5; chunk += 4) {
			run_input(lim, in, n, chunk, &r);
			assert_int_equal(r.n, ref.n);
			for (size_t i = 0; i < r.n; i++) {
				assert_string_equal(r.res[i], ref.res[i]);
				assert_int_equal(r.off[i], ref.off[i]);
			}
			run_free(&r);
		}
		run_free(&ref);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_login_atoms),
	    cmocka_unit_test(test_login_quoted),
	    cmocka_unit_test(test_login_literal),
	    cmocka_unit_test(test_login_literal_plus),
	    cmocka_unit_test(test_literal8_and_tilde),
	    cmocka_unit_test(test_literal_nul_and_binary),
	    cmocka_unit_test(test_id_list_nil),
	    cmocka_unit_test(test_id_rfc_maxima),
	    cmocka_unit_test(test_id_over_rfc_maxima),
	    cmocka_unit_test(test_id_error_messages),
	    cmocka_unit_test(test_discard_bounded),
	    cmocka_unit_test(test_lists_nested),
	    cmocka_unit_test(test_list_patterns_and_atoms),
	    cmocka_unit_test(test_authenticate_sasl_ir),
	    cmocka_unit_test(test_expect_line),
	    cmocka_unit_test(test_expect_line_too_long),
	    cmocka_unit_test(test_pipelined_consumed),
	    cmocka_unit_test(test_literal_result_consumed),
	    cmocka_unit_test(test_blank_lines),
	    cmocka_unit_test(test_invalid_tags),
	    cmocka_unit_test(test_tag_length),
	    cmocka_unit_test(test_bad_tag_reported_early),
	    cmocka_unit_test(test_missing_command),
	    cmocka_unit_test(test_bad_quoted),
	    cmocka_unit_test(test_error_messages),
	    cmocka_unit_test(test_literal_too_big_sync),
	    cmocka_unit_test(test_literal_too_big_nonsync_drained),
	    cmocka_unit_test(test_literal_size_syntax),
	    cmocka_unit_test(test_line_too_long),
	    cmocka_unit_test(test_command_too_long),
	    cmocka_unit_test(test_bare_lf),
	    cmocka_unit_test(test_bare_cr),
	    cmocka_unit_test(test_too_many_args),
	    cmocka_unit_test(test_reset_and_free),
	    cmocka_unit_test(test_tiny_limits),
	    cmocka_unit_test(test_random_streams),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
