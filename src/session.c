/*
 * session — the life of one client connection: accept, limits, pre-login
 * input, the hand-off to the backend login, the relay, and the close.
 *
 * Ownership: the session owns its client socket from session_accept on,
 * and the server socket from the moment the backend reports a login. It is
 * freed only in session_reap (before-sleep), never inside a callback. Its
 * buffers are bounded; it reads from one side only when the other side's
 * buffer has room. It must never hold a password after the login is
 * decided, and never log one.
 */
#include "session.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "hash.h"
#include "log.h"
#include "pool.h"
#include "server.h"
#include "proxy_proto.h"
#include "control.h"
#include "stats.h"
#include "tls.h"
#include "trace.h"

#define COUT_CAP (256 * 1024)
#define BOUT_CAP (32 * 1024)
/* Wake-up size while a large server literal is still coming (relay_lowat). */
#define RELAY_LOWAT (64 * 1024)
#define FLUSH_TIMEOUT_MS 5000
#define SHUTDOWN_GRACE_MS 2000
/* At most this long (and never past backend_timeout) a login waits for its
 * user's connection still being cleaned: the deselect is one round trip,
 * so a longer wait means a slow server, and a new login is the better bet. */
#define POOL_WAIT_MAX_MS 2000

/* --- connections per client address ---------------------------------- */

/* One client address (addr_client_key: IPv4 whole, IPv6 by /64) and its
 * sessions, so the limit can look for ones already gone. */
struct ipcount {
	struct ipcount *next;
	struct session *members; /* through ip_next/ip_prev */
	uint8_t key[ADDR_CLIENT_KEY_LEN];
	unsigned n;
};

#define IPCOUNT_BUCKETS 4096
static struct ipcount *ipcount_tab[IPCOUNT_BUCKETS];

static struct ipcount **ipcount_find(const uint8_t key[ADDR_CLIENT_KEY_LEN])
{
	struct ipcount **pp = &ipcount_tab[hash_keyed(key, ADDR_CLIENT_KEY_LEN) % IPCOUNT_BUCKETS];

	while (*pp && memcmp((*pp)->key, key, ADDR_CLIENT_KEY_LEN) != 0)
		pp = &(*pp)->next;
	return pp;
}

/* The entry of sa's address, NULL when it has no session. */
static struct ipcount *ipcount_lookup(const struct sockaddr *sa)
{
	uint8_t key[ADDR_CLIENT_KEY_LEN];

	addr_client_key(sa, key);
	return *ipcount_find(key);
}

/* Count s against its peer's address; returns the new count, 0 on ENOMEM. */
static unsigned ipcount_add(struct session *s)
{
	uint8_t key[ADDR_CLIENT_KEY_LEN];
	struct ipcount **pp, *e;

	addr_client_key((struct sockaddr *)&s->peer, key);
	pp = ipcount_find(key);
	if (*pp == NULL) {
		*pp = calloc(1, sizeof(**pp));
		if (*pp == NULL)
			return 0;
		memcpy((*pp)->key, key, sizeof(key));
	}
	e = *pp;
	s->ipc = e;
	s->ip_prev = NULL;
	s->ip_next = e->members;
	if (e->members)
		e->members->ip_prev = s;
	e->members = s;
	return ++e->n;
}

static void ipcount_remove(struct session *s)
{
	struct ipcount *e = s->ipc;

	if (e == NULL)
		return;
	if (s->ip_prev)
		s->ip_prev->ip_next = s->ip_next;
	else
		e->members = s->ip_next;
	if (s->ip_next)
		s->ip_next->ip_prev = s->ip_prev;
	s->ip_next = s->ip_prev = NULL;
	s->ipc = NULL;
	if (--e->n == 0) {
		*ipcount_find(e->key) = e->next;
		free(e);
	}
}

/* --- output ------------------------------------------------------------ */

static void session_update(struct session *s);
static void session_close(struct session *s, const char *reason);
static void client_io(struct loop_io *io, unsigned ev);
static void server_io(struct loop_io *io, unsigned ev);
static void login_timer_fire(struct loop_timer *t);
static void preauth_process(struct session *s);
static void login_settled(struct session *s);
static void session_handoff_backend(struct session *s);
static void session_wait_stop(struct session *s, const char *result);

void session_reply(struct session *s, const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	line[n++] = '\r';
	line[n++] = '\n';
	/* Pre-login replies are small and reading stops while cout is full, so
	 * this only fails for a client that never reads: it is dropped at the
	 * next session_update (never here: callers go on using s). */
	if (buf_append(&s->cout, line, (size_t)n) == -1)
		s->stuck = true;
}

void session_flush_close(struct session *s, const char *reason)
{
	if (s->state == SS_CLOSED)
		return;
	s->flush_then_close = true;
	s->close_reason = reason;
	loop_timer_start(srv.loop, &s->timer, FLUSH_TIMEOUT_MS);
}

void session_bye(struct session *s, const char *text, const char *reason)
{
	session_reply(s, "* BYE %s", text);
	session_flush_close(s, reason);
}

/* Write what we can of b to c, all but its last `hold` bytes. Returns 0,
 * or -1 on a write error. */
static int flush_part(struct conn *c, struct buf *b, size_t hold, uint64_t *count)
{
	while (buf_len(b) > hold) {
		ssize_t w = conn_write(c, buf_ptr(b), buf_len(b) - hold);

		if (w == -1)
			return errno == EAGAIN ? 0 : -1;
		buf_consume(b, (size_t)w);
		if (count) {
			*count += (uint64_t)w;
			STATS_ADD(STAT_BYTES_TO_CLIENTS_TOTAL, w);
		}
	}
	buf_release(b);
	return 0;
}

static int flush_buf(struct conn *c, struct buf *b, uint64_t *count)
{
	return flush_part(c, b, 0, count);
}

/* Client bytes on their way to the server. */
static int flush_bout(struct session *s)
{
	return flush_part(&s->be.conn, &s->bout, s->bout_hold, NULL);
}

size_t session_discard_input(struct session *s)
{
	size_t n = buf_len(&s->cin);

	if (n)
		explicit_bzero(s->cin.data + s->cin.start, n);
	buf_consume(&s->cin, n);
	buf_release(&s->cin);
	if (s->parser)
		imap_parser_reset(s->parser);
	return n;
}

void session_forget_credentials(struct session *s)
{
	if (s->pass) {
		explicit_bzero(s->pass, s->pass_len);
		free(s->pass);
		s->pass = NULL;
		s->pass_len = 0;
	}
}

/* --- lifecycle --------------------------------------------------------- */

