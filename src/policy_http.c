/*
 * policy_http — Dovecot's auth policy server (policy_http.h).
 *
 * Connections live in a pool of slots that only grows (up to
 * policy_max_connections) and is freed at policy_close: a slot closed
 * inside its own callback is never freed under the loop, and an event left
 * over for a closed slot only finds a read or write that says so.
 */
#include "policy_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "buf.h"
#include "conn.h"
#include "guard_service.h"
#include "http_req.h"
#include "json_flat.h"
#include "log.h"
#include "policy_hash.h"
#include "stats.h"
#include "tcp_listen.h"

#define POLICY_MAX_SOCKETS (CONFIG_MAX_POLICY_LISTEN * 2)
#define POLICY_OUT_MAX 65536  /* answers queued for one connection (pipelined) */
#define POLICY_PAUSE_MS 1000  /* after running out of descriptors */
#define POLICY_MSG_BANNED "Too many failed logins from your address, try again later"

enum pc_state { PC_READ, PC_LINGER };

struct pconn {
	struct conn c;
	struct loop_timer timer;
	bool used;
	bool closing; /* answer queued with Connection: close */
	enum pc_state state;
	char ip[ADDR_STRLEN];
	struct buf out;
	struct http_req req;
};

static struct {
	struct loop *loop;
	const struct config *cfg;
	char *spec[CONFIG_MAX_POLICY_LISTEN];
	size_t n_spec;
	struct tcp_listeners lis;
	char key_name[128];
	unsigned char key_digest[SHA256_DIGEST_LENGTH];
	struct pconn **slot;
	size_t n_slot, n_used;
	bool stopped;
} P;

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
	return P.cfg->policy_timeout * 1000u;
}

/* ------------------------------------------------------------------ */
/* Connections                                                          */

static void pc_close(struct pconn *pc)
{
	if (!pc->used)
		return;
	loop_timer_stop(P.loop, &pc->timer);
	conn_close(P.loop, &pc->c);
	buf_free(&pc->out);
	pc->used = false;
	P.n_used--;
}

static void pc_timeout(struct loop_timer *t)
{
	pc_close(t->data);
}

/* Write what is queued; after a closing answer, half-close and drain. */
static void pc_flush(struct pconn *pc)
{
	switch (conn_write_buf(&pc->c, &pc->out)) {
	case 0:
		if (loop_io_set(P.loop, &pc->c.io, LOOP_WRITE) == -1)
			pc_close(pc);
		return;
	case -1:
		pc_close(pc);
		return;
	}
	if (pc->closing && pc->state != PC_LINGER) {
		/* A plain close with unread bytes would send a reset that can
		 * destroy the answer in the client's buffer. */
		(void)shutdown(pc->c.io.fd, SHUT_WR);
		pc->state = PC_LINGER;
		loop_timer_start(P.loop, &pc->timer, 2000);
	}
	if (loop_io_set(P.loop, &pc->c.io, LOOP_READ) == -1)
		pc_close(pc);
}

static void answer(struct pconn *pc, int status, const char *reason, const char *type, const char *body)
{
	size_t blen = strlen(body);

	if (buf_len(&pc->out) + blen + 256 > POLICY_OUT_MAX ||
	    buf_appendf(&pc->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n%s", status,
	                reason, type, blen, pc->closing ? "Connection: close\r\n" : "", body) == -1)
		pc->closing = true; /* out of room: what is queued goes, then the end */
}

/* A 4xx/5xx: logged, counted, answered, and the connection ends. */
static void refuse(struct pconn *pc, int status, const char *reason, const char *why)
{
	char body[160];

	STATS_INC(STAT_POLICY_BAD_REQUESTS_TOTAL);
	log_info("event=policy_bad_request client=%s status=%d error=\"%s\"", pc->ip, status, why);
	pc->closing = true;
	snprintf(body, sizeof(body), "%s\n", why);
	answer(pc, status, reason, "text/plain; charset=utf-8", body);
}

static const char *status_text(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 431: return "Request Header Fields Too Large";
	case 501: return "Not Implemented";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}

/* The configured API key, parsed once per (re)load: the header's name and
 * the digest of its value. */
