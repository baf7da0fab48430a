/*
 * loadgen — the IMAP load generator of imapgate's benchmark (bench/run.py).
 *
 * One process, one epoll loop, many connections; each connection is a small
 * state machine that runs one workload (--mode) over and over:
 *
 *   webmail  connect, LOGIN a random user, SELECT INBOX, FETCH 1:50
 *            (FLAGS ENVELOPE) (1:EXISTS if fewer), LOGOUT; a new TCP
 *            connection per cycle
 *   bulk     LOGIN once, then UID FETCH n BODY.PEEK[] of every message in
 *            turn (one fetch is a cycle)
 *   idle     LOGIN, SELECT INBOX, IDLE; once every session idles, print a
 *            "ready" line, hold for --hold seconds, then DONE and LOGOUT
 *   flood    connect and expect "* BYE" at once (a banned address); counts
 *            refusals
 *   burst    --conns connects at the same instant, greeting and LOGOUT,
 *            --bursts times; counts lost and stalled connections
 *   login    connect, LOGIN a random user, LOGOUT: logins per second
 *   smtp     SMTP AUTH: connect, EHLO, AUTH PLAIN (initial response) as a
 *            random user, QUIT; a new TCP connection per cycle
 *   policy   Dovecot's auth policy requests (HTTP/1.1 POST, keep-alive, one
 *            at a time per connection) to an auth policy server: allow and
 *            report in turn, some reports failures from 198.19.0.0/16 (see
 *            policy_next); a request is a cycle
 *
 * Every reply is checked (tagged OK, SELECT's EXISTS, one FETCH per
 * message); a cycle with any error is counted as failed, never retried.
 * Every run is bounded by --seconds and --max-cycles, and every step by
 * --timeout-ms, so nothing hangs. The result is one JSON line on stdout.
 *
 * --tls speaks implicit TLS (OpenSSL, no certificate check: a bench against
 * a loopback test server) on every connection, from the greeting on.
 *
 * It must never be pointed at anything but a test server: it logs in with
 * the passwords it is given, as fast as it can. Needs libc and OpenSSL.
 */

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define RBUF_SIZE (64 * 1024)
#define WBUF_SIZE 1024
#define HTTP_BODY_MAX 4096
#define MAX_SRC 64
#define MAX_UIDS 256
#define FETCH_RANGE 50

enum mode { M_WEBMAIL, M_BULK, M_IDLE, M_FLOOD, M_BURST, M_LOGIN, M_SMTP, M_POLICY, M_COUNT };
static const char *const mode_names[] = {"webmail", "bulk", "idle", "flood", "burst", "login", "smtp", "policy"};

enum step {
	S_FREE,		/* no connection in this slot */
	S_CONNECT,	/* non-blocking connect in progress */
	S_GREETING,	/* waiting for "* OK" (or "* BYE" in flood mode) */
	S_LOGIN,
	S_SELECT,
	S_FETCH,	/* webmail: FETCH 1:50 */
	S_SEARCH,	/* bulk: UID SEARCH ALL */
	S_BODY,		/* bulk: UID FETCH n BODY.PEEK[] */
	S_IDLE_WAIT,	/* IDLE sent, waiting for "+" */
	S_IDLING,
	S_DONE_WAIT,	/* DONE sent, waiting for the IDLE's tagged OK */
	S_LOGOUT,
	S_EHLO,		/* smtp: EHLO sent */
	S_AUTH,		/* smtp: AUTH PLAIN sent */
	S_QUIT,		/* smtp: QUIT sent */
	S_HTTP,		/* policy: a request sent, waiting for its response */
};

static const char *const step_names[] = {"free", "connect", "greeting", "LOGIN", "SELECT", "FETCH",
					 "UID SEARCH", "UID FETCH", "IDLE", "idling", "DONE", "LOGOUT", "EHLO", "AUTH",
					 "QUIT", "HTTP"};

enum err { E_CONNECT, E_TIMEOUT, E_CLOSED, E_GREETING, E_NO, E_PROTOCOL, E_VERIFY, E_NOT_REFUSED, E_COUNT };
static const char *const err_names[] = {"connect", "timeout", "closed", "greeting", "no", "protocol", "verify",
					"not_refused"};
_Static_assert(sizeof(step_names) / sizeof(step_names[0]) == S_HTTP + 1, "a name for every step");
_Static_assert(sizeof(mode_names) / sizeof(mode_names[0]) == M_COUNT, "a name for every mode");
_Static_assert(sizeof(err_names) / sizeof(err_names[0]) == E_COUNT, "a name for every error");

struct conn {
	int fd;
	SSL *ssl;		/* --tls: from connect on */
	enum step step;
	int user;
	char *rbuf;
	size_t rlen;
	uint64_t skip;		/* literal bytes still to pass over */
	bool cont;		/* the next line continues a response cut by a literal */
	char wbuf[WBUF_SIZE];
	size_t wlen, woff;
	uint64_t t_cycle;	/* start of this cycle (connect, or a bulk fetch) */
	uint64_t t_connect;
	uint64_t t_step;	/* command of this step sent */
	uint64_t deadline;	/* 0: none (idling) */
	unsigned exists, fetched;
	bool reused;
	enum { P_ALLOW, P_REPORT_OK, P_REPORT_FAIL } pkind;	/* policy: the request in flight */
	unsigned nuids, next_uid;
	uint32_t uids[MAX_UIDS];
};

struct samples {
	uint32_t *v;
	size_t n, cap;
};

static struct {
	enum mode mode;
	const char *host;
	int port;
	int conns;
	double seconds;
	long max_cycles;
	int users;
	const char *user_fmt, *pass_fmt;
	struct sockaddr_storage src[MAX_SRC];
	socklen_t srclen[MAX_SRC];
	int nsrc;
	int timeout_ms;
	bool sequential;
	uint64_t seed;
	double hold;
	int ramp;
	int bursts;
	int stall_ms;
	bool tls;
	const char *api_key;	/* policy: the X-API-Key header's value */
	int fail_every;		/* policy: every Nth report is a failure */
	int fails_per_addr;	/* policy: failures from one address before the next */
	int fail_base;		/* policy: the first attacker address (index in 198.19.0.0/16) */
} opt = {
	.mode = M_WEBMAIL, .host = "127.0.0.1", .conns = 1, .seconds = 10, .max_cycles = 1000000, .users = 1000,
	.user_fmt = "user%04d", .pass_fmt = "pw%04d", .timeout_ms = 10000, .hold = 2, .ramp = 64, .bursts = 5,
	.stall_ms = 1000, .fail_every = 4, .fails_per_addr = 6,
};

