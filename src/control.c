/*
 * control — a small request/response server on a unix socket for the
 * operator's CLI (imapgate-ctl).
 *
 * The socket is created 0600 for the daemon's user: whoever can open it
 * may ban and unban, so it must never be wider. Each client may send one
 * line of at most CONTROL_LINE_MAX bytes within CONTROL_TIMEOUT_MS; the
 * reply is written without blocking and the connection closed.
 */
#include "control.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "server.h"

#define CONTROL_LINE_MAX 4096
#define CONTROL_TIMEOUT_MS 5000
#define CONTROL_REPLY_MAX (16u * 1024 * 1024)
#define CONTROL_MAX_CLIENTS 16
#define CONTROL_MAX_COMMANDS 32
#define CONTROL_MAX_ARGS 16

struct command {
	const char *name, *help;
	control_fn *fn;
};

struct client {
	struct loop_io io;
	struct loop_timer timer;
	char line[CONTROL_LINE_MAX];
	size_t got;
	struct strbuf reply;
	size_t sent;
	bool used;
};

static struct command commands[CONTROL_MAX_COMMANDS];
static size_t n_commands;
static struct loop_io listen_io = { .fd = -1 };
static char sock_path[108];
static struct client clients[CONTROL_MAX_CLIENTS];

void sb_printf(struct strbuf *sb, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (sb->overflow)
		return;
	for (;;) {
		size_t room = sb->cap - sb->len;

		va_start(ap, fmt);
		n = vsnprintf(sb->p ? sb->p + sb->len : NULL, sb->p ? room : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			sb->overflow = true;
			return;
		}
		if (sb->p && (size_t)n < room) {
			sb->len += (size_t)n;
			return;
		}
		{
			size_t ncap = sb->cap ? sb->cap * 2 : 4096;
			char *np;

			while (ncap < sb->len + (size_t)n + 1)
				ncap *= 2;
			if (ncap > CONTROL_REPLY_MAX || (np = realloc(sb->p, ncap)) == NULL) {
				sb->overflow = true;
				return;
			}
			sb->p = np;
			sb->cap = ncap;
		}
	}
}

