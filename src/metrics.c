/*
 * metrics — a minimal HTTP/1.0 endpoint for Prometheus, inside the loop.
 *
 * It reads one request head, answers from stats and closes. It must never
 * block the loop, never let a scraper hold more than a fixed slot (bounded
 * head, bounded time, bounded number of clients), never answer before the
 * whole head has arrived (closing with unread bytes would reset the
 * connection under the answer), and never expose anything but counters.
 * Client slots are a static array: closing one inside its own callback
 * frees nothing the loop could still touch.
 */
#include "metrics.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "buf.h"
#include "conn.h"
#include "log.h"
#include "stats.h"
#include "tcp_listen.h"

#define METRICS_MAX_SOCKETS 4
#define METRICS_OUT_MAX (STATS_PROMETHEUS_MAX + 512)
#define METRICS_PAUSE_MS 1000 /* after running out of descriptors */

enum mc_state { MC_HEAD, MC_ANSWER, MC_LINGER };

struct mclient {
	struct conn c;
	struct loop_timer timer;
	bool used;
	enum mc_state state;
	size_t head_len;
	char head[METRICS_HEAD_MAX];
	struct buf out;
};

static struct {
	struct loop *loop;
	char *spec;
	struct tcp_listeners lis;
	struct mclient cl[METRICS_MAX_CLIENTS];
	unsigned timeout_ms;
} M;

static char errbuf[512];

static const char *set_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *set_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
	va_end(ap);
	return errbuf;
}

static unsigned timeout_ms(void)
{
	return M.timeout_ms ? M.timeout_ms : METRICS_TIMEOUT_MS;
}

void metrics_set_timeout_ms(unsigned ms)
{
	M.timeout_ms = ms;
}

/* ------------------------------------------------------------------ */
/* Clients                                                              */

static void client_close(struct mclient *cl)
{
	if (!cl->used)
		return;
	loop_timer_stop(M.loop, &cl->timer);
	conn_close(M.loop, &cl->c);
	buf_free(&cl->out);
	cl->used = false;
}

static void client_timeout(struct loop_timer *t)
{
	client_close(t->data);
}

/* Write what is queued; then stop sending and wait for the client's EOF. */
static void client_flush(struct mclient *cl)
{
	switch (conn_write_buf(&cl->c, &cl->out)) {
	case 0:
		if (loop_io_set(M.loop, &cl->c.io, LOOP_WRITE) == -1)
			client_close(cl);
		return;
	case -1:
		client_close(cl);
		return;
	}
	buf_free(&cl->out);
	/* Half-close and drain: a plain close with unread request bytes would
	 * send a reset that can destroy the answer in the client's buffer. */
	(void)shutdown(cl->c.io.fd, SHUT_WR);
	cl->state = MC_LINGER;
	loop_timer_start(M.loop, &cl->timer, timeout_ms());
	if (loop_io_set(M.loop, &cl->c.io, LOOP_READ) == -1)
		client_close(cl);
}

static int answer(struct mclient *cl, const char *status, const char *body, size_t body_len, bool head_only)
{
	if (buf_appendf(&cl->out,
	                "HTTP/1.0 %s\r\n"
	                "Content-Type: %s\r\n"
	                "Content-Length: %zu\r\n"
	                "Connection: close\r\n"
	                "\r\n",
	                status,
	                strncmp(status, "200", 3) == 0 ? "text/plain; version=0.0.4; charset=utf-8"
	                                               : "text/plain; charset=utf-8",
	                body_len) == -1)
		return -1;
	return head_only ? 0 : buf_append(&cl->out, body, body_len);
}

/* The head is complete (or too long: complete == false). */
static void client_respond(struct mclient *cl, bool complete)
{
	static const char not_found[] = "not found\n";
	static const char bad[] = "bad request\n";
	char *line = cl->head, *sp1, *sp2, *eol;
	size_t path_len;
	bool head_only = false;
	int rc;

	cl->state = MC_ANSWER;
	loop_timer_start(M.loop, &cl->timer, timeout_ms());
	eol = memchr(line, '\n', cl->head_len);
	sp1 = eol ? memchr(line, ' ', (size_t)(eol - line)) : NULL;
	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!complete || sp2 == NULL || eol - sp2 < 6 || memcmp(sp2 + 1, "HTTP/", 5) != 0) {
		rc = answer(cl, "400 Bad Request", bad, sizeof(bad) - 1, false);
		goto send;
	}
	/* The target up to its query; the head is not NUL-terminated. */
	for (path_len = 0; sp1 + 1 + path_len < sp2 && sp1[1 + path_len] != '?'; path_len++)
		;
	head_only = sp1 - line == 4 && memcmp(line, "HEAD", 4) == 0;
	if (((sp1 - line == 3 && memcmp(line, "GET", 3) == 0) || head_only) && path_len == 8 &&
	    memcmp(sp1 + 1, "/metrics", 8) == 0) {
		struct buf body;

		buf_init(&body, STATS_PROMETHEUS_MAX);
		if (stats_format_prometheus(&body) == 0)
			rc = answer(cl, "200 OK", buf_ptr(&body), buf_len(&body), head_only);
		else
			rc = answer(cl, "500 Internal Server Error", "", 0, false);
		buf_free(&body);
	} else {
		rc = answer(cl, "404 Not Found", not_found, sizeof(not_found) - 1, head_only);
	}