static void session_timeout(struct loop_timer *t)
{
	struct session *s = t->data;
	uint64_t idle_ms;

	if (s->flush_then_close) {
		session_close(s, s->close_reason ? s->close_reason : "flush_timeout");
		return;
	}
	switch (s->state) {
	case SS_PROXY:
		log_warn("event=proxy_error session=%llu client=%s:%u reason=header_timeout", (unsigned long long)s->id,
		         s->peer_ip, s->peer_port);
		session_close(s, "proxy_header_timeout");
		break;
	case SS_LOGIN:
		/* The deadline passed during a backend login or a held-back
		 * failure: look again shortly; back in pre-login it applies. */
		loop_timer_start(srv.loop, &s->timer, 500);
		break;
	case SS_PREAUTH:
	case SS_SASL:
		log_info("event=auth_timeout session=%llu client=%s:%u", (unsigned long long)s->id,
		         s->peer_ip, s->peer_port);
		session_bye(s, "Autologout; idle for too long", "auth_timeout");
		session_update(s);
		break;
	case SS_RELAY:
		idle_ms = (uint64_t)srv.cfg->idle_timeout * 1000;
		if (loop_now(srv.loop) - s->active_ms < idle_ms) {
			loop_timer_start(srv.loop, &s->timer, idle_ms - (loop_now(srv.loop) - s->active_ms));
			break;
		}
		session_bye(s, "Autologout; idle for too long", "idle_timeout");
		session_update(s);
		break;
	default:
		break;
	}
}

/* --- room for newcomers ---------------------------------------------- */

/*
 * Sessions not logged in, oldest first: at max_connections the head makes
 * room for a newcomer, so idle connections cannot lock everyone out. A
 * session is on it while it waits for its PROXY header or its login (SASL
 * included), not while a backend login of its runs: that one is about to
 * be a user's session. Back from a failed login, it goes to the tail.
 */
static struct session *wait_head, *wait_tail;
static bool hangup_scanned; /* all sessions checked in this loop iteration */

static bool session_waiting(const struct session *s)
{
	return s->state == SS_PROXY || s->state == SS_PREAUTH || s->state == SS_SASL;
}

static void wait_unlink(struct session *s)
{
	if (!s->wait_linked)
		return;
	if (s->wait_prev)
		s->wait_prev->wait_next = s->wait_next;
	else
		wait_head = s->wait_next;
	if (s->wait_next)
		s->wait_next->wait_prev = s->wait_prev;
	else
		wait_tail = s->wait_prev;
	s->wait_next = s->wait_prev = NULL;
	s->wait_linked = false;
}

/* Put s on the FIFO or take it off, as its state says. */
static void wait_sync(struct session *s)
{
	if (!session_waiting(s)) {
		wait_unlink(s);
		return;
	}
	if (s->wait_linked)
		return;
	s->wait_prev = wait_tail;
	s->wait_next = NULL;
	if (wait_tail)
		wait_tail->wait_next = s;
	else
		wait_head = s;
	wait_tail = s;
	s->wait_linked = true;
}

#define HANGUP_BATCH 64

/* Close those of v[0..n) whose client has hung up: closed with nothing
 * left unread, or reset. Returns how many. */
static unsigned close_hung_up(struct session **v, unsigned n)
{
	struct pollfd pfd[HANGUP_BATCH];
	unsigned closed = 0;

	for (unsigned i = 0; i < n; i++) {
		pfd[i].fd = v[i]->client.io.fd;
		pfd[i].events = POLLRDHUP;
		pfd[i].revents = 0;
	}
	if (n == 0 || poll(pfd, n, 0) <= 0)
		return 0;
	for (unsigned i = 0; i < n; i++) {
		char c;
		ssize_t r;

		if (!(pfd[i].revents & (POLLRDHUP | POLLHUP | POLLERR)))
			continue;
		/* Bytes before the end (a LOGOUT, a TLS close_notify) are the
		 * session's to read: it stays. */
		r = recv(pfd[i].fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
		if (r > 0 || (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)))
			continue;
		v[i]->client_eof = true;
		session_close(v[i], r == 0 ? "client_eof" : "client_read_error");
		closed++;
	}
	return closed;
}

/*
 * A limit is reached, but clients may have hung up whose events wait
 * behind the accept in this loop iteration: close those among the sessions
 * from s on (by_ip: that address's, else all), except keep. A closed
 * session leaves the lists; the batch's successor stays, so the walk goes
 * on from it.
 */
static unsigned close_hung_up_from(struct session *s, bool by_ip, const struct session *keep)
{
	unsigned closed = 0;

	while (s) {
		struct session *v[HANGUP_BATCH];
		unsigned n = 0;

		for (; s && n < HANGUP_BATCH; s = by_ip ? s->ip_next : s->next)
			if (s != keep && conn_is_open(&s->client) && !conn_pending(&s->client))
				v[n++] = s;
		closed += close_hung_up(v, n);
	}
	return closed;
}

/* Is sa's address at its limit (max_connections_per_ip), keep aside when
 * it is one of its sessions? Clients of that address that have hung up
 * are closed first: the cost is bounded by the limit. */
static bool ipcount_full(const struct sockaddr *sa, const struct session *keep)
{
	struct ipcount *e = ipcount_lookup(sa);
	unsigned max = srv.cfg->max_connections_per_ip, self = keep != NULL;

	if (e == NULL || max == 0 || e->n - self < max || cidr_list_match(&srv.cfg->trusted_webmail, sa))
		return false;
	close_hung_up_from(e->members, true, keep);
	e = ipcount_lookup(sa); /* freed when its last session went */
	return e != NULL && e->n - self >= max;
}

/* The session can still be told why it goes: plain text it would read. */
static bool session_can_say(const struct session *s)
{
	return s->state != SS_PROXY && !s->starttls_pending && (!s->client_tls || conn_tls_established(&s->client));
}

/*
 * max_connections is reached and a newcomer from sa waits. Close clients
 * that have hung up (all sessions, once per loop iteration: the walk costs
 * one poll per 64 sessions), then, unless the newcomer would be refused
 * anyway, the connection that has waited longest without logging in.
 * Returns false when there is no room: every session is logged in or
 * logging in.
 */
static bool session_make_room(const struct sockaddr *sa, unsigned listen_opts)
{
	struct session *s;

	if (!hangup_scanned) {
		hangup_scanned = true;
		close_hung_up_from(srv.sessions, false, NULL);
		if (srv.n_sessions < srv.cfg->max_connections)
			return true;
	}
	if (srv.shutting_down)
		return false;
	if (listen_opts & LISTEN_OPT_PROXY_PROTOCOL) {
		if (!cidr_list_match(&srv.cfg->trusted_proxies, sa))
			return false;
	} else if (ipcount_full(sa, NULL) || session_guard_banned(sa)) {
		return false;
	}
	if (srv.n_sessions != srv.cfg->max_connections)
		/* Below: ipcount_full closed some. Above: a reload lowered the
		 * limit, and one eviction would not make room. */
		return srv.n_sessions < srv.cfg->max_connections;
	while ((s = wait_head) != NULL && !session_waiting(s))
		wait_unlink(s); /* a state change not yet seen by session_update */
	if (s == NULL)
		return false;
	log_warn("event=evicted session=%llu client=%s:%u reason=max_connections age_ms=%llu",
	         (unsigned long long)s->id, s->peer_ip, s->peer_port,
	         (unsigned long long)(loop_now(srv.loop) - s->started_ms));
	STATS_INC(STAT_CLIENT_CONNECTIONS_EVICTED_TOTAL);
	if (session_can_say(s)) {
		if (!s->flush_then_close)
			session_reply(s, "* BYE Too many connections: closing the longest waiting for a login");
		(void)flush_buf(&s->client, &s->cout, &s->bytes_out);
	}
	session_close(s, "evicted");
	return true;
}

