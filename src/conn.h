/*
 * conn — one interface over a connected socket, plain TCP or (later) TLS.
 *
 * Callers read and write through conn_* and never see the transport.
 * Everything is non-blocking: a read or write that cannot proceed returns
 * -1 with errno EAGAIN, and the caller waits for the loop.
 */
#ifndef IMAPGATE_CONN_H
#define IMAPGATE_CONN_H

#include <stddef.h>
#include <sys/types.h>

#include "loop.h"

struct conn;

struct conn_ops {
	ssize_t (*read)(struct conn *c, void *p, size_t n);
	ssize_t (*write)(struct conn *c, const void *p, size_t n);
	void (*close)(struct conn *c);
	/* Extra loop interest the transport needs to make progress (TLS:
	 * the direction the last operation or handshake step waits for). */
	unsigned (*want)(const struct conn *c);
	/* Bytes (or an end) waiting inside the transport, which epoll will
	 * not report: TLS records read ahead or partly returned. */
	int (*pending)(const struct conn *c);
	/* At most how many stream bytes the transport took from the socket
	 * and has not returned yet (TLS: its read-ahead buffer). */
	size_t (*held)(const struct conn *c);
};

struct conn {
	struct loop_io io; /* io.fd is the socket; -1 when closed */
	const struct conn_ops *ops;
	void *impl;        /* transport state (SSL*), NULL for TCP */
	unsigned lowat;    /* SO_RCVLOWAT set on the socket; 0 = the default (1) */
};

/* Take over fd (non-blocking, connected or connecting) as plain TCP. */
void conn_tcp_init(struct conn *c, int fd, loop_io_fn *fn, void *data);

/* >0 bytes, 0 on EOF, -1 with errno (EAGAIN: try later). */
static inline ssize_t conn_read(struct conn *c, void *p, size_t n) { return c->ops->read(c, p, n); }
/* >0 bytes written, -1 with errno (EAGAIN: try later). */
static inline ssize_t conn_write(struct conn *c, const void *p, size_t n) { return c->ops->write(c, p, n); }
static inline int conn_is_open(const struct conn *c) { return c->io.fd != -1; }
/* Extra interest the transport needs (0 for TCP). Owners OR it into theirs,
 * and on any event try both their read and their write. */
static inline unsigned conn_want(const struct conn *c) { return c->ops->want ? c->ops->want(c) : 0; }
/* True when conn_read would return data without the socket being readable. */
static inline int conn_pending(const struct conn *c) { return c->ops->pending ? c->ops->pending(c) : 0; }
/* Upper bound of bytes read from the socket and not yet returned (0 for TCP). */
static inline size_t conn_held(const struct conn *c) { return c->ops->held ? c->ops->held(c) : 0; }
/* Wake for readability only once n bytes are queued (SO_RCVLOWAT; n <= 1:
 * any byte). An end or error still wakes at once. No call when unchanged. */
void conn_set_lowat(struct conn *c, unsigned n);
/* Remove from the loop and close; safe on a closed conn. */
void conn_close(struct loop *l, struct conn *c);

struct buf;
/* Write as much of b as c takes: 1 when b is empty, 0 when the transport
 * would block (the rest stays in b), -1 on an error. */
int conn_write_buf(struct conn *c, struct buf *b);

/* Socket options for either side: non-blocking, TCP_NODELAY, keepalive. */
int conn_setup_socket(int fd, int keepalive);

#endif
