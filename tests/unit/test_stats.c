/* Unit tests for stats (counters, peaks, reset, the shared file and its
 * readers, text and Prometheus formats) and metrics (the HTTP endpoint,
 * over a real loopback socket driven by the real loop). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "stats.h"

#define FILE_SIZE (48 + STAT_COUNT * 8)

static char dir[64];
static char path_a[128], path_b[128];

static void zero_all(void)
{
	for (int i = 0; i < STAT_COUNT; i++)
		if (stats_kind((enum stat_id)i) == STAT_KIND_GAUGE)
			STATS_SET(i, 0);
	stats_reset();
	for (int i = 0; i < STAT_COUNT; i++)
		assert_int_equal(stats_get((enum stat_id)i), 0);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_stats.XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path_a, sizeof(path_a), "%s/a.stats", dir);
	snprintf(path_b, sizeof(path_b), "%s/b.stats", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[160];

	(void)state;
	stats_close();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int each_setup(void **state)
{
	(void)state;
	stats_close();
	zero_all();
	unlink(path_a);
	unlink(path_b);
	return 0;
}

static void read_file(const char *p, void *out, size_t n)
{
	int fd = open(p, O_RDONLY);

	assert_true(fd != -1);
	assert_int_equal(read(fd, out, n), (ssize_t)n);
	close(fd);
}

/* ------------------------------------------------------------------ */

static void test_before_open_and_null_path(void **state)
{
	const char *err = "x";
	uint64_t t0 = (uint64_t)time(NULL);

	(void)state;
	/* Counting works with no file at all. */
	STATS_INC(STAT_CLIENT_CONNECTIONS_TOTAL);
	assert_int_equal(stats_get(STAT_CLIENT_CONNECTIONS_TOTAL), 1);
	assert_int_equal(stats_open(NULL, (uid_t)-1, (gid_t)-1, &err), 0);
	assert_null(err);
	/* ...and what was counted before stays. */
	assert_int_equal(stats_get(STAT_CLIENT_CONNECTIONS_TOTAL), 1);
	assert_true(stats_start_time() >= t0 - 1 && stats_start_time() <= (uint64_t)time(NULL));
	STATS_ADD(STAT_BYTES_TO_CLIENTS_TOTAL, 1000);
	assert_int_equal(stats_get(STAT_BYTES_TO_CLIENTS_TOTAL), 1000);
}

static void test_names_and_kinds(void **state)
{
	(void)state;
	assert_string_equal(stats_name(STAT_CLIENT_CONNECTIONS_CURRENT), "client_connections_current");
	assert_string_equal(stats_name(STAT_SELECT_CACHE_MISSES_TOTAL), "select_cache_misses_total");
	assert_string_equal(stats_name(STAT_GUARD_BANS_ACTIVE), "guard_bans_active");
	assert_string_equal(stats_name(STAT_BYTES_TO_CLIENTS_TOTAL), "bytes_to_clients_total");
	assert_null(stats_name(STAT_COUNT));
	assert_null(stats_help(STAT_COUNT));
	assert_int_equal(stats_get(STAT_COUNT), 0);
	for (int i = 0; i < STAT_COUNT; i++) {
		const char *n = stats_name((enum stat_id)i), *h = stats_help((enum stat_id)i);
		size_t len = strlen(n);
		enum stat_kind k = stats_kind((enum stat_id)i);

		assert_true(len > 0 && strspn(n, "abcdefghijklmnopqrstuvwxyz0123456789_") == len);
		assert_non_null(h);
		assert_true(strlen(h) > 5 && strchr(h, '\n') == NULL && strchr(h, '\\') == NULL);
		for (int j = 0; j < i; j++)
			assert_string_not_equal(n, stats_name((enum stat_id)j));
		if (k == STAT_KIND_COUNTER)
			assert_string_equal(n + len - 6, "_total");
		else if (k == STAT_KIND_PEAK)
			assert_string_equal(n + len - 5, "_peak");
		else
			assert_true(strcmp(n + len - 6, "_total") != 0);
	}
}

