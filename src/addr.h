/*
 * addr — socket addresses as text and CIDR prefixes. Pure functions, no I/O
 * (no DNS: only numeric addresses).
 */
#ifndef IMAPGATE_ADDR_H
#define IMAPGATE_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct cidr {
	int family;        /* AF_INET or AF_INET6 */
	uint8_t addr[16];  /* network byte order, host bits zeroed */
	unsigned prefix;   /* 0..32 or 0..128 */
};

#define CIDR_LIST_MAX 64
struct cidr_list {
	struct cidr items[CIDR_LIST_MAX];
	size_t n;
};

/* Longest text addr_format writes, NUL included ("[v6]:port"). */
#define ADDR_STRLEN 64

/*
 * Parse "1.2.3.4", "1.2.3.0/24", "::1", "2001:db8::/32". An address without
 * a prefix gets the full length. Returns 0, or -1 with *why set to a static
 * message.
 */
int cidr_parse(const char *s, struct cidr *out, const char **why);

/*
 * Parse a list separated by commas and/or spaces. Returns 0, or -1 with
 * *why set (static text) naming the first bad item's problem.
 */
int cidr_list_parse(const char *s, struct cidr_list *out, const char **why);

/* True when sa (AF_INET, AF_INET6; v4-mapped v6 counts as v4) is inside c. */
bool cidr_match(const struct cidr *c, const struct sockaddr *sa);
bool cidr_list_match(const struct cidr_list *l, const struct sockaddr *sa);

/*
 * Split "HOST:PORT", "[V6]:PORT" or "PORT" (host "") into host and port.
 * Returns 0, or -1 with *why set.
 */
int addr_split_hostport(const char *s, char *host, size_t hostsz, char *port, size_t portsz,
                        const char **why);

/* "1.2.3.4" or "::1" (no port) into buf; v4-mapped v6 shown as v4. */
void addr_format_ip(const struct sockaddr *sa, char *buf, size_t bufsz);
/* Port number of sa, 0 for other families. */
unsigned addr_port(const struct sockaddr *sa);

/*
 * The key that stands for one client in per-client counts: an IPv4 address
 * whole (v4-mapped v6 counts as v4), an IPv6 address by its /64, the least
 * one site or host gets, as the guard's default prefix does. Byte 0 is 4, 6,
 * or 0 for other families (all of which share one key); unused bytes are 0.
 */
#define ADDR_CLIENT_KEY_LEN 9
void addr_client_key(const struct sockaddr *sa, uint8_t key[ADDR_CLIENT_KEY_LEN]);

#endif
