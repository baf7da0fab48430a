/*
 * conn_tcp — the plain TCP transport behind the conn interface.
 *
 * Thin wrappers over read/write on a non-blocking socket; it never blocks
 * and never retries on its own.
 */
#include "buf.h"
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

static ssize_t tcp_read(struct conn *c, void *p, size_t n)
{
	ssize_t r;

	do
		r = read(c->io.fd, p, n);
	while (r == -1 && errno == EINTR);
	return r;
}

static ssize_t tcp_write(struct conn *c, const void *p, size_t n)
{
	ssize_t r;

	do
		r = send(c->io.fd, p, n, MSG_NOSIGNAL);
	while (r == -1 && errno == EINTR);
	return r;
}

static void tcp_close(struct conn *c)
{
	close(c->io.fd);
}

static const struct conn_ops tcp_ops = { tcp_read, tcp_write, tcp_close, NULL, NULL, NULL };

void conn_tcp_init(struct conn *c, int fd, loop_io_fn *fn, void *data)
{
	c->io.fd = fd;
	c->io.want = 0;
	c->io.registered = false;
	c->io.fn = fn;
	c->io.data = data;
	c->ops = &tcp_ops;
	c->impl = NULL;
	c->lowat = 0;
}

void conn_set_lowat(struct conn *c, unsigned n)
{
	int v = n > 1 ? (int)n : 1;

	if (n <= 1)
		n = 0;
	if (c->io.fd == -1 || c->lowat == n)
		return;
	/* On failure the socket keeps its old mark, and so does c->lowat:
	 * the next call tries again. */
	if (setsockopt(c->io.fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v)) == 0)
		c->lowat = n;
}

void conn_close(struct loop *l, struct conn *c)
{
	if (c->io.fd == -1)
		return;
	loop_io_del(l, &c->io);
	c->ops->close(c);
	c->io.fd = -1;
}

int conn_setup_socket(int fd, int keepalive)
{
	int one = 1;
	int fl = fcntl(fd, F_GETFL);

	if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		return -1;
	/* A proxy that waits for delayed ACKs adds ~40 ms to every exchange. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (keepalive)
		(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	return 0;
}

int conn_write_buf(struct conn *c, struct buf *b)
{
	while (buf_len(b) > 0) {
		ssize_t w = conn_write(c, buf_ptr(b), buf_len(b));

		if (w > 0) {
			buf_consume(b, (size_t)w);
			continue;
		}
		return w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
	}
	return 1;
}