static void test_gauges_and_peaks(void **state)
{
	(void)state;
	STATS_INC(STAT_CLIENT_CONNECTIONS_CURRENT);
	STATS_INC(STAT_CLIENT_CONNECTIONS_CURRENT);
	STATS_INC(STAT_CLIENT_CONNECTIONS_CURRENT);
	STATS_DEC(STAT_CLIENT_CONNECTIONS_CURRENT);
	STATS_DEC(STAT_CLIENT_CONNECTIONS_CURRENT);
	assert_int_equal(stats_get(STAT_CLIENT_CONNECTIONS_CURRENT), 1);
	assert_int_equal(stats_get(STAT_CLIENT_CONNECTIONS_PEAK), 3);
	STATS_INC(STAT_CLIENT_CONNECTIONS_CURRENT);
	assert_int_equal(stats_get(STAT_CLIENT_CONNECTIONS_PEAK), 3);

	/* Each gauge raises its own peak, not another's. */
	STATS_SET(STAT_SERVER_CONNECTIONS_RETAINED_CURRENT, 7);
	assert_int_equal(stats_get(STAT_SERVER_CONNECTIONS_RETAINED_PEAK), 7);
	assert_int_equal(stats_get(STAT_SERVER_CONNECTIONS_IN_USE_PEAK), 0);
	STATS_SET(STAT_SERVER_CONNECTIONS_RETAINED_CURRENT, 2);
	assert_int_equal(stats_get(STAT_SERVER_CONNECTIONS_RETAINED_CURRENT), 2);
	assert_int_equal(stats_get(STAT_SERVER_CONNECTIONS_RETAINED_PEAK), 7);
	STATS_ADD(STAT_SERVER_CONNECTIONS_IN_USE_CURRENT, 5);
	assert_int_equal(stats_get(STAT_SERVER_CONNECTIONS_IN_USE_PEAK), 5);

	/* A gauge without a peak. */
	STATS_SET(STAT_GUARD_BANS_ACTIVE, 4);
	STATS_DEC(STAT_GUARD_BANS_ACTIVE);
	assert_int_equal(stats_get(STAT_GUARD_BANS_ACTIVE), 3);

	/* Below zero stops at zero. */
	STATS_SET(STAT_GUARD_BANS_ACTIVE, 0);
	STATS_DEC(STAT_GUARD_BANS_ACTIVE);
	assert_int_equal(stats_get(STAT_GUARD_BANS_ACTIVE), 0);

	/* Counters are counters; an id out of range changes nothing. */
	STATS_INC(STAT_CLIENT_LOGINS_TOTAL);
	STATS_ADD(STAT_BYTES_FROM_CLIENTS_TOTAL, 123456789012ull);
	assert_int_equal(stats_get(STAT_CLIENT_LOGINS_TOTAL), 1);
	assert_true(stats_get(STAT_BYTES_FROM_CLIENTS_TOTAL) == 123456789012ull);
	STATS_INC(STAT_COUNT);
	STATS_INC((enum stat_id)-1);
	assert_int_equal(stats_get(STAT_CLIENT_LOGINS_TOTAL), 1);
}

static void test_reset(void **state)
{
	uint64_t start, before;

	(void)state;
	STATS_SET(STAT_CLIENT_CONNECTIONS_CURRENT, 10);
	STATS_SET(STAT_CLIENT_CONNECTIONS_CURRENT, 4);
	STATS_SET(STAT_SERVER_CONNECTIONS_IN_USE_CURRENT, 3);
	STATS_SET(STAT_GUARD_BANS_ACTIVE, 2);
	STATS_ADD(STAT_CLIENT_CONNECTIONS_TOTAL, 50);
	STATS_ADD(STAT_SELECT_CACHE_HITS_TOTAL, 5);
	STATS_ADD(STAT_GUARD_BANS_TOTAL, 9);
	start = stats_start_time();
	before = (uint64_t)time(NULL);
	stats_reset();
	/* Totals to zero. */
	assert_int_equal(stats_get(STAT_CLIENT_CONNECTIONS_TOTAL), 0);
	assert_int_equal(stats_get(STAT_SELECT_CACHE_HITS_TOTAL), 0);
	assert_int_equal(stats_get(STAT_GUARD_BANS_TOTAL), 0);
	/* Current gauges kept. */
	assert_int_equal(stats_get(STAT_CLIENT_CONNECTIONS_CURRENT), 4);
	assert_int_equal(stats_get(STAT_SERVER_CONNECTIONS_IN_USE_CURRENT), 3);
	assert_int_equal(stats_get(STAT_GUARD_BANS_ACTIVE), 2);
	/* Peaks restart from the current value, never below it. */
	assert_int_equal(stats_get(STAT_CLIENT_CONNECTIONS_PEAK), 4);
	assert_int_equal(stats_get(STAT_SERVER_CONNECTIONS_IN_USE_PEAK), 3);
	assert_int_equal(stats_get(STAT_SERVER_CONNECTIONS_RETAINED_PEAK), 0);
	/* count_time moves, start_time does not. */
	assert_true(stats_count_time() >= before && stats_count_time() <= (uint64_t)time(NULL));
	assert_true(stats_start_time() == start);
}

