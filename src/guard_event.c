/*
 * guard_event — guard events as lines of text (guard_event.h).
 *
 * Both directions check the same rules, so whatever encodes decodes to the
 * same struct and whatever decodes encodes to the same bytes. The prefix
 * is held to one spelling by a round trip through cidr_parse and
 * guard_cidr_format; every other field by the rules below (no needless
 * escape, no leading zero, lower-case hex).
 */
#include "guard_event.h"

#include <string.h>
#include <sys/socket.h>

#define FIELDS_MAX 10 /* a ban's line */

static const char hexdig[] = "0123456789abcdef";
static const char hexup[] = "0123456789ABCDEF";

/* A byte that stands for itself in USER and REASON. */
static bool plain_byte(unsigned char c)
{
	return c >= 0x21 && c <= 0x7e && c != '%';
}

static bool node_byte(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
	       c == '_' || c == '-';
}

static bool proto_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

static bool all_bytes(const char *s, size_t n, bool (*ok)(unsigned char))
{
	for (size_t i = 0; i < n; i++)
		if (!ok((unsigned char)s[i]))
			return false;
	return true;
}

/* Length of a NUL-terminated string held in an array of size sz; sz when it has no NUL. */
static size_t held_len(const char *s, size_t sz)
{
	const char *nul = memchr(s, '\0', sz);

	return nul ? (size_t)(nul - s) : sz;
}

/* The prefix text of c, when c is in the form cidr_parse stores (else -1). */
static int prefix_text(const struct cidr *c, char *buf, size_t bufsz)
{
	struct cidr back;
	const char *why;

	if (!(c->family == AF_INET && c->prefix <= 32) && !(c->family == AF_INET6 && c->prefix <= 128))
		return -1;
	guard_cidr_format(c, buf, bufsz);
	if (cidr_parse(buf, &back, &why) == -1 || back.family != c->family || back.prefix != c->prefix ||
	    memcmp(back.addr, c->addr, sizeof back.addr) != 0)
		return -1;
	return 0;
}

/* ---- encoding ---- */

struct out {
	char *buf;
	size_t size, len;
	bool full;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->full || n >= o->size - o->len) {
		o->full = true;
		return;
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
}

static void put_str(struct out *o, const char *s)
{
	put(o, " ", 1);
	put(o, s, strlen(s));
}

