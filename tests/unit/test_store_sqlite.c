/* Unit tests for store_sqlite: guard events written through the queue
 * come back into a new guard after close and reopen (and after kill -9),
 * escalation continues, overflow drops failures but never bans, a bad
 * path is an error text. Times are the real clock plus offsets, because
 * the writer prunes against the real clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guard.h"
#include "store_sqlite.h"

static char dir[64];
static char dbpath[128];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof dir, "/tmp/imapgate-store-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(dbpath, sizeof dbpath, "%s/guard.db", dir);
	return 0;
}

static int teardown(void **state)
{
	char p[160];
	(void)state;
	static const char *const sfx[] = {"", "-wal", "-shm"};
	for (int i = 0; i < 3; i++) {
		snprintf(p, sizeof p, "%s%s", dbpath, sfx[i]);
		unlink(p);
	}
	rmdir(dir);
	return 0;
}

static const struct sockaddr *sa(const char *ip)
{
	static struct sockaddr_storage ring[4];
	static unsigned i;
	struct sockaddr_storage *ss = &ring[i++ % 4];

	memset(ss, 0, sizeof *ss);
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
	}
	return (const struct sockaddr *)ss;
}

static struct cidr cidr(const char *s)
{
	struct cidr c;
	const char *why;
	assert_int_equal(cidr_parse(s, &c, &why), 0);
	return c;
}

static struct guard *mk_guard(uint8_t seedbyte)
{
	struct guard_params p;
	uint8_t seed[GUARD_SEED_LEN];
	const char *why;

	memset(&p, 0, sizeof p);
	p.ipv4_prefix = 32;
	p.ipv6_prefix = 64;
	p.findtime = 600;
	p.maxretry = 5;
	p.bantime = 600;
	p.recidive_window = 86400;
	p.bantime_factor = 2;
	p.bantime_max = 604800;
	p.trust_time = 86400;
	p.user_maxretry = 10;
	p.user_delay_max = 15000;
	assert_int_equal(cidr_list_parse("127.0.0.1/32 ::1/128", &p.ignore, &why), 0);
	memset(seed, seedbyte, sizeof seed);
	struct guard *g = guard_create(&p, seed);
	assert_non_null(g);
	return g;
}

static struct guard_failure_result fails(struct guard *g, const char *ip, int n, uint64_t t)
{
	struct guard_failure_result r;
	static unsigned pw;
	for (int i = 0; i < n; i++) {
		uint8_t h[GUARD_PWHASH_LEN] = {0};
		pw++;
		memcpy(h, &pw, sizeof pw);
		assert_int_equal(guard_record_failure(g, sa(ip), "mallory@example.org", h,
		                                      "auth_failed", "imap", t, &r), 0);
	}
	return r;
}

static struct store_sqlite *open_store(const struct store_sqlite_opts *o)
{
	struct store_sqlite *s = NULL;
	char err[256] = "";
	if (store_sqlite_open(dbpath, o, &s, err, sizeof err) != 0)
		fail_msg("open: %s", err);
	return s;
}

static void close_store(struct store_sqlite **s)
{
	char err[256] = "";
	if (store_sqlite_close(s, err, sizeof err) != 0)
		fail_msg("close: %s", err);
	assert_null(*s);
}

static struct guard *reload(uint64_t now)
{
	struct guard *g = mk_guard(0x5a);
	struct store_sqlite *s = open_store(NULL);
	char err[256] = "";
	if (store_sqlite_load(s, g, now, err, sizeof err) != 0)
		fail_msg("load: %s", err);
	close_store(&s);
	return g;
}

static long long count_rows(const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	long long n = -1;
	assert_int_equal(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

struct why {
	unsigned n;
	size_t nrecent;
	char user[GUARD_USER_LEN];
};

static void on_why(void *ctx, const struct guard_prefix_info *p)
{
	struct why *w = ctx;
	w->n++;
	w->nrecent = p->nrecent;
	if (p->nrecent)
		snprintf(w->user, sizeof w->user, "%s", p->recent[0].user);
}

static void test_roundtrip_and_escalation(void **state)
{
	(void)state;
	uint64_t now = (uint64_t)time(NULL);
	uint64_t early = now - 5000;
	struct guard *g = mk_guard(0x11);
	struct store_sqlite *s = open_store(NULL);
	struct guard_failure_result r;
	struct guard_ban_info b;
	const char *why;
	struct cidr c;

	guard_set_sink(g, store_sqlite_event, s);
	/* E: banned long ago for 600 s, ended, still in its recidive window. */
	r = fails(g, "192.0.2.5", 5, early);
	assert_true(r.banned);
	guard_expire(g, early + 600);
	/* A: banned now. B: 3 failures now. IPv6 /64 banned. */
	r = fails(g, "192.0.2.1", 5, now);
	assert_true(r.banned);
	fails(g, "192.0.2.2", 3, now);
	r = fails(g, "2001:db8:7:7::1", 5, now);
	assert_true(r.banned);
	/* C: manual /24. F: banned then lifted. G: banned then forgotten. */
	c = cidr("198.51.100.0/24");
	assert_int_equal(guard_ban(g, &c, 7200, "ctl", now, &b, &why), 0);
	fails(g, "192.0.2.6", 5, now);
	c = cidr("192.0.2.6");
	assert_int_equal(guard_unban(g, &c, false, now, NULL), 1);
	fails(g, "192.0.2.7", 5, now);
	c = cidr("192.0.2.7");
	assert_int_equal(guard_unban(g, &c, true, now, NULL), 1);
	/* Ignored and duplicate failures are not written. */
	uint8_t h[GUARD_PWHASH_LEN] = {9};
	guard_record_failure(g, sa("127.0.0.1"), "x", h, "auth_failed", "imap", now, &r);
	guard_record_failure(g, sa("192.0.2.9"), "x", h, "auth_failed", "imap", now, &r);
	guard_record_failure(g, sa("192.0.2.9"), "x", h, "auth_failed", "imap", now, &r);
	assert_int_equal(r.status, GUARD_DUPLICATE);

	assert_int_equal(store_sqlite_sync(s), 0);
	struct store_sqlite_stats st;
	store_sqlite_get_stats(s, &st);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(st.errors, 0);
	assert_int_equal(st.queued, 0);
	close_store(&s);
	guard_free(&g);

	assert_int_equal(count_rows("SELECT count(*) FROM failures WHERE prefix = '192.0.2.9/32'"), 1);
	assert_int_equal(count_rows("SELECT count(*) FROM failures WHERE prefix = '192.0.2.7/32'"), 0);
	assert_int_equal(count_rows("SELECT count(*) FROM bans WHERE prefix = '192.0.2.7/32'"), 0);
	assert_int_equal(count_rows("SELECT ban_count FROM bans WHERE prefix = '192.0.2.5/32'"), 1);

	/* A new process: new guard, new hash seed. */
	now += 10;
	g = reload(now);
	uint64_t exp = 0;
	assert_true(guard_check_connect(g, sa("192.0.2.1"), now, &exp));
	assert_int_equal(exp, now - 10 + 600);
	assert_true(guard_check_connect(g, sa("2001:db8:7:7::abcd"), now, NULL));
	assert_true(guard_check_connect(g, sa("198.51.100.200"), now, &exp));
	assert_int_equal(exp, now - 10 + 7200);
	assert_false(guard_check_connect(g, sa("192.0.2.5"), now, NULL)); /* expired */
	assert_false(guard_check_connect(g, sa("192.0.2.6"), now, NULL)); /* lifted */
	assert_false(guard_check_connect(g, sa("192.0.2.7"), now, NULL)); /* forgotten */

	/* Escalation continues: E's next ban is the second in its chain. */
	r = fails(g, "192.0.2.5", 5, now);
	assert_true(r.banned);
	assert_int_equal(r.ban_seconds, 1200);
	assert_int_equal(r.ban_count, 2);
	/* F was lifted, not forgotten: it escalates too. G starts over. */
	assert_int_equal(fails(g, "192.0.2.6", 5, now).ban_seconds, 1200);
	assert_int_equal(fails(g, "192.0.2.7", 5, now).ban_seconds, 600);
	/* B's three failures still count: two more ban it. */
	r = fails(g, "192.0.2.2", 1, now);
	assert_int_equal(r.failures, 4);
	assert_true(fails(g, "192.0.2.2", 1, now).banned);
	/* A's history is there for "why". */
	struct why w = {0};
	c = cidr("192.0.2.1");
	guard_why(g, &c, now, on_why, &w);
	assert_int_equal(w.n, 1);
	assert_int_equal(w.nrecent, 5);
	assert_string_equal(w.user, "mallory@example.org");
	/* The user's counter came back as well. */
	r = fails(g, "203.0.113.1", 1, now);
	assert_true(r.user_failures >= 10);
	assert_true(r.user_delay_ms > 0);

	/* After A's ban ends, its next one escalates as well. */
	guard_expire(g, now + 700);
	r = fails(g, "192.0.2.1", 5, now + 700);
	assert_int_equal(r.ban_seconds, 1200);
	guard_free(&g);
}