static void test_file_header_and_mode(void **state)
{
	const char *err = "x";
	struct stats_header h;
	uint64_t c[STAT_COUNT];
	unsigned char raw[FILE_SIZE];
	struct stat st;
	uint64_t t0 = (uint64_t)time(NULL);

	(void)state;
	STATS_ADD(STAT_CLIENT_LOGINS_TOTAL, 3); /* counted before the file: carried over */
	assert_int_equal(stats_open(path_a, (uid_t)-1, (gid_t)-1, &err), 0);
	assert_null(err);
	assert_int_equal(stat(path_a, &st), 0);
	assert_int_equal(st.st_size, FILE_SIZE);
	assert_int_equal(st.st_mode & 07777, 0644);
	read_file(path_a, raw, sizeof(raw));
	memcpy(&h, raw, sizeof(h));
	assert_memory_equal(h.magic, "IMAPGATE-STATS\0\0", 16);
	assert_int_equal(h.version, 1);
	assert_int_equal(h.header_size, 48);
	assert_int_equal(h.n_counters, STAT_COUNT);
	assert_int_equal(h.pid, (uint32_t)getpid());
	assert_true(h.start_time > 0 && h.start_time <= (uint64_t)time(NULL));
	assert_true(h.count_time >= t0 && h.count_time <= (uint64_t)time(NULL));
	memcpy(c, raw + 48, sizeof(c));
	assert_int_equal(c[STAT_CLIENT_LOGINS_TOTAL], 3);

	/* Writes land in the file, at the enum's offsets. */
	STATS_INC(STAT_CLIENT_CONNECTIONS_CURRENT);
	STATS_ADD(STAT_BYTES_TO_CLIENTS_TOTAL, 0x0102030405060708ull);
	read_file(path_a, raw, sizeof(raw));
	memcpy(c, raw + 48, sizeof(c));
	assert_int_equal(c[STAT_CLIENT_CONNECTIONS_CURRENT], 1);
	assert_int_equal(c[STAT_CLIENT_CONNECTIONS_PEAK], 1);
	assert_true(c[STAT_BYTES_TO_CLIENTS_TOTAL] == 0x0102030405060708ull);
	assert_int_equal(c[STAT_CLIENT_LOGINS_TOTAL], 3);

	/* The same path again changes nothing. */
	assert_int_equal(stats_open(path_a, (uid_t)-1, (gid_t)-1, &err), 0);
	assert_int_equal(stats_get(STAT_CLIENT_LOGINS_TOTAL), 3);
}

static void test_existing_file_is_resized_and_zeroed(void **state)
{
	const char *err;
	char junk[4096];
	uint64_t c[STAT_COUNT];
	unsigned char raw[FILE_SIZE];
	struct stat st;
	int fd;

	(void)state;
	memset(junk, 0x5a, sizeof(junk));
	fd = open(path_a, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd != -1);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	assert_int_equal(stats_open(path_a, (uid_t)-1, (gid_t)-1, &err), 0);
	assert_int_equal(stat(path_a, &st), 0);
	assert_int_equal(st.st_size, FILE_SIZE);
	assert_int_equal(st.st_mode & 07777, 0644);
	read_file(path_a, raw, sizeof(raw));
	memcpy(c, raw + 48, sizeof(c));
	for (int i = 0; i < STAT_COUNT; i++)
		assert_int_equal(c[i], 0);
}

static void test_reader_mapping(void **state)
{
	const char *err;
	struct stats_view v, v2;
	struct stats_snapshot s;

	(void)state;
	assert_int_equal(stats_open(path_a, (uid_t)-1, (gid_t)-1, &err), 0);
	STATS_SET(STAT_SERVER_CONNECTIONS_RETAINED_CURRENT, 6);
	STATS_INC(STAT_GUARD_FAILURES_TOTAL);

	assert_int_equal(stats_view_open(path_a, &v, &err), 0);
	assert_null(err);
	stats_view_snapshot(&v, &s);
	assert_int_equal(s.n, STAT_COUNT);
	assert_int_equal(s.n_file, STAT_COUNT);
	assert_int_equal(s.pid, (uint32_t)getpid());
	assert_true(s.start_time == stats_start_time());
	assert_true(s.count_time == stats_count_time());
	assert_int_equal(s.v[STAT_SERVER_CONNECTIONS_RETAINED_CURRENT], 6);
	assert_int_equal(s.v[STAT_SERVER_CONNECTIONS_RETAINED_PEAK], 6);
	assert_int_equal(s.v[STAT_GUARD_FAILURES_TOTAL], 1);

	/* Live: the reader sees later writes without reopening. */
	STATS_INC(STAT_GUARD_FAILURES_TOTAL);
	stats_reset();
	STATS_INC(STAT_GUARD_FAILURES_TOTAL);
	stats_view_snapshot(&v, &s);
	assert_int_equal(s.v[STAT_GUARD_FAILURES_TOTAL], 1);
	assert_true(s.count_time == stats_count_time());

	/* Moving to another file carries the values; the reader of the old one
	 * keeps a valid (frozen) mapping. */
	assert_int_equal(stats_open(path_b, (uid_t)-1, (gid_t)-1, &err), 0);
	STATS_INC(STAT_GUARD_FAILURES_TOTAL);
	assert_int_equal(stats_get(STAT_GUARD_FAILURES_TOTAL), 2);
	assert_int_equal(stats_get(STAT_SERVER_CONNECTIONS_RETAINED_CURRENT), 6);
	stats_view_snapshot(&v, &s);
	assert_int_equal(s.v[STAT_GUARD_FAILURES_TOTAL], 1);
	assert_int_equal(stats_view_open(path_b, &v2, &err), 0);
	stats_view_snapshot(&v2, &s);
	assert_int_equal(s.v[STAT_GUARD_FAILURES_TOTAL], 2);
	stats_view_close(&v2);

	/* A restart on the same file keeps its inode and size: a reader's
	 * mapping stays valid (no SIGBUS) and sees the new values. */
	stats_close();
	assert_int_equal(stats_open(path_a, (uid_t)-1, (gid_t)-1, &err), 0);
	STATS_INC(STAT_GUARD_FAILURES_TOTAL);
	stats_view_snapshot(&v, &s);
	assert_int_equal(s.v[STAT_GUARD_FAILURES_TOTAL], 3);
	assert_int_equal(stats_view_open(path_a, &v2, &err), 0);
	assert_true(v2.ino == v.ino && v2.len == v.len);
	stats_view_close(&v2);

	stats_view_close(&v);
	assert_null(v.map);
	stats_view_close(&v); /* twice is fine */
}