static void key_prepare(const struct config *cfg)
{
	const char *key = cfg->policy_api_key, *colon, *want;

	if (key == NULL) {
		P.key_name[0] = '\0';
		return;
	}
	colon = strchr(key, ':');
	snprintf(P.key_name, sizeof(P.key_name), "X-API-Key");
	want = key;
	if (colon) {
		size_t n = (size_t)(colon - key);

		while (n && (key[n - 1] == ' ' || key[n - 1] == '\t'))
			n--;
		if (n >= sizeof(P.key_name))
			n = 0; /* no header has such a name: nothing matches */
		memcpy(P.key_name, key, n);
		P.key_name[n] = '\0';
		for (want = colon + 1; *want == ' ' || *want == '\t'; want++)
			;
	}
	SHA256((const unsigned char *)want, strlen(want), P.key_digest);
}

/* The API key, compared in constant time (both sides hashed, so neither
 * the content nor the length shows in the timing). */
static bool key_ok(const struct http_req *r)
{
	const char *got;
	size_t got_len;
	unsigned char b[SHA256_DIGEST_LENGTH];

	if (P.key_name[0] == '\0' || (got = http_req_header(r, P.key_name, &got_len)) == NULL)
		return false;
	SHA256((const unsigned char *)got, got_len, b);
	return CRYPTO_memcmp(P.key_digest, b, sizeof(b)) == 0;
}

/* The request body's attributes we use (Dovecot's defaults). */
struct attrs {
	char login[GUARD_USER_MAX];
	size_t login_len;
	char remote[64];
	char proto[GUARD_PROTO_LEN];
	char pwhash[POLICY_HASH_HEX_MAX];
	char session[64];
	char fail_type[24];
	int success, policy_reject; /* -1 absent, 0 false, 1 true */
};

static void copy_attr(char *dst, size_t dstsz, const char *v, size_t vlen)
{
	size_t n = vlen < dstsz - 1 ? vlen : dstsz - 1;

	memcpy(dst, v, n);
	dst[n] = '\0';
}

static int attr_cb(void *ctx, const char *key, size_t klen, enum json_type type, const char *v, size_t vlen)
{
	struct attrs *a = ctx;

#define IS(k) (klen == sizeof(k) - 1 && memcmp(key, k, klen) == 0)
	if (type == JSON_TRUE || type == JSON_FALSE) {
		if (IS("success"))
			a->success = type == JSON_TRUE;
		else if (IS("policy_reject"))
			a->policy_reject = type == JSON_TRUE;
		return 0;
	}
	if (type != JSON_STRING)
		return 0;
	if (IS("login")) {
		copy_attr(a->login, sizeof(a->login), v, vlen);
		a->login_len = strlen(a->login);
	} else if (IS("remote")) {
		copy_attr(a->remote, sizeof(a->remote), v, vlen);
	} else if (IS("protocol")) {
		copy_attr(a->proto, sizeof(a->proto), v, vlen);
	} else if (IS("pwhash")) {
		copy_attr(a->pwhash, sizeof(a->pwhash), v, vlen);
	} else if (IS("session_id")) {
		copy_attr(a->session, sizeof(a->session), v, vlen);
	} else if (IS("fail_type")) {
		copy_attr(a->fail_type, sizeof(a->fail_type), v, vlen);
	}
#undef IS
	return 0;
}

/* remote as Dovecot sends it ("192.0.2.7", "2001:db8::1") into ss. */
static bool parse_remote(const char *s, struct sockaddr_storage *ss)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, s, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, s, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		return true;
	}
	return false;
}

static void attempt_of(const struct attrs *at, const struct sockaddr_storage *ss, bool have_addr,
                       uint8_t pwkey[GUARD_PWHASH_LEN], struct gs_attempt *a)
{
	memset(a, 0, sizeof(*a));
	a->addr = have_addr ? (const struct sockaddr *)ss : NULL;
	/* A webmail host talking to Dovecot directly stands for its users,
	 * as at the IMAP front: its failures count per user only. */
	a->user_only = have_addr && cidr_list_match(&P.cfg->trusted_webmail, (const struct sockaddr *)ss);
	a->user = at->login;
	a->user_len = at->login_len;
	a->proto = at->proto[0] ? at->proto : "unknown";
	if (at->pwhash[0]) {
		guard_service_pwkey(at->pwhash, strlen(at->pwhash), pwkey);
		a->pwkey = pwkey;
	}
}

