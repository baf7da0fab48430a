/*
 * redis_link — two hiredis async connections (commands, subscriber) on
 * imapgate's loop, with handshake, heartbeat, backoff and a bounded queue.
 *
 * hiredis 0.14 has no timer hook, so every timeout here is one of ours:
 * one link timer whose meaning follows the state (DOWN: next attempt;
 * CONNECTING: connect timeout; UP: heartbeat). The adapter maps hiredis'
 * addRead/delRead/addWrite/delWrite/cleanup onto loop_io_set/loop_io_del.
 *
 * It must never block the loop, never log the password, and never touch a
 * context hiredis is freeing: hiredis frees a context itself after a
 * failed connect (onConnect with an error) and after a lost connection
 * (onDisconnect); both clear our pointer first. A context we close
 * ourselves from inside one of its own callbacks is freed by hiredis when
 * the callback returns (redisAsyncFree defers), always before the loop's
 * next iteration, so the next attempt (a timer, >= 50 ms later) never
 * meets it.
 */
#include "redis_link.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/async.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "redis_url.h"
#include "stats.h"

enum link_state { LINK_OFF, LINK_DOWN, LINK_CONNECTING, LINK_UP };

struct rconn {
	const char *name; /* "command" or "subscriber", for log lines */
	redisAsyncContext *ac;
	struct loop_io io;
	struct loop *loop; /* kept across stop: a deferred cleanup may need it */
	bool ready;        /* handshake answered (subscriber: subscription confirmed) */
};

/* One queued command, formatted, with its callback. */
struct qcmd {
	char *cmd;
	size_t len;
	redis_reply_fn *fn;
	void *ctx;
};

/* A command in flight: what hiredis gives back as privdata. */
struct pending {
	redis_reply_fn *fn;
	void *ctx;
};

static struct {
	enum link_state state;
	struct loop *loop;
	struct redis_url url;
	char display[2 * REDIS_URL_PART_MAX + 64];
	char *channel;
	struct redis_link_ops ops;
	void *ctx;
	struct rconn cmd, sub;
	struct loop_timer timer;
	bool io_failed;       /* an epoll_ctl failed: fail the link from the timer */
	bool announced_down;  /* redis_down logged (and ops.down called) for this outage */
	unsigned failures;    /* consecutive failed attempts, for the backoff */
	bool ping_pending;
	uint64_t ping_sent;   /* loop ms */
	char last_error[256]; /* last redis_error logged, to log each once */
	struct qcmd *q;       /* ring of REDIS_LINK_QUEUE_MAX */
	size_t q_head, q_len;
	uint64_t rng;
	unsigned connect_timeout_ms, ping_interval_ms, ping_timeout_ms; /* 0: the defaults */
	struct redis_link_stats st;
} R = {
	.cmd = {.name = "command", .io = {.fd = -1}},
	.sub = {.name = "subscriber", .io = {.fd = -1}},
};

static void link_fail(const char *why);
static void link_attempt(void);

/* ------------------------------------------------------------------ */
/* The adapter: hiredis' event hooks on our loop                        */

static void conn_io(struct loop_io *io, unsigned events)
{
	struct rconn *c = io->data;
	redisAsyncContext *ac = c->ac;

	if (ac == NULL || ac->c.fd != io->fd)
		return;
	if (events & (LOOP_READ | LOOP_ERROR))
		redisAsyncHandleRead(ac);
	/* The read may have freed the context (c->ac cleared). */
	if (c->ac == ac && (events & (LOOP_WRITE | LOOP_ERROR)))
		redisAsyncHandleWrite(ac);
}

static void ev_update(struct rconn *c, unsigned want)
{
	if (c->io.fd == -1 || (c->io.registered && c->io.want == want))
		return;
	if (loop_io_set(c->loop, &c->io, want) == -1) {
		log_warn("event=redis_error server=%s error=\"epoll_ctl: %s\"", R.display, strerror(errno));
		/* Not from inside hiredis: the timer fails the link. */
		R.io_failed = true;
		loop_timer_start(R.loop, &R.timer, 0);
	}
}

