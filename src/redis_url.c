/*
 * redis_url — parse guard_redis (redis_url.h).
 */
#include "redis_url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Copy s[0..n) into out (size REDIS_URL_PART_MAX), decoding %XX. */
static int decode(const char *s, size_t n, char *out, const char **why)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '%') {
			if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) {
				*why = "bad %XX escape";
				return -1;
			}
			c = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
			if (c == '\0') {
				*why = "%00 is not allowed";
				return -1;
			}
			i += 2;
		}
		if (o + 1 >= REDIS_URL_PART_MAX) {
			*why = "part too long";
			return -1;
		}
		out[o++] = c;
	}
	out[o] = '\0';
	return 0;
}

static int number(const char *s, size_t n, unsigned max, unsigned *out)
{
	unsigned long v = 0;

	if (n == 0 || n > 10)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = (unsigned)v;
	return 0;
}

int redis_url_parse(const char *s, struct redis_url *u, const char **why)
{
	const char *p, *end, *at, *slash, *hostend;

	memset(u, 0, sizeof(*u));
	u->port = 6379;
	if (strncmp(s, "unix:", 5) == 0) {
		const char *q = strchr(s + 5, '?');
		size_t n = q ? (size_t)(q - (s + 5)) : strlen(s + 5);

		u->unix_socket = true;
		if (n == 0 || s[5] != '/') {
			*why = "unix: needs an absolute socket path (unix:/run/redis/redis.sock)";
			return -1;
		}
		if (n >= sizeof(u->host)) {
			*why = "socket path too long";
			return -1;
		}
		memcpy(u->host, s + 5, n);
		u->host[n] = '\0';
		if (q && (strncmp(q, "?db=", 4) != 0 || number(q + 4, strlen(q + 4), 1000000, &u->db) == -1)) {
			*why = "after the path only ?db=NUMBER";
			return -1;
		}
		return 0;
	}
	if (strncmp(s, "redis://", 8) != 0) {
		*why = "must start with redis:// or unix:/";
		return -1;
	}
	p = s + 8;
	end = p + strlen(p);
	slash = strchr(p, '/');
	if (slash == NULL)
		slash = end;
	/* The last '@' before the path ends the credentials. */
	at = NULL;
	for (const char *c = p; c < slash; c++)
		if (*c == '@')
			at = c;
	if (at) {
		const char *colon = memchr(p, ':', (size_t)(at - p));

		if (colon == NULL) {
			*why = "credentials are USER:PASSWORD@ or :PASSWORD@";
			return -1;
		}
		if (decode(p, (size_t)(colon - p), u->user, why) == -1 ||
		    decode(colon + 1, (size_t)(at - colon - 1), u->password, why) == -1)
			return -1;
		if (u->password[0] == '\0') {
			*why = "empty password";
			return -1;
		}
		p = at + 1;
	}
	if (*p == '[') {
		const char *rb = memchr(p, ']', (size_t)(slash - p));

		if (rb == NULL || rb - p - 1 <= 0 || (size_t)(rb - p - 1) >= sizeof(u->host)) {
			*why = "bad [IPv6] host";
			return -1;
		}
		memcpy(u->host, p + 1, (size_t)(rb - p - 1));
		hostend = rb + 1;
		if (hostend < slash && *hostend != ':') {
			*why = "junk after ]";
			return -1;
		}
	} else {
		const char *colon = memchr(p, ':', (size_t)(slash - p));

		hostend = colon ? colon : slash;
		if (hostend == p || (size_t)(hostend - p) >= sizeof(u->host)) {
			*why = "missing or too long host";
			return -1;
		}
		memcpy(u->host, p, (size_t)(hostend - p));
	}
	for (const char *c = u->host; *c; c++)
		if (*c == ' ' || *c == '\t' || *c == '@' || *c == '/' || *c == '?' || *c == '#') {
			*why = "bad character in host";
			return -1;
		}
	if (hostend < slash && *hostend == ':' &&
	    (number(hostend + 1, (size_t)(slash - hostend - 1), 65535, &u->port) == -1 || u->port == 0)) {
		*why = "bad port (1..65535)";
		return -1;
	}
	if (slash < end && number(slash + 1, (size_t)(end - slash - 1), 1000000, &u->db) == -1) {
		*why = "bad database number after /";
		return -1;
	}
	return 0;
}

void redis_url_display(const struct redis_url *u, char *buf, unsigned bufsz)
{
	bool v6 = strchr(u->host, ':') != NULL;

	if (u->unix_socket)
		snprintf(buf, bufsz, "unix:%s?db=%u", u->host, u->db);
	else
		snprintf(buf, bufsz, "redis://%s%s%s%s%s%s:%u/%u", u->user, u->password[0] ? ":***" : "",
		         u->password[0] || u->user[0] ? "@" : "", v6 ? "[" : "", u->host, v6 ? "]" : "", u->port,
		         u->db);
}
