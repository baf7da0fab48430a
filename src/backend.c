/*
 * backend — the client side of imapgate toward the IMAP server, up to and
 * including LOGIN.
 *
 * A small state machine driven by the loop. Credentials are sent only as
 * synchronising literals after the server's "+", under fixed tags of our
 * own, so no byte of user input can become a command. It must never log a
 * password, never block, and never leave a half-logged-in connection open
 * after a failure.
 */
#include "backend.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "server.h"
#include "tls.h"

#include <openssl/evp.h>

#define BACKEND_LINE_MAX 65536

enum {
	B_IDLE,
	B_CONNECTING,
	B_GREETING,
	B_CAPA,
	B_STARTTLS,   /* sent "IG0 STARTTLS" */
	B_ID,
	B_PREAUTH,
	B_LOGIN_USER, /* sent "IG4 LOGIN {n}", waiting for "+" */
	B_AUTH_PLAIN, /* master user: sent "IG4 AUTHENTICATE PLAIN", waiting for "+" */
	B_LOGIN_PASS, /* sent user and " {n}", waiting for "+" */
	B_LOGIN_DONE, /* sent password, waiting for IG4's completion */
	B_REPORTING,  /* failure to report from a zero timer */
	B_SUCCESS,    /* logged in (or probed); reported once the line is consumed */
};

static void backend_io(struct loop_io *io, unsigned ev);

static void backend_finish(struct backend *b, enum backend_result r, const char *text)
{
	loop_timer_stop(srv.loop, &b->timer);
	if (r != BACKEND_OK) {
		conn_close(srv.loop, &b->conn);
		buf_free(&b->in);
	}
	buf_free(&b->out);
	b->state = B_IDLE;
	b->done(b, r, text);
}

static void backend_fail(struct backend *b, const char *reason)
{
	snprintf(b->reason, sizeof(b->reason), "%s", reason);
	backend_finish(b, BACKEND_UNAVAILABLE, reason);
}

/* A read or write failed: name TLS failures (before the conn is gone). */
static void backend_fail_io(struct backend *b, const char *reason)
{
	const char *e = b->tls ? conn_tls_error(&b->conn) : NULL;

	if (e) {
		snprintf(b->detail, sizeof(b->detail), "%s", e);
		reason = "backend_tls_failed";
	}
	backend_fail(b, reason);
}

/* How this connection must be secured before credentials may cross it. */
static bool backend_wants_starttls(const struct backend *b)
{
	const struct config *c = srv.cfg;

	if (b->tls || c->server_tls == TLS_MODE_NONE || c->server_tls == TLS_MODE_IMPLICIT)
		return false;
	if (c->force_tls || c->server_tls == TLS_MODE_STARTTLS)
		return true;
	return b->caps_starttls || b->caps_logindisabled;
}

static bool backend_implicit_tls(void)
{
	const struct config *c = srv.cfg;

	/* auto: the IMAPS port means implicit TLS (force_tls means STARTTLS). */
	return c->server_tls == TLS_MODE_IMPLICIT ||
	       (c->server_tls == TLS_MODE_AUTO && !c->force_tls &&
	        (strcmp(c->server_port, "993") == 0 || strcmp(c->server_port, "imaps") == 0));
}

static int backend_start_tls(struct backend *b)
{
	const char *name = srv.cfg->tls_server_name ? srv.cfg->tls_server_name : srv.cfg->server_hostname;

	if (srv.tls_client == NULL || conn_tls_start_client(&b->conn, srv.tls_client, name, srv.cfg->tls_verify_server) == -1)
		return -1;
	b->tls = true;
	return 0;
}

static void backend_timeout(struct loop_timer *t)
{
	struct backend *b = t->data;

	if (b->state == B_REPORTING)
		backend_finish(b, BACKEND_UNAVAILABLE, b->reason);
	else
		backend_fail(b, "backend_timeout");
}

/* Report a failure from the loop, not from inside backend_start. */
static void backend_fail_later(struct backend *b, const char *reason)
{
	snprintf(b->reason, sizeof(b->reason), "%s", reason);
	conn_close(srv.loop, &b->conn);
	b->state = B_REPORTING;
	loop_timer_start(srv.loop, &b->timer, 0);
}