static void ev_add_read(void *p)
{
	struct rconn *c = p;
	ev_update(c, c->io.want | LOOP_READ);
}

static void ev_del_read(void *p)
{
	struct rconn *c = p;
	ev_update(c, c->io.want & ~LOOP_READ);
}

static void ev_add_write(void *p)
{
	struct rconn *c = p;
	ev_update(c, c->io.want | LOOP_WRITE);
}

static void ev_del_write(void *p)
{
	struct rconn *c = p;
	ev_update(c, c->io.want & ~LOOP_WRITE);
}

/* hiredis is about to close the fd. */
static void ev_cleanup(void *p)
{
	struct rconn *c = p;

	if (c->io.fd == -1)
		return;
	loop_io_del(c->loop, &c->io);
	c->io.fd = -1;
	c->io.want = 0;
}

static void conn_attach(struct rconn *c, redisAsyncContext *ac)
{
	c->ac = ac;
	c->ready = false;
	c->loop = R.loop;
	c->io = (struct loop_io){.fd = ac->c.fd, .fn = conn_io, .data = c};
	ac->data = c;
	ac->ev.data = c;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
}

/* Close c's connection (if any). Its pending callbacks run with NULL now,
 * or when the current hiredis callback returns. */
static void conn_close(struct rconn *c)
{
	redisAsyncContext *ac = c->ac;

	if (ac == NULL)
		return;
	c->ac = NULL;
	c->ready = false;
	redisAsyncFree(ac);
}

/* ------------------------------------------------------------------ */
/* Errors                                                               */

static bool starts_with_any(const char *s, const char *const *codes)
{
	for (; *codes; codes++)
		if (strncmp(s, *codes, strlen(*codes)) == 0)
			return true;
	return false;
}

/* An error the server answered (as opposed to an I/O error). */
static bool is_refusal(const char *s)
{
	static const char *const codes[] = {"NOPERM", "NOAUTH", "WRONGPASS", "ERR ", "LOADING", NULL};

	return starts_with_any(s, codes);
}

/* A refusal by the server at link level (handshake, subscription): logged
 * once per distinct message, then the link fails. Whatever the step, a
 * credentials or ACL refusal reads "AUTH failed: ...". */
static void log_server_error(const char *what, const redisReply *r)
{
	static const char *const auth_codes[] = {"WRONGPASS", "NOAUTH", "NOPERM", NULL};
	char text[200], line[sizeof(R.last_error)];
	const char *str = r->str ? r->str : "";

	log_sanitize_text(str, r->str ? r->len : 0, text, sizeof(text));
	snprintf(line, sizeof(line), "%s failed: %s", starts_with_any(str, auth_codes) ? "AUTH" : what, text);
	if (strcmp(line, R.last_error) != 0) {
		log_err("event=redis_error server=%s error=\"%s\"", R.display, line);
		snprintf(R.last_error, sizeof(R.last_error), "%s", line);
	}
	link_fail(line);
}

static bool is_error(const redisReply *r)
{
	return r->type == REDIS_REPLY_ERROR;
}


/* ------------------------------------------------------------------ */
/* The queue                                                            */

static struct qcmd *q_at(size_t i)
{
	return &R.q[(R.q_head + i) % REDIS_LINK_QUEUE_MAX];
}

static void q_set_gauge(void)
{
	R.st.queued = R.q_len;
	STATS_SET(STAT_REDIS_EVENTS_QUEUED, R.q_len);
}

/* Take the oldest entry out (caller frees cmd). */
static struct qcmd q_pop(void)
{
	struct qcmd e = *q_at(0);

	R.q_head = (R.q_head + 1) % REDIS_LINK_QUEUE_MAX;
	R.q_len--;
	q_set_gauge();
	return e;
}