static void write_file(const char *p, const void *data, size_t n)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd != -1);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	close(fd);
}

static void expect_view_error(const char *p, const char *needle)
{
	struct stats_view v = {0};
	const char *err = NULL;

	assert_int_equal(stats_view_open(p, &v, &err), -1);
	assert_non_null(err);
	if (strstr(err, needle) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, needle);
	assert_null(v.map);
}

static void test_reader_errors(void **state)
{
	unsigned char raw[FILE_SIZE];
	struct stats_header h;
	char bad[160];
	const char *err;

	(void)state;
	snprintf(bad, sizeof(bad), "%s/missing", dir);
	expect_view_error(bad, "cannot open stat file");
	expect_view_error(bad, "No such file");
	expect_view_error(dir, "not a regular file");

	write_file(path_b, "", 0);
	expect_view_error(path_b, "empty");
	write_file(path_b, "IMAPGATE", 8);
	expect_view_error(path_b, "too short");

	/* An imapproxy stat file: two time_t then unsigned ints. */
	memset(raw, 0, sizeof(raw));
	raw[0] = 0x11;
	write_file(path_b, raw, sizeof(raw));
	expect_view_error(path_b, "bad magic");

	assert_int_equal(stats_open(path_a, (uid_t)-1, (gid_t)-1, &err), 0);
	read_file(path_a, raw, sizeof(raw));
	memcpy(&h, raw, sizeof(h));
	h.version = 2;
	memcpy(raw, &h, sizeof(h));
	write_file(path_b, raw, sizeof(raw));
	expect_view_error(path_b, "version 2");

	memcpy(&h, raw, sizeof(h));
	h.version = 1;
	h.n_counters = STAT_COUNT + 1;
	memcpy(raw, &h, sizeof(h));
	write_file(path_b, raw, sizeof(raw));
	expect_view_error(path_b, "damaged");

	h.n_counters = STAT_COUNT;
	h.header_size = 44;
	memcpy(raw, &h, sizeof(h));
	write_file(path_b, raw, sizeof(raw));
	expect_view_error(path_b, "damaged");
}

static void test_reader_other_layouts(void **state)
{
	/* An older writer with fewer counters, a newer one with more (and a
	 * bigger header): the reader shows what both know. */
	unsigned char raw[64 + (STAT_COUNT + 2) * 8];
	struct stats_header h;
	struct stats_view v;
	struct stats_snapshot s;
	const char *err;
	uint64_t val;

	(void)state;
	memset(raw, 0, sizeof(raw));
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, STATS_MAGIC, 16);
	h.version = 1;
	h.header_size = 48;
	h.n_counters = 3;
	h.start_time = 1000;
	memcpy(raw, &h, sizeof(h));
	val = 77;
	memcpy(raw + 48 + 2 * 8, &val, 8);
	write_file(path_b, raw, 48 + 3 * 8);
	assert_int_equal(stats_view_open(path_b, &v, &err), 0);
	stats_view_snapshot(&v, &s);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.v[2], 77);
	assert_int_equal(s.start_time, 1000);
	stats_view_close(&v);

	h.header_size = 64;
	h.n_counters = STAT_COUNT + 2;
	memset(raw, 0, sizeof(raw));
	memcpy(raw, &h, sizeof(h));
	val = 88;
	memcpy(raw + 64 + STAT_BYTES_TO_CLIENTS_TOTAL * 8, &val, 8);
	write_file(path_b, raw, sizeof(raw));
	assert_int_equal(stats_view_open(path_b, &v, &err), 0);
	stats_view_snapshot(&v, &s);
	assert_int_equal(s.n, STAT_COUNT);
	assert_int_equal(s.n_file, STAT_COUNT + 2);
	assert_int_equal(s.v[STAT_BYTES_TO_CLIENTS_TOTAL], 88);
	stats_view_close(&v);
}

static void expect_open_error(const char *p, const char *needle)
{
	const char *err = NULL;

	assert_int_equal(stats_open(p, (uid_t)-1, (gid_t)-1, &err), -1);
	assert_non_null(err);
	if (strstr(err, needle) == NULL)
		fail_msg("error \"%s\" lacks \"%s\"", err, needle);
}