send:
	if (rc == -1) {
		client_close(cl);
		return;
	}
	client_flush(cl);
}

static bool head_complete(const struct mclient *cl)
{
	return memmem(cl->head, cl->head_len, "\r\n\r\n", 4) != NULL ||
	       memmem(cl->head, cl->head_len, "\n\n", 2) != NULL;
}

static void client_io(struct loop_io *io, unsigned ev)
{
	struct mclient *cl = io->data;
	char sink[1024];
	ssize_t r;

	/* Events are only hints: an event left over from a connection that
	 * closed earlier in the same batch may land on a reused slot, so act
	 * on what read and write say, never on LOOP_ERROR alone. */
	(void)ev;
	switch (cl->state) {
	case MC_HEAD:
		for (;;) {
			r = conn_read(&cl->c, cl->head + cl->head_len, sizeof(cl->head) - cl->head_len);
			if (r > 0) {
				cl->head_len += (size_t)r;
				if (head_complete(cl)) {
					client_respond(cl, true);
					return;
				}
				if (cl->head_len == sizeof(cl->head)) {
					client_respond(cl, false);
					return;
				}
				continue;
			}
			if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			client_close(cl); /* EOF before a whole head, or an error */
			return;
		}
	case MC_ANSWER:
		client_flush(cl);
		return;
	case MC_LINGER:
		for (;;) {
			r = conn_read(&cl->c, sink, sizeof(sink));
			if (r > 0)
				continue;
			if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			client_close(cl);
			return;
		}
	}
}

static void busy(int fd)
{
	static const char msg[] = "HTTP/1.0 503 Service Unavailable\r\n"
	                          "Content-Length: 0\r\n"
	                          "Connection: close\r\n\r\n";

	tcp_answer_close(fd, msg, sizeof(msg) - 1);
}

/* ------------------------------------------------------------------ */
/* Listening sockets                                                    */

static void accept_io(struct loop_io *io, unsigned ev)
{
	(void)ev;
	for (int n = 0; n < METRICS_MAX_CLIENTS; n++) {
		struct mclient *cl = NULL;
		int fd = tcp_listeners_accept(&M.lis, io, NULL);

		if (fd == -1)
			return;
		for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++)
			if (!M.cl[i].used) {
				cl = &M.cl[i];
				break;
			}
		if (cl == NULL) {
			busy(fd);
			continue;
		}
		memset(cl, 0, sizeof(*cl));
		cl->used = true;
		cl->state = MC_HEAD;
		conn_tcp_init(&cl->c, fd, client_io, cl);
		buf_init(&cl->out, METRICS_OUT_MAX);
		cl->timer.fn = client_timeout;
		cl->timer.data = cl;
		loop_timer_start(M.loop, &cl->timer, timeout_ms());
		if (loop_io_set(M.loop, &cl->c.io, LOOP_READ) == -1)
			client_close(cl);
	}
}

void metrics_close(void)
{
	if (M.loop == NULL)
		return;
	for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++)
		client_close(&M.cl[i]);
	tcp_listeners_close(&M.lis);
	free(M.spec);
	M.spec = NULL;
	M.loop = NULL;
}

int metrics_open(struct loop *l, const char *hostport, const char **error_r)
{
	*error_r = NULL;
	if (hostport != NULL && M.loop == l && M.spec != NULL && strcmp(M.spec, hostport) == 0)
		return 0;
	metrics_close();
	if (hostport == NULL)
		return 0;
	M.loop = l;
	M.lis = (struct tcp_listeners){.loop = l, .name = "metrics", .pause_ms = METRICS_PAUSE_MS,
	                               .max = METRICS_MAX_SOCKETS, .fn = accept_io};
	if (tcp_listeners_add(&M.lis, hostport, 64, errbuf, sizeof(errbuf)) == -1) {
		*error_r = errbuf;
		metrics_close();
		return -1;
	}
	if ((M.spec = strdup(hostport)) == NULL) {
		*error_r = set_err("out of memory");
		metrics_close();
		return -1;
	}
	return 0;
}

unsigned metrics_port(void)
{
	return tcp_listeners_port(&M.lis);
}