static int q_push(char *cmd, size_t len, redis_reply_fn *fn, void *ctx)
{
	struct qcmd dropped = {0};

	if (R.q == NULL && (R.q = calloc(REDIS_LINK_QUEUE_MAX, sizeof(*R.q))) == NULL)
		return -1;
	if (R.q_len == REDIS_LINK_QUEUE_MAX) {
		dropped = q_pop();
		R.st.dropped++;
		STATS_INC(STAT_REDIS_EVENTS_DROPPED_TOTAL);
	}
	*q_at(R.q_len) = (struct qcmd){.cmd = cmd, .len = len, .fn = fn, .ctx = ctx};
	R.q_len++;
	q_set_gauge();
	/* Last: the callback may queue again. */
	if (dropped.cmd) {
		redisFreeCommand(dropped.cmd);
		if (dropped.fn)
			dropped.fn(dropped.ctx, NULL);
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Commands                                                             */

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct pending *p = privdata;
	redis_reply_fn *fn = p->fn;
	void *ctx = p->ctx;

	(void)ac;
	free(p);
	if (fn)
		fn(ctx, reply);
}

/* Hand a formatted command to the command connection. Returns 0, or -1
 * (the connection is closing, or no memory): the caller keeps cmd. */
static int send_formatted(const char *cmd, size_t len, redis_reply_fn *fn, void *ctx)
{
	struct pending *p = NULL;

	if (R.cmd.ac == NULL)
		return -1;
	if (fn) {
		if ((p = malloc(sizeof(*p))) == NULL)
			return -1;
		p->fn = fn;
		p->ctx = ctx;
	}
	if (redisAsyncFormattedCommand(R.cmd.ac, fn ? on_reply : NULL, p, cmd, len) != REDIS_OK) {
		free(p);
		return -1;
	}
	R.st.sent++;
	STATS_INC(STAT_REDIS_EVENTS_SENT_TOTAL);
	return 0;
}

int redis_link_command(redis_reply_fn *fn, void *ctx, int argc, const char **argv, const size_t *argvlen)
{
	char *cmd = NULL;
	int len;

	if (R.state == LINK_OFF || argc < 1)
		return -1;
	len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
	if (len <= 0 || cmd == NULL)
		return -1;
	if (R.state == LINK_UP && R.q_len == 0 && send_formatted(cmd, (size_t)len, fn, ctx) == 0) {
		redisFreeCommand(cmd);
		return 0;
	}
	if (q_push(cmd, (size_t)len, fn, ctx) == -1) {
		redisFreeCommand(cmd);
		return -1;
	}
	return 0;
}

/* Send what was queued, oldest first, while the connection takes it. */
static void q_flush(void)
{
	while (R.q_len > 0 && R.state == LINK_UP) {
		struct qcmd *e = q_at(0);

		if (send_formatted(e->cmd, e->len, e->fn, e->ctx) == -1)
			return;
		redisFreeCommand(q_pop().cmd);
	}
}

/* ------------------------------------------------------------------ */
/* Handshake and heartbeat                                              */

static unsigned ping_interval_ms(void)
{
	return R.ping_interval_ms ? R.ping_interval_ms : REDIS_LINK_PING_INTERVAL_MS;
}

static void maybe_up(void)
{
	if (R.state != LINK_CONNECTING || !R.cmd.ready || !R.sub.ready)
		return;
	R.state = LINK_UP;
	R.failures = 0;
	R.announced_down = false;
	R.last_error[0] = '\0';
	R.st.up = true;
	R.st.down_since = 0;
	STATS_SET(STAT_REDIS_UP, 1);
	log_notice("event=redis_up server=%s", R.display);
	R.ping_pending = false;
	loop_timer_start(R.loop, &R.timer, ping_interval_ms());
	q_flush();
	if (R.state == LINK_UP && R.ops.up)
		R.ops.up(R.ctx);
}

/* privdata: the step's name ("AUTH", "SELECT"); the connection is
 * ac->data. A NULL reply means the context is going away: nothing to do,
 * its disconnect (or our close) handles the link. */
static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rconn *c = ac->data;
	const redisReply *r = reply;

	if (r == NULL || c->ac != ac)
		return;
	if (is_error(r))
		log_server_error(privdata, r);
}

/* The command connection's last handshake step (and the heartbeat). */
static void on_ping(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rconn *c = ac->data;
	const redisReply *r = reply;

	(void)privdata;
	if (r == NULL || c->ac != ac)
		return;
	if (is_error(r)) {
		/* NOAUTH when a password is needed and none was given. */
		log_server_error("PING", r);
		return;
	}
	R.ping_pending = false;
	if (!c->ready) {
		c->ready = true;
		maybe_up();
	}
}