/* The client is who it is now (socket, or PROXY header): apply the
 * per-address limit and the guard, then greet. */
static void session_admit(struct session *s)
{
	const struct sockaddr *sa = (struct sockaddr *)&s->peer;
	unsigned per_ip = ipcount_add(s);

	s->state = SS_PREAUTH;
	loop_timer_start(srv.loop, &s->timer, (uint64_t)srv.cfg->auth_timeout * 1000);
	/* Over its address's limit (a webmail host has none: many users at
	 * one address), counting only the clients still there. */
	if (per_ip == 0 || ipcount_full(sa, s)) {
		log_warn("event=refused session=%llu client=%s:%u reason=max_connections_per_ip",
		         (unsigned long long)s->id, s->peer_ip, s->peer_port);
		session_bye(s, "Too many connections from your address", "max_connections_per_ip");
		return;
	}
	if (srv.shutting_down) {
		session_bye(s, "Server shutting down", "shutdown");
		return;
	}
	if (!session_guard_admit(s))
		return;
	if (s->listen_opts & LISTEN_OPT_TLS) {
		/* The greeting is the first thing written: it runs the handshake. */
		if (srv.tls_server == NULL || conn_tls_start_server(&s->client, srv.tls_server) == -1) {
			session_close(s, "tls_setup_failed");
			return;
		}
		s->client_tls = true;
	}
	preauth_greeting(s);
}

/* Set the client address the session stands for. */
static void session_set_peer(struct session *s, const struct sockaddr *sa, socklen_t salen)
{
	memset(&s->peer, 0, sizeof(s->peer));
	memcpy(&s->peer, sa, salen < sizeof(s->peer) ? salen : sizeof(s->peer));
	addr_format_ip(sa, s->peer_ip, sizeof(s->peer_ip));
	s->peer_port = addr_port(sa);
}

/*
 * PROXY header from a trusted balancer. Bytes are peeked first and only the
 * header's own are consumed, so a TLS ClientHello behind it stays in the
 * socket for the TLS layer.
 */
static void session_read_proxy(struct session *s)
{
	uint8_t peek[PROXY_HEADER_MAX];
	size_t have = buf_len(&s->cin), used = 0;
	struct proxy_info info;
	const char *why = NULL;
	enum proxy_status st;
	ssize_t r;

	r = recv(s->client.io.fd, peek + have, sizeof(peek) - have, MSG_PEEK);
	if (r == 0 || (r == -1 && errno != EAGAIN && errno != EINTR)) {
		log_info("event=proxy_error session=%llu client=%s:%u reason=closed_before_header",
		         (unsigned long long)s->id, s->peer_ip, s->peer_port);
		session_close(s, "proxy_header_missing");
		return;
	}
	if (r == -1)
		return;
	if (have)
		memcpy(peek, buf_ptr(&s->cin), have);
	st = proxy_parse(peek, have + (size_t)r, &info, &used, &why);
	if (st == PROXY_ERROR) {
		log_warn("event=proxy_error session=%llu client=%s:%u reason=bad_header error=\"%s\"",
		         (unsigned long long)s->id, s->peer_ip, s->peer_port, why);
		session_close(s, "proxy_header_invalid");
		return;
	}
	/* MORE: everything seen is header, take it. DONE: take the rest of it. */
	{
		size_t take = st == PROXY_MORE ? (size_t)r : used - have;

		if (recv(s->client.io.fd, peek + have, take, 0) != (ssize_t)take) {
			session_close(s, "proxy_read_error");
			return;
		}
		if (st == PROXY_MORE) {
			buf_append(&s->cin, peek + have, take);
			return;
		}
	}
	buf_consume(&s->cin, buf_len(&s->cin));
	buf_release(&s->cin);
	if (!info.local) {
		char was[ADDR_STRLEN];
		unsigned was_port = s->peer_port;

		memcpy(was, s->peer_ip, sizeof(was));
		session_set_peer(s, (struct sockaddr *)&info.src, sizeof(info.src));
		log_info("event=proxy session=%llu client=%s:%u via=%s:%u", (unsigned long long)s->id, s->peer_ip,
		         s->peer_port, was, was_port);
	}
	session_admit(s);
}

void session_accept(int fd, const struct sockaddr *sa, socklen_t salen, unsigned listen_opts)
{
	struct session *s;
	char ip[ADDR_STRLEN];

	addr_format_ip(sa, ip, sizeof(ip));
	if (srv.n_sessions >= srv.cfg->max_connections && !session_make_room(sa, listen_opts)) {
		static const char bye[] = "* BYE Too many connections\r\n";

		log_warn("event=refused client=%s:%u reason=max_connections", ip, addr_port(sa));
		(void)!write(fd, bye, sizeof(bye) - 1);
		close(fd);
		return;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		log_err("event=refused client=%s:%u reason=out_of_memory", ip, addr_port(sa));
		close(fd);
		return;
	}
	s->id = ++srv.next_id;
	s->listen_opts = listen_opts;
	session_set_peer(s, sa, salen);
	s->started_ms = loop_now(srv.loop);
	conn_tcp_init(&s->client, fd, client_io, s);
	s->be.conn.io.fd = -1;
	/* cin holds a pre-login line or a PROXY header; bout must take all of
	 * cin when a pipelined command follows LOGIN into the relay. */
	buf_init(&s->cin, (size_t)srv.cfg->max_line_length + 16 > PROXY_HEADER_MAX + 16
	                      ? (size_t)srv.cfg->max_line_length + 16 : PROXY_HEADER_MAX + 16);
	buf_init(&s->cout, COUT_CAP);
	buf_init(&s->bout, s->cin.cap > BOUT_CAP ? s->cin.cap : BOUT_CAP);
	s->timer.fn = session_timeout;
	s->timer.data = s;
	s->login_timer.fn = login_timer_fire;
	s->login_timer.data = s;
	s->next = srv.sessions;
	if (srv.sessions)
		srv.sessions->prev = s;
	srv.sessions = s;
	srv.n_sessions++;
	wait_sync(s);
	STATS_INC(STAT_CLIENT_CONNECTIONS_CURRENT);
	STATS_INC(STAT_CLIENT_CONNECTIONS_TOTAL);
	log_info("event=connect session=%llu client=%s:%u", (unsigned long long)s->id, ip, s->peer_port);
	if (listen_opts & LISTEN_OPT_PROXY_PROTOCOL) {
		if (!cidr_list_match(&srv.cfg->trusted_proxies, sa)) {
			log_warn("event=refused session=%llu client=%s:%u reason=untrusted_proxy",
			         (unsigned long long)s->id, ip, s->peer_port);
			session_close(s, "untrusted_proxy");
			return;
		}
		s->state = SS_PROXY;
		loop_timer_start(srv.loop, &s->timer, (uint64_t)srv.cfg->proxy_header_timeout * 1000);
	} else {
		session_admit(s);
	}
	session_update(s);
}