static struct {
	int ep;
	struct sockaddr_storage dst;
	socklen_t dstlen;
	struct conn *c;
	uint64_t t0, t_stop, t_end, t_hard, t_ready;
	long started, cycles, failed, logins, reused, refused, lost, stalled;
	long errs[E_COUNT];
	char first_error[160];
	uint64_t bytes;
	long idling, in_setup, next_user, src_next;
	int burst_no;
	bool ready_printed, aborted;
	struct samples cycle, login, reuse_login, greet;
	/* policy: requests sent, failures reported, answers by kind */
	uint64_t preq, pfail;
	long allows, reports, reports_failed, pol_refused, pol_delayed;
	uint64_t rng;
	SSL_CTX *tls;
} g;

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	(void)sig;
	got_signal = 1;
}

static void die(const char *msg)
{
	fprintf(stderr, "loadgen: %s\n", msg);
	exit(2);
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t rng_next(void)
{
	/* xorshift64: cheap and good enough to pick users */
	g.rng ^= g.rng << 13;
	g.rng ^= g.rng >> 7;
	g.rng ^= g.rng << 17;
	return g.rng;
}

static void samples_add(struct samples *s, uint64_t us)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 4096;
		uint32_t *v = realloc(s->v, cap * sizeof(*v));

		if (v == NULL)
			return;	/* out of memory: lose samples, not the run */
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* The p-th percentile (nearest rank) of s, or -1 without samples; sorts s. */
static long samples_pct(struct samples *s, double p)
{
	size_t i;

	if (s->n == 0)
		return -1;
	qsort(s->v, s->n, sizeof(*s->v), cmp_u32);
	i = (size_t)(p / 100.0 * (double)s->n + 0.999999);
	if (i > 0)
		i--;
	if (i >= s->n)
		i = s->n - 1;
	return s->v[i];
}

/*
 * Expand a template with one %d (optionally %0Nd) into out; no other
 * conversions (the template comes from the command line: never a printf
 * format). Returns -1 when it does not fit or the template is bad.
 */
static int fmt_index(const char *tmpl, int idx, char *out, size_t outsz)
{
	const char *p = strchr(tmpl, '%');
	char num[32];
	int width = 0, n;
	size_t pre, post, len;
	const char *rest;

	if (p == NULL)
		return snprintf(out, outsz, "%s", tmpl) < (int)outsz ? 0 : -1;
	rest = p + 1;
	if (*rest == '0')
		rest++;
	while (isdigit((unsigned char)*rest) && width < 20)
		width = width * 10 + (*rest++ - '0');
	if (*rest != 'd' || strchr(rest + 1, '%') != NULL)
		return -1;
	n = snprintf(num, sizeof(num), "%0*d", width, idx);
	pre = (size_t)(p - tmpl);
	post = strlen(rest + 1);
	len = pre + (size_t)n + post;
	if (len + 1 > outsz)
		return -1;
	memcpy(out, tmpl, pre);
	memcpy(out + pre, num, (size_t)n);
	memcpy(out + pre + (size_t)n, rest + 1, post + 1);
	return 0;
}

/* IMAP quoted string of s into out (\ and " escaped); -1 if it does not fit. */
static int quote(const char *s, char *out, size_t outsz)
{
	size_t o = 0;

	if (outsz < 3)
		return -1;
	out[o++] = '"';
	for (; *s; s++) {
		if (o + 4 > outsz)
			return -1;
		if (*s == '"' || *s == '\\')
			out[o++] = '\\';
		out[o++] = *s;
	}
	out[o++] = '"';
	out[o] = '\0';
	return 0;
}

/* ---- connections ------------------------------------------------------ */

static bool time_left(uint64_t now)
{
	return !got_signal && now < g.t_stop;
}

/* May a slot start another cycle (webmail, flood) or connection (bulk)? */
static bool may_start(uint64_t now)
{
	switch (opt.mode) {
	case M_WEBMAIL:
	case M_FLOOD:
	case M_BULK:
	case M_LOGIN:
	case M_SMTP:
	case M_POLICY:
		return time_left(now) && g.started < opt.max_cycles;
	case M_IDLE:
		return time_left(now) && g.started < opt.conns && g.in_setup < opt.ramp;
	case M_BURST:
		return false;	/* bursts are started together, by burst_next */
	case M_COUNT:
		break;
	}
	return false;
}

static void conn_close(struct conn *c)
{
	if (c->fd != -1) {
		/*
		 * Abortive close (RST): no TIME_WAIT here. One client address
		 * making thousands of connections a second would otherwise fill
		 * its ephemeral ports with TIME_WAIT within seconds, and connect()
		 * would slow down for whichever server waits for the client to
		 * close first. Only done when the conversation is over or failed.
		 */
		struct linger lg = {.l_onoff = 1, .l_linger = 0};

		(void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(c->fd);
		c->fd = -1;
	}
	SSL_free(c->ssl);	/* no close_notify: the RST ends it */
	c->ssl = NULL;
	if (c->step != S_FREE && c->step != S_IDLING && opt.mode == M_IDLE && c->step <= S_IDLE_WAIT)
		g.in_setup--;
	c->step = S_FREE;
	c->rlen = 0;
	c->skip = 0;
	c->cont = false;
	c->wlen = c->woff = 0;
	c->deadline = 0;
}

static void note_error(struct conn *c, enum err e, const char *what, const char *line, size_t len)
{
	g.errs[e]++;
	g.failed++;
	if (opt.mode == M_BURST)
		g.lost++;
	if (g.first_error[0] == '\0') {
		int n = snprintf(g.first_error, sizeof(g.first_error), "%s (at %s)%s", what, step_names[c->step],
				 line ? ": " : "");
		size_t o = n < 0 ? 0 : (size_t)n, i;

		if (o >= sizeof(g.first_error))
			o = sizeof(g.first_error) - 1;
		for (i = 0; line && i < len && o + 2 < sizeof(g.first_error); i++)
			g.first_error[o++] = (line[i] >= 0x20 && line[i] < 0x7f && line[i] != '"' && line[i] != '\\')
						     ? line[i] : '?';
		g.first_error[o] = '\0';
	}
	if (c->step == S_IDLING)
		g.idling--;
	conn_close(c);
}

/* recv/send over TCP or TLS: >0, 0 on end, -1 with errno (EAGAIN: later). */
static ssize_t tls_result(struct conn *c, int r)
{
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		ERR_clear_error();
		errno = EPROTO;
		return -1;
	}
}

static ssize_t io_recv(struct conn *c, void *p, size_t n)
{
	int r;

	if (c->ssl == NULL)
		return recv(c->fd, p, n, 0);
	r = SSL_read(c->ssl, p, (int)n);
	return r > 0 ? r : tls_result(c, r);
}

static ssize_t io_send(struct conn *c, const void *p, size_t n)
{
	int r;

	if (c->ssl == NULL)
		return send(c->fd, p, n, MSG_NOSIGNAL);
	r = SSL_write(c->ssl, p, (int)n);
	return r > 0 ? r : tls_result(c, r);
}

static void conn_interest(struct conn *c, bool want_write)
{
	struct epoll_event ev = {.events = EPOLLIN | (want_write ? EPOLLOUT : 0u), .data.ptr = c};

	(void)epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Write what is queued; 0 when all is out or the rest waits for EPOLLOUT. */
static int conn_flush(struct conn *c)
{
	while (c->woff < c->wlen) {
		ssize_t n = io_send(c, c->wbuf + c->woff, c->wlen - c->woff);

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			conn_interest(c, true);
			return 0;
		}
		if (n == -1)
			return -1;
		c->woff += (size_t)n;
	}
	c->woff = c->wlen = 0;
	return 0;
}

/* Queue len bytes and enter step; the step's timer starts. */
static int conn_send_raw(struct conn *c, enum step step, const char *data, size_t len)
{
	if (c->wlen + len > sizeof(c->wbuf))
		return -1;
	memcpy(c->wbuf + c->wlen, data, len);
	c->wlen += len;
	c->step = step;
	c->t_step = now_us();
	c->deadline = c->t_step + (uint64_t)opt.timeout_ms * 1000u;
	return conn_flush(c);
}

/* Send one command line (CRLF added) and enter step. */
static int conn_send(struct conn *c, enum step step, const char *line)
{
	char tmp[WBUF_SIZE];
	size_t len = strlen(line);

	if (len + 2 > sizeof(tmp))
		return -1;
	memcpy(tmp, line, len);
	memcpy(tmp + len, "\r\n", 2);
	return conn_send_raw(c, step, tmp, len + 2);
}

static int pick_user(void)
{
	if (opt.mode == M_BULK || opt.sequential)
		return (int)(g.next_user++ % opt.users);
	return (int)(rng_next() % (uint64_t)opt.users);
}

static void conn_start(struct conn *c)
{
	struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
	int one = 1, fd;
	uint64_t now = now_us();

	if (opt.mode != M_BULK && opt.mode != M_POLICY)
		g.started++;	/* bulk counts fetches, policy requests: not connections */
	c->t_cycle = c->t_connect = now;
	c->deadline = now + (uint64_t)opt.timeout_ms * 1000u;
	c->step = S_CONNECT;
	c->exists = c->fetched = 0;
	c->reused = false;
	c->nuids = c->next_uid = 0;
	if (opt.mode == M_IDLE)
		g.in_setup++;
	fd = socket(g.dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		c->fd = -1;
		note_error(c, E_CONNECT, strerror(errno), NULL, 0);
		return;
	}
	c->fd = fd;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (opt.nsrc > 0) {
		int i = (int)(g.src_next++ % opt.nsrc);

		/* the kernel picks the port at connect time: many more 4-tuples */
		(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&opt.src[i], opt.srclen[i]) == -1) {
			note_error(c, E_CONNECT, strerror(errno), NULL, 0);
			return;
		}
	}
	if (connect(fd, (struct sockaddr *)&g.dst, g.dstlen) == -1 && errno != EINPROGRESS) {
		note_error(c, E_CONNECT, strerror(errno), NULL, 0);
		return;
	}
	if (epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &ev) == -1)
		note_error(c, E_CONNECT, strerror(errno), NULL, 0);
}