static void test_open_errors(void **state)
{
	char p[200], target[200];
	const char *err;
	unsigned char raw[FILE_SIZE];
	uint64_t c[STAT_COUNT];
	struct stat st;

	(void)state;
	assert_int_equal(stats_open(path_a, (uid_t)-1, (gid_t)-1, &err), 0);
	STATS_INC(STAT_CLIENT_LOGINS_TOTAL);

	snprintf(p, sizeof(p), "%s/no/such/dir/stats", dir);
	expect_open_error(p, p);
	expect_open_error(p, "No such file");
	expect_open_error(dir, "");

	/* Never through a symlink, never into a hard-linked file. */
	snprintf(target, sizeof(target), "%s/target", dir);
	write_file(target, "precious", 8);
	snprintf(p, sizeof(p), "%s/link", dir);
	assert_int_equal(symlink(target, p), 0);
	expect_open_error(p, "symbolic link");
	unlink(p);
	assert_int_equal(link(target, p), 0);
	expect_open_error(p, "hard links");
	unlink(p);
	assert_int_equal(stat(target, &st), 0);
	assert_int_equal(st.st_size, 8);

	/* After each failure the previous file is still the one counted in. */
	STATS_INC(STAT_CLIENT_LOGINS_TOTAL);
	read_file(path_a, raw, sizeof(raw));
	memcpy(c, raw + 48, sizeof(c));
	assert_int_equal(c[STAT_CLIENT_LOGINS_TOTAL], 2);

	if (geteuid() == 0) {
		/* As root: handed to the run user, and a file that belongs to
		 * someone else is refused. */
		assert_int_equal(stats_open(path_b, 65534, 65534, &err), 0);
		assert_int_equal(stat(path_b, &st), 0);
		assert_int_equal(st.st_uid, 65534);
		assert_int_equal(st.st_gid, 65534);
		stats_close();
		assert_int_equal(stats_open(path_b, 65534, 65534, &err), 0);
		stats_close();
		assert_int_equal(chown(path_b, 12345, 12345), 0);
		expect_open_error(path_b, "belongs to uid 12345");
		assert_int_equal(stats_open(path_a, (uid_t)-1, (gid_t)-1, &err), 0);
	} else {
		/* Files are created with the configured mode even in a directory
		 * we may not write: an unwritable directory is a clear error. */
		snprintf(p, sizeof(p), "%s/ro", dir);
		assert_int_equal(mkdir(p, 0500), 0);
		snprintf(target, sizeof(target), "%s/ro/stats", dir);
		expect_open_error(target, "Permission denied");
	}
}

static void test_text_format(void **state)
{
	struct buf b;
	char want[128];
	const char *text;
	size_t lines = 0;

	(void)state;
	STATS_SET(STAT_CLIENT_CONNECTIONS_CURRENT, 2);
	STATS_SET(STAT_CLIENT_CONNECTIONS_CURRENT, 1);
	STATS_ADD(STAT_BYTES_FROM_CLIENTS_TOTAL, 18446744073709551615ull);
	buf_init(&b, 8192);
	assert_int_equal(stats_format_text(&b), 0);
	assert_int_equal(buf_append(&b, "", 1), 0);
	text = buf_ptr(&b);
	snprintf(want, sizeof(want), "start_time %" PRIu64 "\ncount_time %" PRIu64 "\nuptime_seconds ",
	         stats_start_time(), stats_count_time());
	assert_memory_equal(text, want, strlen(want));
	assert_non_null(strstr(text, "\nclient_connections_current 1\nclient_connections_peak 2\n"
	                             "client_connections_total 0\n"));
	assert_non_null(strstr(text, "\nbytes_from_clients_total 18446744073709551615\n"));
	/* Ends with the last counter. */
	assert_non_null(strstr(text, "\nbytes_to_clients_total 0\n"));
	assert_int_equal(text[strlen(text) - 1], '\n');
	assert_non_null(strstr(text, "\nclient_connections_evicted_total 0\nguard_failures_imap_total 0\n"));
	assert_non_null(strstr(text, "\npolicy_bad_requests_total 0\nredis_up 0\nredis_events_sent_total 0\n"));
	assert_non_null(strstr(text, "\nredis_reconnects_total 0\nfirewall_updates_total 0\n"));
	assert_string_equal(strstr(text, "\nfirewall_errors_total 0\nredis_events_queued 0\n"),
	                    "\nfirewall_errors_total 0\nredis_events_queued 0\n");
	for (const char *q = text; *q; q++)
		lines += *q == '\n';
	assert_int_equal(lines, 3 + STAT_COUNT);
	buf_free(&b);

	/* A snapshot formats the same way, uptime from the given clock. */
	{
		struct stats_snapshot s;

		memset(&s, 0, sizeof(s));
		s.start_time = 1000;
		s.count_time = 1500;
		s.n = 2;
		s.v[0] = 5;
		s.v[1] = 9;
		buf_init(&b, 8192);
		assert_int_equal(stats_format_text_snapshot(&s, 4600, &b), 0);
		assert_int_equal(buf_append(&b, "", 1), 0);
		assert_string_equal(buf_ptr(&b), "start_time 1000\ncount_time 1500\nuptime_seconds 3600\n"
		                                 "client_connections_current 5\nclient_connections_peak 9\n");
		buf_free(&b);
	}

	/* Too small: -1. */
	buf_init(&b, 64);
	assert_int_equal(stats_format_text(&b), -1);
	buf_free(&b);
}

