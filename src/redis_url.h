/*
 * redis_url — guard_redis's value: where the shared Redis is and who to
 * be there.
 *
 *   redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]   TCP (port 6379, db 0)
 *   unix:/PATH[?db=DB]                           a Unix socket, no AUTH
 *
 * HOST may be a name, an IPv4 address or [IPv6]. USER and PASSWORD may
 * hold %XX escapes (for ':', '@', '/' in a password). Pure; no I/O.
 */
#ifndef IMAPGATE_REDIS_URL_H
#define IMAPGATE_REDIS_URL_H

#include <stdbool.h>

#define REDIS_URL_PART_MAX 256

struct redis_url {
	bool unix_socket;
	char host[REDIS_URL_PART_MAX]; /* TCP: host without brackets; unix: the path */
	unsigned port;
	unsigned db;
	char user[REDIS_URL_PART_MAX];     /* "" = none (AUTH password alone, or no AUTH) */
	char password[REDIS_URL_PART_MAX]; /* "" = no AUTH */
};

/* Parse s into u. Returns 0, or -1 with *why (static text). */
int redis_url_parse(const char *s, struct redis_url *u, const char **why);
/* "redis://user:***@host:port/db" — the password never shown. */
void redis_url_display(const struct redis_url *u, char *buf, unsigned bufsz);

#endif