static void cycle_done(struct conn *c)
{
	uint64_t now = now_us();

	g.cycles++;
	samples_add(&g.cycle, now - c->t_cycle);
	g.t_end = now;
}

static int send_login(struct conn *c)
{
	char user[200], pass[200], qu[410], qp[410], line[WBUF_SIZE];

	c->user = pick_user();
	if (fmt_index(opt.user_fmt, c->user, user, sizeof(user)) == -1 ||
	    fmt_index(opt.pass_fmt, c->user, pass, sizeof(pass)) == -1 || quote(user, qu, sizeof(qu)) == -1 ||
	    quote(pass, qp, sizeof(qp)) == -1)
		return -1;
	snprintf(line, sizeof(line), "L LOGIN %s %s", qu, qp);
	return conn_send(c, S_LOGIN, line);
}

static int send_body_fetch(struct conn *c)
{
	char line[64];

	if (c->nuids == 0)
		return -1;
	snprintf(line, sizeof(line), "B UID FETCH %u BODY.PEEK[]", (unsigned)c->uids[c->next_uid++ % c->nuids]);
	g.started++;
	c->t_cycle = now_us();
	return conn_send(c, S_BODY, line);
}

/* The tag of a tagged reply expected in this step. */
static char step_tag(enum step s)
{
	switch (s) {
	case S_LOGIN: return 'L';
	case S_SELECT: return 'S';
	case S_FETCH: return 'F';
	case S_SEARCH: return 'U';
	case S_BODY: return 'B';
	case S_IDLE_WAIT:
	case S_IDLING:
	case S_DONE_WAIT: return 'I';
	case S_LOGOUT: return 'O';
	default: return 0;
	}
}

static bool has_prefix(const char *line, size_t len, const char *p)
{
	size_t n = strlen(p);

	return len >= n && strncasecmp(line, p, n) == 0;
}

/* "* <n> WORD": n, with *word pointing after the space; -1 if not that shape. */
static long untagged_number(const char *line, size_t len, const char **word)
{
	size_t i = 2;
	long n = 0;

	if (len < 4 || line[0] != '*' || line[1] != ' ' || !isdigit((unsigned char)line[2]))
		return -1;
	while (i < len && isdigit((unsigned char)line[i]) && n < 100000000)
		n = n * 10 + (line[i++] - '0');
	if (i >= len || line[i] != ' ')
		return -1;
	*word = line + i + 1;
	return n;
}

static void parse_search(struct conn *c, const char *line, size_t len)
{
	size_t i = 8;	/* after "* SEARCH" */

	while (i < len && c->nuids < MAX_UIDS) {
		uint32_t v = 0;

		while (i < len && line[i] == ' ')
			i++;
		if (i >= len || !isdigit((unsigned char)line[i]))
			break;
		while (i < len && isdigit((unsigned char)line[i]))
			v = v * 10 + (uint32_t)(line[i++] - '0');
		c->uids[c->nuids++] = v;
	}
}

