/*
 * preauth_decode — ID, LOGIN and AUTHENTICATE decoding before login,
 * without a session (see preauth_decode.h).
 *
 * Everything here reads only what it is given and writes only within the
 * sizes it is given: its input is what an unauthenticated client chose.
 */
#include "preauth_decode.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_string(const struct imap_arg *a)
{
	return a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_QUOTED || a->type == IMAP_ARG_LITERAL;
}

static bool is_nil(const struct imap_arg *a)
{
	return a->type == IMAP_ARG_ATOM && strcasecmp(a->data, "NIL") == 0;
}

/* Append text to out as an IMAP quoted string; false if it cannot be one. */
static bool append_quoted(char *out, size_t outsz, size_t *o, const char *p, size_t n)
{
	if (*o + 2 * n + 3 >= outsz)
		return false;
	out[(*o)++] = '"';
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\0' || p[i] == '\r' || p[i] == '\n')
			return false;
		if (p[i] == '"' || p[i] == '\\')
			out[(*o)++] = '\\';
		out[(*o)++] = p[i];
	}
	out[(*o)++] = '"';
	out[*o] = '\0';
	return true;
}

/* Append ' "key" "value"' (or NIL for a NULL value) to a field list. */
static bool append_id_pair(char *out, size_t outsz, size_t *o, const struct imap_arg *k, const struct imap_arg *v)
{
	if (*o + 6 >= outsz)
		return false;
	if (*o)
		out[(*o)++] = ' ';
	if (!append_quoted(out, outsz - 5, o, k->data, k->len))
		return false;
	out[(*o)++] = ' ';
	if (v == NULL) {
		memcpy(out + *o, "NIL", 4);
		*o += 3;
		return true;
	}
	return append_quoted(out, outsz, o, v->data, v->len);
}

bool preauth_id_key_is_address(const char *k, size_t n)
{
	static const char *const prefixes[] = { "x-originating-", "x-connected-", "x-forward-", "x-proxy-ttl",
		                                    "x-session-id", "x-session-ext-id" };

	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		size_t pl = strlen(prefixes[i]);

		if (n >= pl && strncasecmp(k, prefixes[i], pl) == 0)
			return true;
	}
	return false;
}

static bool key_is(const struct imap_arg *k, const char *name)
{
	size_t n = strlen(name);

	return k->len == n && strncasecmp(k->data, name, n) == 0;
}

/* The pairs' shape and RFC 2971's bounds (the parser enforces the bounds
 * already; here they hold whoever built the command). */
static const char *check_id_pairs(const struct imap_command *cmd)
{
	const struct imap_arg *a = cmd->args;
	size_t n = cmd->n_args;

	if (n < 2 || a[0].type != IMAP_ARG_LIST_START || a[n - 1].type != IMAP_ARG_LIST_END || (n - 2) % 2 != 0)
		return "Invalid ID arguments";
	if ((n - 2) / 2 > IMAP_ID_PAIRS_MAX)
		return "Too many ID fields (RFC 2971: at most 30 pairs)";
	for (size_t i = 1; i + 1 < n; i += 2) {
		const struct imap_arg *k = &a[i], *v = &a[i + 1];

		if (!is_string(k) || !is_string(v) || k->len == 0 || is_nil(k))
			return "Invalid ID arguments";
		if (k->len > IMAP_ID_FIELD_MAX)
			return "ID field name too long (RFC 2971: at most 30 octets)";
		if (v->len > IMAP_ID_VALUE_MAX)
			return "ID value too long (RFC 2971: at most 1024 octets)";
	}
	return NULL;
}

const char *preauth_decode_id(const struct imap_command *cmd, bool trusted, bool forward_own_origin,
                              struct preauth_id *id)
{
	const struct imap_arg *a = cmd->args;
	size_t n = cmd->n_args, o = 0, cap = 1;
	const char *err;
	char *list;

