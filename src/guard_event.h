/*
 * guard_event — one guard event as a line of text, for the fleet's Redis
 * channel (issue 12): every instance publishes what its guard saw and
 * applies what its peers saw. A peer's line is untrusted input, so the
 * decoder is strict and the format has exactly one spelling per event:
 * encode(decode(x)) == x for every line decode accepts.
 *
 * One line, single spaces between fields, no newline:
 *
 *   ig1 F NODE TIME PREFIX USER PWKEY PROTO REASON
 *   ig1 S NODE TIME PREFIX USER
 *   ig1 B NODE TIME PREFIX STARTED EXPIRY BAN_COUNT SOURCE REASON
 *   ig1 U NODE TIME PREFIX keep|forget
 *
 *   ig1 F nodeA 1733390000 192.0.2.7/32 alice@example.org 0123456789abcdef smtp auth_failed
 *
 * NODE    [A-Za-z0-9._-], 1..63 bytes.
 * TIME, STARTED, EXPIRY
 *         unix seconds, decimal, no sign, no leading zero, at most
 *         GEV_TIME_MAX; STARTED <= EXPIRY.
 * PREFIX  CIDR text as guard_cidr_format writes it (192.0.2.0/24,
 *         2001:db8::/64): length always given, host bits zero, IPv6 in
 *         inet_ntop's form, a v4-mapped prefix of /96 or longer always as
 *         IPv4 (as cidr_parse stores it).
 * USER, REASON
 *         escaped: every byte outside 0x21..0x7e, and '%', as %XX with
 *         upper-case hex; nothing else escaped; never %00. The empty string
 *         is a lone "%" (no escape is a lone '%', so it means nothing
 *         else). USER up to GUARD_USER_MAX-1 bytes, REASON up to
 *         GUARD_REASON_LEN-1.
 * PWKEY   the first GEV_PWKEY_LEN bytes of the password key as 16
 *         lower-case hex digits, or "-" when unknown.
 * PROTO   [a-z0-9-], 1..GUARD_PROTO_LEN-1 bytes.
 * BAN_COUNT  0..GEV_BAN_COUNT_MAX.
 * SOURCE  "auto" or "manual" (guard_source_name).
 *
 * Pure: no I/O, no allocation.
 */
#ifndef IMAPGATE_GUARD_EVENT_H
#define IMAPGATE_GUARD_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "guard.h"

#define GEV_NODE_MAX 64      /* node names: [A-Za-z0-9._-]{1,63} */
#define GEV_PWKEY_LEN 8      /* the guard compares the first 8 bytes of its password key */
#define GEV_TEXT_MAX 1024    /* an encoded event never exceeds this, NUL included */
#define GEV_TIME_MAX ((uint64_t)1 << 40) /* latest TIME, STARTED, EXPIRY accepted */
#define GEV_BAN_COUNT_MAX 1000000u

enum gev_type { GEV_FAILURE = 'F', GEV_SUCCESS = 'S', GEV_BAN = 'B', GEV_UNBAN = 'U' };

struct gev {
	enum gev_type type;
	char node[GEV_NODE_MAX];        /* the instance that saw it */
	uint64_t time;                  /* unix seconds when it happened */
	struct cidr prefix;             /* F/S: the client's key prefix (as guard_key_from_sockaddr
	                                   makes it); B/U: the ban's prefix */
	/* F and S */
	char user[GUARD_USER_MAX];      /* case-folded user name, NUL-free bytes (any byte 0x01..0xff),
	                                   may be empty */
	/* F */
	bool has_pwkey;
	uint8_t pwkey[GEV_PWKEY_LEN];   /* meaningful when has_pwkey */
	char proto[GUARD_PROTO_LEN];    /* imap, pop3, smtp, ... ([a-z0-9-]) */
	char reason[GUARD_REASON_LEN];  /* auth_failed, ... (may be empty) */
	/* B */
	uint64_t started, expiry;       /* unix seconds, started <= expiry */
	unsigned ban_count;             /* 0..GEV_BAN_COUNT_MAX */
	enum guard_source source;       /* auto | manual */
	char ban_reason[GUARD_REASON_LEN];
	/* U */
	bool forget;                    /* imapgate-ctl unban --forget */
};

/*
 * e as one line into buf (NUL-terminated). Fields the type does not carry
 * are ignored, and so is pwkey without has_pwkey. Returns the text's
 * length (< GEV_TEXT_MAX), or -1 when e is invalid (a field outside the
 * ranges above, a string without its NUL, a prefix not in the form cidr_parse
 * stores) or buf is too small (GEV_TEXT_MAX is always enough).
 */
int gev_encode(const struct gev *e, char *buf, size_t bufsz);

/*
 * Parse buf[0..len) (no NUL needed; a NUL byte inside is an error) into e.
 * e is zeroed first, so fields the type does not carry are 0/"". Returns 0,
 * or -1 with *why (static text) naming the first problem found.
 */
int gev_decode(const char *buf, size_t len, struct gev *e, const char **why);

#endif