/* An untagged or continuation response line (the part before any literal). */
static int on_untagged(struct conn *c, const char *line, size_t len)
{
	const char *w;
	long n;

	if (has_prefix(line, len, "* BYE")) {
		if (c->step == S_LOGOUT)
			return 0;
		note_error(c, E_CLOSED, "BYE from server", line, len);
		return 1;
	}
	if (line[0] == '+') {
		if (c->step != S_IDLE_WAIT) {
			note_error(c, E_PROTOCOL, "unexpected continuation", line, len);
			return 1;
		}
		c->step = S_IDLING;
		c->deadline = 0;
		g.idling++;
		g.in_setup--;
		return 0;
	}
	switch (c->step) {
	case S_LOGIN:
		if (has_prefix(line, len, "* OK [XPROXYREUSE]"))
			c->reused = true;
		break;
	case S_SELECT:
		n = untagged_number(line, len, &w);
		if (n >= 0 && has_prefix(w, len - (size_t)(w - line), "EXISTS"))
			c->exists = (unsigned)n;
		break;
	case S_FETCH:
		n = untagged_number(line, len, &w);
		if (n >= 0 && has_prefix(w, len - (size_t)(w - line), "FETCH"))
			c->fetched++;
		break;
	case S_SEARCH:
		if (has_prefix(line, len, "* SEARCH"))
			parse_search(c, line, len);
		break;
	default:
		break;
	}
	return 0;
}

/* The tagged reply of the current step: the next command, or the end of the cycle. */
static int on_tagged(struct conn *c, const char *line, size_t len)
{
	uint64_t now = now_us();
	unsigned want;
	char cmd[64];

	if (len < 4 || line[0] != step_tag(c->step) || line[1] != ' ') {
		note_error(c, E_PROTOCOL, "unexpected tag", line, len);
		return 1;
	}
	if (!has_prefix(line + 2, len - 2, "OK")) {
		note_error(c, E_NO, "command failed", line, len);
		return 1;
	}
	switch (c->step) {
	case S_LOGIN:
		g.logins++;
		samples_add(&g.login, now - c->t_step);
		if (c->reused) {
			g.reused++;
			samples_add(&g.reuse_login, now - c->t_step);
		}
		if (opt.mode == M_LOGIN)
			return conn_send(c, S_LOGOUT, "O LOGOUT") == -1 ? -1 : 0;
		return conn_send(c, S_SELECT, "S SELECT INBOX") == -1 ? -1 : 0;
	case S_SELECT:
		if (opt.mode == M_BULK)
			return conn_send(c, S_SEARCH, "U UID SEARCH ALL") == -1 ? -1 : 0;
		if (opt.mode == M_IDLE)
			return conn_send(c, S_IDLE_WAIT, "I IDLE") == -1 ? -1 : 0;
		if (c->exists == 0) {
			note_error(c, E_VERIFY, "empty INBOX", NULL, 0);
			return 1;
		}
		/* 1:50, or the whole INBOX if smaller (Dovecot says BAD to a range past the end) */
		snprintf(cmd, sizeof(cmd), "F FETCH 1:%u (FLAGS ENVELOPE)",
			 c->exists < FETCH_RANGE ? c->exists : FETCH_RANGE);
		return conn_send(c, S_FETCH, cmd) == -1 ? -1 : 0;
	case S_FETCH:
		want = c->exists < FETCH_RANGE ? c->exists : FETCH_RANGE;
		if (c->fetched != want) {
			char why[64];

			snprintf(why, sizeof(why), "%u FETCH responses for %u messages", c->fetched, want);
			note_error(c, E_VERIFY, why, NULL, 0);
			return 1;
		}
		return conn_send(c, S_LOGOUT, "O LOGOUT") == -1 ? -1 : 0;
	case S_SEARCH:
		if (c->nuids == 0) {
			note_error(c, E_VERIFY, "no messages to fetch", NULL, 0);
			return 1;
		}
		if (!may_start(now))
			return conn_send(c, S_LOGOUT, "O LOGOUT") == -1 ? -1 : 0;
		return send_body_fetch(c) == -1 ? -1 : 0;
	case S_BODY:
		cycle_done(c);
		if (!may_start(now))
			return conn_send(c, S_LOGOUT, "O LOGOUT") == -1 ? -1 : 0;
		return send_body_fetch(c) == -1 ? -1 : 0;
	case S_DONE_WAIT:
		return conn_send(c, S_LOGOUT, "O LOGOUT") == -1 ? -1 : 0;
	case S_LOGOUT:
		if (opt.mode != M_BULK)
			cycle_done(c);
		conn_close(c);
		return 1;
	default:
		note_error(c, E_PROTOCOL, "tagged reply out of step", line, len);
		return 1;
	}
}

static int on_greeting(struct conn *c, const char *line, size_t len)
{
	uint64_t now = now_us();
	uint64_t greet = now - c->t_connect;

	samples_add(&g.greet, greet);
	if (opt.mode == M_FLOOD) {
		if (has_prefix(line, len, "* BYE")) {
			g.refused++;
			cycle_done(c);
			conn_close(c);
		} else {
			note_error(c, E_NOT_REFUSED, "not refused", line, len);
		}
		return 1;
	}
	if (!has_prefix(line, len, "* OK")) {
		note_error(c, E_GREETING, "bad greeting", line, len);
		return 1;
	}
	if (opt.mode == M_BURST) {
		if (greet > (uint64_t)opt.stall_ms * 1000u)
			g.stalled++;
		return conn_send(c, S_LOGOUT, "O LOGOUT") == -1 ? -1 : 0;
	}
	return send_login(c) == -1 ? -1 : 0;
}

/* ---- smtp ------------------------------------------------------------- */

/* Base64 (RFC 4648) of in into out, NUL-terminated; -1 if it does not fit. */
static int base64(const unsigned char *in, size_t n, char *out, size_t outsz)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	if ((n + 2) / 3 * 4 + 1 > outsz)
		return -1;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
			     (i + 2 < n ? in[i + 2] : 0);

		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? tab[v & 63] : '=';
	}
	out[o] = '\0';
	return 0;
}

/* AUTH PLAIN with the initial response: NUL user NUL password (RFC 4616). */
static int send_auth_plain(struct conn *c)
{
	static const char cmd[] = "AUTH PLAIN ";
	char user[200], pass[200], line[WBUF_SIZE];
	unsigned char raw[402];
	size_t ul, pl;

	c->user = pick_user();
	if (fmt_index(opt.user_fmt, c->user, user, sizeof(user)) == -1 ||
	    fmt_index(opt.pass_fmt, c->user, pass, sizeof(pass)) == -1)
		return -1;
	ul = strlen(user);
	pl = strlen(pass);
	raw[0] = '\0';
	memcpy(raw + 1, user, ul);
	raw[1 + ul] = '\0';
	memcpy(raw + 2 + ul, pass, pl);
	memcpy(line, cmd, sizeof(cmd) - 1);
	if (base64(raw, 2 + ul + pl, line + sizeof(cmd) - 1, sizeof(line) - (sizeof(cmd) - 1) - 2) == -1)
		return -1;
	return conn_send(c, S_AUTH, line);
}