static int backend_want(struct backend *b)
{
	unsigned want = LOOP_READ;

	if (b->state == B_CONNECTING || buf_len(&b->out) > 0)
		want |= LOOP_WRITE;
	return loop_io_set(srv.loop, &b->conn.io, want | conn_want(&b->conn));
}

/* Try the resolved addresses in turn, starting after those already tried. */
static int backend_connect_next(struct backend *b)
{
	struct addrinfo *ai = srv.backend_ai;
	unsigned n = 0, start;

	if (ai == NULL) {
		/* Resolution failed at start or reload: try again now. */
		srv.backend_ai = server_resolve_backend(srv.cfg);
		ai = srv.backend_ai;
	}
	for (struct addrinfo *p = ai; p; p = p->ai_next)
		n++;
	start = srv.cfg->dns_rr ? srv.backend_rr : 0;
	while (b->ai_tried < n) {
		unsigned idx = (start + b->ai_tried++) % n;
		struct addrinfo *p = ai;
		int fd;

		for (unsigned i = 0; i < idx; i++)
			p = p->ai_next;
		fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol);
		if (fd == -1)
			continue;
		if (conn_setup_socket(fd, srv.cfg->send_tcp_keepalives) == -1) {
			close(fd);
			continue;
		}
		if (connect(fd, p->ai_addr, p->ai_addrlen) == -1 && errno != EINPROGRESS) {
			close(fd);
			continue;
		}
		if (srv.cfg->dns_rr && b->ai_tried == 1)
			srv.backend_rr = (srv.backend_rr + 1) % n;
		conn_tcp_init(&b->conn, fd, backend_io, b);
		b->state = B_CONNECTING;
		if (backend_want(b) == -1) {
			conn_close(srv.loop, &b->conn);
			continue;
		}
		return 0;
	}
	return -1;
}

void backend_start(struct backend *b, backend_done_fn *done, void *data)
{
	b->done = done;
	b->data = data;
	b->ai_tried = 0;
	b->reason[0] = '\0';
	b->detail[0] = '\0';
	b->tls = false;
	b->overflow = false;
	b->caps_starttls = b->caps_logindisabled = false;
	b->conn.io.fd = -1;
	b->timer.fn = backend_timeout;
	b->timer.data = b;
	buf_init(&b->in, BACKEND_LINE_MAX);
	/* Room for every command of the login at once: the ID, preauth_command,
	 * the credentials (base64 for the master user). */
	buf_init(&b->out, 4096 + 2 * (b->user_len + b->pass_len) + (b->id_args ? strlen(b->id_args) : 0) +
	                      (srv.cfg->preauth_command ? strlen(srv.cfg->preauth_command) : 0) +
	                      (srv.cfg->auth_sasl_plain_username ? 2 * strlen(srv.cfg->auth_sasl_plain_username) : 0) +
	                      (srv.cfg->auth_sasl_plain_password ? 2 * strlen(srv.cfg->auth_sasl_plain_password) : 0));
	loop_timer_start(srv.loop, &b->timer, (uint64_t)srv.cfg->backend_timeout * 1000);
	if (backend_connect_next(b) == -1)
		backend_fail_later(b, "backend_connect_failed");
}

void backend_abort(struct backend *b)
{
	loop_timer_stop(srv.loop, &b->timer);
	conn_close(srv.loop, &b->conn);
	buf_free(&b->in);
	buf_free(&b->out);
	b->state = B_IDLE;
}

void backend_release(struct backend *b)
{
	buf_free(&b->in);
	buf_free(&b->out);
}

static int backend_send(struct backend *b, const char *p, size_t n)
{
	if (buf_append(&b->out, p, n) == -1) {
		b->overflow = true;
		return -1;
	}
	return 0;
}