/* The subscription: its confirmation, then every message. */
static void on_sub(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct rconn *c = ac->data;
	const redisReply *r = reply;
	const redisReply *kind;

	(void)privdata;
	if (r == NULL || c->ac != ac)
		return;
	if (is_error(r)) {
		log_server_error("SUBSCRIBE", r);
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || r->element[0]->type != REDIS_REPLY_STRING)
		return;
	kind = r->element[0];
	if (strcasecmp(kind->str, "subscribe") == 0) {
		c->ready = true;
		maybe_up();
	} else if (strcasecmp(kind->str, "message") == 0 && r->element[2]->type == REDIS_REPLY_STRING) {
		R.st.received++;
		STATS_INC(STAT_REDIS_EVENTS_RECEIVED_TOTAL);
		if (R.ops.message)
			R.ops.message(R.ctx, r->element[2]->str, r->element[2]->len);
	}
}

/* A connect that did not succeed; hiredis frees ac after this. */
static void on_connect(const redisAsyncContext *ac, int status)
{
	struct rconn *c = ac->data;
	char why[300];

	if (status == REDIS_OK || c->ac != ac)
		return;
	c->ac = NULL;
	snprintf(why, sizeof(why), "%s connection: %s", c->name, ac->errstr);
	link_fail(why);
}

/* A connection lost (or closed by us); hiredis frees ac after this. */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rconn *c = ac->data;
	char why[300];

	if (c->ac != ac)
		return; /* ours to close: the link already knows */
	c->ac = NULL;
	c->ready = false;
	/* hiredis turns an error reply nobody waits for (SUBSCRIBE refused by
	 * an ACL, too many clients) into a disconnect with that text. */
	if (status != REDIS_OK && is_refusal(ac->errstr)) {
		redisReply r = {.type = REDIS_REPLY_ERROR, .str = ac->errstr, .len = strlen(ac->errstr)};

		snprintf(why, sizeof(why), "%s connection", c->name);
		log_server_error(why, &r);
		return;
	}
	snprintf(why, sizeof(why), "%s connection lost: %s", c->name,
	         status == REDIS_OK || ac->errstr[0] == '\0' ? "closed" : ac->errstr);
	link_fail(why);
}

