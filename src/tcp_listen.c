/*
 * tcp_listen — listening sockets for the HTTP endpoints (tcp_listen.h).
 */
#include "tcp_listen.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"

static int bind_one(const char *what, const char *spec, const struct addrinfo *ai, int backlog, int *fd_r,
                    char *err, size_t errsz)
{
	char host[NI_MAXHOST] = "?", port[NI_MAXSERV] = "?";
	int one = 1, fd;

	getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), port, sizeof(port),
	            NI_NUMERICHOST | NI_NUMERICSERV);
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errsz, "%s %s: socket: %s", what, spec, strerror(errno));
		return -1;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) == -1 || listen(fd, backlog) == -1) {
		snprintf(err, errsz, "%s %s (%s port %s): %s", what, spec, host, port, strerror(errno));
		close(fd);
		return -1;
	}
	log_info("event=%s address=%s port=%s", what, host, port);
	*fd_r = fd;
	return 0;
}

int tcp_listen_spec(const char *what, const char *spec, int backlog, int *fds, size_t max, size_t *n,
                    char *err, size_t errsz)
{
	char host[256], port[64];
	struct addrinfo hints, *res = NULL, *ai;
	const char *why;
	size_t first = *n;
	int gai;

	if (addr_split_hostport(spec, host, sizeof(host), port, sizeof(port), &why) == -1) {
		snprintf(err, errsz, "%s %s: %s", what, spec, why);
		return -1;
	}
	if (port[0] == '\0') {
		snprintf(err, errsz, "%s %s: no port", what, spec);
		return -1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (gai != 0) {
		snprintf(err, errsz, "%s %s: %s", what, spec, gai_strerror(gai));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		if (*n == max) {
			snprintf(err, errsz, "%s %s: too many addresses", what, spec);
			goto fail;
		}
		if (bind_one(what, spec, ai, backlog, &fds[*n], err, errsz) == -1)
			goto fail;
		(*n)++;
		if (host[0])
			break;
	}
	freeaddrinfo(res);
	return 0;
fail:
	freeaddrinfo(res);
	while (*n > first)
		close(fds[--*n]);
	return -1;
}