/* One SMTP reply line: "250-..." continues a reply, "250 ..." ends it. */
static int smtp_line(struct conn *c, const char *line, size_t len)
{
	int code;

	if (len < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
	    !isdigit((unsigned char)line[2]) || (len > 3 && line[3] != ' ' && line[3] != '-')) {
		note_error(c, E_PROTOCOL, "not an SMTP reply", line, len);
		return 1;
	}
	if (len > 3 && line[3] == '-')
		return 0;
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	switch (c->step) {
	case S_GREETING:
		samples_add(&g.greet, now_us() - c->t_connect);
		if (code != 220) {
			note_error(c, E_GREETING, "bad greeting", line, len);
			return 1;
		}
		return conn_send(c, S_EHLO, "EHLO loadgen.test") == -1 ? -1 : 0;
	case S_EHLO:
		if (code != 250)
			break;
		return send_auth_plain(c) == -1 ? -1 : 0;
	case S_AUTH:
		if (code != 235)
			break;
		g.logins++;
		samples_add(&g.login, now_us() - c->t_step);
		return conn_send(c, S_QUIT, "QUIT") == -1 ? -1 : 0;
	case S_QUIT:
		if (code != 221)
			break;
		cycle_done(c);
		conn_close(c);
		return 1;
	default:
		note_error(c, E_PROTOCOL, "reply out of step", line, len);
		return 1;
	}
	note_error(c, E_NO, "command failed", line, len);
	return 1;
}

/* ---- policy ----------------------------------------------------------- */

/*
 * The next request of the storm, as Dovecot 2.3 sends it (sorted string
 * attributes, then tls, then a report's success and policy_reject):
 * requests alternate allow and report. Legitimate traffic comes from
 * 198.18.0.0/16, each address with its own user and password hash, and
 * reports success. Every --fail-every'th report is a failure instead:
 * attacker addresses in 198.19.0.0/16, --fails-per-addr failures each with
 * distinct password hashes (so the guard bans them), one address after the
 * other from --fail-base on. Every other allow asks for the attacker address of the moment,
 * which the guard refuses once it is banned.
 */
static int policy_send(struct conn *c)
{
	char user[200], quser[410], remote[32], body[1024], req[WBUF_SIZE];
	uint64_t k = g.preq++, r = k / 2;
	unsigned pwhash, net = 18;
	uint32_t idx;
	int blen, n;

	if (k % 2 == 0 && r % 2 == 1 && g.pfail > 0) {
		c->pkind = P_ALLOW;	/* the attacker of the moment */
		idx = (uint32_t)((g.pfail - 1) / (uint64_t)opt.fails_per_addr + (uint64_t)opt.fail_base);
		pwhash = (unsigned)(g.pfail & 0xfff);
		net = 19;
	} else if (k % 2 == 1 && r % (uint64_t)opt.fail_every == (uint64_t)opt.fail_every - 1) {
		c->pkind = P_REPORT_FAIL;
		idx = (uint32_t)(g.pfail / (uint64_t)opt.fails_per_addr + (uint64_t)opt.fail_base);
		pwhash = (unsigned)(g.pfail++ & 0xfff);	/* distinct per address */
		net = 19;
	} else {
		c->pkind = k % 2 == 0 ? P_ALLOW : P_REPORT_OK;
		idx = (uint32_t)(rng_next() & 0xffff);
		pwhash = (idx * 2654435761u) >> 20;
	}
	idx &= 0xffff;
	snprintf(remote, sizeof(remote), "198.%u.%u.%u", net, idx >> 8, idx & 255);
	if (fmt_index(opt.user_fmt, (int)(idx % (uint32_t)opt.users), user, sizeof(user)) == -1 ||
	    quote(user, quser, sizeof(quser)) == -1)
		return -1;
	blen = snprintf(body, sizeof(body),
			"{\"device_id\":\"\",\"login\":%s,\"protocol\":\"%s\",\"pwhash\":\"%03x\",\"remote\":\"%s\","
			"\"session_id\":\"lg%llx\",\"tls\":false%s}",
			quser, net == 19 ? "smtp" : "imap", pwhash & 0xfff, remote, (unsigned long long)k,
			c->pkind == P_ALLOW ? "" : c->pkind == P_REPORT_OK ? ",\"success\":true,\"policy_reject\":false"
									    : ",\"success\":false,\"policy_reject\":false");
	if (blen < 0 || (size_t)blen >= sizeof(body))
		return -1;
	n = snprintf(req, sizeof(req),
		     "POST /?command=%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: dovecot/auth-policy-client\r\n"
		     "Content-Type: application/json\r\nX-API-Key: %s\r\nContent-Length: %d\r\n\r\n%s",
		     c->pkind == P_ALLOW ? "allow" : "report", opt.host, opt.api_key ? opt.api_key : "", blen, body);
	if (n < 0 || (size_t)n >= sizeof(req))
		return -1;
	g.started++;
	c->t_cycle = now_us();
	return conn_send_raw(c, S_HTTP, req, (size_t)n);
}

/* "Name:" at the start of a header line (case-insensitive): the value, else NULL. */
static const char *header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
	size_t n = strlen(name), i;

	if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
		return NULL;
	for (i = n + 1; i < len && (line[i] == ' ' || line[i] == '\t'); i++)
		;
	*vlen = len - i;
	return line + i;
}

/* A whole response to the request in flight: check it, count it, send the next. */
static int policy_response(struct conn *c, long status, const char *body, size_t blen, bool closing)
{
	const char *p = memmem(body, blen, "\"status\":", 9);
	char *end;
	long v;

	if (status != 200) {
		char why[48];

		snprintf(why, sizeof(why), "HTTP status %ld", status);
		note_error(c, E_NO, why, body, blen);
		return 1;
	}
	if (p == NULL || (v = strtol(p + 9, &end, 10), end == p + 9)) {
		note_error(c, E_VERIFY, "no status in the answer", body, blen);
		return 1;
	}
	if (c->pkind == P_ALLOW) {
		g.allows++;
		if (v < 0)
			g.pol_refused++;
		else if (v > 0)
			g.pol_delayed++;
	} else {
		g.reports++;
		g.reports_failed += c->pkind == P_REPORT_FAIL;
		if (v != 0) {
			note_error(c, E_VERIFY, "report answered with a status other than 0", body, blen);
			return 1;
		}
	}
	cycle_done(c);
	if (closing || !may_start(now_us())) {
		conn_close(c);
		return 1;
	}
	return policy_send(c) == -1 ? -1 : 0;
}