/* Open one connection and queue its handshake. Returns 0 or -1 (why set). */
static int conn_open(struct rconn *c, char *why, size_t whysz)
{
	redisAsyncContext *ac;
	const char *argv[3];
	int argc = 0;
	char db[16];

	if (R.url.unix_socket)
		ac = redisAsyncConnectUnix(R.url.host);
	else
		ac = redisAsyncConnect(R.url.host, (int)R.url.port);
	if (ac == NULL) {
		snprintf(why, whysz, "%s connection: out of memory", c->name);
		return -1;
	}
	if (ac->err) {
		snprintf(why, whysz, "%s connection: %s", c->name, ac->errstr);
		redisAsyncFree(ac);
		return -1;
	}
	conn_attach(c, ac);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	/* Also asks for the first write event, which completes the connect. */
	redisAsyncSetConnectCallback(ac, on_connect);
	if (!R.url.unix_socket)
		(void)redisEnableKeepAlive(&ac->c); /* probes after 15 s idle */

	/* hiredis buffers these until the connect completes: the handshake
	 * is the first thing on the wire. */
	if (R.url.password[0]) {
		argv[argc++] = "AUTH";
		if (R.url.user[0])
			argv[argc++] = R.url.user;
		argv[argc++] = R.url.password;
		redisAsyncCommandArgv(ac, on_handshake, "AUTH", argc, argv, NULL);
	}
	if (R.url.db != 0) {
		snprintf(db, sizeof(db), "%u", R.url.db);
		argv[0] = "SELECT";
		argv[1] = db;
		redisAsyncCommandArgv(ac, on_handshake, "SELECT", 2, argv, NULL);
	}
	if (c == &R.cmd) {
		argv[0] = "PING";
		redisAsyncCommandArgv(ac, on_ping, NULL, 1, argv, NULL);
	} else {
		argv[0] = "SUBSCRIBE";
		argv[1] = R.channel;
		redisAsyncCommandArgv(ac, on_sub, NULL, 2, argv, NULL);
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* The link                                                             */

static uint64_t rng_next(void)
{
	/* xorshift64: jitter only, nothing secret */
	R.rng ^= R.rng << 13;
	R.rng ^= R.rng >> 7;
	R.rng ^= R.rng << 17;
	return R.rng;
}

static uint64_t backoff_ms(void)
{
	uint64_t d = REDIS_LINK_BACKOFF_MIN_MS;

	for (unsigned i = 1; i < R.failures && d < REDIS_LINK_BACKOFF_MAX_MS; i++)
		d *= 2;
	if (d > REDIS_LINK_BACKOFF_MAX_MS)
		d = REDIS_LINK_BACKOFF_MAX_MS;
	return d / 2 + rng_next() % (d / 2 + 1);
}

static void link_fail(const char *why)
{
	char text[300];
	bool was_up = R.state == LINK_UP;

	if (R.state != LINK_UP && R.state != LINK_CONNECTING)
		return; /* already down (a second report of the same failure) */
	log_sanitize_text(why, strlen(why), text, sizeof(text));
	R.state = LINK_DOWN;
	R.failures++;
	R.st.up = false;
	STATS_SET(STAT_REDIS_UP, 0);
	/* Pending callbacks of both run (with NULL) from here: the state
	 * says down, so what they send is queued. */
	conn_close(&R.cmd);
	conn_close(&R.sub);
	loop_timer_start(R.loop, &R.timer, backoff_ms());
	if (was_up || !R.announced_down) {
		R.announced_down = true;
		if (was_up)
			R.st.down_since = (uint64_t)time(NULL);
		log_warn("event=redis_down server=%s error=\"%s\"", R.display, text);
		if (R.ops.down)
			R.ops.down(R.ctx);
	} else {
		log_debug("event=redis_retry server=%s failures=%u error=\"%s\"", R.display, R.failures, text);
	}
}

static void link_attempt(void)
{
	char why[300];

	if (R.failures) {
		R.st.reconnects++;
		STATS_INC(STAT_REDIS_RECONNECTS_TOTAL);
	}
	R.state = LINK_CONNECTING;
	R.io_failed = false;
	loop_timer_start(R.loop, &R.timer, R.connect_timeout_ms ? R.connect_timeout_ms : REDIS_LINK_CONNECT_TIMEOUT_MS);
	if (conn_open(&R.cmd, why, sizeof(why)) == -1 || conn_open(&R.sub, why, sizeof(why)) == -1)
		link_fail(why);
}

static void link_timer(struct loop_timer *t)
{
	(void)t;
	if (R.io_failed) {
		R.io_failed = false;
		link_fail("cannot watch the connection (epoll_ctl failed)");
		return;
	}
	switch (R.state) {
	case LINK_DOWN:
		link_attempt();
		break;
	case LINK_CONNECTING:
		link_fail("not connected and subscribed within the connect timeout");
		break;
	case LINK_UP:
		if (R.ping_pending && loop_now(R.loop) - R.ping_sent >=
		                          (R.ping_timeout_ms ? R.ping_timeout_ms : REDIS_LINK_PING_TIMEOUT_MS)) {
			link_fail("no answer to PING");
			break;
		}
		if (!R.ping_pending && R.cmd.ac) {
			const char *argv[1] = {"PING"};

			if (redisAsyncCommandArgv(R.cmd.ac, on_ping, NULL, 1, argv, NULL) == REDIS_OK) {
				R.ping_pending = true;
				R.ping_sent = loop_now(R.loop);
			}
		}
		loop_timer_start(R.loop, &R.timer, ping_interval_ms());
		break;
	case LINK_OFF:
		break;
	}
}

/* Resolve a host name once (start-up or reload), keep the address. */
static int resolve_host(char *why, size_t whysz)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *a, *pick = NULL;
	unsigned char tmp[sizeof(struct in6_addr)];
	char addr[INET6_ADDRSTRLEN];
	int rc;

	if (R.url.unix_socket || inet_pton(AF_INET, R.url.host, tmp) == 1 || inet_pton(AF_INET6, R.url.host, tmp) == 1)
		return 0;
	rc = getaddrinfo(R.url.host, NULL, &hints, &res);
	if (rc != 0 || res == NULL) {
		snprintf(why, whysz, "cannot resolve %s: %s", R.url.host, rc ? gai_strerror(rc) : "no address");
		return -1;
	}
	/* IPv4 first, as hiredis does ("localhost" is often ::1 first, and
	 * Redis's default bind is 127.0.0.1 only). */
	for (a = res; a && !pick; a = a->ai_next)
		if (a->ai_family == AF_INET)
			pick = a;
	for (a = res; a && !pick; a = a->ai_next)
		if (a->ai_family == AF_INET6)
			pick = a;
	if (pick == NULL) {
		freeaddrinfo(res);
		snprintf(why, whysz, "cannot resolve %s: no IPv4 or IPv6 address", R.url.host);
		return -1;
	}
	if (pick->ai_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)pick->ai_addr)->sin_addr, addr, sizeof(addr));
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)pick->ai_addr)->sin6_addr, addr, sizeof(addr));
	freeaddrinfo(res);
	snprintf(R.url.host, sizeof(R.url.host), "%s", addr);
	return 0;
}

