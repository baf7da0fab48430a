/*
 * json_flat — a byte-at-a-time JSON object reader for the auth policy
 * requests Dovecot sends: flat string members, booleans, and the odd
 * nested object from a '/' in a configured attribute name.
 *
 * Every byte moves one state machine, so a request split anywhere parses
 * the same. It never allocates and never buffers more than one key and one
 * value, each capped; it hands out only valid UTF-8 without NUL bytes, so
 * callers may treat keys and strings as C strings. No I/O, no globals.
 */
#include "json_flat.h"

#include <string.h>

enum { S_START, S_OBJ_FIRST, S_OBJ_KEY, S_COLON, S_VALUE, S_STRING, S_NUMBER, S_LITERAL, S_AFTER, S_END, S_ERROR };
enum { STR_CHAR, STR_ESC, STR_HEX, STR_LOW_BS, STR_LOW_U };
enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_EXP, N_EXP_SIGN, N_EXP_DIGITS };

void json_flat_init(struct json_flat *j, json_flat_fn *fn, void *ctx)
{
	memset(j, 0, offsetof(struct json_flat, key));
	j->fn = fn;
	j->ctx = ctx;
	j->st = S_START;
}

static int fail(struct json_flat *j, const char *error)
{
	j->st = S_ERROR;
	j->error = error;
	return -1;
}

static bool is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int put(struct json_flat *j, unsigned char c)
{
	if (j->in_key) {
		if (j->klen == JSON_FLAT_KEY_MAX)
			return fail(j, "JSON key too long");
		j->key[j->klen++] = (char)c;
	} else {
		if (j->vlen == JSON_FLAT_VALUE_MAX)
			return fail(j, "JSON value too long");
		j->val[j->vlen++] = (char)c;
	}
	return 0;
}

static int put_utf8(struct json_flat *j, uint32_t cp)
{
	unsigned char b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (unsigned char)(0xc0 | (cp >> 6));
		b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (unsigned char)(0xe0 | (cp >> 12));
		b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (unsigned char)(0xf0 | (cp >> 18));
		b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	for (size_t i = 0; i < n; i++)
		if (put(j, b[i]) == -1)
			return -1;
	return 0;
}

static int emit(struct json_flat *j, enum json_type type, const char *val, size_t vlen)
{
	j->key[j->klen] = '\0';
	j->val[j->vlen] = '\0';
	j->st = S_AFTER;
	if (j->fn != NULL && j->fn(j->ctx, j->key, j->klen, type, val, vlen) != 0)
		return fail(j, "JSON member refused by the caller");
	return 0;
}

/* A member name starts: it follows its parents' names and a '/'. */
static int begin_key(struct json_flat *j)
{
	size_t p = j->prefix[j->depth - 1];

	j->in_key = true;
	j->klen = p;
	j->st = S_STRING;
	j->sub = STR_CHAR;
	return j->depth > 1 ? put(j, '/') : 0;
}

static void begin_value(struct json_flat *j, int st)
{
	j->in_key = false;
	j->vlen = 0;
	j->st = st;
}

static int close_object(struct json_flat *j)
{
	j->depth--;
	j->st = j->depth == 0 ? S_END : S_AFTER;
	return 0;
}

/* \uXXXX complete in j->u. */
static int unicode_escape(struct json_flat *j)
{
	uint32_t u = j->u;

	j->sub = STR_CHAR;
	if (j->hi != 0) {
		uint32_t hi = j->hi;

		j->hi = 0;
		if (u < 0xdc00 || u > 0xdfff)
			return fail(j, "lone UTF-16 surrogate in JSON string");
		return put_utf8(j, 0x10000 + ((hi - 0xd800) << 10) + (u - 0xdc00));
	}
	if (u >= 0xd800 && u <= 0xdbff) {
		j->hi = u;
		j->sub = STR_LOW_BS;
		return 0;
	}
	if (u >= 0xdc00 && u <= 0xdfff)
		return fail(j, "lone UTF-16 surrogate in JSON string");
	if (u == 0)
		return fail(j, "NUL character in JSON string");
	return put_utf8(j, u);
}