/* Writes are committed as they go: a kill -9 after the writer caught up
 * loses nothing. */
static void test_kill9(void **state)
{
	(void)state;
	uint64_t now = (uint64_t)time(NULL);
	pid_t pid = fork();

	assert_true(pid != -1);
	if (pid == 0) {
		struct guard *g = mk_guard(1);
		struct store_sqlite *s = NULL;
		char err[256];
		if (store_sqlite_open(dbpath, NULL, &s, err, sizeof err) != 0)
			_exit(2);
		guard_set_sink(g, store_sqlite_event, s);
		fails(g, "203.0.113.50", 5, now);
		fails(g, "203.0.113.51", 2, now);
		if (store_sqlite_sync(s) != 0)
			_exit(3);
		/* Queued but maybe not committed: must not corrupt anything. */
		fails(g, "203.0.113.52", 5, now);
		raise(SIGKILL);
		_exit(4);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);

	struct guard *g = reload(now + 1);
	assert_true(guard_check_connect(g, sa("203.0.113.50"), now + 1, NULL));
	struct guard_failure_result r = fails(g, "203.0.113.51", 1, now + 1);
	assert_int_equal(r.failures, 3);
	guard_free(&g);
}

/* The loop never waits for the disk: with the database locked by someone
 * else the pushes return at once, the failure queue overflows (oldest
 * dropped, counted) and the ban still reaches the disk. */
