/*
 * json_flat — streaming parser for one JSON object (RFC 8259) as Dovecot's
 * auth policy client sends it, handing each scalar member to a callback
 * with nested object keys joined by '/' ({"attrs":{"cos":"x"}} gives key
 * "attrs/cos"). Pure: no I/O, no allocation, no logging, no globals.
 */
#ifndef IMAPGATE_JSON_FLAT_H
#define IMAPGATE_JSON_FLAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_FLAT_KEY_MAX 128    /* bytes of a flattened key ("a/b/c") */
#define JSON_FLAT_VALUE_MAX 1024 /* bytes of an unescaped string or a number */
#define JSON_FLAT_DEPTH_MAX 4    /* objects, the top-level one included */

enum json_type { JSON_STRING, JSON_NUMBER, JSON_TRUE, JSON_FALSE, JSON_NULL };

/*
 * Called once per scalar member, in document order, duplicates included.
 * key (klen bytes) is the flattened key; val (vlen bytes) is the unescaped
 * UTF-8 string (JSON_STRING), the number's text as written (JSON_NUMBER),
 * or "true", "false", "null". Both are NUL-terminated and hold no NUL byte;
 * they are valid only during the call. Return 0 to go on, nonzero to stop
 * the parse with an error.
 */
typedef int json_flat_fn(void *ctx, const char *key, size_t klen, enum json_type type, const char *val,
                         size_t vlen);

struct json_flat {
	const char *error; /* after -1: short static English phrase */
	size_t offset;     /* bytes accepted so far; after -1, where the bad byte is */

	/* Parser state: private. */
	json_flat_fn *fn;
	void *ctx;
	int st, sub;
	bool in_key;
	unsigned depth;
	size_t prefix[JSON_FLAT_DEPTH_MAX]; /* key bytes before each level's names */
	size_t klen, vlen;
	uint32_t u, hi; /* \uXXXX being read; a high surrogate waiting for its pair */
	unsigned nhex, u8_need;
	unsigned char u8_lo, u8_hi; /* range of the next UTF-8 continuation byte */
	const char *lit;
	size_t lit_pos;
	char key[JSON_FLAT_KEY_MAX + 1];
	char val[JSON_FLAT_VALUE_MAX + 1];
};

/* Ready j for one object; fn(ctx, …) gets its members. */
void json_flat_init(struct json_flat *j, json_flat_fn *fn, void *ctx);

/*
 * Parse the next len bytes; any split gives the same callbacks and result.
 * Returns 0, or -1 with j->error set (and -1 again on every later call):
 * not an object at the top, bad syntax, an array (not supported: Dovecot
 * never sends one), nesting deeper than JSON_FLAT_DEPTH_MAX, a key or value
 * over its limit, a raw control character, invalid UTF-8, a bad escape, a
 * lone surrogate, \u0000, non-whitespace after the object, or the callback
 * returning nonzero. Empty nested objects produce no callback.
 */
int json_flat_feed(struct json_flat *j, const char *data, size_t len);

/* End of input: 0 if exactly one whole object was read, else -1 with
 * j->error ("incomplete JSON object" or an earlier error). */
int json_flat_finish(struct json_flat *j);

#endif