static void do_allow(struct pconn *pc, const struct attrs *at, const struct gs_attempt *a)
{
	struct guard_verdict v;
	char body[200];

	guard_service_may_try(a, &v);
	if (v.banned) {
		char u[160];

		log_sanitize(at->login, at->login_len, u, sizeof(u));
		STATS_INC(STAT_POLICY_REFUSED_TOTAL);
		STATS_INC(STAT_GUARD_REFUSED_CONNECTIONS_TOTAL);
		log_info("event=login_refused user=%s rip=%s proto=%s source=policy reason=banned", u, at->remote,
		         a->proto);
		snprintf(body, sizeof(body), "{\"status\":-1,\"msg\":\"%s\"}", POLICY_MSG_BANNED);
	} else if (v.delay_ms > 0) {
		/* Dovecot waits whole seconds: round up, within the guard's cap. */
		STATS_INC(STAT_POLICY_DELAYED_TOTAL);
		snprintf(body, sizeof(body), "{\"status\":%u}", (v.delay_ms + 999) / 1000);
	} else {
		snprintf(body, sizeof(body), "{\"status\":0}");
	}
	answer(pc, 200, "OK", "application/json", body);
}

static void do_report(struct pconn *pc, const struct attrs *at, const struct gs_attempt *a)
{
	struct guard_failure_result r;
	char u[160], note[160];
	int rc;

	answer(pc, 200, "OK", "application/json", "{\"status\":0}");
	if (a->addr == NULL)
		return; /* no address: nothing to trust or count */
	if (at->success == 1) {
		guard_service_success(a);
		return;
	}
	/* Refused by us: already decided, not another attempt. */
	if (at->policy_reject == 1 || at->success != 0)
		return;
	log_sanitize(at->login, at->login_len, u, sizeof(u));
	/* Dovecot 2.4 says why; only a wrong password or an unknown user is
	 * a guess (not an expired or disabled account, not an internal error). */
	if (at->fail_type[0] && strcmp(at->fail_type, "credentials") != 0 && strcmp(at->fail_type, "account") != 0) {
		log_info("event=login_failed user=%s rip=%s proto=%s source=policy session=%s reason=%s guard=not_counted",
		         u, at->remote, a->proto, at->session[0] ? at->session : "-", at->fail_type);
		return;
	}
	rc = guard_service_failure(a, "auth_failed", &r);
	guard_service_note(&r, rc, note, sizeof(note));
	log_info("event=login_failed user=%s rip=%s proto=%s source=policy session=%s reason=auth_failed%s", u,
	         at->remote, a->proto, at->session[0] ? at->session : "-", note);
	guard_service_log_held();
}

static void handle(struct pconn *pc)
{
	struct http_req *r = &pc->req;
	const char *cmd;
	size_t cmd_len;
	struct attrs at;
	struct json_flat j;
	struct sockaddr_storage ss;
	uint8_t pwkey[GUARD_PWHASH_LEN];
	struct gs_attempt a;
	bool have_addr;

	if (!r->keep_alive || P.stopped)
		pc->closing = true;
	if (!key_ok(r)) {
		refuse(pc, 401, "Unauthorized", "missing or wrong API key");
		return;
	}
	if (r->path_len != 1 || r->path[0] != '/') {
		refuse(pc, 404, "Not Found", "no such path (the policy server is at /)");
		return;
	}
	if (strcmp(r->method, "POST") != 0) {
		refuse(pc, 405, "Method Not Allowed", "only POST");
		return;
	}
	if (!http_query_param(r->query, r->query_len, "command", &cmd, &cmd_len) ||
	    !((cmd_len == 5 && memcmp(cmd, "allow", 5) == 0) || (cmd_len == 6 && memcmp(cmd, "report", 6) == 0))) {
		refuse(pc, 400, "Bad Request", "command must be allow or report");
		return;
	}
	memset(&at, 0, sizeof(at));
	at.success = at.policy_reject = -1;
	json_flat_init(&j, attr_cb, &at);
	if (json_flat_feed(&j, r->body, r->body_len) == -1 || json_flat_finish(&j) == -1) {
		char why[200];

		snprintf(why, sizeof(why), "bad JSON body: %s", j.error ? j.error : "?");
		refuse(pc, 400, "Bad Request", why);
		return;
	}
	STATS_INC(STAT_POLICY_REQUESTS_TOTAL);
	have_addr = at.remote[0] && parse_remote(at.remote, &ss);
	attempt_of(&at, &ss, have_addr, pwkey, &a);
	if (cmd_len == 5)
		do_allow(pc, &at, &a);
	else
		do_report(pc, &at, &a);
}