/* A second connection holding the write lock. It waits for the store's
 * writer thread, which may still be setting the file up: without a busy
 * timeout BEGIN IMMEDIATE failed now and then under the sanitizers. */
static sqlite3 *lock_db(void)
{
	sqlite3 *db;

	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 10000);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	return db;
}

static void test_overflow_keeps_bans(void **state)
{
	(void)state;
	struct store_sqlite_opts o = {.queue_max = 8};
	struct store_sqlite *s = open_store(&o);
	struct guard *g = mk_guard(2);
	uint64_t now = (uint64_t)time(NULL);
	sqlite3 *blocker;
	char ip[32];

	guard_set_sink(g, store_sqlite_event, s);
	blocker = lock_db();

	/* The producer never waits for room (it would wait for the COMMIT
	 * below forever): what does not fit is dropped, counted. */
	for (int i = 0; i < 500; i++) {
		snprintf(ip, sizeof ip, "10.%d.%d.1", i / 200, i % 200);
		fails(g, ip, 1, now);
	}
	fails(g, "10.9.9.9", 5, now); /* 4 more failures and a ban */

	struct store_sqlite_stats st;
	store_sqlite_get_stats(s, &st);
	assert_true(st.dropped >= 400);
	assert_true(st.queued <= 8 + 1);

	assert_int_equal(sqlite3_exec(blocker, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(blocker);
	assert_int_equal(store_sqlite_sync(s), 0);
	close_store(&s);
	guard_free(&g);

	assert_int_equal(count_rows("SELECT count(*) FROM bans WHERE prefix = '10.9.9.9/32'"), 1);
	assert_true(count_rows("SELECT count(*) FROM failures") <= 8 + 8);
}

/* A batch that cannot be written is reported; its ban records are kept
 * and written on a later try, its failure records are dropped. */
static void test_write_error_retries_bans(void **state)
{
	(void)state;
	struct store_sqlite_opts o = {.busy_timeout_ms = 50};
	struct store_sqlite *s = open_store(&o);
	struct guard *g = mk_guard(4);
	uint64_t now = (uint64_t)time(NULL);
	struct store_sqlite_stats st;
	sqlite3 *blocker;
	char err[512];

	guard_set_sink(g, store_sqlite_event, s);
	assert_int_equal(store_sqlite_take_error(s, err, sizeof err), 0);
	blocker = lock_db();
	assert_true(fails(g, "192.0.2.77", 5, now).banned);
	assert_int_equal(store_sqlite_sync(s), -1);
	assert_int_equal(store_sqlite_take_error(s, err, sizeof err), 1);
	assert_non_null(strstr(err, dbpath));
	assert_non_null(strstr(err, "locked"));
	assert_int_equal(store_sqlite_take_error(s, err, sizeof err), 0);
	store_sqlite_get_stats(s, &st);
	assert_true(st.errors >= 1);
	assert_int_equal(st.dropped, 5);
	assert_int_equal(st.queued, 1); /* the ban, waiting for its retry */

	assert_int_equal(sqlite3_exec(blocker, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(blocker);
	fails(g, "192.0.2.78", 1, now);
	assert_int_equal(store_sqlite_sync(s), 0);
	close_store(&s);
	guard_free(&g);
	assert_int_equal(count_rows("SELECT count(*) FROM bans WHERE prefix = '192.0.2.77/32'"), 1);
	assert_int_equal(count_rows("SELECT count(*) FROM failures WHERE prefix = '192.0.2.77/32'"), 0);
	assert_int_equal(count_rows("SELECT count(*) FROM failures WHERE prefix = '192.0.2.78/32'"), 1);
}

/* Old rows go; failures of a prefix that is still banned stay. */
static void test_retention(void **state)
{
	(void)state;
	uint64_t now = (uint64_t)time(NULL);
	struct store_sqlite *s = open_store(NULL);
	struct guard *g = mk_guard(3);
	struct cidr c;
	const char *why;

	guard_set_sink(g, store_sqlite_event, s);
	fails(g, "192.0.2.10", 3, now - 50000);
	fails(g, "192.0.2.11", 3, now - 50000);
	c = cidr("192.0.2.11");
	assert_int_equal(guard_ban(g, &c, 100000, "ctl", now - 50000, NULL, &why), 0);
	fails(g, "192.0.2.12", 5, now - 50000); /* ban ended long ago */
	fails(g, "192.0.2.13", 2, now);
	assert_int_equal(store_sqlite_sync(s), 0);
	close_store(&s);
	guard_free(&g);
	assert_int_equal(count_rows("SELECT count(*) FROM failures"), 3 + 3 + 5 + 2);

	/* The writer prunes when it starts. */
	struct store_sqlite_opts o = {.keep_failures = 1000, .keep_bans = 1000};
	s = open_store(&o);
	close_store(&s);
	assert_int_equal(count_rows("SELECT count(*) FROM failures WHERE prefix = '192.0.2.10/32'"), 0);
	assert_int_equal(count_rows("SELECT count(*) FROM failures WHERE prefix = '192.0.2.11/32'"), 3);
	assert_int_equal(count_rows("SELECT count(*) FROM failures WHERE prefix = '192.0.2.13/32'"), 2);
	assert_int_equal(count_rows("SELECT count(*) FROM bans WHERE prefix = '192.0.2.12/32'"), 0);
	assert_int_equal(count_rows("SELECT count(*) FROM bans WHERE prefix = '192.0.2.11/32'"), 1);
}

/* A database made by the previous version (schema 1, no proto column)
 * opens, gains the column with "imap" for its old rows, and loads. */
static void test_upgrade_from_schema_1(void **state)
{
	(void)state;
	uint64_t now = (uint64_t)time(NULL);
	sqlite3 *db;
	char sql[512];

	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	snprintf(sql, sizeof sql,
	         "CREATE TABLE bans (prefix TEXT PRIMARY KEY, started INTEGER NOT NULL, expiry INTEGER NOT NULL,"
	         " ban_count INTEGER NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL);"
	         "CREATE TABLE failures (id INTEGER PRIMARY KEY, prefix TEXT NOT NULL, user TEXT NOT NULL,"
	         " time INTEGER NOT NULL, reason TEXT NOT NULL, status TEXT NOT NULL);"
	         "INSERT INTO failures(prefix, user, time, reason, status)"
	         " VALUES ('192.0.2.77/32', 'old', %llu, 'auth_failed', 'counted');"
	         "PRAGMA user_version=1;",
	         (unsigned long long)now - 10);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	struct store_sqlite *s = open_store(NULL);
	struct guard *g = mk_guard(7);
	char err[256];
	assert_int_equal(store_sqlite_load(s, g, now, err, sizeof err), 0);
	guard_set_sink(g, store_sqlite_event, s);
	uint8_t h[GUARD_PWHASH_LEN] = {4};
	struct guard_failure_result r;
	assert_int_equal(guard_record_failure(g, sa("192.0.2.77"), "new", h, "auth_failed", "smtp", now, &r), 0);
	assert_int_equal(r.failures, 2); /* the old row counted again */
	assert_int_equal(store_sqlite_sync(s), 0);
	close_store(&s);
	guard_free(&g);
	assert_int_equal(count_rows("PRAGMA user_version"), 3);
	assert_int_equal(count_rows("SELECT count(*) FROM failures WHERE node = ''"), 2);
	assert_int_equal(count_rows("SELECT count(*) FROM failures WHERE user = 'old' AND proto = 'imap'"), 1);
	assert_int_equal(count_rows("SELECT count(*) FROM failures WHERE user = 'new' AND proto = 'smtp'"), 1);
}

static void test_bad_path(void **state)
{
	(void)state;
	struct store_sqlite *s = NULL;
	char err[256] = "";

	assert_int_equal(store_sqlite_open("/nonexistent-imapgate/dir/guard.db", NULL, &s, err, sizeof err), -1);
	assert_null(s);
	assert_non_null(strstr(err, "/nonexistent-imapgate/dir/guard.db: "));
	assert_non_null(strstr(err, "No such file"));

	/* A directory where the file should be. */
	err[0] = '\0';
	assert_int_equal(store_sqlite_open(dir, NULL, &s, err, sizeof err), -1);
	assert_null(s);
	assert_non_null(strstr(err, dir));

	/* A file that is not a database. */
	FILE *f = fopen(dbpath, "w");
	assert_non_null(f);
	fputs("this is not sqlite, just text long enough to have a header........................"
	      "....................................................................\n", f);
	fclose(f);
	err[0] = '\0';
	assert_int_equal(store_sqlite_open(dbpath, NULL, &s, err, sizeof err), -1);
	assert_non_null(strstr(err, "not a database"));
	unlink(dbpath);

	assert_int_equal(store_sqlite_close(&s, err, sizeof err), 0); /* NULL is fine */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip_and_escalation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kill9, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overflow_keeps_bans, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_error_retries_bans, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_from_schema_1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_path, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
