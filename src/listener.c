/*
 * listener — bound sockets and accept.
 *
 * It hands each accepted socket, already non-blocking with TCP_NODELAY, to
 * session_accept. It never blocks; when descriptors run out it sheds the
 * waiting connection through a reserved fd instead of spinning.
 */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "server.h"
#include "session.h"

#define LISTEN_MAX_SOCKETS (2 * CONFIG_MAX_LISTEN)

struct listener {
	struct loop_io io;
	struct config_listen spec;
};

static struct listener listeners[LISTEN_MAX_SOCKETS];
static size_t n_listeners;
static int reserve_fd = -1;
static bool filtered; /* a ban filter is attached to the listeners */

size_t listener_filter_fds(int *fds, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < n_listeners && n < max; i++)
		if (listeners[i].io.fd != -1 && !(listeners[i].spec.opts & LISTEN_OPT_PROXY_PROTOCOL))
			fds[n++] = listeners[i].io.fd;
	return n;
}

size_t listener_ports(uint16_t *ports, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < n_listeners; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		uint16_t port;
		bool seen = false;

		if (listeners[i].io.fd == -1 || getsockname(listeners[i].io.fd, (struct sockaddr *)&ss, &sl) == -1)
			continue;
		port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
		                                      : ((struct sockaddr_in *)&ss)->sin_port);
		for (size_t k = 0; k < n; k++)
			seen = seen || ports[k] == port;
		if (!seen && n < max)
			ports[n++] = port;
	}
	return n;
}

void listener_note_filter(bool on)
{
	filtered = on;
}

static void listener_accept(struct loop_io *io, unsigned ev)
{
	(void)ev;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(io->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd == -1) {
			if (errno == EMFILE || errno == ENFILE) {
				/* Take the connection with the spare fd and drop it,
				 * so the backlog does not keep waking us. */
				log_warn("event=accept_error reason=out_of_descriptors");
				if (reserve_fd != -1) {
					close(reserve_fd);
					fd = accept4(io->fd, NULL, NULL, SOCK_CLOEXEC);
					if (fd != -1)
						close(fd);
					reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
				}
			} else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
				log_warn("event=accept_error error=\"%s\"", strerror(errno));
			}
			return;
		}
		if (conn_setup_socket(fd, srv.cfg->send_tcp_keepalives) == -1) {
			close(fd);
			continue;
		}
		/* The child inherits the listener's ban filter: its packets
		 * must not pay for it. */
		if (filtered) {
			int zero = 0;

			(void)setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof(zero));
		}
		session_accept(fd, (struct sockaddr *)&ss, sl, ((struct listener *)io->data)->spec.opts);
	}
}

/*
 * The kernel's largest accept queue (net.core.somaxconn; listen() cuts
 * any larger request down to it): a burst of connects waits there instead
 * of overflowing a smaller one. Read at start, as the sockets are made.
 */
static int listen_backlog(void)
{
	FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
	int v = 0;

	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v > 0 ? v : SOMAXCONN;
}

static int bind_one(const struct config_listen *spec, const struct addrinfo *ai)
{
	int one = 1, fd, backlog = listen_backlog();
	char host[NI_MAXHOST] = "?", port[NI_MAXSERV] = "?";

	getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), port, sizeof(port),
	            NI_NUMERICHOST | NI_NUMERICSERV);
	if (n_listeners == LISTEN_MAX_SOCKETS) {
		log_err("event=listen_failed address=%s port=%s error=\"too many listening sockets\"", host, port);
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) == -1 || listen(fd, backlog) == -1)
		goto fail;
	listeners[n_listeners].io.fd = fd;
	listeners[n_listeners].io.fn = listener_accept;
	listeners[n_listeners].io.data = &listeners[n_listeners];
	listeners[n_listeners].io.registered = false;
	listeners[n_listeners].spec = *spec;
	n_listeners++;
	log_info("event=listen address=%s port=%s backlog=%d", host, port, backlog);
	return 0;
fail:
	log_err("event=listen_failed address=%s port=%s error=\"%s\"", host, port, strerror(errno));
	if (fd != -1)
		close(fd);
	return -1;
}

int listener_open_all(const struct config *cfg)
{
	int rc = 0;

	for (size_t i = 0; i < cfg->n_listen; i++) {
		const struct config_listen *l = &cfg->listen[i];
		struct addrinfo hints, *res, *ai;
		int gai;

		memset(&hints, 0, sizeof(hints));
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		gai = getaddrinfo(l->host[0] ? l->host : NULL, l->port, &hints, &res);
		if (gai != 0) {
			log_err("event=listen_failed address=%s port=%s error=\"%s\"", l->host[0] ? l->host : "*",
			        l->port, gai_strerror(gai));
			rc = -1;
			continue;
		}
		/* A named host binds its first address; "any" binds v4 and v6. */
		for (ai = res; ai; ai = ai->ai_next) {
			if (bind_one(l, ai) == -1)
				rc = -1;
			if (l->host[0])
				break;
		}
		freeaddrinfo(res);
	}
	if (reserve_fd == -1)
		reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return rc;
}

void listener_enable(int on)
{
	for (size_t i = 0; i < n_listeners; i++)
		if (loop_io_set(srv.loop, &listeners[i].io, on ? LOOP_READ : 0) == -1)
			log_err("event=listen_error error=\"%s\"", strerror(errno));
}

void listener_close_all(void)
{
	for (size_t i = 0; i < n_listeners; i++) {
		loop_io_del(srv.loop, &listeners[i].io);
		close(listeners[i].io.fd);
	}
	n_listeners = 0;
}

int listener_changed(const struct config *cfg)
{
	size_t k = 0;

	if (cfg->n_listen == 0)
		return 1;
	for (size_t i = 0; i < cfg->n_listen; i++) {
		bool found = false;

		for (; k < n_listeners; k++) {
			const struct config_listen *b = &listeners[k].spec;

			if (strcmp(b->host, cfg->listen[i].host) == 0 && strcmp(b->port, cfg->listen[i].port) == 0 &&
			    b->opts == cfg->listen[i].opts) {
				found = true;
				break;
			}
		}
		if (!found)
			return 1;
		/* Skip the other sockets of the same entry ("any" gives two). */
		while (k < n_listeners && strcmp(listeners[k].spec.host, cfg->listen[i].host) == 0 &&
		       strcmp(listeners[k].spec.port, cfg->listen[i].port) == 0)
			k++;
	}
	return k != n_listeners;
}