/* Feed what was read; answer each whole request. Returns false when the
 * connection must stop reading (closing). */
static bool pc_input(struct pconn *pc, const char *data, size_t len)
{
	while (len > 0 && !pc->closing) {
		size_t used = 0;
		enum http_req_state st = http_req_feed(&pc->req, data, len, &used);

		data += used;
		len -= used;
		if (st == HTTP_REQ_MORE)
			break;
		if (st == HTTP_REQ_ERROR) {
			refuse(pc, pc->req.status, status_text(pc->req.status), pc->req.error);
			break;
		}
		handle(pc);
		http_req_reset(&pc->req);
		/* Idle from here: the timer restarts with each request. */
		loop_timer_start(P.loop, &pc->timer, timeout_ms());
	}
	return !pc->closing;
}

static void pc_io(struct loop_io *io, unsigned ev)
{
	struct pconn *pc = io->data;
	char in[4096];
	ssize_t r;

	(void)ev; /* only hints: act on what read and write say */
	if (!pc->used)
		return;
	if (buf_len(&pc->out) > 0) {
		pc_flush(pc);
		if (!pc->used || buf_len(&pc->out) > 0)
			return;
	}
	for (;;) {
		r = conn_read(&pc->c, in, sizeof(in));
		if (r > 0) {
			if (pc->state == PC_LINGER)
				continue;
			if (!pc_input(pc, in, (size_t)r)) {
				pc_flush(pc);
				return;
			}
			continue;
		}
		if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		pc_close(pc); /* EOF or error */
		return;
	}
	pc_flush(pc);
}

static struct pconn *slot_get(void)
{
	for (size_t i = 0; i < P.n_slot; i++)
		if (!P.slot[i]->used)
			return P.slot[i];
	if (P.n_slot >= P.cfg->policy_max_connections)
		return NULL;
	struct pconn **ns = realloc(P.slot, (P.n_slot + 1) * sizeof(*ns));
	if (ns == NULL)
		return NULL;
	P.slot = ns;
	if ((P.slot[P.n_slot] = calloc(1, sizeof(struct pconn))) == NULL)
		return NULL;
	return P.slot[P.n_slot++];
}

static void busy(int fd, int status, const char *reason)
{
	char msg[160];
	int n = snprintf(msg, sizeof(msg), "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", status,
	                 reason);

	tcp_answer_close(fd, msg, (size_t)n);
}

/* ------------------------------------------------------------------ */
/* Listening sockets                                                    */

static void accept_io(struct loop_io *io, unsigned ev)
{
	(void)ev;
	for (int n = 0; n < 64; n++) {
		struct sockaddr_storage ss;
		char ip[ADDR_STRLEN];
		struct pconn *pc;
		int fd = tcp_listeners_accept(&P.lis, io, &ss);

		if (fd == -1)
			return;
		addr_format_ip((struct sockaddr *)&ss, ip, sizeof(ip));
		pc = slot_get();
		if (pc == NULL) {
			STATS_INC(STAT_POLICY_BAD_REQUESTS_TOTAL);
			log_warn("event=policy_bad_request client=%s status=503 error=\"policy_max_connections (%u) reached\"",
			         ip, P.cfg->policy_max_connections);
			busy(fd, 503, "Service Unavailable");
			continue;
		}
		memset(pc, 0, offsetof(struct pconn, req));
		pc->used = true;
		P.n_used++;
		snprintf(pc->ip, sizeof(pc->ip), "%s", ip);
		http_req_init(&pc->req);
		conn_tcp_init(&pc->c, fd, pc_io, pc);
		buf_init(&pc->out, POLICY_OUT_MAX);
		pc->timer.fn = pc_timeout;
		pc->timer.data = pc;
		loop_timer_start(P.loop, &pc->timer, timeout_ms());
		if (!cidr_list_match(&P.cfg->policy_allow, (struct sockaddr *)&ss)) {
			/* Answered at once; its request is read and dropped until
			 * it closes (bounded), so the 403 is not lost to a reset. */
			refuse(pc, 403, "Forbidden", "not in policy_allow");
			pc_flush(pc);
			continue;
		}
		if (loop_io_set(P.loop, &pc->c.io, LOOP_READ) == -1)
			pc_close(pc);
	}
}

