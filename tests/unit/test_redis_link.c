/* Tests for redis_link against a real redis-server (Debian's), started
 * here on a free loopback port with its own config in a temp dir: up after
 * the subscription, a PUBLISH coming back as a message, SELECT, commands
 * queued while Redis is killed and sent after its restart, the queue
 * dropping the oldest past its size, AUTH refused (logged, retried, no
 * password in the log) and both AUTH forms accepted. Skipped (with the
 * reason) without /usr/bin/redis-server. Every wait is bounded. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "log.h"
#include "loop.h"
#include "redis_link.h"
#include "stats.h"

#define REDIS_SERVER "/usr/bin/redis-server"
#define CHANNEL "imapgate:events"

/* ------------------------------------------------------------------ */
/* A private redis-server                                               */

struct server {
	char dir[64];
	unsigned port;
	pid_t pid;
	const char *acl; /* extra config lines (users), or NULL */
	bool unix_socket; /* also listen on dir/redis.sock */
};

static unsigned free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* A blocking client for checks, as the default user or with AUTH argv. */
static redisContext *client(const struct server *s, const char *user, const char *pass)
{
	struct timeval tv = {1, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", (int)s->port, tv);
	redisReply *r;

	if (c == NULL || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	if (pass) {
		r = user ? redisCommand(c, "AUTH %s %s", user, pass) : redisCommand(c, "AUTH %s", pass);
		if (r == NULL || r->type == REDIS_REPLY_ERROR) {
			if (r)
				freeReplyObject(r);
			redisFree(c);
			return NULL;
		}
		freeReplyObject(r);
	}
	return c;
}

static void server_start(struct server *s)
{
	char path[128];
	FILE *f;
	int ok = 0;

	snprintf(path, sizeof(path), "%s/redis.conf", s->dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f,
	        "port %u\nbind 127.0.0.1\ndir %s\nsave \"\"\nappendonly no\ndaemonize no\n"
	        "logfile %s/redis.log\nprotected-mode no\n%s",
	        s->port, s->dir, s->dir, s->acl ? s->acl : "");
	if (s->unix_socket)
		fprintf(f, "unixsocket %s/redis.sock\nunixsocketperm 700\n", s->dir);
	fclose(f);
	s->pid = fork();
	assert_true(s->pid >= 0);
	if (s->pid == 0) {
		int null = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		execl(REDIS_SERVER, REDIS_SERVER, path, (char *)NULL);
		_exit(127);
	}
	/* Ready when it answers PING (as the default user, or refuses with
	 * NOAUTH: either way it is serving); at most 5 s. */
	for (int i = 0; i < 500 && !ok; i++) {
		redisContext *c = client(s, NULL, NULL);

		if (c) {
			redisReply *r = redisCommand(c, "PING");

			ok = r != NULL;
			if (r)
				freeReplyObject(r);
			redisFree(c);
		}
		if (!ok)
			usleep(10000);
	}
	assert_true(ok);
}

static void server_kill(struct server *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
		s->pid = 0;
	}
}

/* Servers live in static slots, so teardown can stop and remove them even
 * after a failed assertion left a test function early. */
static struct server servers[4];

static struct server *server_new(const char *acl)
{
	size_t i = 0;
	struct server *s;

	while (i < sizeof(servers) / sizeof(servers[0]) - 1 && servers[i].dir[0] != '\0')
		i++;
	s = &servers[i];
	assert_true(s->dir[0] == '\0');
	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "/tmp/test_redis_link.XXXXXX");
	assert_non_null(mkdtemp(s->dir));
	s->port = free_port();
	s->acl = acl;
	return s;
}

