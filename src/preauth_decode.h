/*
 * preauth_decode — the pure part of the pre-login commands: ID's fields
 * (checked, filtered, re-serialised for the backend), LOGIN's arguments and
 * the SASL PLAIN/LOGIN responses of AUTHENTICATE. No I/O, no session, no
 * logging: preauth.c acts on the results, the fuzzer and tests call them
 * directly.
 */
#ifndef IMAPGATE_PREAUTH_DECODE_H
#define IMAPGATE_PREAUTH_DECODE_H

#include <stdbool.h>
#include <stddef.h>

#include "imap_parser.h"

#define PREAUTH_USER_MAX 1024 /* longest username passed on */
#define PREAUTH_SASL_MAX 8192 /* decoded SASL response buffer */

struct preauth_id {
	char *fields;      /* malloc'd ' '-separated "field" "value" pairs, or NULL */
	bool ignored;      /* address fields were dropped (untrusted sender) */
	/* The last x-originating-ip/port a trusted sender gave (NULL: none);
	 * they point into the command. */
	const struct imap_arg *origin_ip, *origin_port;
};

/*
 * Checks ID's arguments (RFC 2971: NIL or a list of field-value pairs) and
 * builds what is passed on: address fields (x-originating-*, x-forward-*,
 * ...) only from a trusted sender, and x-originating-* not at all when
 * imapgate sends its own (forward_own_origin). Returns NULL and fills *id,
 * or the text of a BAD reply (then *id holds nothing to free).
 */
const char *preauth_decode_id(const struct imap_command *cmd, bool trusted, bool forward_own_origin,
                              struct preauth_id *id);
void preauth_id_free(struct preauth_id *id);

/* Whether an ID field name is one a backend believes about the client's
 * address when it comes from a trusted network. */
bool preauth_id_key_is_address(const char *k, size_t n);

/* LOGIN user password: true with both strings, false if the arguments are
 * anything else. */
bool preauth_decode_login(const struct imap_command *cmd, const struct imap_arg **user,
                          const struct imap_arg **pass);

/* Strict base64 (RFC 4648, padding required) into out; returns the length,
 * or -1 (bad input, or more than outsz bytes). */
long preauth_b64_decode(const char *in, size_t n, char *out, size_t outsz);

/* One SASL response (RFC 9051 section 6.2.2): base64, or "=" for an empty
 * initial response. Returns the length decoded into out, or -1. */
long preauth_sasl_response(const char *in, size_t n, char *out, size_t outsz);

enum preauth_plain {
	PREAUTH_PLAIN_OK,
	PREAUTH_PLAIN_MALFORMED, /* not authzid NUL authcid NUL passwd */
	PREAUTH_PLAIN_AUTHZID,   /* an authorization identity other than the user */
};

/* A decoded PLAIN message (RFC 4616); *user and *pass point into dec. */
enum preauth_plain preauth_sasl_plain(const char *dec, size_t n, const char **user, size_t *ulen,
                                      const char **pass, size_t *plen);

#endif
