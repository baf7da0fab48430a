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
#include "loop.h"
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

static void listeners_want(struct tcp_listeners *t, unsigned want)
{
	for (size_t i = 0; i < t->n; i++)
		(void)loop_io_set(t->loop, &t->lio[i], want);
}

static void pause_end(struct loop_timer *tm)
{
	listeners_want(tm->data, LOOP_READ);
}

int tcp_listeners_add(struct tcp_listeners *t, const char *spec, int backlog, char *err, size_t errsz)
{
	char what[48];
	int fds[TCP_LISTENERS_MAX];
	size_t n = 0;

	snprintf(what, sizeof(what), "%s_listen", t->name);
	if (tcp_listen_spec(what, spec, backlog, fds, t->max - t->n, &n, err, errsz) == -1)
		return -1;
	t->pause.fn = pause_end;
	t->pause.data = t;
	for (size_t k = 0; k < n; k++) {
		struct loop_io *io = &t->lio[t->n++];

		memset(io, 0, sizeof(*io));
		io->fd = fds[k];
		io->fn = t->fn;
		io->data = t->data;
		if (loop_io_set(t->loop, io, LOOP_READ) == -1) {
			snprintf(err, errsz, "%s %s: epoll: %s", what, spec, strerror(errno));
			for (size_t j = k + 1; j < n; j++)
				close(fds[j]);
			return -1;
		}
	}
	return 0;
}

void tcp_listeners_close(struct tcp_listeners *t)
{
	for (size_t i = 0; i < t->n; i++) {
		loop_io_del(t->loop, &t->lio[i]);
		close(t->lio[i].fd);
	}
	t->n = 0;
	if (t->loop)
		loop_timer_stop(t->loop, &t->pause);
}

int tcp_listeners_accept(struct tcp_listeners *t, struct loop_io *io, struct sockaddr_storage *ss)
{
	for (;;) {
		socklen_t sl = sizeof(*ss);
		int fd = accept4(io->fd, (struct sockaddr *)ss, ss ? &sl : NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd != -1)
			return fd;
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE) {
			log_warn("event=%s_accept_error reason=out_of_descriptors", t->name);
			listeners_want(t, 0);
			loop_timer_start(t->loop, &t->pause, t->pause_ms);
		} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
			log_warn("event=%s_accept_error error=\"%s\"", t->name, strerror(errno));
		}
		return -1;
	}
}

unsigned tcp_listeners_port(const struct tcp_listeners *t)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (t->n == 0 || getsockname(t->lio[0].fd, (struct sockaddr *)&ss, &sl) == -1)
		return 0;
	return addr_port((struct sockaddr *)&ss);
}

void tcp_answer_close(int fd, const char *text, size_t len)
{
	(void)send(fd, text, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	close(fd);
}