static void server_free(struct server *s)
{
	char cmd[128];

	if (s->dir[0] == '\0')
		return;
	server_kill(s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
	(void)system(cmd);
	s->dir[0] = '\0';
}

/* ------------------------------------------------------------------ */
/* The loop, run until a condition holds (bounded)                      */

static struct loop *L;

static struct {
	int ups, downs;
	char msg[256];
	int msgs;
} ev;

static void on_message(void *ctx, const char *data, size_t len)
{
	(void)ctx;
	snprintf(ev.msg, sizeof(ev.msg), "%.*s", (int)len, data);
	ev.msgs++;
}

static void on_up(void *ctx)
{
	(void)ctx;
	ev.ups++;
}

static void on_down(void *ctx)
{
	(void)ctx;
	ev.downs++;
}

static const struct redis_link_ops ops = {on_message, on_up, on_down};

typedef bool cond_fn(void);

static struct {
	cond_fn *cond;
	uint64_t deadline;
	struct loop_timer t;
} W;

static void wait_tick(struct loop_timer *t)
{
	if (W.cond() || loop_now(L) >= W.deadline)
		loop_stop(L);
	else
		loop_timer_start(L, t, 5);
}

/* Run the loop until cond() or ms pass; returns cond(). */
static bool run_until(cond_fn *cond, unsigned ms)
{
	W.cond = cond;
	W.deadline = loop_now(L) + ms;
	W.t = (struct loop_timer){.fn = wait_tick};
	loop_timer_start(L, &W.t, 0);
	loop_run(L);
	loop_timer_stop(L, &W.t);
	return cond();
}

static bool is_up(void)
{
	return redis_link_is_up();
}

static bool is_down(void)
{
	return !redis_link_is_up() && ev.downs > 0;
}

static void server_signal(struct server *s, int sig)
{
	assert_int_equal(kill(s->pid, sig), 0);
}

static bool retried_twice(void)
{
	struct redis_link_stats st;

	redis_link_get_stats(&st);
	return st.reconnects >= 2;
}

static bool got_message(void)
{
	return ev.msgs > 0;
}

/* Replies recorded by reply callbacks. */
#define MAX_REPLIES (REDIS_LINK_QUEUE_MAX + 16)
static struct {
	int n, nulls;
	long long ints[MAX_REPLIES];
	int ids[MAX_REPLIES];
	int types[MAX_REPLIES];
} rep;

static void on_reply(void *ctx, const redisReply *r)
{
	int id = (int)(intptr_t)ctx;

	if (r == NULL) {
		rep.nulls++;
		return;
	}
	if (rep.n < MAX_REPLIES) {
		rep.ids[rep.n] = id;
		rep.types[rep.n] = r->type;
		rep.ints[rep.n] = r->integer;
	}
	rep.n++;
}

static int want_replies;
static bool got_replies(void)
{
	return rep.n >= want_replies;
}

static int cmd(int id, const char *a0, const char *a1, const char *a2)
{
	const char *argv[3] = {a0, a1, a2};

	return redis_link_command(on_reply, (void *)(intptr_t)id, a2 ? 3 : a1 ? 2 : 1, argv, NULL);
}

/* Logs go to stderr (log_open(true)); captured into a file per test. */
static char log_path[64];
static int saved_stderr = -1;

static char *read_log(void)
{
	static char text[65536];
	FILE *f;
	size_t n;

	fflush(stderr);
	f = fopen(log_path, "r");
	assert_non_null(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	return text;
}

static int setup(void **state)
{
	int fd;

	(void)state;
	if (access(REDIS_SERVER, X_OK) != 0) {
		printf("skipped: %s is absent (apt-get install redis-server)\n", REDIS_SERVER);
		skip();
	}
	memset(&ev, 0, sizeof(ev));
	memset(&rep, 0, sizeof(rep));
	L = loop_new();
	assert_non_null(L);
	snprintf(log_path, sizeof(log_path), "/tmp/test_redis_link.log.XXXXXX");
	fd = mkstemp(log_path);
	assert_true(fd >= 0);
	fflush(stderr);
	saved_stderr = dup(2);
	dup2(fd, 2);
	close(fd);
	log_open(true, LOG_MAIL, LOG_DEBUG);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	redis_link_stop();
	redis_link_set_timeouts_ms(0, 0, 0);
	for (size_t i = 0; i < sizeof(servers) / sizeof(servers[0]); i++)
		server_free(&servers[i]);
	if (L)
		loop_free(&L);
	if (saved_stderr >= 0) {
		/* The captured lines (and a failed assertion's message, which
		 * cmocka writes to stderr too) go to the real stderr. */
		const char *text = read_log();

		dup2(saved_stderr, 2);
		fputs(text, stderr);
		close(saved_stderr);
		saved_stderr = -1;
		unlink(log_path);
	}
	return 0;
}

static int count(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

static void start_link(const struct server *s, const char *userinfo, unsigned db)
{
	char url[256], err[256] = "";

	snprintf(url, sizeof(url), "redis://%s127.0.0.1:%u/%u", userinfo, s->port, db);
	assert_int_equal(redis_link_start(L, url, CHANNEL, &ops, NULL, err, sizeof(err)), 0);
}

/* ------------------------------------------------------------------ */

static void test_up_publish_message(void **state)
{
	struct server *s;
	struct redis_link_stats st;
	redisContext *c;
	redisReply *r;

	(void)state;
	s = server_new(NULL);
	server_start(s);
	start_link(s, "", 3);
	assert_false(redis_link_is_up()); /* the first attempt is made from the loop */
	assert_true(run_until(is_up, 3000));
	assert_int_equal(ev.ups, 1);
	assert_int_equal(stats_get(STAT_REDIS_UP), 1);

	/* Through the command connection and back on the subscriber. */
	assert_int_equal(cmd(1, "PUBLISH", CHANNEL, "ban 192.0.2.0/24"), 0);
	assert_int_equal(cmd(2, "SET", "imapgate:k", "v"), 0);
	want_replies = 2;
	assert_true(run_until(got_message, 3000));
	assert_true(run_until(got_replies, 3000));
	assert_string_equal(ev.msg, "ban 192.0.2.0/24");
	assert_int_equal(rep.ids[0], 1);
	assert_int_equal(rep.types[0], REDIS_REPLY_INTEGER);
	assert_int_equal(rep.ints[0], 1); /* one subscriber: us */
	assert_int_equal(rep.types[1], REDIS_REPLY_STATUS);

	/* SELECT 3 was done: the key is in db 3. */
	c = client(s, NULL, NULL);
	assert_non_null(c);
	r = redisCommand(c, "SELECT 3");
	freeReplyObject(r);
	r = redisCommand(c, "GET imapgate:k");
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_string_equal(r->str, "v");
	freeReplyObject(r);
	redisFree(c);

	redis_link_get_stats(&st);
	assert_true(st.up);
	assert_int_equal(st.sent, 2);
	assert_int_equal(st.received, 1);
	assert_int_equal(st.down_since, 0);
	assert_non_null(strstr(read_log(), "event=redis_up server=redis://127.0.0.1:"));

	/* Stop: nothing more arrives, commands are refused. */
	redis_link_stop();
	assert_false(redis_link_is_up());
	assert_int_equal(cmd(3, "PING", NULL, NULL), -1);
	assert_int_equal(stats_get(STAT_REDIS_UP), 0);
	server_free(s);
}

static void test_queue_across_restart(void **state)
{
	struct server *s;
	struct redis_link_stats st;
	redisContext *c;
	redisReply *r;
	char *log;

	(void)state;
	s = server_new(NULL);
	server_start(s);
	start_link(s, "", 0);
	assert_true(run_until(is_up, 3000));

	server_kill(s);
	assert_true(run_until(is_down, 3000));
	assert_int_equal(ev.downs, 1);
	redis_link_get_stats(&st);
	assert_false(st.up);
	assert_true(st.down_since > 0);

	/* Queued while down, in order. */
	assert_int_equal(cmd(10, "RPUSH", "imapgate:l", "a"), 0);
	assert_int_equal(cmd(11, "RPUSH", "imapgate:l", "b"), 0);
	assert_int_equal(cmd(12, "RPUSH", "imapgate:l", "c"), 0);
	redis_link_get_stats(&st);
	assert_int_equal(st.queued, 3);
	assert_int_equal(st.sent, 0);
	assert_int_equal(rep.n, 0);

	/* A few retries fail (logged once), then Redis is back. */
	assert_true(run_until(retried_twice, 3000));
	server_start(s);
	want_replies = 3;
	assert_true(run_until(is_up, 5000));
	assert_true(run_until(got_replies, 3000));
	assert_int_equal(ev.ups, 2);
	assert_int_equal(ev.downs, 1);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(rep.ids[i], 10 + i);
		assert_int_equal(rep.ints[i], i + 1);
	}
	redis_link_get_stats(&st);
	assert_int_equal(st.queued, 0);
	assert_int_equal(st.sent, 3);
	assert_true(st.reconnects >= 1);
	assert_int_equal(stats_get(STAT_REDIS_RECONNECTS_TOTAL), st.reconnects);

	c = client(s, NULL, NULL);
	assert_non_null(c);
	r = redisCommand(c, "LRANGE imapgate:l 0 -1");
	assert_non_null(r);
	assert_int_equal(r->elements, 3);
	assert_string_equal(r->element[2]->str, "c");
	freeReplyObject(r);
	redisFree(c);

	log = read_log();
	assert_int_equal(count(log, "event=redis_down"), 1);
	assert_int_equal(count(log, "event=redis_up"), 2);
	server_free(s);
}

/* A Redis that stops answering (SIGSTOP: the kernel still accepts and
 * acknowledges): the heartbeat notices, the connect timeout bounds the
 * attempts, and the link comes back with SIGCONT. */
static void test_hung_server(void **state)
{
	struct server *s;
	char *log;

	(void)state;
	redis_link_set_timeouts_ms(300, 100, 300);
	s = server_new(NULL);
	server_start(s);
	start_link(s, "", 0);
	assert_true(run_until(is_up, 3000));
	server_signal(s, SIGSTOP);
	assert_true(run_until(is_down, 3000));
	assert_true(run_until(retried_twice, 3000)); /* each attempt ended by the connect timeout */
	assert_false(redis_link_is_up());
	server_signal(s, SIGCONT);
	assert_true(run_until(is_up, 5000));
	log = read_log();
	assert_non_null(strstr(log, "error=\"no answer to PING\""));
	assert_non_null(strstr(log, "within the connect timeout"));
	redis_link_set_timeouts_ms(0, 0, 0);
	server_free(s);
}

/* The caller may stop the link from inside its callbacks. */
static void stop_on_message(void *ctx, const char *data, size_t len)
{
	on_message(ctx, data, len);
	redis_link_stop();
}

static void test_stop_inside_callback(void **state)
{
	struct server *s;
	static const struct redis_link_ops stopping = {stop_on_message, on_up, on_down};
	char url[128], err[256];

	(void)state;
	s = server_new(NULL);
	server_start(s);
	snprintf(url, sizeof(url), "redis://127.0.0.1:%u", s->port);
	assert_int_equal(redis_link_start(L, url, CHANNEL, &stopping, NULL, err, sizeof(err)), 0);
	assert_true(run_until(is_up, 3000));
	assert_int_equal(cmd(1, "PUBLISH", CHANNEL, "x"), 0);
	assert_int_equal(cmd(2, "PING", NULL, NULL), 0);
	assert_true(run_until(got_message, 3000));
	assert_false(redis_link_is_up());
	assert_int_equal(ev.downs, 0); /* stopping is not a loss */
	/* Every command got its one callback: PUBLISH answered, PING (in
	 * flight or not) either answered or told NULL. */
	assert_int_equal(rep.n + rep.nulls, 2);
	/* Start again after a stop from inside: works. */
	assert_int_equal(redis_link_start(L, url, CHANNEL, &ops, NULL, err, sizeof(err)), 0);
	assert_true(run_until(is_up, 3000));
	server_free(s);
}

static void test_queue_drops_oldest(void **state)
{
	struct server *s;
	struct redis_link_stats st;
	uint64_t dropped0 = stats_get(STAT_REDIS_EVENTS_DROPPED_TOTAL);

	(void)state;
	s = server_new(NULL);
	/* Nothing listens yet: the first attempt is refused. */
	start_link(s, "", 0);
	assert_true(run_until(is_down, 3000));
	for (int i = 0; i < REDIS_LINK_QUEUE_MAX + 5; i++)
		assert_int_equal(cmd(i, "INCR", "imapgate:n", NULL), 0);
	redis_link_get_stats(&st);
	assert_int_equal(st.queued, REDIS_LINK_QUEUE_MAX);
	assert_int_equal(st.dropped, 5);
	assert_int_equal(stats_get(STAT_REDIS_EVENTS_DROPPED_TOTAL) - dropped0, 5);
	assert_int_equal(rep.nulls, 5); /* the dropped ones were told */

	/* The survivors go out in order once Redis is there. */
	server_start(s);
	want_replies = REDIS_LINK_QUEUE_MAX;
	assert_true(run_until(got_replies, 8000));
	assert_int_equal(rep.ids[0], 5);
	assert_int_equal(rep.ints[0], 1);
	assert_int_equal(rep.ids[REDIS_LINK_QUEUE_MAX - 1], REDIS_LINK_QUEUE_MAX + 4);
	assert_int_equal(rep.ints[REDIS_LINK_QUEUE_MAX - 1], REDIS_LINK_QUEUE_MAX);
	redis_link_get_stats(&st);
	assert_int_equal(st.queued, 0);
	assert_int_equal(st.sent, REDIS_LINK_QUEUE_MAX);
	server_free(s);
}

#define ACL                                                                                            \
	"user default on >Def-Pw-77 ~* &* +@all\n"                                                     \
	"user imapgate on >Right-Pw-42 ~imapgate:* &imapgate:* +@all\n"

static void test_auth(void **state)
{
	struct server *s;
	char *log;

	(void)state;
	s = server_new(ACL);
	server_start(s);

	/* Wrong password: a clear error, once, no crash, retried. */
	start_link(s, "imapgate:Wrong-Pw-13@", 0);
	assert_true(run_until(is_down, 3000));
	assert_true(run_until(retried_twice, 3000));
	assert_false(redis_link_is_up());
	log = read_log();
	assert_int_equal(count(log, "event=redis_error"), 1);
	assert_non_null(strstr(log, "error=\"AUTH failed: WRONGPASS"));
	assert_int_equal(count(log, "event=redis_down"), 1);
	assert_non_null(strstr(log, "server=redis://imapgate:***@127.0.0.1:"));
	assert_null(strstr(log, "Wrong-Pw-13"));
	redis_link_stop();

	/* "AUTH user pass" with the ACL user, and PUBLISH on its channel. */
	memset(&ev, 0, sizeof(ev));
	start_link(s, "imapgate:Right-Pw-42@", 0);
	assert_true(run_until(is_up, 3000));
	assert_int_equal(cmd(1, "PUBLISH", CHANNEL, "hello"), 0);
	assert_true(run_until(got_message, 3000));
	assert_string_equal(ev.msg, "hello");
	redis_link_stop();

	/* "AUTH pass" (the default user). */
	start_link(s, ":Def-Pw-77@", 0);
	assert_true(run_until(is_up, 3000));
	redis_link_stop();

	/* No password where one is needed: NOAUTH, logged. */
	start_link(s, "", 0);
	assert_true(run_until(is_down, 3000));
	redis_link_stop();

	/* A channel the ACL user may not use: NOPERM, logged. */
	{
		char url[256], err[256];

		snprintf(url, sizeof(url), "redis://imapgate:Right-Pw-42@127.0.0.1:%u", s->port);
		assert_int_equal(redis_link_start(L, url, "other:events", &ops, NULL, err, sizeof(err)), 0);
		ev.downs = 0;
		assert_true(run_until(is_down, 3000));
		redis_link_stop();
	}

	log = read_log();
	assert_non_null(strstr(log, "event=redis_error server=redis://127.0.0.1:"));
	assert_non_null(strstr(log, "error=\"AUTH failed: NOAUTH"));
	assert_non_null(strstr(log, "error=\"AUTH failed: NOPERM"));
	assert_null(strstr(log, "Right-Pw-42"));
	assert_null(strstr(log, "Def-Pw-77"));
	assert_non_null(strstr(log, "NOAUTH"));
	server_free(s);
}

static void test_unix_socket(void **state)
{
	struct server *s;
	char url[128], err[256];

	(void)state;
	s = server_new(NULL);
	s->unix_socket = true;
	server_start(s);
	snprintf(url, sizeof(url), "unix:%s/redis.sock?db=2", s->dir);
	assert_int_equal(redis_link_start(L, url, CHANNEL, &ops, NULL, err, sizeof(err)), 0);
	assert_true(run_until(is_up, 3000));
	assert_int_equal(cmd(1, "PUBLISH", CHANNEL, "over unix"), 0);
	assert_true(run_until(got_message, 3000));
	assert_string_equal(ev.msg, "over unix");
	assert_non_null(strstr(read_log(), "event=redis_up server=unix:"));
}

static void test_start_errors(void **state)
{
	char err[256];

	(void)state;
	assert_int_equal(redis_link_start(L, "http://x", CHANNEL, &ops, NULL, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "guard_redis"));
	assert_int_equal(redis_link_start(L, "redis://no-such-host.invalid:6379", CHANNEL, &ops, NULL, err,
	                                  sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "cannot resolve"));
	assert_int_equal(redis_link_command(NULL, NULL, 1, (const char *[]){"PING"}, NULL), -1);
	assert_int_equal(redis_link_start(L, "redis://127.0.0.1:1", CHANNEL, &ops, NULL, err, sizeof(err)), 0);
	assert_int_equal(redis_link_start(L, "redis://127.0.0.1:1", CHANNEL, &ops, NULL, err, sizeof(err)), -1);
	redis_link_stop();
	/* A name is resolved at start ("localhost": /etc/hosts). */
	{
		struct server *s = server_new(NULL);

		server_start(s);
		char url[128];

		snprintf(url, sizeof(url), "redis://localhost:%u", s->port);
		assert_int_equal(redis_link_start(L, url, CHANNEL, &ops, NULL, err, sizeof(err)), 0);
		assert_true(run_until(is_up, 3000));
		assert_non_null(strstr(read_log(), "event=redis_up server=redis://localhost:"));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_up_publish_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_across_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hung_server, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_inside_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_drops_oldest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unix_socket, setup, teardown),
		cmocka_unit_test_setup_teardown(test_start_errors, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN); /* as the daemon: hiredis writes with write(2) */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