/* Parse the response read so far: status line, Content-Length, body. */
static int http_input(struct conn *c)
{
	const char *hend = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4), *line, *eol, *v;
	size_t hlen, clen = 0, vlen;
	bool have_len = false, closing = false;
	long status;
	int r;

	if (hend == NULL) {
		if (c->rlen == RBUF_SIZE) {
			note_error(c, E_PROTOCOL, "response header too long", c->rbuf, 80);
			return 1;
		}
		return 0;
	}
	hlen = (size_t)(hend - c->rbuf) + 4;
	if (c->step != S_HTTP || c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.1 ", 9) != 0 ||
	    !isdigit((unsigned char)c->rbuf[9]) || !isdigit((unsigned char)c->rbuf[10]) ||
	    !isdigit((unsigned char)c->rbuf[11])) {
		note_error(c, E_PROTOCOL, "not an HTTP/1.1 response to a request", c->rbuf, hlen);
		return 1;
	}
	status = (c->rbuf[9] - '0') * 100 + (c->rbuf[10] - '0') * 10 + (c->rbuf[11] - '0');
	for (line = (const char *)memchr(c->rbuf, '\n', hlen) + 1; line < hend; line = eol + 2) {
		eol = memmem(line, (size_t)(hend + 2 - line), "\r\n", 2);
		if ((v = header_value(line, (size_t)(eol - line), "Content-Length", &vlen)) != NULL) {
			clen = 0;
			for (size_t i = 0; i < vlen && isdigit((unsigned char)v[i]) && clen <= HTTP_BODY_MAX; i++)
				clen = clen * 10 + (size_t)(v[i] - '0');
			have_len = true;
		} else if ((v = header_value(line, (size_t)(eol - line), "Connection", &vlen)) != NULL) {
			closing = vlen >= 5 && strncasecmp(v, "close", 5) == 0;
		}
	}
	if (!have_len || clen > HTTP_BODY_MAX) {
		note_error(c, E_PROTOCOL, "no usable Content-Length", c->rbuf, hlen);
		return 1;
	}
	if (c->rlen < hlen + clen)
		return 0;
	if (c->rlen > hlen + clen) {
		note_error(c, E_PROTOCOL, "more than one response to one request", c->rbuf, c->rlen);
		return 1;
	}
	c->rlen = 0;	/* the body stays in rbuf until the next read */
	r = policy_response(c, status, c->rbuf + hlen, clen, closing);
	return r;
}

/* A literal announced at the end of a line ("{123}" or "{123+}"): its size, or -1. */
static long literal_size(const char *line, size_t len)
{
	size_t end, i;
	long n = 0;

	if (len < 3 || line[len - 1] != '}')
		return -1;
	end = line[len - 2] == '+' ? len - 2 : len - 1;
	i = end;
	while (i > 0 && isdigit((unsigned char)line[i - 1]))
		i--;
	if (i == 0 || i == end || line[i - 1] != '{' || end - i > 10)
		return -1;
	for (; i < end; i++)
		n = n * 10 + (line[i] - '0');
	return n;
}

/*
 * Consume the bytes read so far: skip literal bodies, hand the first line
 * of each response to the step's logic. Returns 1 when the connection was
 * closed (the buffer is gone), -1 on a write error, else 0.
 */
static int conn_input(struct conn *c)
{
	size_t pos = 0;
	int r = 0;

	if (opt.mode == M_POLICY)
		return http_input(c);
	while (pos < c->rlen) {
		char *line, *eol;
		size_t len;
		long lit;
		bool first;

		if (c->skip > 0) {
			size_t n = c->rlen - pos < c->skip ? c->rlen - pos : (size_t)c->skip;

			pos += n;
			c->skip -= n;
			if (opt.mode == M_BULK)
				g.bytes += n;
			continue;
		}
		line = c->rbuf + pos;
		eol = memchr(line, '\n', c->rlen - pos);
		if (eol == NULL)
			break;
		len = (size_t)(eol - line);
		pos += len + 1;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (opt.mode == M_SMTP) {
			if ((r = smtp_line(c, line, len)) != 0)
				return r;
			continue;
		}
		first = !c->cont;
		lit = literal_size(line, len);
		c->cont = lit >= 0;
		c->skip = lit >= 0 ? (uint64_t)lit : 0;
		if (!first || len == 0)
			continue;
		if (c->step == S_GREETING)
			r = on_greeting(c, line, len);
		else if (line[0] == '*' || line[0] == '+')
			r = on_untagged(c, line, len);
		else
			r = on_tagged(c, line, len);
		if (r != 0)
			return r;
	}
	if (pos > 0) {
		memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
		c->rlen -= pos;
	}
	if (c->rlen == RBUF_SIZE) {
		note_error(c, E_PROTOCOL, "response line too long", c->rbuf, 80);
		return 1;
	}
	return 0;
}

/* The TLS handshake, right after connect: true once it is done. */
static bool conn_handshake(struct conn *c)
{
	int r;

	if (c->ssl == NULL) {
		c->ssl = SSL_new(g.tls);
		if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
			note_error(c, E_CONNECT, "TLS setup failed", NULL, 0);
			return false;
		}
		SSL_set_connect_state(c->ssl);
	}
	r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		conn_interest(c, false);
		return true;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		conn_interest(c, false);
		break;
	case SSL_ERROR_WANT_WRITE:
		conn_interest(c, true);
		break;
	default:
		ERR_clear_error();
		note_error(c, E_CONNECT, "TLS handshake failed", NULL, 0);
	}
	return false;
}

static void conn_event(struct conn *c, uint32_t events)
{
	if (c->step == S_FREE)
		return;
	if (c->step == S_CONNECT) {
		int err = 0;
		socklen_t l = sizeof(err);

		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) == -1 || err != 0) {
			note_error(c, E_CONNECT, strerror(err ? err : errno), NULL, 0);
			return;
		}
		c->step = S_GREETING;
		conn_interest(c, false);
		if (opt.mode == M_POLICY && policy_send(c) == -1) {
			note_error(c, E_CLOSED, "write failed", NULL, 0);
			return;
		}
		if (!opt.tls)
			return;
	}
	if (opt.tls && (c->ssl == NULL || !SSL_is_init_finished(c->ssl))) {
		if (!conn_handshake(c))
			return;
		events |= EPOLLIN;	/* the greeting may have come with it */
	}
	if (events & EPOLLOUT) {
		if (conn_flush(c) == -1) {
			note_error(c, E_CLOSED, "write failed", NULL, 0);
			return;
		}
		if (c->wlen == 0)
			conn_interest(c, false);
	}
	/* TLS holds records epoll does not report: read until it would block. */
	while (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		ssize_t n = io_recv(c, c->rbuf + c->rlen, RBUF_SIZE - c->rlen);
		int r;

		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			note_error(c, E_CLOSED, n == 0 ? "connection closed" : strerror(errno), NULL, 0);
			return;
		}
		c->rlen += (size_t)n;
		r = conn_input(c);
		if (r == -1)
			note_error(c, E_CLOSED, "write failed", NULL, 0);
		if (r != 0 || c->ssl == NULL || c->step == S_FREE)
			return;
	}
}

/* ---- the run ---------------------------------------------------------- */