static void session_close(struct session *s, const char *reason)
{
	char user[128] = "";

	if (s->state == SS_CLOSED)
		return;
	if (s->user)
		log_sanitize(s->user, s->user_len, user, sizeof(user));
	log_info("event=disconnect session=%llu client=%s:%u user=%s reason=%s duration_ms=%llu "
	         "bytes_in=%llu bytes_out=%llu",
	         (unsigned long long)s->id, s->peer_ip, s->peer_port, user[0] ? user : "-", reason,
	         (unsigned long long)(loop_now(srv.loop) - s->started_ms),
	         (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out);
	if (s->client_tls && conn_is_open(&s->client) && conn_tls_error(&s->client)) {
		char why[160];
		const char *e = conn_tls_error(&s->client);

		log_sanitize_text(e, strlen(e), why, sizeof(why));
		log_info("event=tls_error session=%llu client=%s:%u error=\"%s\"", (unsigned long long)s->id,
		         s->peer_ip, s->peer_port, why);
		if (!s->tls_noted)
			STATS_INC(STAT_TLS_HANDSHAKE_FAILURES_TOTAL);
	}
	session_wait_stop(s, "session_closed");
	login_settled(s);
	if (s->state == SS_LOGIN && !s->reused) {
		backend_abort(&s->be);
	} else if (s->state == SS_RELAY || s->state == SS_LOGIN) {
		session_handoff_backend(s);
	} else {
		conn_close(srv.loop, &s->be.conn);
	}
	conn_close(srv.loop, &s->client);
	loop_timer_stop(srv.loop, &s->timer);
	loop_timer_stop(srv.loop, &s->login_timer);
	ipcount_remove(s);
	wait_unlink(s);
	session_forget_credentials(s);
	s->state = SS_CLOSED;
	if (s->prev)
		s->prev->next = s->next;
	else
		srv.sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->prev = NULL;
	s->next = srv.closing;
	srv.closing = s;
	srv.n_sessions--;
	STATS_DEC(STAT_CLIENT_CONNECTIONS_CURRENT);
	if (s->state_relay_counted)
		STATS_DEC(STAT_SERVER_CONNECTIONS_IN_USE_CURRENT);
	if (srv.shutting_down && srv.n_sessions == 0)
		loop_stop(srv.loop);
}

void session_reap(void)
{
	hangup_scanned = false;
	/* Closed sessions leave the TLS pending list before they are freed. */
	for (struct session **pp = &srv.pending; *pp;) {
		if ((*pp)->state == SS_CLOSED) {
			(*pp)->pending_queued = false;
			*pp = (*pp)->pending_next;
		} else {
			pp = &(*pp)->pending_next;
		}
	}
	while (srv.closing) {
		struct session *s = srv.closing;

		srv.closing = s->next;
		imap_parser_free(&s->parser);
		buf_free(&s->cin);
		buf_free(&s->cout);
		buf_free(&s->bout);
		backend_release(&s->be);
		if (s->user) {
			explicit_bzero(s->user, s->user_len);
			free(s->user);
		}
		free(s->id_args);
		free(s->id_fields);
		free(s->ok_text);
		free(s);
	}
}

/* Does the session want bytes from the client now? */
static bool client_wants_read(const struct session *s)
{
	if (s->flush_then_close || s->client_eof || s->starttls_pending || s->logout_pending)
		return false;
	switch (s->state) {
	case SS_PROXY:
		return true;
	case SS_LOGIN:
		/* Waiting for the pool: read (into cin, for the relay) only to
		 * see a client that leaves meanwhile. */
		if (!s->pool_waiting)
			return false;
		/* fall through */
	case SS_PREAUTH:
	case SS_SASL:
		return buf_len(&s->cout) < COUT_CAP / 2 && buf_space(&s->cin) > 0;
	case SS_RELAY:
		return buf_space(&s->bout) > 0;
	default:
		return false;
	}
}

static bool server_wants_read(const struct session *s)
{
	return s->state == SS_RELAY && conn_is_open(&s->be.conn) && !s->flush_then_close &&
	       buf_space(&s->cout) > 0;
}

/*
 * TLS may hold decrypted bytes that epoll will never report: such sessions
 * are run again before the loop sleeps.
 */
static void session_schedule_pending(struct session *s)
{
	if (s->pending_queued)
		return;
	s->pending_queued = true;
	s->pending_next = srv.pending;
	srv.pending = s;
}

static void session_check_pending(struct session *s)
{
	if ((client_wants_read(s) && conn_pending(&s->client)) ||
	    (server_wants_read(s) && conn_pending(&s->be.conn)))
		session_schedule_pending(s);
}

/*
 * While the tracker knows a server literal of at least RELAY_LOWAT more
 * bytes is coming, wake for the backend socket only once that many are
 * queued: a 5 MB body then costs ~80 wake-ups, not one per 4 KiB TLS
 * record or TCP segment. Safe because the server sends the literal's
 * bytes without waiting for anything from us, and the socket will carry at
 * least the literal's remaining bytes less what the transport already took
 * (ciphertext is never shorter than its plaintext; conn_held over-counts).
 * An end or a reset wakes epoll whatever the mark; so does a closing
 * receive window. Anything uncertain (no literal, the stream lost to
 * COMPRESS, its last RELAY_LOWAT bytes) goes back to any byte.
 */
static unsigned relay_lowat(const struct session *s)
{
	const struct imap_track *t = &s->track;

	if (t->lost || t->s_literal < RELAY_LOWAT)
		return 1;
	return t->s_literal - RELAY_LOWAT >= conn_held(&s->be.conn) ? RELAY_LOWAT : 1;
}

/* Set both sockets' interest from the buffers and the state. */
static void session_update(struct session *s)
{
	unsigned cw = 0, bw = 0;

	if (s->state == SS_CLOSED)
		return;
	wait_sync(s);
	if (s->stuck) {
		session_close(s, "client_not_reading");
		return;
	}
	if (srv.shutting_down && s->state == SS_PREAUTH && !s->flush_then_close) {
		/* Back from a login during shutdown: no new one. */
		session_bye(s, "Server shutting down", "shutdown");
	}
	if (s->flush_then_close && buf_len(&s->cout) == 0) {
		session_close(s, s->close_reason ? s->close_reason : "closed");
		return;
	}
	if (s->starttls_pending && buf_len(&s->cout) == 0) {
		/* The OK went out in plaintext; everything after is TLS. */
		s->starttls_pending = false;
		if (srv.tls_server == NULL || conn_tls_start_server(&s->client, srv.tls_server) == -1) {
			session_close(s, "tls_setup_failed");
			return;
		}
		s->client_tls = true;
	}
	if (buf_len(&s->cout) > 0)
		cw |= LOOP_WRITE;
	if (client_wants_read(s))
		cw |= LOOP_READ;
	cw |= conn_want(&s->client);
	if (s->state == SS_RELAY && conn_is_open(&s->be.conn)) {
		if (buf_len(&s->bout) > 0)
			bw |= LOOP_WRITE;
		if (server_wants_read(s))
			bw |= LOOP_READ;
		bw |= conn_want(&s->be.conn);
		conn_set_lowat(&s->be.conn, relay_lowat(s));
		if (loop_io_set(srv.loop, &s->be.conn.io, bw) == -1) {
			session_close(s, "epoll_error");
			return;
		}
	}
	if (loop_io_set(srv.loop, &s->client.io, cw) == -1) {
		session_close(s, "epoll_error");
		return;
	}
	session_check_pending(s);
}

void session_run_pending(void)
{
	/* Each pass takes the list as it is; sessions that still hold bytes
	 * queue themselves again for the next iteration. */
	struct session *s = srv.pending;

	srv.pending = NULL;
	while (s) {
		struct session *next = s->pending_next;

		s->pending_queued = false;
		s->pending_next = NULL;
		if (s->state != SS_CLOSED) {
			if (client_wants_read(s) && conn_pending(&s->client))
				client_io(&s->client.io, LOOP_READ);
			if (s->state != SS_CLOSED && server_wants_read(s) && conn_pending(&s->be.conn))
				server_io(&s->be.conn.io, LOOP_READ);
		}
		s = next;
	}
}

/* Note a finished TLS handshake once, for the log and the counters. */
static void session_note_tls(struct session *s)
{
	char desc[96];

	if (!s->client_tls || s->tls_noted || !conn_tls_established(&s->client))
		return;
	s->tls_noted = true;
	STATS_INC(STAT_TLS_HANDSHAKES_TOTAL);
	log_info("event=tls session=%llu client=%s:%u protocol=\"%s\"", (unsigned long long)s->id, s->peer_ip,
	         s->peer_port, conn_tls_describe(&s->client, desc, sizeof(desc)) ? desc : "?");
}

/* --- pre-login input --------------------------------------------------- */

/*
 * The parser exists only while a command is coming in: an idle client
 * before login holds no parser buffer (tens of KiB each otherwise).
 */
static bool session_need_parser(struct session *s)
{
	struct imap_parser_limits lim;

	if (s->parser)
		return true;
	lim.max_line = srv.cfg->max_line_length;
	lim.max_literal = srv.cfg->preauth_max_literal;
	lim.max_total = (size_t)srv.cfg->max_line_length * 2 + 2 * (size_t)srv.cfg->preauth_max_literal;
	s->parser = imap_parser_new(&lim);
	if (s->parser == NULL) {
		log_err("event=session_error session=%llu client=%s:%u reason=out_of_memory", (unsigned long long)s->id,
		        s->peer_ip, s->peer_port);
		session_bye(s, "Out of memory", "out_of_memory");
		return false;
	}
	return true;
}

static void preauth_process(struct session *s)
{
	enum imap_parse_status st = IMAP_PARSE_MORE;

	while ((s->state == SS_PREAUTH || s->state == SS_SASL) && !s->flush_then_close && !s->starttls_pending &&
	       buf_len(&s->cin) > 0 && buf_len(&s->cout) < COUT_CAP / 2) {
		struct imap_command cmd;
		size_t used = 0;
		const char *tag = NULL, *msg = NULL;
		enum imap_parse_error err;

		if (!session_need_parser(s))
			return;
		st = imap_parser_feed(s->parser, (const uint8_t *)buf_ptr(&s->cin), buf_len(&s->cin), &used, &cmd);
		/* The parser copies what it keeps; wipe what it read (passwords). */
		explicit_bzero(s->cin.data + s->cin.start, used);
		buf_consume(&s->cin, used);
		switch (st) {
		case IMAP_PARSE_MORE:
			break;
		case IMAP_PARSE_COMMAND:
			preauth_command(s, &cmd);
			break;
		case IMAP_PARSE_LINE:
			preauth_sasl_line(s, cmd.line, cmd.line_len);
			break;
		case IMAP_PARSE_LITERAL:
			session_reply(s, "+ Ready for literal data");
			break;
		case IMAP_PARSE_ERROR:
			err = imap_parser_error(s->parser, &tag, &msg);
			if (err == IMAP_ERR_LINE_TOO_LONG) {
				/* Over every bound a command may have (an ID's included):
				 * nothing more of it can be valid, so it is not read. */
				log_info("event=protocol_error session=%llu client=%s:%u reason=line_too_long detail=\"%s\"",
				         (unsigned long long)s->id, s->peer_ip, s->peer_port, msg ? msg : "Line too long");
				session_bye(s, msg ? msg : "Line too long", "line_too_long");
				return;
			}
			if (s->state == SS_SASL) {
				/* A bad SASL response ends the exchange, under its own tag. */
				s->state = SS_PREAUTH;
				tag = s->tag;
				session_forget_credentials(s);
			}
			session_reply(s, "%s BAD %s", tag ? tag : "*", msg ? msg : "Syntax error");
			if (++s->bad_commands >= srv.cfg->max_bad_commands) {
				log_info("event=protocol_error session=%llu client=%s:%u reason=too_many_bad_commands",
				         (unsigned long long)s->id, s->peer_ip, s->peer_port);
				session_bye(s, "Too many invalid commands", "too_many_bad_commands");
				return;
			}
			break;
		}
		if (st == IMAP_PARSE_MORE)
			break;
	}
	buf_release(&s->cin);
	/* Between commands, with nothing pending, the parser can go. */
	if (st == IMAP_PARSE_COMMAND && s->state == SS_PREAUTH && buf_len(&s->cin) == 0 && s->parser)
		imap_parser_free(&s->parser);
}

/* --- relay --------------------------------------------------------------- */

/* Backend logins started and not done, and pooled connections taken and
 * not yet answered (the relay counts them from then on). */
static unsigned logins_in_progress;

/* Backend connections held by sessions: relaying or logging in. */
static unsigned backend_in_use(void)
{
	return (unsigned)stats_get(STAT_SERVER_CONNECTIONS_IN_USE_CURRENT) + logins_in_progress;
}

static void login_settled(struct session *s)
{
	if (s->be_pending) {
		s->be_pending = false;
		logins_in_progress--;
	}
}

/*
 * The backend connection leaves the session for the pool, which parks it
 * once it is clean or logs it out. Complete commands still queued must
 * reach the server first; the held head of a command never did.
 */
static void session_handoff_backend(struct session *s)
{
	struct pool_handoff h;

	if (!conn_is_open(&s->be.conn))
		return;
	if (s->state_relay_counted) {
		s->state_relay_counted = false;
		STATS_DEC(STAT_SERVER_CONNECTIONS_IN_USE_CURRENT);
	}
	if (buf_len(&s->bout) > s->bout_hold && flush_bout(s) == -1)
		imap_track_set_unclean(&s->track, "server_write_error");
	if (buf_len(&s->bout) > s->bout_hold)
		imap_track_set_unclean(&s->track, "commands_unsent");
	imap_track_drop_held(&s->track);
	buf_consume(&s->bout, buf_len(&s->bout));
	buf_release(&s->bout);
	s->bout_hold = 0;
	memset(&h, 0, sizeof(h));
	h.user = s->user ? s->user : "";
	h.user_len = s->user ? s->user_len : 0;
	h.pwhash = s->pwhash;
	h.login_ms = s->login_ms;
	h.ok_text = s->ok_text;
	h.tls = s->be.tls;
	h.session_id = s->id;
	h.reuses = s->reuses;
	if (s->user == NULL)
		imap_track_set_unclean(&s->track, "no_user");
	/* The pool reads replies of any size: every byte wakes it. */
	conn_set_lowat(&s->be.conn, 1);
	pool_adopt(&s->be.conn, &s->track, &h);
}

/* Client bytes just appended to bout from offset at: follow them, cut out
 * a LOGOUT line (imapgate answers it), hold back a command's head. */
static void relay_from_client(struct session *s, size_t at)
{
	struct track_client_result tr;

	imap_track_client(&s->track, buf_ptr(&s->bout) + at, buf_len(&s->bout) - at, &tr);
	if (tr.logout) {
		/* The LOGOUT line and anything after it stay here. */
		s->bout.end = s->bout.start + at + tr.used - tr.logout_len;
		s->bout_hold = 0;
		s->logout_pending = true;
		memcpy(s->logout_tag, tr.logout_tag, sizeof(s->logout_tag));
		return;
	}
	s->bout_hold = tr.hold;
}

/* The client said LOGOUT: once the replies to its earlier commands have
 * reached it, say goodbye and give the backend connection to the pool. An
 * IDLE left running is the pool's to end. */
static void session_logout_check(struct session *s)
{
	const struct imap_track *t = &s->track;

	if (!s->logout_pending || s->state != SS_RELAY || s->flush_then_close)
		return;
	if (!(imap_track_quiet(t) || (t->idle != TRACK_IDLE_NO && t->in_flight == 1 && !t->s_mid_line)))
		return;
	s->logout_pending = false;
	session_reply(s, "* BYE Logging out");
	session_reply(s, "%s OK Logout completed.", s->logout_tag);
	session_handoff_backend(s);
	session_flush_close(s, "logout");
}

void session_enter_relay(struct session *s)
{
	/* Bytes the server sent right after its OK belong to the client. */
	if (buf_len(&s->be.in) > 0) {
		imap_track_server(&s->track, buf_ptr(&s->be.in), buf_len(&s->be.in));
		if (buf_append(&s->cout, buf_ptr(&s->be.in), buf_len(&s->be.in)) == -1) {
			session_close(s, "server_overflow");
			return;
		}
		buf_consume(&s->be.in, buf_len(&s->be.in));
	}
	backend_release(&s->be);
	if (!pool_enabled())
		imap_track_set_unclean(&s->track, "cache_off"); /* LOGOUT goes to the server */
	s->state = SS_RELAY;
	s->traced = trace_enabled_for(s->user, s->user_len);
	s->state_relay_counted = true;
	STATS_INC(STAT_SERVER_CONNECTIONS_IN_USE_CURRENT);
	s->be.conn.io.fn = server_io;
	s->be.conn.io.data = s;
	/* A command pipelined behind LOGIN goes to the server, not the floor. */
	if (buf_len(&s->cin) > 0) {
		size_t at = buf_len(&s->bout);

		if (buf_append(&s->bout, buf_ptr(&s->cin), buf_len(&s->cin)) == -1) {
			session_close(s, "client_overflow");
			return;
		}
		s->bytes_in += buf_len(&s->cin);
		buf_consume(&s->cin, buf_len(&s->cin));
		relay_from_client(s, at);
	}
	buf_free(&s->cin);
	imap_parser_free(&s->parser);
	s->active_ms = loop_now(srv.loop);
	loop_timer_start(srv.loop, &s->timer, (uint64_t)srv.cfg->idle_timeout * 1000);
	if (flush_bout(s) == -1) {
		session_close(s, "server_write_error");
		return;
	}
	session_logout_check(s);
	if (flush_buf(&s->client, &s->cout, &s->bytes_out) == -1) {
		session_close(s, "client_write_error");
		return;
	}
	session_update(s);
}

static void backend_done(struct backend *b, enum backend_result r, const char *text)
{
	struct session *s = b->data;

	login_settled(s);
	if (r == BACKEND_OK) {
		s->login_ms = loop_now(srv.loop);
		s->reuses = 0;
		free(s->ok_text);
		s->ok_text = strdup(text);
	}
	preauth_login_done(s, r, text);
	if (s->state != SS_CLOSED && s->state != SS_RELAY) {
		/* Back to pre-login: commands pipelined after a failed LOGIN. */
		preauth_process(s);
		session_update(s);
	}
}

void session_set_origin(struct session *s, const struct cidr *addr, unsigned port)
{
	memset(&s->origin, 0, sizeof(s->origin));
	if (addr->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&s->origin;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, addr->addr, 4);
		sin->sin_port = htons((uint16_t)port);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&s->origin;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, addr->addr, 16);
		sin6->sin6_port = htons((uint16_t)port);
	}
	addr_format_ip((struct sockaddr *)&s->origin, s->origin_ip, sizeof(s->origin_ip));
	s->origin_port = port;
	s->has_origin = true;
}

