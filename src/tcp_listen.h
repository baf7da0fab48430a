/*
 * tcp_listen — the listening sockets of imapgate's small HTTP endpoints
 * (metrics_listen, policy_listen): "HOST:PORT" to non-blocking,
 * close-on-exec listening sockets. The IMAP listeners have their own
 * (listener.c: backlog, EMFILE reserve, socket filters).
 */
#ifndef IMAPGATE_TCP_LISTEN_H
#define IMAPGATE_TCP_LISTEN_H

#include <stddef.h>
#include <sys/socket.h>

#include "loop.h"

#define TCP_LISTENERS_MAX 16 /* sockets in one set */

/*
 * Bind and listen on spec: a named or numeric host binds its first
 * address, an empty host ("*:PORT", ":PORT") binds IPv4 and IPv6 (v6
 * only). SO_REUSEADDR is set. Each socket is appended to fds (at most max
 * in all, *n counts them) and logged as "event=WHAT address=... port=...".
 * Returns 0, or -1 with err "WHAT SPEC: reason" and every socket this call
 * opened closed.
 */
int tcp_listen_spec(const char *what, const char *spec, int backlog, int *fds, size_t max, size_t *n,
                    char *err, size_t errsz);

/*
 * A set of listening sockets on the loop, with the accept loop both
 * endpoints need: a transient error retried, the backlog drained, and on
 * running out of descriptors the whole set paused for pause_ms (the
 * backlog would wake the loop forever). name is the log's word
 * ("metrics", "policy": event=NAME_listen, event=NAME_accept_error).
 * Zero-initialise before the first use.
 */
struct tcp_listeners {
	struct loop *loop;
	const char *name;
	unsigned pause_ms;
	size_t max;              /* sockets at most (<= TCP_LISTENERS_MAX) */
	loop_io_fn *fn;          /* called when a socket has connections: use tcp_listeners_accept */
	void *data;
	struct loop_io lio[TCP_LISTENERS_MAX];
	size_t n;
	struct loop_timer pause;
};

/* Bind spec (as tcp_listen_spec) into t and start watching it. Returns 0,
 * or -1 with err; the sockets bound before stay. */
int tcp_listeners_add(struct tcp_listeners *t, const char *spec, int backlog, char *err, size_t errsz);
/* Close every socket of the set and stop its pause. */
void tcp_listeners_close(struct tcp_listeners *t);
/* The next connection on io (a socket of t), non-blocking and close on
 * exec; ss (may be NULL) gets the peer. -1 when there is none for now (or
 * the set was paused, or an error was logged). */
int tcp_listeners_accept(struct tcp_listeners *t, struct loop_io *io, struct sockaddr_storage *ss);
/* Port of the first socket (useful with port 0), 0 when there is none. */
unsigned tcp_listeners_port(const struct tcp_listeners *t);

/* Send a short answer on a fresh socket (its send buffer is empty: best
 * effort, never blocks) and close it. */
void tcp_answer_close(int fd, const char *text, size_t len);

#endif