static void put_num(struct out *o, uint64_t v)
{
	char d[24];
	size_t i = sizeof d;

	do {
		d[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put(o, " ", 1);
	put(o, d + i, sizeof d - i);
}

/* s (length n) escaped; "%" when empty. */
static void put_escaped(struct out *o, const char *s, size_t n)
{
	put(o, " ", 1);
	if (n == 0)
		put(o, "%", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[3] = {'%', hexup[c >> 4], hexup[c & 15]};

		if (plain_byte(c))
			put(o, (const char *)&c, 1);
		else
			put(o, esc, 3);
	}
}

int gev_encode(const struct gev *e, char *buf, size_t bufsz)
{
	struct out o = {.buf = buf, .size = bufsz};
	char prefix[ADDR_STRLEN];
	size_t node_len = held_len(e->node, sizeof e->node);
	char type = (char)e->type;

	if (bufsz == 0)
		return -1;
	if (e->type != GEV_FAILURE && e->type != GEV_SUCCESS && e->type != GEV_BAN && e->type != GEV_UNBAN)
		return -1;
	if (node_len == 0 || node_len == sizeof e->node || !all_bytes(e->node, node_len, node_byte))
		return -1;
	if (e->time > GEV_TIME_MAX || prefix_text(&e->prefix, prefix, sizeof prefix) == -1)
		return -1;
	put(&o, "ig1 ", 4);
	put(&o, &type, 1);
	put_str(&o, e->node);
	put_num(&o, e->time);
	put_str(&o, prefix);
	if (e->type == GEV_FAILURE || e->type == GEV_SUCCESS) {
		size_t n = held_len(e->user, sizeof e->user);

		if (n == sizeof e->user)
			return -1;
		put_escaped(&o, e->user, n);
	}
	if (e->type == GEV_FAILURE) {
		size_t plen = held_len(e->proto, sizeof e->proto);
		size_t rlen = held_len(e->reason, sizeof e->reason);
		char hex[2 * GEV_PWKEY_LEN + 1] = "-";

		if (plen == 0 || plen == sizeof e->proto || !all_bytes(e->proto, plen, proto_byte) ||
		    rlen == sizeof e->reason)
			return -1;
		if (e->has_pwkey) {
			for (size_t i = 0; i < GEV_PWKEY_LEN; i++) {
				hex[2 * i] = hexdig[e->pwkey[i] >> 4];
				hex[2 * i + 1] = hexdig[e->pwkey[i] & 15];
			}
			hex[2 * GEV_PWKEY_LEN] = '\0';
		}
		put_str(&o, hex);
		put_str(&o, e->proto);
		put_escaped(&o, e->reason, rlen);
	} else if (e->type == GEV_BAN) {
		size_t rlen = held_len(e->ban_reason, sizeof e->ban_reason);

		if (e->started > e->expiry || e->expiry > GEV_TIME_MAX || e->ban_count > GEV_BAN_COUNT_MAX ||
		    (e->source != GUARD_SRC_AUTO && e->source != GUARD_SRC_MANUAL) ||
		    rlen == sizeof e->ban_reason)
			return -1;
		put_num(&o, e->started);
		put_num(&o, e->expiry);
		put_num(&o, e->ban_count);
		put_str(&o, guard_source_name(e->source));
		put_escaped(&o, e->ban_reason, rlen);
	} else if (e->type == GEV_UNBAN) {
		put_str(&o, e->forget ? "forget" : "keep");
	}
	if (o.full)
		return -1;
	buf[o.len] = '\0';
	return (int)o.len;
}

/* ---- decoding ---- */

struct field {
	const char *s;
	size_t n;
};

static int fail(const char **why, const char *msg)
{
	*why = msg;
	return -1;
}

static bool field_is(const struct field *f, const char *word)
{
	return f->n == strlen(word) && memcmp(f->s, word, f->n) == 0;
}

/* Decimal without sign or leading zero, at most max. */
static int parse_num(const struct field *f, uint64_t max, uint64_t *out, const char **why)
{
	uint64_t v = 0;

	for (size_t i = 0; i < f->n; i++) {
		unsigned d = (unsigned)(unsigned char)f->s[i] - '0';

		if (d > 9)
			return fail(why, "number: not decimal digits");
		if (v > (max - d) / 10)
			return fail(why, "number out of range");
		v = v * 10 + d;
	}
	if (f->n > 1 && f->s[0] == '0')
		return fail(why, "number with a leading zero");
	*out = v;
	return 0;
}

static int upper_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* An escaped field into out (size outsz, NUL-terminated). */
static int unescape(const struct field *f, char *out, size_t outsz, const char **why)
{
	size_t o = 0;

	if (f->n == 1 && f->s[0] == '%') {
		out[0] = '\0';
		return 0;
	}
	for (size_t i = 0; i < f->n; i++) {
		unsigned char c = (unsigned char)f->s[i];

		if (c == '%') {
			if (f->n - i < 3 || upper_hex(f->s[i + 1]) < 0 || upper_hex(f->s[i + 2]) < 0)
				return fail(why, "bad %XX escape (two upper-case hex digits)");
			c = (unsigned char)(upper_hex(f->s[i + 1]) << 4 | upper_hex(f->s[i + 2]));
			if (c == 0)
				return fail(why, "%00 in a string");
			if (plain_byte(c))
				return fail(why, "needless %XX escape of a printable byte");
			i += 2;
		}
		if (o + 1 >= outsz)
			return fail(why, "string too long");
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
}

static int parse_prefix(const struct field *f, struct cidr *c, const char **why)
{
	char text[ADDR_STRLEN], back[ADDR_STRLEN];

	if (f->n >= sizeof text)
		return fail(why, "prefix too long");
	memcpy(text, f->s, f->n);
	text[f->n] = '\0';
	if (memchr(text, '/', f->n) == NULL)
		return fail(why, "prefix without a /length");
	if (cidr_parse(text, c, why) == -1)
		return -1;
	guard_cidr_format(c, back, sizeof back);
	if (strcmp(text, back) != 0)
		return fail(why, "prefix not in canonical form (host bits, zeros, case or v4-mapped)");
	return 0;
}

static int parse_pwkey(const struct field *f, struct gev *e, const char **why)
{
	if (field_is(f, "-"))
		return 0;
	if (f->n != 2 * GEV_PWKEY_LEN)
		return fail(why, "password key: 16 hex digits or -");
	for (size_t i = 0; i < f->n; i++) {
		const char *d = memchr(hexdig, f->s[i], 16);

		if (d == NULL)
			return fail(why, "password key: lower-case hex digits only");
		e->pwkey[i / 2] = (uint8_t)(e->pwkey[i / 2] << 4 | (uint8_t)(d - hexdig));
	}
	e->has_pwkey = true;
	return 0;
}

static int fields_expected(char type)
{
	switch (type) {
	case GEV_FAILURE: return 9;
	case GEV_SUCCESS: return 6;
	case GEV_BAN: return 10;
	case GEV_UNBAN: return 6;
	default: return -1;
	}
}

int gev_decode(const char *buf, size_t len, struct gev *e, const char **why)
{
	struct field f[FIELDS_MAX];
	size_t nf = 0, start = 0;
	uint64_t v;
	int want;

	memset(e, 0, sizeof *e);
	if (len >= GEV_TEXT_MAX)
		return fail(why, "line too long");
	if (len == 0)
		return fail(why, "empty line");
	for (size_t i = 0; i <= len; i++) {
		if (i < len && buf[i] != ' ') {
			unsigned char c = (unsigned char)buf[i];

			if (c < 0x21 || c > 0x7e)
				return fail(why, "byte outside printable ASCII");
			continue;
		}
		if (i == start)
			return fail(why, "empty field (leading, trailing or double space)");
		if (nf == FIELDS_MAX)
			return fail(why, "too many fields");
		f[nf].s = buf + start;
		f[nf].n = i - start;
		nf++;
		start = i + 1;
	}
	if (!field_is(&f[0], "ig1"))
		return fail(why, "unknown version (not ig1)");
	if (nf < 2 || f[1].n != 1 || (want = fields_expected(f[1].s[0])) == -1)
		return fail(why, "unknown event type");
	if (nf < (size_t)want)
		return fail(why, "too few fields for the event type");
	if (nf > (size_t)want)
		return fail(why, "too many fields for the event type");
	e->type = (enum gev_type)f[1].s[0];

	if (f[2].n >= GEV_NODE_MAX || !all_bytes(f[2].s, f[2].n, node_byte))
		return fail(why, "bad node name ([A-Za-z0-9._-], 1..63)");
	memcpy(e->node, f[2].s, f[2].n);
	if (parse_num(&f[3], GEV_TIME_MAX, &e->time, why) == -1 || parse_prefix(&f[4], &e->prefix, why) == -1)
		return -1;

	switch (e->type) {
	case GEV_FAILURE:
		if (unescape(&f[5], e->user, sizeof e->user, why) == -1 || parse_pwkey(&f[6], e, why) == -1)
			return -1;
		if (f[7].n >= GUARD_PROTO_LEN || !all_bytes(f[7].s, f[7].n, proto_byte))
			return fail(why, "bad protocol name ([a-z0-9-], 1..11)");
		memcpy(e->proto, f[7].s, f[7].n);
		return unescape(&f[8], e->reason, sizeof e->reason, why);
	case GEV_SUCCESS:
		return unescape(&f[5], e->user, sizeof e->user, why);
	case GEV_BAN:
		if (parse_num(&f[5], GEV_TIME_MAX, &e->started, why) == -1 ||
		    parse_num(&f[6], GEV_TIME_MAX, &e->expiry, why) == -1)
			return -1;
		if (e->expiry < e->started)
			return fail(why, "ban expiry before its start");
		if (parse_num(&f[7], GEV_BAN_COUNT_MAX, &v, why) == -1)
			return -1;
		e->ban_count = (unsigned)v;
		if (field_is(&f[8], "auto"))
			e->source = GUARD_SRC_AUTO;
		else if (field_is(&f[8], "manual"))
			e->source = GUARD_SRC_MANUAL;
		else
			return fail(why, "ban source: auto or manual");
		return unescape(&f[9], e->ban_reason, sizeof e->ban_reason, why);
	case GEV_UNBAN:
		if (field_is(&f[5], "forget"))
			e->forget = true;
		else if (!field_is(&f[5], "keep"))
			return fail(why, "unban: keep or forget");
		return 0;
	}
	return fail(why, "unknown event type");
}