const struct sockaddr *session_client_addr(const struct session *s)
{
	return (const struct sockaddr *)(s->has_origin ? &s->origin : &s->peer);
}

/* The ID the backend gets before LOGIN: the client's fields, plus the real
 * client address when forward_client_address is on. NULL = send no ID. */
static char *session_build_id(const struct session *s)
{
	char addr[160] = "";
	size_t fl = s->id_fields ? strlen(s->id_fields) : 0;
	char *out;

	if (srv.cfg->forward_client_address) {
		const char *ip = s->has_origin ? s->origin_ip : s->peer_ip;
		unsigned port = s->has_origin ? s->origin_port : s->peer_port;

		if (port)
			snprintf(addr, sizeof(addr), "\"x-originating-ip\" \"%s\" \"x-originating-port\" \"%u\"", ip, port);
		else
			snprintf(addr, sizeof(addr), "\"x-originating-ip\" \"%s\"", ip);
	}
	if (fl == 0 && addr[0] == '\0')
		return NULL;
	out = malloc(fl + strlen(addr) + 4);
	if (out)
		sprintf(out, "(%s%s%s)", fl ? s->id_fields : "", fl && addr[0] ? " " : "", addr);
	return out;
}

/* A failed login is answered after the guard's delay; input waits too. */
void session_defer_reply(struct session *s, uint32_t delay_ms, bool close_after)
{
	s->state = SS_LOGIN;
	s->deferred_close = close_after;
	loop_timer_start(srv.loop, &s->login_timer, delay_ms);
}