static void specs_free(void)
{
	for (size_t i = 0; i < P.n_spec; i++)
		free(P.spec[i]);
	P.n_spec = 0;
}

static bool same_spec(const struct config *cfg)
{
	if (cfg->n_policy_listen != P.n_spec)
		return false;
	for (size_t i = 0; i < P.n_spec; i++)
		if (strcmp(cfg->policy_listen[i], P.spec[i]) != 0)
			return false;
	return true;
}

/* Bind every address of specs; on an error none stays bound. */
static int listeners_bind(char *const *specs, size_t n, const char **error_r)
{
	for (size_t i = 0; i < n; i++)
		if (tcp_listeners_add(&P.lis, specs[i], 128, errbuf, sizeof(errbuf)) == -1) {
			*error_r = errbuf;
			tcp_listeners_close(&P.lis);
			return -1;
		}
	return 0;
}

/* Remember what is bound, for the next reload. */
static int specs_set(const struct config *cfg, const char **error_r)
{
	specs_free();
	for (size_t i = 0; i < cfg->n_policy_listen; i++) {
		if ((P.spec[P.n_spec] = strdup(cfg->policy_listen[i])) == NULL) {
			*error_r = set_err("out of memory");
			return -1;
		}
		P.n_spec++;
	}
	return 0;
}

int policy_open(struct loop *l, const struct config *cfg, const char **error_r)
{
	*error_r = NULL;
	P.loop = l;
	P.cfg = cfg;
	P.stopped = false;
	key_prepare(cfg);
	P.lis = (struct tcp_listeners){.loop = l, .name = "policy", .pause_ms = POLICY_PAUSE_MS,
	                               .max = POLICY_MAX_SOCKETS, .fn = accept_io};
	if (listeners_bind(cfg->policy_listen, cfg->n_policy_listen, error_r) == -1)
		return -1;
	if (specs_set(cfg, error_r) == -1) {
		tcp_listeners_close(&P.lis);
		return -1;
	}
	return 0;
}

int policy_reload(const struct config *cfg, const char **error_r)
{
	*error_r = NULL;
	if (P.loop == NULL || P.stopped)
		return 0;
	P.cfg = cfg;
	key_prepare(cfg);
	if (same_spec(cfg))
		return 0;
	/* Close the old addresses first (a reload may move a port from one
	 * line to another); when the new ones cannot be bound, the old ones
	 * come back and the error says why. */
	tcp_listeners_close(&P.lis);
	if (listeners_bind(cfg->policy_listen, cfg->n_policy_listen, error_r) == -1) {
		char saved[sizeof(errbuf)];
		const char *e2 = NULL;

		snprintf(saved, sizeof(saved), "%s", *error_r);
		(void)listeners_bind(P.spec, P.n_spec, &e2);
		snprintf(errbuf, sizeof(errbuf), "%s", saved);
		*error_r = errbuf;
		return -1;
	}
	return specs_set(cfg, error_r);
}

void policy_stop_accepting(void)
{
	if (P.loop == NULL)
		return;
	P.stopped = true;
	tcp_listeners_close(&P.lis);
	specs_free();
}

void policy_close(void)
{
	if (P.loop == NULL)
		return;
	tcp_listeners_close(&P.lis);
	specs_free();
	for (size_t i = 0; i < P.n_slot; i++) {
		pc_close(P.slot[i]);
		free(P.slot[i]);
	}
	free(P.slot);
	P.slot = NULL;
	P.n_slot = P.n_used = 0;
	P.loop = NULL;
}

unsigned policy_port(void)
{
	return tcp_listeners_port(&P.lis);
}

size_t policy_connections(void)
{
	return P.n_used;
}