void sb_json_str(struct strbuf *sb, const char *s)
{
	sb_printf(sb, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			sb_printf(sb, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			sb_printf(sb, "\\u%04x", c);
		else
			sb_printf(sb, "%c", c);
	}
	sb_printf(sb, "\"");
}

void sb_free(struct strbuf *sb)
{
	free(sb->p);
	memset(sb, 0, sizeof(*sb));
}

void control_register(const char *name, control_fn *fn, const char *help)
{
	for (size_t i = 0; i < n_commands; i++)
		if (strcmp(commands[i].name, name) == 0) {
			commands[i].fn = fn;
			commands[i].help = help;
			return;
		}
	if (n_commands < CONTROL_MAX_COMMANDS)
		commands[n_commands++] = (struct command){ name, help, fn };
}

static void client_close(struct client *c)
{
	loop_timer_stop(srv.loop, &c->timer);
	loop_io_del(srv.loop, &c->io);
	close(c->io.fd);
	explicit_bzero(c->line, sizeof(c->line));
	sb_free(&c->reply);
	c->used = false;
}

static void client_timeout(struct loop_timer *t)
{
	client_close(t->data);
}

static void run_command(struct client *c)
{
	char *argv[CONTROL_MAX_ARGS], *save = NULL, *tok, errbuf[256];
	int argc = 0;
	bool json = false;
	const char *err = "unknown command";
	struct strbuf body = { 0 };

	for (tok = strtok_r(c->line, " \t", &save); tok && argc < CONTROL_MAX_ARGS; tok = strtok_r(NULL, " \t", &save)) {
		if (strcmp(tok, "--json") == 0)
			json = true;
		else
			argv[argc++] = tok;
	}
	if (argc == 0) {
		err = "empty command";
	} else if (strcmp(argv[0], "help") == 0) {
		err = NULL;
		for (size_t i = 0; i < n_commands; i++)
			sb_printf(&body, "%-8s %s\n", commands[i].name, commands[i].help);
	} else {
		for (size_t i = 0; i < n_commands; i++)
			if (strcmp(commands[i].name, argv[0]) == 0) {
				errbuf[0] = '\0';
				err = commands[i].fn(argc, argv, json, &body, errbuf, sizeof(errbuf));
				break;
			}
	}
	if (err == NULL && body.overflow)
		err = "reply too large";
	if (err) {
		sb_printf(&c->reply, "ERR %s\n", err);
	} else {
		sb_printf(&c->reply, "OK\n");
		if (body.len)
			sb_printf(&c->reply, "%.*s", (int)body.len, body.p);
	}
	sb_free(&body);
	{
		char clean[128];

		log_sanitize(argc ? argv[0] : "", argc ? strlen(argv[0]) : 0, clean, sizeof(clean));
		log_info("event=control command=%s status=%s", clean[0] ? clean : "-", err ? "error" : "ok");
	}
}

static void client_io(struct loop_io *io, unsigned ev)
{
	struct client *c = io->data;

	if (c->reply.len == 0 && (ev & LOOP_READ)) {
		ssize_t r = read(io->fd, c->line + c->got, sizeof(c->line) - 1 - c->got);
		char *lf;

		if (r <= 0) {
			if (r == -1 && errno == EAGAIN)
				return;
			client_close(c);
			return;
		}
		c->got += (size_t)r;
		c->line[c->got] = '\0';
		lf = strchr(c->line, '\n');
		if (lf == NULL && c->got < sizeof(c->line) - 1)
			return;
		if (lf == NULL) {
			sb_printf(&c->reply, "ERR line too long\n");
		} else {
			*lf = '\0';
			if (lf > c->line && lf[-1] == '\r')
				lf[-1] = '\0';
			run_command(c);
		}
		loop_io_set(srv.loop, io, LOOP_WRITE);
		ev |= LOOP_WRITE;
	}
	if (c->reply.len && (ev & LOOP_WRITE)) {
		while (c->sent < c->reply.len) {
			ssize_t w = send(io->fd, c->reply.p + c->sent, c->reply.len - c->sent, MSG_NOSIGNAL);

			if (w == -1) {
				if (errno == EAGAIN)
					return;
				break;
			}
			c->sent += (size_t)w;
		}
		client_close(c);
	}
}

static void control_accept(struct loop_io *io, unsigned ev)
{
	(void)ev;
	for (;;) {
		int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct client *c = NULL;

		if (fd == -1)
			return;
		for (size_t i = 0; i < CONTROL_MAX_CLIENTS; i++)
			if (!clients[i].used) {
				c = &clients[i];
				break;
			}
		if (c == NULL) {
			static const char busy[] = "ERR busy\n";

			(void)!write(fd, busy, sizeof(busy) - 1);
			close(fd);
			continue;
		}
		memset(c, 0, sizeof(*c));
		c->used = true;
		c->io.fd = fd;
		c->io.fn = client_io;
		c->io.data = c;
		c->timer.fn = client_timeout;
		c->timer.data = c;
		loop_timer_start(srv.loop, &c->timer, CONTROL_TIMEOUT_MS);
		if (loop_io_set(srv.loop, &c->io, LOOP_READ) == -1)
			client_close(c);
	}
}

int control_open(const char *path, uid_t uid, gid_t gid, char *err, size_t errsz)
{
	struct sockaddr_un sun;
	int fd;
	mode_t old;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errsz, "%s: path too long for a unix socket", path);
		return -1;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errsz, "socket: %s", strerror(errno));
		return -1;
	}
	/* A stale socket from a previous run (after kill -9) is in the way. */
	{
		struct stat st;

		if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(path);
	}
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		umask(old);
		snprintf(err, errsz, "%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	umask(old);
	if (geteuid() == 0 && chown(path, uid, gid) == -1) {
		snprintf(err, errsz, "chown %s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	if (listen(fd, 16) == -1) {
		snprintf(err, errsz, "listen %s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	listen_io.fd = fd;
	listen_io.fn = control_accept;
	listen_io.data = NULL;
	snprintf(sock_path, sizeof(sock_path), "%s", path);
	return 0;
}

/* Register with the loop (after loop_new). */
void control_start(void)
{
	if (listen_io.fd != -1)
		loop_io_set(srv.loop, &listen_io, LOOP_READ);
}

void control_close(void)
{
	for (size_t i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (clients[i].used)
			client_close(&clients[i]);
	if (listen_io.fd != -1) {
		loop_io_del(srv.loop, &listen_io);
		close(listen_io.fd);
		listen_io.fd = -1;
		/* May fail after the privilege drop; a stale socket is removed at
		 * the next start. */
		(void)unlink(sock_path);
	}
}