static void session_login(struct session *s, bool may_wait);

static void login_timer_fire(struct loop_timer *t)
{
	struct session *s = t->data;

	if (s->state != SS_LOGIN)
		return;
	if (s->pool_waiting) {
		/* The cleaning took too long: a backend login after all. */
		session_wait_stop(s, "timeout");
		session_login(s, false);
		session_update(s);
		return;
	}
	if (s->reused) {
		/* A parked connection was taken: answer as a backend login would. */
		login_settled(s);
		preauth_login_done(s, BACKEND_OK, s->ok_text ? s->ok_text : "OK Logged in");
		session_update(s);
		return;
	}
	session_reply(s, "%s", s->deferred);
	s->deferred[0] = '\0';
	s->state = SS_PREAUTH;
	if (s->deferred_close)
		session_bye(s, "Too many failed logins from your address", "banned");
	else
		preauth_process(s);
	session_update(s);
}

/* A pooled connection is now s->be.conn: answer as for a backend login. */
static void session_reuse(struct session *s, const struct pool_taken *tk)
{
	s->reused = true;
	/* Counted for cache_size until the relay counts it. */
	s->be_pending = true;
	logins_in_progress++;
	s->login_ms = tk->login_ms;
	s->reuses = tk->reuses;
	s->be.tls = tk->tls;
	free(s->ok_text);
	s->ok_text = strdup(tk->ok_text);
	/* Answered from the loop, as a backend login is. */
	loop_timer_start(srv.loop, &s->login_timer, 0);
}

