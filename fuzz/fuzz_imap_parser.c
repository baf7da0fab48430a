/*
 * libFuzzer target for imap_parser.
 *
 * Input layout: byte 0..2 choose the limits (small ones make every limit
 * reachable), byte 3 how many chunk sizes follow, then the chunk sizes, then
 * the IMAP stream. The stream is fed in those chunk sizes, one byte at a
 * time, and all at once; the three runs must give the same results at the
 * same offsets, and every result must respect the parser's promises (valid
 * tag, bounded sizes, NUL-terminated data, invalid tag never returned).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_parser.h"

struct out {
	uint8_t *s;
	size_t len, cap;
};

static void out_put(struct out *o, const void *p, size_t n)
{
	if (o->len + n > o->cap) {
		size_t cap = o->cap ? o->cap : 256;
		while (cap < o->len + n)
			cap *= 2;
		o->s = realloc(o->s, cap);
		if (o->s == NULL)
			abort();
		o->cap = cap;
	}
	memcpy(o->s + o->len, p, n);
	o->len += n;
}

static void out_num(struct out *o, uint64_t v)
{
	out_put(o, &v, sizeof v);
}

static void out_str(struct out *o, const char *s, size_t n)
{
	out_num(o, n);
	out_put(o, s, n);
}

#include "fuzz_check.h"

static bool tag_ok(const char *t)
{
	size_t n = strlen(t);

	if (n < 1 || n > IMAP_TAG_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)t[i];
		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\+", c) != NULL)
			return false;
	}
	return true;
}

static void record_command(struct out *o, const struct imap_command *cmd,
                           const struct imap_parser_limits *lim)
{
	size_t sum = 0;
	int depth = 0;

	CHECK(cmd->tag != NULL && tag_ok(cmd->tag));
	CHECK(cmd->name != NULL && strlen(cmd->name) >= 1);
	CHECK(cmd->n_args <= IMAP_MAX_ARGS);
	out_str(o, cmd->tag, strlen(cmd->tag));
	out_str(o, cmd->name, strlen(cmd->name));
	out_num(o, cmd->n_args);
	for (size_t i = 0; i < cmd->n_args; i++) {
		const struct imap_arg *a = &cmd->args[i];

		CHECK(a->data != NULL && a->data[a->len] == '\0');
		switch (a->type) {
		case IMAP_ARG_ATOM:
			CHECK(a->len >= 1 && strlen(a->data) == a->len);
			break;
		case IMAP_ARG_QUOTED:
			CHECK(strlen(a->data) == a->len);
			CHECK(memchr(a->data, '\r', a->len) == NULL && memchr(a->data, '\n', a->len) == NULL);
			break;
		case IMAP_ARG_LITERAL:
			CHECK(a->len <= lim->max_literal);
			break;
		case IMAP_ARG_LIST_START:
			CHECK(++depth <= IMAP_MAX_DEPTH);
			break;
		case IMAP_ARG_LIST_END:
			CHECK(--depth >= 0);
			break;
		default:
			CHECK(!"bad arg type");
		}
		sum += a->len;
		out_num(o, a->type);
		out_str(o, a->data, a->len);
	}
	CHECK(depth == 0);
	if (strcasecmp(cmd->name, "ID") == 0) {
		/* RFC 2971's bounds instead of max_total: alternately fields
		 * (at most 30 octets) and values (1024), at most 30 pairs. */
		size_t strings = 0;

		for (size_t i = 0; i < cmd->n_args; i++) {
			const struct imap_arg *a = &cmd->args[i];

			if (a->type == IMAP_ARG_LIST_START || a->type == IMAP_ARG_LIST_END)
				continue;
			CHECK(a->len <= (strings++ % 2 ? IMAP_ID_VALUE_MAX : IMAP_ID_FIELD_MAX));
		}
		CHECK(strings <= 2 * IMAP_ID_PAIRS_MAX);
		CHECK(sum <= (lim->max_total > IMAP_ID_WIRE_MAX ? lim->max_total : IMAP_ID_WIRE_MAX));
	} else {
		CHECK(sum <= lim->max_total);
	}
}