static void check_timeouts(uint64_t now)
{
	for (int i = 0; i < opt.conns; i++) {
		struct conn *c = &g.c[i];

		if (c->step != S_FREE && c->deadline != 0 && now > c->deadline)
			note_error(c, c->step == S_CONNECT ? E_CONNECT : E_TIMEOUT, "timed out", NULL, 0);
	}
}

static void start_slots(uint64_t now)
{
	for (int i = 0; i < opt.conns; i++)
		if (g.c[i].step == S_FREE && may_start(now))
			conn_start(&g.c[i]);
}

static bool all_free(void)
{
	for (int i = 0; i < opt.conns; i++)
		if (g.c[i].step != S_FREE)
			return false;
	return true;
}

/* Burst mode: when the last burst is over, start the next (all connects at once). */
static void burst_next(uint64_t now)
{
	if (!all_free() || g.burst_no >= opt.bursts || !time_left(now))
		return;
	g.burst_no++;
	for (int i = 0; i < opt.conns; i++)
		conn_start(&g.c[i]);
}

static void print_ready(uint64_t now)
{
	printf("{\"event\":\"ready\",\"idle\":%ld,\"failed\":%ld,\"setup_s\":%.3f}\n", g.idling, g.failed,
	       (double)(now - g.t0) / 1e6);
	fflush(stdout);
}

/* Idle mode: every session idles (or the time to set up is over) → hold, then end. */
static void idle_phase(uint64_t now)
{
	if (!g.ready_printed) {
		bool setup_over = g.started >= opt.conns || !time_left(now);

		if (!setup_over || g.in_setup > 0)
			return;
		g.ready_printed = true;
		g.t_ready = now;
		print_ready(now);
		return;
	}
	if (g.t_ready == 0 || (now < g.t_ready + (uint64_t)(opt.hold * 1e6) && !got_signal))
		return;
	g.t_ready = 0;
	for (int i = 0; i < opt.conns; i++) {
		struct conn *c = &g.c[i];

		if (c->step != S_IDLING)
			continue;
		g.idling--;
		/* DONE is no command: the IDLE's own tag answers it */
		if (conn_send(c, S_DONE_WAIT, "DONE") == -1)
			note_error(c, E_CLOSED, "write failed", NULL, 0);
	}
}

static void print_json(void)
{
	uint64_t end = g.t_end > g.t0 ? g.t_end : now_us();
	double el = (double)(end - g.t0) / 1e6;

	if (el <= 0)
		el = 1e-6;
	printf("{\"mode\":\"%s\",\"tls\":%s,\"conns\":%d,\"elapsed_s\":%.3f,\"cycles\":%ld,\"failed\":%ld,\"errors\":%ld,"
	       "\"cycles_per_s\":%.1f",
	       mode_names[opt.mode], opt.tls ? "true" : "false", opt.conns, el, g.cycles, g.failed, g.failed, (double)g.cycles / el);
	printf(",\"cycle_p50_us\":%ld,\"cycle_p99_us\":%ld", samples_pct(&g.cycle, 50), samples_pct(&g.cycle, 99));
	printf(",\"logins\":%ld,\"login_p50_us\":%ld,\"login_p99_us\":%ld", g.logins, samples_pct(&g.login, 50),
	       samples_pct(&g.login, 99));
	printf(",\"reused\":%ld,\"reuse_login_p50_us\":%ld,\"reuse_login_p99_us\":%ld", g.reused,
	       samples_pct(&g.reuse_login, 50), samples_pct(&g.reuse_login, 99));
	printf(",\"greet_p50_us\":%ld,\"greet_p99_us\":%ld,\"greet_max_us\":%ld", samples_pct(&g.greet, 50),
	       samples_pct(&g.greet, 99), samples_pct(&g.greet, 100));
	printf(",\"bytes\":%llu,\"mb_per_s\":%.1f", (unsigned long long)g.bytes, (double)g.bytes / 1e6 / el);
	printf(",\"refused\":%ld,\"refused_per_s\":%.1f", g.refused, (double)g.refused / el);
	printf(",\"lost\":%ld,\"stalled\":%ld,\"aborted\":%s", g.lost, g.stalled, g.aborted ? "true" : "false");
	printf(",\"allows\":%ld,\"reports\":%ld,\"reports_failed\":%ld,\"policy_refused\":%ld,\"policy_delayed\":%ld",
	       g.allows, g.reports, g.reports_failed, g.pol_refused, g.pol_delayed);
	printf(",\"error_kinds\":{");
	for (int i = 0; i < E_COUNT; i++)
		printf("%s\"%s\":%ld", i ? "," : "", err_names[i], g.errs[i]);
	printf("},\"first_error\":\"%s\"}\n", g.first_error);
	fflush(stdout);
}

static int parse_addr(const char *s, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, s, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		*len = sizeof(*v4);
		return 0;
	}
	if (inet_pton(AF_INET6, s, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*v6);
		return 0;
	}
	return -1;
}

static void parse_src(char *list)
{
	for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
		if (opt.nsrc == MAX_SRC)
			die("too many --src addresses");
		if (parse_addr(tok, 0, &opt.src[opt.nsrc], &opt.srclen[opt.nsrc]) == -1)
			die("--src: not an IP address");
		opt.nsrc++;
	}
}

static long num_arg(const char *s, long lo, long hi, const char *name)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > hi) {
		fprintf(stderr, "loadgen: %s: expected %ld..%ld\n", name, lo, hi);
		exit(2);
	}
	return v;
}

static double sec_arg(const char *s, double hi, const char *name)
{
	char *end;
	double v = strtod(s, &end);

	if (*end || !(v >= 0 && v <= hi)) {
		fprintf(stderr, "loadgen: %s: expected 0..%g seconds\n", name, hi);
		exit(2);
	}
	return v;
}

static void usage(int status)
{
	fputs("usage: loadgen --port P [--host 127.0.0.1] [--mode webmail|bulk|idle|flood|burst|login|smtp|policy]\n"
	      "         [--conns N] [--seconds S] [--max-cycles M] [--timeout-ms T]\n"
	      "         [--users N] [--user-fmt user%04d] [--password-fmt pw%04d] [--sequential] [--seed N]\n"
	      "         [--src ADDR[,ADDR...]] [--hold S] [--ramp N] [--bursts N] [--stall-ms T] [--tls]\n"
	      "         [--api-key KEY] [--fail-every N] [--fails-per-addr N] [--fail-base N]   (policy mode)\n"
	      "Prints one JSON line (idle mode: a \"ready\" line first).\n",
	      status ? stderr : stdout);
	exit(status);
}