static int string_byte(struct json_flat *j, unsigned char c)
{
	static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
	const char *e;

	switch (j->sub) {
	case STR_ESC:
		if (c == 'u') {
			j->sub = STR_HEX;
			j->nhex = 0;
			j->u = 0;
			return 0;
		}
		if (c == '\0' || (e = strchr(esc_in, c)) == NULL)
			return fail(j, "bad escape in JSON string");
		j->sub = STR_CHAR;
		return put(j, (unsigned char)esc_out[e - esc_in]);
	case STR_HEX:
		if (c >= '0' && c <= '9')
			j->u = j->u << 4 | (uint32_t)(c - '0');
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			j->u = j->u << 4 | (uint32_t)((c | 0x20) - 'a' + 10);
		else
			return fail(j, "bad \\u escape in JSON string");
		return ++j->nhex == 4 ? unicode_escape(j) : 0;
	case STR_LOW_BS:
		if (c != '\\')
			return fail(j, "lone UTF-16 surrogate in JSON string");
		j->sub = STR_LOW_U;
		return 0;
	case STR_LOW_U:
		if (c != 'u')
			return fail(j, "lone UTF-16 surrogate in JSON string");
		j->sub = STR_HEX;
		j->nhex = 0;
		j->u = 0;
		return 0;
	}
	/* STR_CHAR: raw bytes, checked as UTF-8 (RFC 3629 ranges). */
	if (j->u8_need > 0) {
		if (c < j->u8_lo || c > j->u8_hi)
			return fail(j, "invalid UTF-8 in JSON string");
		j->u8_need--;
		j->u8_lo = 0x80;
		j->u8_hi = 0xbf;
		return put(j, c);
	}
	if (c == '"') {
		if (j->in_key) {
			j->st = S_COLON;
			return 0;
		}
		return emit(j, JSON_STRING, j->val, j->vlen);
	}
	if (c == '\\') {
		j->sub = STR_ESC;
		return 0;
	}
	if (c < 0x20)
		return fail(j, "control character in JSON string");
	j->u8_lo = 0x80;
	j->u8_hi = 0xbf;
	if (c < 0x80)
		return put(j, c);
	if (c >= 0xc2 && c <= 0xdf)
		j->u8_need = 1;
	else if (c >= 0xe0 && c <= 0xef)
		j->u8_need = 2;
	else if (c >= 0xf0 && c <= 0xf4)
		j->u8_need = 3;
	else
		return fail(j, "invalid UTF-8 in JSON string");
	if (c == 0xe0)
		j->u8_lo = 0xa0; /* no overlong 3-byte forms */
	else if (c == 0xed)
		j->u8_hi = 0x9f; /* no UTF-16 surrogates */
	else if (c == 0xf0)
		j->u8_lo = 0x90; /* no overlong 4-byte forms */
	else if (c == 0xf4)
		j->u8_hi = 0x8f; /* nothing above U+10FFFF */
	return put(j, c);
}

/* RFC 8259 number: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
 * Returns 1 when c is not part of the number (the caller looks at it
 * again), 0 when taken, -1 on error. */
static int number_byte(struct json_flat *j, unsigned char c)
{
	bool digit = c >= '0' && c <= '9';
	int next = -1;

	switch (j->sub) {
	case N_MINUS:
		next = c == '0' ? N_ZERO : digit ? N_INT : -1;
		break;
	case N_ZERO:
	case N_INT:
		if (digit && j->sub == N_INT)
			next = N_INT;
		else if (c == '.')
			next = N_DOT;
		else if (c == 'e' || c == 'E')
			next = N_EXP;
		else if (digit)
			return fail(j, "leading zero in JSON number");
		break;
	case N_DOT:
	case N_FRAC:
		if (digit)
			next = N_FRAC;
		else if (j->sub == N_FRAC && (c == 'e' || c == 'E'))
			next = N_EXP;
		break;
	case N_EXP:
		next = c == '+' || c == '-' ? N_EXP_SIGN : digit ? N_EXP_DIGITS : -1;
		break;
	case N_EXP_SIGN:
	case N_EXP_DIGITS:
		next = digit ? N_EXP_DIGITS : -1;
		break;
	}
	if (next != -1) {
		j->sub = next;
		return put(j, c);
	}
	if (j->sub == N_ZERO || j->sub == N_INT || j->sub == N_FRAC || j->sub == N_EXP_DIGITS)
		return emit(j, JSON_NUMBER, j->val, j->vlen) == -1 ? -1 : 1;
	return fail(j, "bad JSON number");
}