	memset(id, 0, sizeof(*id));
	if (n == 1 && is_nil(&a[0]))
		return NULL;
	if ((err = check_id_pairs(cmd)) != NULL)
		return err;
	/* Each octet may need a backslash; quotes, SP and the checks' slack: 8. */
	for (size_t i = 1; i + 1 < n; i++)
		cap += 2 * a[i].len + 8;
	list = malloc(cap);
	if (list == NULL)
		return "Out of memory";
	for (size_t i = 1; i + 1 < n; i += 2) {
		const struct imap_arg *k = &a[i], *v = &a[i + 1];

		if (preauth_id_key_is_address(k->data, k->len)) {
			if (!trusted) {
				id->ignored = true;
				continue;
			}
			if (!is_nil(v) && key_is(k, "x-originating-ip"))
				id->origin_ip = v;
			else if (!is_nil(v) && key_is(k, "x-originating-port"))
				id->origin_port = v;
			/* The origin travels in imapgate's own fields
			 * (forward_client_address) or, without them, as sent. */
			if (forward_own_origin && strncasecmp(k->data, "x-originating-", 14) == 0)
				continue;
		}
		if (!append_id_pair(list, cap, &o, k, is_nil(v) ? NULL : v)) {
			explicit_bzero(list, cap);
			free(list);
			memset(id, 0, sizeof(*id));
			return "ID strings may not contain NUL, CR or LF";
		}
	}
	if (o == 0)
		free(list);
	else
		id->fields = list;
	return NULL;
}

void preauth_id_free(struct preauth_id *id)
{
	free(id->fields);
	memset(id, 0, sizeof(*id));
}

bool preauth_decode_login(const struct imap_command *cmd, const struct imap_arg **user,
                          const struct imap_arg **pass)
{
	if (cmd->n_args != 2 || !is_string(&cmd->args[0]) || !is_string(&cmd->args[1]))
		return false;
	*user = &cmd->args[0];
	*pass = &cmd->args[1];
	return true;
}

long preauth_b64_decode(const char *in, size_t n, char *out, size_t outsz)
{
	static const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	if (n % 4 != 0)
		return -1;
	for (size_t i = 0; i < n; i += 4) {
		unsigned v = 0, pad = 0;

		for (size_t j = 0; j < 4; j++) {
			const char *c = in[i + j] ? strchr(alpha, in[i + j]) : NULL;

			if (in[i + j] == '=' && i + 4 == n && j >= 2) {
				pad++;
				v <<= 6;
				continue;
			}
			if (c == NULL || pad)
				return -1;
			v = (v << 6) | (unsigned)(c - alpha);
		}
		if (o + 3 - pad > outsz)
			return -1;
		out[o++] = (char)(v >> 16);
		if (pad < 2)
			out[o++] = (char)(v >> 8);
		if (pad < 1)
			out[o++] = (char)v;
	}
	return (long)o;
}

long preauth_sasl_response(const char *in, size_t n, char *out, size_t outsz)
{
	if (n == 1 && in[0] == '=')
		return 0;
	return preauth_b64_decode(in, n, out, outsz);
}

enum preauth_plain preauth_sasl_plain(const char *dec, size_t n, const char **user, size_t *ulen,
                                      const char **pass, size_t *plen)
{
	const char *z1 = memchr(dec, '\0', n);
	const char *z2 = z1 ? memchr(z1 + 1, '\0', (size_t)(dec + n - z1 - 1)) : NULL;

	if (z2 == NULL)
		return PREAUTH_PLAIN_MALFORMED;
	/* An authzid is accepted only when it is the user itself. */
	if (z1 != dec && ((size_t)(z1 - dec) != (size_t)(z2 - z1 - 1) || memcmp(dec, z1 + 1, (size_t)(z1 - dec)) != 0))
		return PREAUTH_PLAIN_AUTHZID;
	*user = z1 + 1;
	*ulen = (size_t)(z2 - z1 - 1);
	*pass = z2 + 1;
	*plen = (size_t)(dec + n - z2 - 1);
	return PREAUTH_PLAIN_OK;
}