/* "TAG TEXT\r\n" into the output; the buffer was sized for it at start. */
static void backend_send_cmd(struct backend *b, const char *tag, const char *text)
{
	size_t tl = strlen(tag), xl = strlen(text);

	if (buf_space(&b->out) < tl + xl + 2) {
		b->overflow = true;
		return;
	}
	buf_append(&b->out, tag, tl);
	buf_append(&b->out, text, xl);
	buf_append(&b->out, "\r\n", 2);
}

static int backend_sendf_literal(struct backend *b, const char *prefix, size_t n)
{
	if (buf_appendf(&b->out, "%s{%zu}\r\n", prefix, n) == -1) {
		b->overflow = true;
		return -1;
	}
	return 0;
}

/* Does the line's text start with word (case-insensitive) followed by SP or end? */
static bool word_is(const char *line, size_t len, const char *word)
{
	size_t wl = strlen(word);

	return len >= wl && strncasecmp(line, word, wl) == 0 && (len == wl || line[wl] == ' ');
}

bool backend_caps_have(const char *p, size_t len, const char *word)
{
	size_t wl = strlen(word);

	for (size_t i = 0; i + wl <= len; i++)
		if ((i == 0 || p[i - 1] == ' ') && strncasecmp(p + i, word, wl) == 0 &&
		    (i + wl == len || p[i + wl] == ' ' || p[i + wl] == ']'))
			return true;
	return false;
}

/* Take the capability atoms out of "* CAPABILITY a b c" or "[CAPABILITY a b]". */
static void backend_take_caps(struct backend *b, const char *p, size_t len)
{
	const char *end = memchr(p, ']', len);

	if (end)
		len = (size_t)(end - p);
	b->caps_starttls = backend_caps_have(p, len, "STARTTLS");
	b->caps_logindisabled = backend_caps_have(p, len, "LOGINDISABLED");
	server_set_caps(p, len);
}

static void backend_send_login(struct backend *b)
{
	if (srv.cfg->auth_shared_secret) {
		/* imapproxy's master-user mode: log in as the master user on the
		 * client's behalf (authzid = the client's user). */
		backend_send(b, "IG4 AUTHENTICATE PLAIN\r\n", 24);
		b->state = B_AUTH_PLAIN;
		return;
	}
	backend_sendf_literal(b, "IG4 LOGIN ", b->user_len);
	b->state = B_LOGIN_USER;
}

/* base64(user NUL master NUL master_password) CRLF, wiped after use. */
static void backend_send_master_plain(struct backend *b)
{
	const char *mu = srv.cfg->auth_sasl_plain_username, *mp = srv.cfg->auth_sasl_plain_password;
	size_t ul = b->user_len, ml = strlen(mu), pl = strlen(mp), n = ul + 1 + ml + 1 + pl;
	unsigned char *raw = malloc(n), *enc = malloc(4 * ((n + 2) / 3) + 3);
	int el;

	if (raw == NULL || enc == NULL) {
		free(raw);
		free(enc);
		backend_send(b, "*\r\n", 3); /* cancel: the server answers BAD */
		return;
	}
	memcpy(raw, b->user, ul);
	raw[ul] = '\0';
	memcpy(raw + ul + 1, mu, ml);
	raw[ul + 1 + ml] = '\0';
	memcpy(raw + ul + 2 + ml, mp, pl);
	el = EVP_EncodeBlock(enc, raw, (int)n);
	memcpy(enc + el, "\r\n", 2);
	backend_send(b, (const char *)enc, (size_t)el + 2);
	explicit_bzero(raw, n);
	explicit_bzero(enc, (size_t)el + 2);
	free(raw);
	free(enc);
}