static int value_start(struct json_flat *j, unsigned char c)
{
	switch (c) {
	case '"':
		begin_value(j, S_STRING);
		j->sub = STR_CHAR;
		return 0;
	case '{':
		if (j->depth == JSON_FLAT_DEPTH_MAX)
			return fail(j, "JSON objects nested too deep");
		j->prefix[j->depth++] = j->klen;
		j->st = S_OBJ_FIRST;
		return 0;
	case '[':
		return fail(j, "JSON arrays are not supported");
	case 't':
		j->lit = "true";
		break;
	case 'f':
		j->lit = "false";
		break;
	case 'n':
		j->lit = "null";
		break;
	default:
		if (c == '-' || (c >= '0' && c <= '9')) {
			begin_value(j, S_NUMBER);
			j->sub = c == '-' ? N_MINUS : c == '0' ? N_ZERO : N_INT;
			return put(j, c);
		}
		return fail(j, "expected a JSON value");
	}
	begin_value(j, S_LITERAL);
	j->lit_pos = 1;
	return 0;
}

static int literal_byte(struct json_flat *j, unsigned char c)
{
	static const enum json_type types[] = { JSON_TRUE, JSON_FALSE, JSON_NULL };

	if ((unsigned char)j->lit[j->lit_pos] != c)
		return fail(j, "bad JSON literal");
	if (j->lit[++j->lit_pos] != '\0')
		return 0;
	return emit(j, types[j->lit[0] == 't' ? 0 : j->lit[0] == 'f' ? 1 : 2], j->lit, j->lit_pos);
}

/* One byte: 0 taken, 1 to be looked at again (it ended a number), -1. */
static int step(struct json_flat *j, unsigned char c)
{
	if (j->st == S_STRING)
		return string_byte(j, c);
	if (j->st == S_NUMBER)
		return number_byte(j, c);
	if (j->st == S_LITERAL)
		return literal_byte(j, c);
	if (is_ws(c))
		return 0;
	switch (j->st) {
	case S_START:
		if (c != '{')
			return fail(j, "JSON top level is not an object");
		j->depth = 1;
		j->prefix[0] = 0;
		j->st = S_OBJ_FIRST;
		return 0;
	case S_OBJ_FIRST:
		if (c == '}')
			return close_object(j);
		/* fall through */
	case S_OBJ_KEY:
		return c == '"' ? begin_key(j) : fail(j, "expected a JSON member name");
	case S_COLON:
		if (c != ':')
			return fail(j, "expected ':' in JSON object");
		j->st = S_VALUE;
		return 0;
	case S_VALUE:
		return value_start(j, c);
	case S_AFTER:
		if (c == ',') {
			j->st = S_OBJ_KEY;
			return 0;
		}
		return c == '}' ? close_object(j) : fail(j, "expected ',' or '}' in JSON object");
	default: /* S_END */
		return fail(j, "data after the JSON object");
	}
}

int json_flat_feed(struct json_flat *j, const char *data, size_t len)
{
	size_t i = 0;

	if (j->st == S_ERROR)
		return -1;
	while (i < len) {
		int r = step(j, (unsigned char)data[i]);

		if (r == -1)
			return -1;
		if (r == 0) {
			i++;
			j->offset++;
		}
	}
	return 0;
}

int json_flat_finish(struct json_flat *j)
{
	if (j->st == S_ERROR)
		return -1;
	if (j->st != S_END)
		return fail(j, "incomplete JSON object");
	return 0;
}