static void test_prometheus_format(void **state)
{
	struct buf b;
	const char *text;
	char want[256];

	(void)state;
	STATS_SET(STAT_CLIENT_CONNECTIONS_CURRENT, 2);
	STATS_ADD(STAT_CLIENT_CONNECTIONS_TOTAL, 41);
	STATS_SET(STAT_GUARD_BANS_ACTIVE, 3);
	buf_init(&b, STATS_PROMETHEUS_MAX);
	assert_int_equal(stats_format_prometheus(&b), 0);
	assert_true(buf_len(&b) < STATS_PROMETHEUS_MAX / 2);
	assert_int_equal(buf_append(&b, "", 1), 0);
	text = buf_ptr(&b);
	assert_memory_equal(text,
	                    "# HELP imapgate_client_connections_current Client connections open now.\n"
	                    "# TYPE imapgate_client_connections_current gauge\n"
	                    "imapgate_client_connections_current 2\n"
	                    "# HELP imapgate_client_connections_peak ",
	                    strlen("# HELP imapgate_client_connections_current Client connections open now.\n"
	                           "# TYPE imapgate_client_connections_current gauge\n"
	                           "imapgate_client_connections_current 2\n"
	                           "# HELP imapgate_client_connections_peak "));
	assert_non_null(strstr(text, "\n# TYPE imapgate_client_connections_peak gauge\n"
	                             "imapgate_client_connections_peak 2\n"));
	assert_non_null(strstr(text, "\n# HELP imapgate_client_connections_total Client connections accepted.\n"
	                             "# TYPE imapgate_client_connections_total counter\n"
	                             "imapgate_client_connections_total 41\n"));
	assert_non_null(strstr(text, "\n# TYPE imapgate_guard_bans_active gauge\nimapgate_guard_bans_active 3\n"));
	snprintf(want, sizeof(want),
	         "\n# TYPE imapgate_start_time_seconds gauge\nimapgate_start_time_seconds %" PRIu64 "\n",
	         stats_start_time());
	assert_non_null(strstr(text, want));
	/* A family: one HELP and TYPE, then one labelled sample per member. */
	STATS_ADD(STAT_GUARD_FAILURES_SMTP, 5);
	assert_non_null(strstr(text, "\n# TYPE imapgate_guard_failures_by_proto_total counter\n"
	                             "imapgate_guard_failures_by_proto_total{proto=\"imap\"} 0\n"
	                             "imapgate_guard_failures_by_proto_total{proto=\"pop3\"} 0\n"
	                             "imapgate_guard_failures_by_proto_total{proto=\"smtp\"} 0\n"));
	buf_free(&b);
	buf_init(&b, STATS_PROMETHEUS_MAX);
	assert_int_equal(stats_format_prometheus(&b), 0);
	assert_int_equal(buf_append(&b, "", 1), 0);
	text = buf_ptr(&b);
	assert_non_null(strstr(text, "imapgate_guard_failures_by_proto_total{proto=\"smtp\"} 5\n"));
	assert_null(strstr(text, "imapgate_guard_failures_smtp_total"));
	/* Every sample line is "imapgate_NAME VALUE", every name has a TYPE. */
	for (int i = 0; i < STAT_COUNT; i++) {
		if (i >= STAT_GUARD_FAILURES_IMAP && i <= STAT_GUARD_FAILURES_OTHER)
			continue; /* the family above */
		snprintf(want, sizeof(want), "\n# TYPE imapgate_%s %s\nimapgate_%s %" PRIu64 "\n",
		         stats_name((enum stat_id)i),
		         stats_kind((enum stat_id)i) == STAT_KIND_COUNTER ? "counter" : "gauge",
		         stats_name((enum stat_id)i), stats_get((enum stat_id)i));
		if (strstr(text, want) == NULL)
			fail_msg("missing: %s", want);
	}
	buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* metrics over loopback                                                */

static void stop_loop(struct loop_timer *t)
{
	loop_stop(t->data);
}

/* Run the loop for about ms milliseconds. */
static void spin(struct loop *l, unsigned ms)
{
	struct loop_timer t = {.fn = stop_loop, .data = l};

	loop_timer_start(l, &t, ms);
	assert_int_equal(loop_run(l), 0);
	loop_timer_stop(l, &t);
}

static int client_connect(unsigned port)
{
	struct sockaddr_in sin;
	struct pollfd pfd;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

	assert_true(fd != -1);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1)
		assert_int_equal(errno, EINPROGRESS);
	pfd.fd = fd;
	pfd.events = POLLOUT;
	assert_int_equal(poll(&pfd, 1, 2000), 1);
	return fd;
}