static void parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{"host", required_argument, NULL, 'h'},	  {"port", required_argument, NULL, 'p'},
		{"mode", required_argument, NULL, 'm'},	  {"conns", required_argument, NULL, 'c'},
		{"seconds", required_argument, NULL, 's'}, {"max-cycles", required_argument, NULL, 'n'},
		{"users", required_argument, NULL, 'u'},   {"user-fmt", required_argument, NULL, 'U'},
		{"password-fmt", required_argument, NULL, 'P'}, {"src", required_argument, NULL, 'S'},
		{"timeout-ms", required_argument, NULL, 't'}, {"sequential", no_argument, NULL, 'q'},
		{"seed", required_argument, NULL, 'r'},	  {"hold", required_argument, NULL, 'H'},
		{"ramp", required_argument, NULL, 'R'},	  {"bursts", required_argument, NULL, 'b'},
		{"stall-ms", required_argument, NULL, 'T'}, {"help", no_argument, NULL, 'z'},
		{"tls", no_argument, NULL, 'L'},	  {"api-key", required_argument, NULL, 'K'},
		{"fail-every", required_argument, NULL, 'F'}, {"fails-per-addr", required_argument, NULL, 'A'},
		{"fail-base", required_argument, NULL, 'B'},
		{NULL, 0, NULL, 0},
	};
	int ch, port = 0;
	char tmp[512];

	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'h': opt.host = optarg; break;
		case 'p': port = (int)num_arg(optarg, 1, 65535, "--port"); break;
		case 'm':
			for (opt.mode = 0; opt.mode < M_COUNT; opt.mode++)
				if (strcmp(optarg, mode_names[opt.mode]) == 0)
					break;
			if (opt.mode == M_COUNT)
				usage(2);
			break;
		case 'c': opt.conns = (int)num_arg(optarg, 1, 100000, "--conns"); break;
		case 's': opt.seconds = sec_arg(optarg, 3600, "--seconds"); break;
		case 'n': opt.max_cycles = num_arg(optarg, 1, 1000000000L, "--max-cycles"); break;
		case 'u': opt.users = (int)num_arg(optarg, 1, 10000000, "--users"); break;
		case 'U': opt.user_fmt = optarg; break;
		case 'P': opt.pass_fmt = optarg; break;
		case 'S': parse_src(optarg); break;
		case 't': opt.timeout_ms = (int)num_arg(optarg, 1, 600000, "--timeout-ms"); break;
		case 'q': opt.sequential = true; break;
		case 'r': opt.seed = (uint64_t)num_arg(optarg, 0, 0x7fffffffL, "--seed"); break;
		case 'H': opt.hold = sec_arg(optarg, 3600, "--hold"); break;
		case 'R': opt.ramp = (int)num_arg(optarg, 1, 100000, "--ramp"); break;
		case 'b': opt.bursts = (int)num_arg(optarg, 1, 100000, "--bursts"); break;
		case 'T': opt.stall_ms = (int)num_arg(optarg, 1, 600000, "--stall-ms"); break;
		case 'L': opt.tls = true; break;
		case 'K': opt.api_key = optarg; break;
		case 'F': opt.fail_every = (int)num_arg(optarg, 1, 1000000, "--fail-every"); break;
		case 'A': opt.fails_per_addr = (int)num_arg(optarg, 1, 4096, "--fails-per-addr"); break;
		case 'B': opt.fail_base = (int)num_arg(optarg, 0, 65535, "--fail-base"); break;
		case 'z': usage(0); break;
		default: usage(2);
		}
	}
	if (port == 0 || optind != argc)
		usage(2);
	if (opt.tls && (opt.mode == M_SMTP || opt.mode == M_POLICY))
		die("--tls: IMAP modes only");
	if (opt.api_key && strpbrk(opt.api_key, "\r\n"))
		die("--api-key: one line");
	if (parse_addr(opt.host, port, &g.dst, &g.dstlen) == -1)
		die("--host: not an IP address (no DNS here)");
	if (fmt_index(opt.user_fmt, 0, tmp, sizeof(tmp)) == -1 || fmt_index(opt.pass_fmt, 0, tmp, sizeof(tmp)) == -1)
		die("--user-fmt/--password-fmt: text with at most one %d or %0Nd");
}

int main(int argc, char **argv)
{
	struct epoll_event evs[256];
	struct sigaction sa = {.sa_handler = on_signal};
	uint64_t now, last_scan = 0;

	parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	g.rng = opt.seed ? opt.seed : ((uint64_t)getpid() << 32 ^ now_us()) | 1;
	g.ep = epoll_create1(EPOLL_CLOEXEC);
	if (opt.tls) {
		g.tls = SSL_CTX_new(TLS_client_method());
		if (g.tls == NULL)
			die("TLS context");
		SSL_CTX_set_verify(g.tls, SSL_VERIFY_NONE, NULL);
		/* As imapgate's: many records per read(2). */
		SSL_CTX_set_read_ahead(g.tls, 1);
		SSL_CTX_set_default_read_buffer_len(g.tls, 64 * 1024);
	}
	g.c = calloc((size_t)opt.conns, sizeof(*g.c));
	if (g.ep == -1 || g.c == NULL)
		die("out of resources");
	for (int i = 0; i < opt.conns; i++) {
		g.c[i].fd = -1;
		if ((g.c[i].rbuf = malloc(RBUF_SIZE)) == NULL)
			die("out of memory");
	}
	g.t0 = now_us();
	g.t_stop = g.t0 + (uint64_t)(opt.seconds * 1e6);
	/* whatever happens, stop: run time, hold, and two timeouts to wind down */
	g.t_hard = g.t_stop + (uint64_t)(opt.hold * 1e6) + 2u * (uint64_t)opt.timeout_ms * 1000u + 1000000u;
	if (opt.mode == M_BURST)
		burst_next(g.t0);
	else
		start_slots(g.t0);
	for (;;) {
		int n = epoll_wait(g.ep, evs, 256, 10);

		for (int i = 0; i < n; i++)
			conn_event(evs[i].data.ptr, evs[i].events);
		now = now_us();
		if (now - last_scan >= 20000) {
			last_scan = now;
			check_timeouts(now);
		}
		if (opt.mode == M_IDLE)
			idle_phase(now);
		if (opt.mode == M_BURST)
			burst_next(now);
		else
			start_slots(now);
		if (all_free() && (opt.mode == M_BURST ? (g.burst_no >= opt.bursts || !time_left(now))
						       : !may_start(now) && (opt.mode != M_IDLE || g.ready_printed)))
			break;
		if (now > g.t_hard) {
			g.aborted = true;
			for (int i = 0; i < opt.conns; i++)
				if (g.c[i].step != S_FREE)
					note_error(&g.c[i], E_TIMEOUT, "run time exceeded", NULL, 0);
			break;
		}
	}
	if (opt.mode == M_IDLE && !g.ready_printed)
		print_ready(now_us());
	print_json();
	return 0;
}