int redis_link_start(struct loop *l, const char *url, const char *channel, const struct redis_link_ops *ops,
                     void *ctx, char *err, size_t errsz)
{
	const char *why;

	if (R.state != LINK_OFF) {
		snprintf(err, errsz, "the Redis link is already started");
		return -1;
	}
	if (redis_url_parse(url, &R.url, &why) == -1) {
		snprintf(err, errsz, "guard_redis: %s", why);
		explicit_bzero(&R.url, sizeof(R.url));
		return -1;
	}
	/* Shown as given (a name, not the address it resolved to). */
	redis_url_display(&R.url, R.display, sizeof(R.display));
	if (resolve_host(err, errsz) == -1 || (R.channel = strdup(channel)) == NULL) {
		if (R.channel == NULL && err[0] == '\0')
			snprintf(err, errsz, "out of memory");
		explicit_bzero(&R.url, sizeof(R.url));
		return -1;
	}
	R.loop = l;
	R.ops = ops ? *ops : (struct redis_link_ops){0};
	R.ctx = ctx;
	R.timer = (struct loop_timer){.fn = link_timer};
	R.failures = 0;
	R.announced_down = false;
	R.last_error[0] = '\0';
	memset(&R.st, 0, sizeof(R.st));
	R.st.down_since = (uint64_t)time(NULL);
	R.rng = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&R;
	if (R.rng == 0)
		R.rng = 1;
	STATS_SET(STAT_REDIS_UP, 0);
	R.state = LINK_DOWN;
	loop_timer_start(l, &R.timer, 0); /* the first attempt, from the loop */
	return 0;
}

void redis_link_stop(void)
{
	if (R.state == LINK_OFF)
		return;
	R.state = LINK_OFF;
	loop_timer_stop(R.loop, &R.timer);
	conn_close(&R.cmd);
	conn_close(&R.sub);
	while (R.q_len > 0) {
		struct qcmd e = q_pop();

		redisFreeCommand(e.cmd);
		if (e.fn)
			e.fn(e.ctx, NULL);
	}
	free(R.q);
	R.q = NULL;
	R.q_head = 0;
	free(R.channel);
	R.channel = NULL;
	explicit_bzero(&R.url, sizeof(R.url));
	R.st.up = false;
	R.st.down_since = 0;
	STATS_SET(STAT_REDIS_UP, 0);
}

void redis_link_set_timeouts_ms(unsigned connect, unsigned ping_interval, unsigned ping_timeout)
{
	R.connect_timeout_ms = connect;
	R.ping_interval_ms = ping_interval;
	R.ping_timeout_ms = ping_timeout;
}

bool redis_link_is_up(void)
{
	return R.state == LINK_UP;
}

void redis_link_get_stats(struct redis_link_stats *st)
{
	*st = R.st;
}