/* End a wait for the pool, if one runs (the promise is given back). */
static void session_wait_stop(struct session *s, const char *result)
{
	char user[128];

	if (!s->pool_waiting)
		return;
	s->pool_waiting = false;
	pool_wait_cancel(&s->pool_wait);
	log_sanitize(s->user ? s->user : "", s->user ? s->user_len : 0, user, sizeof(user));
	log_info("event=pool_wait_end session=%llu user=%s cleaning_session=%llu result=%s waited_ms=%llu",
	         (unsigned long long)s->id, user, (unsigned long long)s->pool_wait.cleaning_session, result,
	         (unsigned long long)(loop_now(srv.loop) - s->pool_wait_ms));
}

/* The pool's answer to the wait: the connection, or a backend login now. */
static void session_pool_ready(struct pool_waiter *w, bool ready)
{
	struct session *s = w->data;
	struct pool_taken tk;

	if (s->state != SS_LOGIN || !s->pool_waiting)
		return;
	loop_timer_stop(srv.loop, &s->login_timer);
	if (ready && pool_take_promised(w, &s->be.conn, &s->track, server_io, s, &tk)) {
		session_wait_stop(s, "reused");
		session_reuse(s, &tk);
		session_update(s);
		return;
	}
	session_wait_stop(s, ready ? "not_clean" : "gone");
	if (srv.shutting_down) {
		/* The pool closes everything on SIGTERM: no new login now. */
		snprintf(s->be.reason, sizeof(s->be.reason), "shutdown");
		s->be.detail[0] = '\0';
		preauth_login_done(s, BACKEND_UNAVAILABLE, "shutdown");
	} else {
		session_login(s, false);
	}
	session_update(s);
}

void session_start_login(struct session *s)
{
	s->state = SS_LOGIN;
	s->login_start_ms = loop_now(srv.loop);
	s->reused = false;
	session_login(s, true);
}

/* A parked connection of this user; else (may_wait) the one being cleaned
 * after its LOGOUT a moment ago; else a backend login. */
static void session_login(struct session *s, bool may_wait)
{
	if (pool_enabled() && !srv.shutting_down) {
		struct pool_taken tk;

		if (pool_take(s->user, s->user_len, s->pwhash, &s->be.conn, &s->track, server_io, s, &tk)) {
			session_reuse(s, &tk);
			return;
		}
		s->pool_wait.done = session_pool_ready;
		s->pool_wait.data = s;
		if (may_wait && pool_wait(s->user, s->user_len, s->pwhash, &s->pool_wait)) {
			uint64_t cap = (uint64_t)srv.cfg->backend_timeout * 1000;
			char user[128];

			s->pool_waiting = true;
			s->pool_wait_ms = loop_now(srv.loop);
			loop_timer_start(srv.loop, &s->login_timer, cap < POOL_WAIT_MAX_MS ? cap : POOL_WAIT_MAX_MS);
			log_sanitize(s->user, s->user_len, user, sizeof(user));
			log_info("event=pool_wait session=%llu user=%s cleaning_session=%llu", (unsigned long long)s->id,
			         user, (unsigned long long)s->pool_wait.cleaning_session);
			return;
		}
		if (!pool_make_room(backend_in_use())) {
			snprintf(s->be.reason, sizeof(s->be.reason), "cache_full");
			s->be.detail[0] = '\0';
			preauth_login_done(s, BACKEND_UNAVAILABLE, "cache_full");
			return;
		}
	}
	free(s->id_args);
	s->id_args = session_build_id(s);
	s->be.user = s->user;
	s->be.user_len = s->user_len;
	s->be.pass = s->pass;
	s->be.pass_len = s->pass_len;
	s->be.id_args = s->id_args;
	imap_track_init(&s->track);
	s->be_pending = true;
	logins_in_progress++;
	backend_start(&s->be, backend_done, s);
}

/* Read from one side into the other side's buffer. Returns bytes, 0 on EOF,
 * -1 with errno. */
static ssize_t pump_in(struct conn *from, struct buf *to)
{
	size_t room;
	char *w = buf_reserve(to, &room);
	ssize_t r;

	if (w == NULL) {
		errno = EAGAIN;
		return -1;
	}
	r = conn_read(from, w, room);
	if (r > 0)
		buf_commit(to, (size_t)r);
	else
		buf_release(to);
	return r;
}

