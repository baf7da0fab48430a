/*
 * addr — numeric socket addresses as text, and CIDR prefixes for access
 * lists (admin_allow) and listen lines.
 *
 * Everything here is a pure function over its arguments: no DNS, no
 * sockets, no logging, no allocation. An IPv4 address that arrives as a
 * v4-mapped IPv6 address (::ffff:a.b.c.d, as dual-stack listeners report
 * it) is treated as the IPv4 address it stands for, both when matched and
 * when formatted.
 */
#include "addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static int fail(const char **why, const char *msg)
{
	if (why)
		*why = msg;
	return -1;
}

static bool is_v4mapped(const uint8_t *a)
{
	static const uint8_t pfx[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	return memcmp(a, pfx, sizeof pfx) == 0;
}

/* Clear every bit of a after the first bits. */
static void zero_host_bits(uint8_t *a, unsigned bits, size_t len)
{
	size_t i = bits / 8;
	if (i < len && bits % 8) {
		a[i] &= (uint8_t)(0xff << (8 - bits % 8));
		i++;
	}
	for (; i < len; i++)
		a[i] = 0;
}

static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	size_t n = bits / 8;
	if (memcmp(a, b, n) != 0)
		return false;
	if (bits % 8 == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - bits % 8));
	return (a[n] & mask) == (b[n] & mask);
}

int cidr_parse(const char *s, struct cidr *out, const char **why)
{
	char buf[INET6_ADDRSTRLEN];
	struct cidr c = {0};
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	unsigned max;

	if (alen == 0)
		return fail(why, "empty address");
	if (alen >= sizeof buf)
		return fail(why, "address too long");
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	if (memchr(buf, ':', alen)) {
		c.family = AF_INET6;
		max = 128;
		if (inet_pton(AF_INET6, buf, c.addr) != 1)
			return fail(why, "not an IPv6 address");
	} else {
		c.family = AF_INET;
		max = 32;
		if (inet_pton(AF_INET, buf, c.addr) != 1)
			return fail(why, "not an IPv4 address");
	}
	c.prefix = max;
	if (slash) {
		const char *p = slash + 1;
		size_t n = strlen(p);
		if (n == 0 || n > 3 || strspn(p, "0123456789") != n)
			return fail(why, "bad prefix length");
		c.prefix = 0;
		for (; *p; p++)
			c.prefix = c.prefix * 10 + (unsigned)(*p - '0');
		if (c.prefix > max)
			return fail(why, "prefix length too long");
	}
	/* ::ffff:a.b.c.d/96+ is an IPv4 prefix in disguise: store it as one so
	 * it matches clients however the kernel reports them. */
	if (c.family == AF_INET6 && c.prefix >= 96 && is_v4mapped(c.addr)) {
		memmove(c.addr, c.addr + 12, 4);
		memset(c.addr + 4, 0, 12);
		c.family = AF_INET;
		c.prefix -= 96;
	}
	zero_host_bits(c.addr, c.prefix, c.family == AF_INET ? 4 : 16);
	*out = c;
	return 0;
}

int cidr_list_parse(const char *s, struct cidr_list *out, const char **why)
{
	static const char sep[] = ", \t";
	struct cidr_list l = {.n = 0};
	char item[INET6_ADDRSTRLEN + 4];

	for (s += strspn(s, sep); *s; s += strspn(s, sep)) {
		size_t n = strcspn(s, sep);
		if (n >= sizeof item)
			return fail(why, "address too long");
		if (l.n == CIDR_LIST_MAX)
			return fail(why, "too many addresses");
		memcpy(item, s, n);
		item[n] = '\0';
		if (cidr_parse(item, &l.items[l.n], why) == -1)
			return -1;
		l.n++;
		s += n;
	}
	if (l.n == 0)
		return fail(why, "empty address list");
	*out = l;
	return 0;
}

bool cidr_match(const struct cidr *c, const struct sockaddr *sa)
{
	const uint8_t *a;

	if (sa->sa_family == AF_INET) {
		a = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
		return c->family == AF_INET && prefix_equal(a, c->addr, c->prefix);
	}
	if (sa->sa_family != AF_INET6)
		return false;
	a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
	if (c->family == AF_INET)
		return is_v4mapped(a) && prefix_equal(a + 12, c->addr, c->prefix);
	return c->family == AF_INET6 && prefix_equal(a, c->addr, c->prefix);
}

bool cidr_list_match(const struct cidr_list *l, const struct sockaddr *sa)
{
	for (size_t i = 0; i < l->n; i++)
		if (cidr_match(&l->items[i], sa))
			return true;
	return false;
}

/* A host name or IPv4 address: letters, digits, '.', '-'. */
static bool host_chars_ok(const char *h, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char ch = h[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '.' || ch == '-'))
			return false;
	}
	return true;
}

int addr_split_hostport(const char *s, char *host, size_t hostsz, char *port, size_t portsz,
                        const char **why)
{
	const char *h = s, *p;
	size_t hl;

	if (s[0] == '[') {
		char v6[INET6_ADDRSTRLEN];
		struct in6_addr tmp;
		const char *close = strchr(s, ']');
		if (!close)
			return fail(why, "missing ']'");
		h = s + 1;
		hl = (size_t)(close - h);
		if (close[1] != ':')
			return fail(why, "expected ':PORT' after ']'");
		p = close + 2;
		if (hl == 0 || hl >= sizeof v6)
			return fail(why, "not an IPv6 address in [ ]");
		memcpy(v6, h, hl);
		v6[hl] = '\0';
		if (inet_pton(AF_INET6, v6, &tmp) != 1)
			return fail(why, "not an IPv6 address in [ ]");
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon) {
			hl = 0;
			p = s;
		} else {
			hl = (size_t)(colon - s);
			p = colon + 1;
			if (memchr(s, ':', hl))
				return fail(why, "an IPv6 address must be written in [ ]");
			if (hl == 1 && s[0] == '*')
				hl = 0;
			else if (!host_chars_ok(s, hl))
				return fail(why, "bad host name");
		}
	}
	if (*p == '\0')
		return fail(why, "missing port");
	if (hl >= hostsz)
		return fail(why, "host name too long");
	if (strlen(p) >= portsz)
		return fail(why, "port too long");
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, p);
	return 0;
}

void addr_format_ip(const struct sockaddr *sa, char *buf, size_t bufsz)
{
	char tmp[INET6_ADDRSTRLEN];
	const char *r = NULL;

	if (bufsz == 0)
		return;
	if (sa->sa_family == AF_INET) {
		r = inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, tmp,
		              sizeof tmp);
	} else if (sa->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
		if (is_v4mapped(a))
			r = inet_ntop(AF_INET, a + 12, tmp, sizeof tmp);
		else
			r = inet_ntop(AF_INET6, a, tmp, sizeof tmp);
	}
	snprintf(buf, bufsz, "%s", r ? r : "?");
}

unsigned addr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
	return 0;
}

void addr_client_key(const struct sockaddr *sa, uint8_t key[ADDR_CLIENT_KEY_LEN])
{
	memset(key, 0, ADDR_CLIENT_KEY_LEN);
	if (sa->sa_family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;

		if (is_v4mapped(a)) {
			key[0] = 4;
			memcpy(key + 1, a + 12, 4);
		} else {
			key[0] = 6;
			memcpy(key + 1, a, 8);
		}
	}
}