static void backend_after_caps(struct backend *b)
{
	if (backend_wants_starttls(b)) {
		if (!b->caps_starttls && !srv.cfg->force_tls && srv.cfg->server_tls != TLS_MODE_STARTTLS) {
			backend_fail(b, "backend_logindisabled_without_starttls");
			return;
		}
		backend_send(b, "IG0 STARTTLS\r\n", 14);
		b->state = B_STARTTLS;
		return;
	}
	if (b->user == NULL) {
		/* Probe: we only wanted the capabilities; LOGOUT is best effort. */
		(void)conn_write(&b->conn, "IG9 LOGOUT\r\n", 12);
		snprintf(b->text, sizeof(b->text), "probe");
		b->state = B_SUCCESS;
		return;
	}
	if (b->caps_logindisabled && !b->tls) {
		/* Never credentials in cleartext to a server that refuses them. */
		backend_fail(b, "backend_logindisabled");
		return;
	}
	if (b->id_args) {
		backend_send_cmd(b, "IG2 ID ", b->id_args);
		b->state = B_ID;
	} else if (srv.cfg->preauth_command) {
		backend_send_cmd(b, "IG3 ", srv.cfg->preauth_command);
		b->state = B_PREAUTH;
	} else {
		backend_send_login(b);
	}
}

/*
 * One complete line from the server (CRLF stripped). Afterwards b->state is
 * B_IDLE when it failed (b->in is gone), B_SUCCESS when logged in.
 */
static void backend_line(struct backend *b, const char *line, size_t len)
{
	const char *tag = NULL;

	switch (b->state) {
	case B_GREETING:
		if (word_is(line, len, "* OK")) {
			const char *c = line + 5;

			if (len > 5 + 12 && strncasecmp(c, "[CAPABILITY ", 12) == 0) {
				backend_take_caps(b, c + 12, len - 5 - 12);
				backend_after_caps(b);
			} else {
				backend_send(b, "IG1 CAPABILITY\r\n", 16);
				b->state = B_CAPA;
			}
			return;
		}
		backend_fail(b, word_is(line, len, "* PREAUTH") ? "backend_preauth" : "backend_greeting");
		return;
	case B_CAPA:
		if (len > 13 && strncasecmp(line, "* CAPABILITY ", 13) == 0) {
			backend_take_caps(b, line + 13, len - 13);
			return;
		}
		tag = "IG1 ";
		break;
	case B_STARTTLS:
		tag = "IG0 ";
		break;
	case B_ID:
		tag = "IG2 ";
		break;
	case B_PREAUTH:
		tag = "IG3 ";
		break;
	case B_AUTH_PLAIN:
		if (len >= 1 && line[0] == '+') {
			backend_send_master_plain(b);
			b->state = B_LOGIN_DONE;
			return;
		}
		tag = "IG4 ";
		break;
	case B_LOGIN_USER:
	case B_LOGIN_PASS:
		if (len >= 1 && line[0] == '+') {
			if (b->state == B_LOGIN_USER) {
				backend_send(b, b->user, b->user_len);
				backend_sendf_literal(b, " ", b->pass_len);
				b->state = B_LOGIN_PASS;
			} else {
				backend_send(b, b->pass, b->pass_len);
				backend_send(b, "\r\n", 2);
				b->state = B_LOGIN_DONE;
			}
			return;
		}
		tag = "IG4 ";
		break;
	case B_LOGIN_DONE:
		tag = "IG4 ";
		break;
	default:
		return;
	}

	if (len >= 2 && line[0] == '*' && line[1] == ' ') {
		if (word_is(line, len, "* BYE")) {
			backend_fail(b, "backend_bye");
			return;
		}
		return; /* untagged data during login is not the client's business */
	}
	if (len < 4 || memcmp(line, tag, 4) != 0) {
		backend_fail(b, "backend_protocol_error");
		return;
	}
	line += 4;
	len -= 4;
	if (!word_is(line, len, "OK")) {
		char text[512];

		snprintf(text, sizeof(text), "%.*s", (int)(len > 500 ? 500 : len), line);
		if (b->state == B_ID)
			backend_finish(b, BACKEND_ID_REFUSED, text);
		else if (b->state == B_PREAUTH)
			backend_finish(b, BACKEND_PREAUTH_REFUSED, text);
		else if (b->state == B_CAPA)
			backend_fail(b, "backend_capability_failed");
		else if (b->state == B_STARTTLS)
			backend_fail(b, "backend_starttls_refused");
		else
			backend_finish(b, BACKEND_REFUSED, text);
		return;
	}
	switch (b->state) {
	case B_CAPA:
		backend_after_caps(b);
		return;
	case B_STARTTLS:
		/* Anything the server sent after its OK came before TLS: drop it
		 * (the response-injection class of bug); the caller consumes this
		 * line, so mark the rest for discarding. */
		b->discard_after_line = true;
		if (backend_start_tls(b) == -1) {
			backend_fail(b, "backend_tls_setup_failed");
			return;
		}
		/* Capabilities change under TLS: ask again. */
		b->caps_starttls = b->caps_logindisabled = false;
		backend_send(b, "IG1 CAPABILITY\r\n", 16);
		b->state = B_CAPA;
		return;
	case B_ID:
		if (srv.cfg->preauth_command) {
			backend_send_cmd(b, "IG3 ", srv.cfg->preauth_command);
			b->state = B_PREAUTH;
		} else {
			backend_send_login(b);
		}
		return;
	case B_PREAUTH:
		backend_send_login(b);
		return;
	default:
		/* Keep the server's "[CAPABILITY ...] Logged in" for the client. */
		snprintf(b->text, sizeof(b->text), "%.*s", (int)(len > 500 ? 500 : len), line);
		b->state = B_SUCCESS;
		return;
	}
}