static void client_io(struct loop_io *io, unsigned ev)
{
	struct session *s = io->data;
	ssize_t r;

	if (s->state == SS_CLOSED)
		return;
	if ((ev & LOOP_ERROR) && !client_wants_read(s) && buf_len(&s->cout) == 0) {
		/* Reset or hung up while we were not reading (e.g. during a
		 * backend login): nothing will clear the condition, and epoll
		 * would report it again and again. */
		session_close(s, "client_error");
		return;
	}
	if (s->client_tls)
		/* TLS may need either direction for either operation: try both,
		 * reading only what the state wants. */
		ev |= LOOP_READ | LOOP_WRITE;
	if (!client_wants_read(s))
		ev &= ~LOOP_READ;
	if ((ev & LOOP_WRITE) && flush_buf(&s->client, &s->cout, &s->bytes_out) == -1) {
		session_close(s, "client_write_error");
		return;
	}
	if ((ev & LOOP_READ) && s->state == SS_PROXY) {
		session_read_proxy(s);
		if (s->state != SS_CLOSED)
			session_update(s);
		return;
	}
	if (ev & LOOP_READ) {
		if (s->state == SS_RELAY) {
			size_t before = buf_len(&s->bout);

			r = pump_in(&s->client, &s->bout);
			if (r > 0) {
				relay_from_client(s, before);
				if (s->traced && buf_len(&s->bout) > before)
					trace_client(s->id, s->user, s->user_len, s->client.io.fd, buf_ptr(&s->bout) + before,
					             buf_len(&s->bout) - before);
				s->bytes_in += (uint64_t)r;
				STATS_ADD(STAT_BYTES_FROM_CLIENTS_TOTAL, r);
				s->active_ms = loop_now(srv.loop);
				if (flush_bout(s) == -1) {
					session_close(s, "server_write_error");
					return;
				}
				session_logout_check(s);
			}
		} else {
			r = pump_in(&s->client, &s->cin);
			if (r > 0) {
				s->bytes_in += (uint64_t)r;
				STATS_ADD(STAT_BYTES_FROM_CLIENTS_TOTAL, r);
				preauth_process(s);
			}
		}
		if (r == 0 || (r == -1 && errno != EAGAIN)) {
			s->client_eof = true;
			session_close(s, r == 0 ? "client_eof" : "client_read_error");
			return;
		}
		if (s->state != SS_CLOSED && buf_len(&s->cout) > 0 &&
		    flush_buf(&s->client, &s->cout, &s->bytes_out) == -1) {
			session_close(s, "client_write_error");
			return;
		}
	}
	if (s->state != SS_CLOSED)
		session_note_tls(s);
	session_update(s);
}

/*
 * The server closed or reset the connection during the relay: give the
 * client what the server already sent, then close. Unless the server said
 * BYE itself, the client gets one of ours (RFC 3501 7.1.5) so it can tell
 * a lost server from a network fault -- but only at a line boundary of the
 * server's stream, where it cannot be read as part of a reply.
 */
static void session_server_gone(struct session *s, const char *reason)
{
	const struct imap_track *t = &s->track;

	conn_close(srv.loop, &s->be.conn);
	if (!t->bye && !t->lost && !t->s_mid_line && t->s_literal == 0)
		session_reply(s, "* BYE [UNAVAILABLE] Connection to the mail server lost");
	session_flush_close(s, reason);
}

static void server_io(struct loop_io *io, unsigned ev)
{
	struct session *s = io->data;
	ssize_t r;

	if (s->state != SS_RELAY)
		return;
	if ((ev & LOOP_ERROR) && !server_wants_read(s)) {
		/* The server reset while its replies wait for the client: give the
		 * client what is queued, then close. */
		session_server_gone(s, "server_error");
		session_update(s);
		return;
	}
	if (s->be.tls)
		ev |= LOOP_READ | LOOP_WRITE;
	if (!server_wants_read(s))
		ev &= ~LOOP_READ;
	if ((ev & LOOP_WRITE) && flush_bout(s) == -1) {
		session_close(s, "server_write_error");
		return;
	}
	if (ev & LOOP_READ) {
		size_t before = buf_len(&s->cout);

		r = pump_in(&s->be.conn, &s->cout);
		if (r > 0) {
			imap_track_server(&s->track, buf_ptr(&s->cout) + before, (size_t)r);
			if (s->traced)
				trace_server(s->id, s->user, s->user_len, s->be.conn.io.fd, buf_ptr(&s->cout) + before, (size_t)r);
			s->active_ms = loop_now(srv.loop);
			if (flush_buf(&s->client, &s->cout, &s->bytes_out) == -1) {
				session_close(s, "client_write_error");
				return;
			}
			session_logout_check(s);
		} else if (r == 0 || errno != EAGAIN) {
			session_server_gone(s, r == 0 ? "server_closed" : "server_read_error");
		}
	}
	session_update(s);
}

/* --- control ------------------------------------------------------------- */

/* "pool": the backend connections imapgate holds, with whom they serve. */
static const char *ctl_pool(int argc, char **argv, bool json, struct strbuf *out, char *errbuf, size_t errsz)
{
	unsigned n = 0;
	uint64_t now = loop_now(srv.loop);

	(void)argc, (void)argv, (void)errbuf, (void)errsz;
	if (json)
		sb_printf(out, "[");
	for (struct session *s = srv.sessions; s; s = s->next) {
		char user[128];

		if (s->state != SS_RELAY || !conn_is_open(&s->be.conn))
			continue;
		log_sanitize(s->user ? s->user : "", s->user ? s->user_len : 0, user, sizeof(user));
		if (json) {
			sb_printf(out, "%s{\"session\":%llu,\"user\":", n ? "," : "", (unsigned long long)s->id);
			sb_json_str(out, user);
			sb_printf(out, ",\"client\":\"%s\",\"client_port\":%u,\"state\":\"active\",\"tls\":%s,\"idle_ms\":%llu}",
			          s->peer_ip, s->peer_port, s->be.tls ? "true" : "false",
			          (unsigned long long)(now - s->active_ms));
		} else {
			sb_printf(out, "session=%llu user=%s client=%s:%u state=active backend_tls=%s idle_ms=%llu\n",
			          (unsigned long long)s->id, user, s->peer_ip, s->peer_port, s->be.tls ? "yes" : "no",
			          (unsigned long long)(now - s->active_ms));
		}
		n++;
	}
	n += pool_list(out, json, n > 0);
	if (json)
		sb_printf(out, "]\n");
	else if (n == 0)
		sb_printf(out, "no backend connections\n");
	return NULL;
}

void session_register_control(void)
{
	control_register("pool", ctl_pool, "backend connections: active, cleaning and parked");
}

/* --- shutdown ------------------------------------------------------------ */

void session_shutdown_begin(void)
{
	for (struct session *s = srv.sessions, *n; s; s = n) {
		n = s->next;
		if (s->state == SS_PREAUTH || s->state == SS_SASL) {
			session_bye(s, "Server shutting down", "shutdown");
			session_update(s);
		}
	}
}

void session_shutdown_force(void)
{
	for (struct session *s = srv.sessions, *n; s; s = n) {
		n = s->next;
		if (s->flush_then_close)
			continue;
		if (s->state == SS_RELAY && conn_is_open(&s->be.conn) && !s->track.lost &&
		    imap_track_client_boundary(&s->track) && s->bout_hold == 0) {
			/* At a command boundary: end the server session politely. */
			buf_append(&s->bout, "IGZ LOGOUT\r\n", 12);
			(void)flush_buf(&s->be.conn, &s->bout, NULL);
		}
		if (s->state == SS_LOGIN) {
			session_wait_stop(s, "shutdown");
			login_settled(s);
			backend_abort(&s->be);
			s->state = SS_PREAUTH;
		}
		conn_close(srv.loop, &s->be.conn);
		session_bye(s, "Server shutting down", "shutdown");
		if (s->state != SS_CLOSED)
			loop_timer_start(srv.loop, &s->timer, SHUTDOWN_GRACE_MS);
		session_update(s);
	}
}
