/*
 * libFuzzer target for the pre-login command decoding (preauth_decode.c):
 * ID's field checks, filtering and re-serialisation, LOGIN's arguments,
 * AUTHENTICATE's SASL PLAIN/LOGIN responses, base64.
 *
 * Input layout: byte 0 holds flags (bit 0: the sender is a trusted webmail
 * host, bit 1: imapgate forwards the client address itself, bit 2: small
 * parser limits), then an IMAP stream, parsed by imap_parser as the daemon
 * does. Each command goes through the decoders, which must keep their
 * promises: the ID passed on parses back into exactly the pairs that pass
 * the filter, no address field from an untrusted sender, RFC 2971's bounds;
 * SASL results lie within what was decoded; base64 round-trips.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_parser.h"
#include "preauth_decode.h"

#include "fuzz_check.h"

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)in[i] << 16;

		if (i + 1 < n)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = B64[(v >> 18) & 63];
		out[o++] = B64[(v >> 12) & 63];
		out[o++] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? B64[v & 63] : '=';
	}
	return o;
}

/* Base64 into a buffer of exactly outsz bytes (ASan sees any overrun);
 * whatever decodes must encode and decode back to the same bytes. */
static long check_b64(const char *in, size_t n, size_t outsz, char *dec)
{
	char *out = malloc(outsz ? outsz : 1);
	long r;

	CHECK(out != NULL);
	r = preauth_sasl_response(in, n, out, outsz);
	if (r >= 0) {
		char *enc = malloc(4 * ((size_t)r / 3 + 1));
		char *again = malloc((size_t)r + 1);
		size_t e;

		CHECK(enc != NULL && again != NULL);
		CHECK((size_t)r <= outsz);
		CHECK(n == 1 || (size_t)r <= n / 4 * 3);
		e = b64_encode((const unsigned char *)out, (size_t)r, enc);
		CHECK(preauth_b64_decode(enc, e, again, (size_t)r) == r);
		CHECK(r == 0 || memcmp(again, out, (size_t)r) == 0);
		if (dec)
			memcpy(dec, out, (size_t)r);
		free(enc);
		free(again);
	}
	free(out);
	return r;
}

static void check_sasl(const char *in, size_t n)
{
	static char dec[PREAUTH_SASL_MAX];
	const char *user = NULL, *pass = NULL;
	size_t ulen = 0, plen = 0;
	long r;

	check_b64(in, n, n / 4 * 3 > 0 ? n / 4 * 3 - 1 : 0, NULL); /* one byte short */
	r = check_b64(in, n, sizeof(dec), dec);
	if (r < 0)
		return;
	if (preauth_sasl_plain(dec, (size_t)r, &user, &ulen, &pass, &plen) != PREAUTH_PLAIN_OK)
		return;
	CHECK(user > dec && user + ulen < dec + r && user[ulen] == '\0');
	CHECK(pass > user + ulen && pass + plen == dec + r);
	CHECK(memchr(user, '\0', ulen) == NULL);
}

static bool is_nil(const struct imap_arg *a)
{
	return a->type == IMAP_ARG_ATOM && strcasecmp(a->data, "NIL") == 0;
}

/* The pairs of cmd that must be passed on, in order, compared with what
 * the forwarded list parses back into. */