static void client_send(int fd, const char *s, size_t n)
{
	assert_int_equal(send(fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Drive the loop until the server closes; returns the bytes received
 * (NUL-terminated), or -1 if it never closed within about 2 s. */
static ssize_t client_read_all(struct loop *l, int fd, char *out, size_t cap)
{
	size_t len = 0;

	for (int i = 0; i < 400; i++) {
		spin(l, 5);
		for (;;) {
			ssize_t r = recv(fd, out + len, cap - 1 - len, 0);

			if (r > 0) {
				len += (size_t)r;
				assert_true(len < cap - 1);
				continue;
			}
			if (r == 0) {
				out[len] = '\0';
				return (ssize_t)len;
			}
			/* A reset can destroy the answer before it is read:
			 * the server must drain and close cleanly. */
			if (r == -1 && errno == ECONNRESET)
				fail_msg("connection reset after %zu bytes", len);
			assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
			break;
		}
	}
	out[len] = '\0';
	return -1;
}

static struct loop *ml;

static int metrics_setup(void **state)
{
	const char *err = NULL;

	(void)state;
	each_setup(state);
	ml = loop_new();
	assert_non_null(ml);
	assert_int_equal(metrics_open(ml, "127.0.0.1:0", &err), 0);
	assert_null(err);
	assert_true(metrics_port() > 0);
	return 0;
}

static int metrics_teardown(void **state)
{
	(void)state;
	metrics_close();
	metrics_set_timeout_ms(0);
	assert_int_equal(metrics_port(), 0);
	loop_free(&ml);
	return 0;
}

static ssize_t request(const char *req, char *out, size_t cap)
{
	int fd = client_connect(metrics_port());
	ssize_t n;

	client_send(fd, req, strlen(req));
	n = client_read_all(ml, fd, out, cap);
	close(fd);
	return n;
}

static void test_metrics_get(void **state)
{
	static char resp[65536];
	const char *body, *cl;
	ssize_t n;

	(void)state;
	STATS_SET(STAT_CLIENT_CONNECTIONS_CURRENT, 2);
	STATS_ADD(STAT_CLIENT_LOGINS_TOTAL, 17);
	n = request("GET /metrics HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n", resp,
	            sizeof(resp));
	assert_true(n > 0);
	assert_memory_equal(resp, "HTTP/1.0 200 OK\r\n", 17);
	assert_non_null(strstr(resp, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
	assert_non_null(strstr(resp, "\r\nConnection: close\r\n"));
	body = strstr(resp, "\r\n\r\n");
	assert_non_null(body);
	body += 4;
	cl = strstr(resp, "\r\nContent-Length: ");
	assert_non_null(cl);
	assert_int_equal(strtoul(cl + 18, NULL, 10), strlen(body));
	assert_memory_equal(body, "# HELP imapgate_client_connections_current ", 42);
	assert_non_null(strstr(body, "\nimapgate_client_connections_current 2\n"));
	assert_non_null(strstr(body, "\nimapgate_client_logins_total 17\n"));

	/* A query string is fine; the values are current at each scrape. */
	STATS_INC(STAT_CLIENT_LOGINS_TOTAL);
	n = request("GET /metrics?name[]=x HTTP/1.0\n\n", resp, sizeof(resp));
	assert_true(n > 0);
	assert_memory_equal(resp, "HTTP/1.0 200 OK\r\n", 17);
	assert_non_null(strstr(resp, "\nimapgate_client_logins_total 18\n"));

	/* HEAD: the same head, no body. */
	n = request("HEAD /metrics HTTP/1.0\r\n\r\n", resp, sizeof(resp));
	assert_true(n > 0);
	assert_memory_equal(resp, "HTTP/1.0 200 OK\r\n", 17);
	assert_string_equal(strstr(resp, "\r\n\r\n"), "\r\n\r\n");
}

#define BODY100 "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
#define BODY1000 BODY100 BODY100 BODY100 BODY100 BODY100 BODY100 BODY100 BODY100 BODY100 BODY100

static void test_metrics_not_found_and_bad(void **state)
{
	static char resp[65536];
	static char big[METRICS_HEAD_MAX + 100];
	const char *not_found[] = {
		"GET / HTTP/1.0\r\n\r\n",
		"GET /metricsx HTTP/1.0\r\n\r\n",
		"GET /metric HTTP/1.0\r\n\r\n",
		"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
		"POST /metrics HTTP/1.0\r\nContent-Length: 2000\r\n\r\n" BODY1000 BODY1000,
		"get /metrics HTTP/1.0\r\n\r\n",
	};
	ssize_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(not_found) / sizeof(not_found[0]); i++) {
		n = request(not_found[i], resp, sizeof(resp));
		assert_true(n > 0);
		if (strncmp(resp, "HTTP/1.0 404 Not Found\r\n", 24) != 0)
			fail_msg("%s -> %s", not_found[i], resp);
		assert_null(strstr(resp, "imapgate_"));
	}
	n = request("hello\r\n\r\n", resp, sizeof(resp));
	assert_true(n > 0);
	assert_memory_equal(resp, "HTTP/1.0 400 Bad Request\r\n", 26);

	/* A head that never ends within the limit. */
	memcpy(big, "GET /metrics HTTP/1.0\r\nX: ", 26);
	memset(big + 26, 'a', sizeof(big) - 27);
	big[sizeof(big) - 1] = '\0';
	n = request(big, resp, sizeof(resp));
	assert_true(n > 0);
	assert_memory_equal(resp, "HTTP/1.0 400 Bad Request\r\n", 26);
	assert_null(strstr(resp, "imapgate_"));
}

static void test_metrics_head_in_pieces(void **state)
{
	static char resp[65536];
	const char *req = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n";
	int fd;

	(void)state;
	fd = client_connect(metrics_port());
	for (const char *p = req; *p; p++) {
		client_send(fd, p, 1);
		spin(ml, 1);
	}
	assert_true(client_read_all(ml, fd, resp, sizeof(resp)) > 0);
	assert_memory_equal(resp, "HTTP/1.0 200 OK\r\n", 17);
	close(fd);
}

static void test_metrics_timeout_and_eof(void **state)
{
	static char resp[256];
	int fd;

	(void)state;
	metrics_set_timeout_ms(50);
	/* Silent client: closed without an answer after the timeout. */
	fd = client_connect(metrics_port());
	client_send(fd, "GET /metrics HTTP/1.0\r\n", 23);
	assert_int_equal(client_read_all(ml, fd, resp, sizeof(resp)), 0);
	close(fd);
	/* A client that gives up half-way frees its slot too. */
	fd = client_connect(metrics_port());
	client_send(fd, "GET /met", 8);
	shutdown(fd, SHUT_WR);
	assert_int_equal(client_read_all(ml, fd, resp, sizeof(resp)), 0);
	close(fd);
}

static void test_metrics_client_cap(void **state)
{
	static char resp[65536];
	int fds[METRICS_MAX_CLIENTS], extra;
	ssize_t n;

	(void)state;
	for (int i = 0; i < METRICS_MAX_CLIENTS; i++)
		fds[i] = client_connect(metrics_port());
	spin(ml, 20);
	extra = client_connect(metrics_port());
	n = client_read_all(ml, extra, resp, sizeof(resp));
	assert_true(n > 0);
	assert_memory_equal(resp, "HTTP/1.0 503 Service Unavailable\r\n", 34);
	close(extra);
	/* Slots come back when clients leave. */
	for (int i = 0; i < METRICS_MAX_CLIENTS; i++)
		close(fds[i]);
	spin(ml, 20);
	n = request("GET /metrics HTTP/1.0\r\n\r\n", resp, sizeof(resp));
	assert_true(n > 0);
	assert_memory_equal(resp, "HTTP/1.0 200 OK\r\n", 17);
}

static void test_metrics_open_errors(void **state)
{
	const char *err = NULL;
	struct loop *l = loop_new();
	unsigned port;
	char spec[64];

	(void)state;
	assert_non_null(l);
	assert_int_equal(metrics_open(l, "127.0.0.1", &err), -1);
	assert_non_null(err);
	assert_int_equal(metrics_open(l, "[zz]:9100", &err), -1);
	assert_non_null(strstr(err, "[zz]:9100"));
	assert_int_equal(metrics_open(l, "127.0.0.1:", &err), -1);
	assert_int_equal(metrics_port(), 0);

	/* Port already taken. */
	assert_int_equal(metrics_open(l, "127.0.0.1:0", &err), 0);
	port = metrics_port();
	snprintf(spec, sizeof(spec), "127.0.0.1:%u", port);
	{
		/* Keep the port busy with another socket, then ask for it. */
		struct loop *l2 = loop_new();
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sin;

		metrics_close();
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)port);
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
		assert_int_equal(listen(fd, 1), 0);
		assert_int_equal(metrics_open(l2, spec, &err), -1);
		assert_non_null(strstr(err, "Address already in use"));
		close(fd);
		/* Free again: it works, and the same spec twice is a no-op. */
		assert_int_equal(metrics_open(l2, spec, &err), 0);
		assert_int_equal(metrics_port(), port);
		assert_int_equal(metrics_open(l2, spec, &err), 0);
		assert_int_equal(metrics_port(), port);
		/* NULL turns it off. */
		assert_int_equal(metrics_open(l2, NULL, &err), 0);
		assert_int_equal(metrics_port(), 0);
		loop_free(&l2);
	}
	loop_free(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_before_open_and_null_path),
		cmocka_unit_test(test_names_and_kinds),
		cmocka_unit_test_setup(test_gauges_and_peaks, each_setup),
		cmocka_unit_test_setup(test_reset, each_setup),
		cmocka_unit_test_setup(test_file_header_and_mode, each_setup),
		cmocka_unit_test_setup(test_existing_file_is_resized_and_zeroed, each_setup),
		cmocka_unit_test_setup(test_reader_mapping, each_setup),
		cmocka_unit_test_setup(test_reader_errors, each_setup),
		cmocka_unit_test_setup(test_reader_other_layouts, each_setup),
		cmocka_unit_test_setup(test_open_errors, each_setup),
		cmocka_unit_test_setup(test_text_format, each_setup),
		cmocka_unit_test_setup(test_prometheus_format, each_setup),
		cmocka_unit_test_setup_teardown(test_metrics_get, metrics_setup, metrics_teardown),
		cmocka_unit_test_setup_teardown(test_metrics_not_found_and_bad, metrics_setup, metrics_teardown),
		cmocka_unit_test_setup_teardown(test_metrics_head_in_pieces, metrics_setup, metrics_teardown),
		cmocka_unit_test_setup_teardown(test_metrics_timeout_and_eof, metrics_setup, metrics_teardown),
		cmocka_unit_test_setup_teardown(test_metrics_client_cap, metrics_setup, metrics_teardown),
		cmocka_unit_test_setup(test_metrics_open_errors, each_setup),
	};

	log_open(true, LOG_MAIL, LOG_WARNING);
	return cmocka_run_group_tests(tests, setup, teardown);
}