static void backend_io(struct loop_io *io, unsigned ev)
{
	struct backend *b = io->data;

	if (b->state == B_CONNECTING && (ev & (LOOP_WRITE | LOOP_ERROR))) {
		int err = 0;
		socklen_t el = sizeof(err);

		if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &el) == -1 || err != 0) {
			conn_close(srv.loop, &b->conn);
			if (backend_connect_next(b) == -1)
				backend_fail(b, "backend_connect_failed");
			return;
		}
		b->state = B_GREETING;
		if (backend_implicit_tls() && backend_start_tls(b) == -1) {
			backend_fail(b, "backend_tls_setup_failed");
			return;
		}
	}
	if (b->tls)
		ev |= LOOP_READ | LOOP_WRITE;
	if (ev & LOOP_WRITE) {
		while (buf_len(&b->out) > 0) {
			ssize_t w = conn_write(&b->conn, buf_ptr(&b->out), buf_len(&b->out));

			if (w == -1) {
				if (errno == EAGAIN)
					break;
				backend_fail_io(b, "backend_write_error");
				return;
			}
			buf_consume(&b->out, (size_t)w);
		}
	}
	if (ev & LOOP_READ) {
		for (;;) {
			size_t room;
			char *w = buf_reserve(&b->in, &room);
			ssize_t r;
			long lf;

			if (w == NULL) {
				backend_fail(b, "backend_line_too_long");
				return;
			}
			r = conn_read(&b->conn, w, room);
			if (r == 0 || (r == -1 && errno != EAGAIN)) {
				backend_fail_io(b, r == 0 ? "backend_closed" : "backend_read_error");
				return;
			}
			if (r == -1)
				break;
			buf_commit(&b->in, (size_t)r);
			while ((lf = buf_find_lf(&b->in)) >= 0) {
				size_t len = (size_t)lf;
				const char *line = buf_ptr(&b->in);

				if (len > 0 && line[len - 1] == '\r')
					len--;
				backend_line(b, line, len);
				if (b->state == B_IDLE)
					return; /* failed and reported */
				buf_consume(&b->in, (size_t)lf + 1);
				if (b->discard_after_line) {
					b->discard_after_line = false;
					buf_consume(&b->in, buf_len(&b->in));
				}
				if (b->state == B_SUCCESS) {
					/* The bytes left in b->in are the owner's now. */
					backend_finish(b, BACKEND_OK, b->text);
					return;
				}
			}
			/* Plain TCP: a short read drained the socket. TLS may still
			 * hold decrypted bytes: read until it says EAGAIN. */
			if ((size_t)r < room && !b->tls)
				break;
		}
	}
	if (b->overflow) {
		/* Never a half-sent command (a password announced and not sent). */
		backend_fail(b, "backend_command_too_long");
		return;
	}
	if (backend_want(b) == -1)
		backend_fail(b, "backend_epoll_error");
	else if (buf_len(&b->out) > 0 && !(ev & LOOP_WRITE))
		backend_io(io, LOOP_WRITE);
}