static void check_id_fields(const struct imap_command *cmd, const struct preauth_id *id, bool trusted, bool own)
{
	struct imap_parser_limits lim = {.max_line = 1 << 17, .max_literal = 0, .max_total = 1 << 17};
	struct imap_parser *p;
	struct imap_command back;
	char *line;
	size_t len, used, j = 1;

	if (id->fields == NULL) {
		for (size_t i = 1; i + 1 < cmd->n_args; i += 2)
			CHECK(preauth_id_key_is_address(cmd->args[i].data, cmd->args[i].len) &&
			      (!trusted || (own && strncasecmp(cmd->args[i].data, "x-originating-", 14) == 0)));
		return;
	}
	len = strlen(id->fields);
	line = malloc(len + 16);
	p = imap_parser_new(&lim);
	CHECK(line != NULL && p != NULL);
	len = (size_t)sprintf(line, "t ID (%s)\r\n", id->fields);
	CHECK(imap_parser_feed(p, (const uint8_t *)line, len, &used, &back) == IMAP_PARSE_COMMAND);
	CHECK(used == len && back.n_args >= 4 && back.n_args % 2 == 0);
	for (size_t i = 1; i + 1 < cmd->n_args; i += 2) {
		const struct imap_arg *k = &cmd->args[i], *v = &cmd->args[i + 1];
		bool addr = preauth_id_key_is_address(k->data, k->len);

		if (addr && (!trusted || (own && strncasecmp(k->data, "x-originating-", 14) == 0)))
			continue;
		CHECK(j + 1 < back.n_args - 1);
		CHECK(back.args[j].type == IMAP_ARG_QUOTED && back.args[j].len == k->len &&
		      memcmp(back.args[j].data, k->data, k->len) == 0);
		if (is_nil(v))
			CHECK(is_nil(&back.args[j + 1]));
		else
			CHECK(back.args[j + 1].type == IMAP_ARG_QUOTED && back.args[j + 1].len == v->len &&
			      memcmp(back.args[j + 1].data, v->data, v->len) == 0);
		j += 2;
	}
	CHECK(j == back.n_args - 1);
	imap_parser_free(&p);
	free(line);
}

static void check_id(const struct imap_command *cmd, bool trusted, bool own)
{
	struct preauth_id id;
	const char *err = preauth_decode_id(cmd, trusted, own, &id);

	if (err) {
		CHECK(id.fields == NULL && id.origin_ip == NULL && id.origin_port == NULL);
		return;
	}
	CHECK(cmd->n_args == 1 || (cmd->n_args - 2) / 2 <= IMAP_ID_PAIRS_MAX);
	CHECK(trusted || (id.origin_ip == NULL && id.origin_port == NULL));
	CHECK(!id.ignored || !trusted);
	if (cmd->n_args > 1)
		check_id_fields(cmd, &id, trusted, own);
	else
		CHECK(id.fields == NULL);
	preauth_id_free(&id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imap_parser_limits lim = {.max_line = 8192, .max_literal = 8192, .max_total = 32768};
	struct imap_parser *p;
	bool trusted, own, sasl = false;
	size_t pos = 1;

	if (size < 1)
		return 0;
	trusted = data[0] & 1;
	own = data[0] & 2;
	if (data[0] & 4)
		lim = (struct imap_parser_limits){.max_line = 64, .max_literal = 32, .max_total = 128};
	/* The raw bytes as a SASL response too. */
	check_sasl((const char *)data + 1, size - 1 < 16384 ? size - 1 : 16384);
	p = imap_parser_new(&lim);
	CHECK(p != NULL);
	while (pos < size) {
		struct imap_command cmd;
		const struct imap_arg *user, *pass;
		size_t used = 0;
		enum imap_parse_status st = imap_parser_feed(p, data + pos, size - pos, &used, &cmd);

		pos += used;
		if (st == IMAP_PARSE_MORE)
			break;
		if (st == IMAP_PARSE_LINE) {
			check_sasl(cmd.line, cmd.line_len);
			sasl = false;
		}
		if (st != IMAP_PARSE_COMMAND)
			continue;
		if (strcasecmp(cmd.name, "ID") == 0) {
			check_id(&cmd, trusted, own);
		} else if (strcasecmp(cmd.name, "LOGIN") == 0) {
			if (preauth_decode_login(&cmd, &user, &pass))
				CHECK(user == &cmd.args[0] && pass == &cmd.args[1] && cmd.n_args == 2);
		} else if (strcasecmp(cmd.name, "AUTHENTICATE") == 0) {
			if (cmd.n_args == 2 && cmd.args[1].type == IMAP_ARG_ATOM)
				check_sasl(cmd.args[1].data, cmd.args[1].len);
			else if (!sasl)
				imap_parser_expect_line(p);
			sasl = cmd.n_args != 2;
		}
	}
	imap_parser_free(&p);
	return 0;
}