/* Feeds the stream; chunk sizes cycle through sizes[] (0: all the rest);
 * n_sizes == 0 means one byte at a time. */
static void run(const struct imap_parser_limits *lim, const uint8_t *in, size_t len,
                const uint8_t *sizes, size_t n_sizes, struct out *o)
{
	struct imap_parser *p = imap_parser_new(lim);
	struct imap_command cmd;
	size_t pos = 0, k = 0;

	CHECK(p != NULL);
	while (pos < len) {
		size_t n = 1, used = (size_t)-1;
		enum imap_parse_status st;

		if (n_sizes > 0) {
			n = sizes[k++ % n_sizes];
			if (n == 0 || n > len - pos)
				n = len - pos;
		}
		st = imap_parser_feed(p, in + pos, n, &used, &cmd);
		CHECK(used <= n);
		pos += used;
		if (st == IMAP_PARSE_MORE) {
			CHECK(used == n);
			continue;
		}
		CHECK(used > 0);
		out_num(o, st);
		out_num(o, pos);
		switch (st) {
		case IMAP_PARSE_COMMAND:
			record_command(o, &cmd, lim);
			if (strcasecmp(cmd.name, "AUTHENTICATE") == 0)
				imap_parser_expect_line(p);
			break;
		case IMAP_PARSE_LINE:
			CHECK(cmd.line != NULL && cmd.line[cmd.line_len] == '\0');
			CHECK(cmd.line_len < lim->max_line);
			CHECK(memchr(cmd.line, '\n', cmd.line_len) == NULL);
			out_str(o, cmd.line, cmd.line_len);
			break;
		case IMAP_PARSE_LITERAL:
			CHECK(imap_parser_literal_size(p) <= lim->max_literal);
			out_num(o, imap_parser_literal_size(p));
			break;
		case IMAP_PARSE_ERROR: {
			const char *tag = NULL, *msg = NULL;
			enum imap_parse_error e = imap_parser_error(p, &tag, &msg);

			CHECK(e != IMAP_ERR_NONE && msg != NULL);
			CHECK(strcmp(msg, "Parser buffer full") != 0);
			CHECK(tag == NULL || tag_ok(tag));
			CHECK(e != IMAP_ERR_BAD_TAG || tag == NULL);
			out_num(o, e);
			out_str(o, tag ? tag : "", tag ? strlen(tag) : 0);
			out_str(o, msg, strlen(msg));
			break;
		}
		default:
			CHECK(!"bad status");
		}
	}
	imap_parser_free(&p);
	CHECK(p == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imap_parser_limits lim;
	struct out chunked = {0}, bytewise = {0}, whole = {0};
	size_t n_sizes;
	static const uint8_t all = 0;

	if (size < 4)
		return 0;
	lim.max_line = data[0] & 0x80 ? 8192 : 1 + (data[0] & 0x7f);
	lim.max_literal = data[1] & 0x80 ? 8192 : (size_t)(data[1] & 0x7f);
	lim.max_total = data[2] & 0x80 ? 16384 : 1 + 2 * (size_t)(data[2] & 0x7f);
	n_sizes = 1 + data[3] % 8;
	if (size < 4 + n_sizes)
		return 0;

	const uint8_t *sizes = data + 4;
	const uint8_t *in = data + 4 + n_sizes;
	size_t len = size - 4 - n_sizes;

	run(&lim, in, len, sizes, n_sizes, &chunked);
	run(&lim, in, len, NULL, 0, &bytewise);
	run(&lim, in, len, &all, 1, &whole);
	CHECK(chunked.len == bytewise.len);
	CHECK(chunked.len == 0 || memcmp(chunked.s, bytewise.s, chunked.len) == 0);
	CHECK(whole.len == bytewise.len);
	CHECK(whole.len == 0 || memcmp(whole.s, bytewise.s, whole.len) == 0);
	free(chunked.s);
	free(bytewise.s);
	free(whole.s);
	return 0;
}
