/* Unit tests for trace: the file (mode, symlinks, rotation), who is
 * traced, and imapproxy's record format, in a temporary directory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <fcntl.h>

#include "log.h"
#include "trace.h"

static char dir[64], path[128];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/imapgate-trace-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/protocol.log", dir);
	return 0;
}

static int teardown(void **state)
{
	char p[160];

	(void)state;
	trace_clear();
	trace_close();
	unlink(path);
	snprintf(p, sizeof(p), "%s/link", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/old", dir);
	unlink(p);
	rmdir(dir);
	return 0;
}

/* The whole file, NUL-terminated; *len its size. */
static char *slurp(size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p = malloc(256 * 1024);
	size_t n;

	assert_non_null(f);
	assert_non_null(p);
	n = fread(p, 1, 256 * 1024 - 1, f);
	fclose(f);
	p[n] = '\0';
	*len = n;
	return p;
}

static void open_ok(void)
{
	const char *err = NULL;

	assert_int_equal(trace_open(path, (uid_t)-1, (gid_t)-1, &err), 0);
	assert_null(err);
}

static void test_open_mode(void **state)
{
	struct stat st;
	const char *err;
	char link[160];

	(void)state;
	/* An existing file readable by others is made private. */
	close(open(path, O_CREAT | O_WRONLY, 0644));
	chmod(path, 0644);
	open_ok();
	assert_true(trace_available());
	assert_string_equal(trace_file(), path);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* Never through a symlink; the file in use stays. */
	snprintf(link, sizeof(link), "%s/link", dir);
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(trace_open(link, (uid_t)-1, (gid_t)-1, &err), -1);
	assert_non_null(strstr(err, "symbolic link"));
	assert_string_equal(trace_file(), path);
	/* NULL closes. */
	assert_int_equal(trace_open(NULL, (uid_t)-1, (gid_t)-1, &err), 0);
	assert_false(trace_available());
	assert_null(trace_file());
}

static void test_who(void **state)
{
	size_t len = 99;

	(void)state;
	assert_null(trace_user(&len));
	assert_int_equal(len, 0);
	assert_int_equal(trace_set("alice", 5), 0);
	/* No file: nobody's relay is traced, whoever is chosen. */
	assert_false(trace_enabled_for("alice", 5));
	open_ok();
	assert_true(trace_enabled_for("alice", 5));
	assert_false(trace_enabled_for("alic", 4));
	assert_false(trace_enabled_for("Alice", 5));
	assert_false(trace_enabled_for(NULL, 0));
	assert_int_equal(trace_set("alice", 5), 0); /* the same again */
	assert_int_equal(trace_set("bob", 3), -1);  /* one at a time */
	assert_string_equal(trace_user(&len), "alice");
	assert_int_equal(len, 5);
	trace_clear();
	assert_null(trace_user(&len));
	assert_false(trace_enabled_for("alice", 5));
	assert_int_equal(trace_set("", 0), -1); /* no one by an empty name */
	assert_null(trace_user(&len));
	assert_int_equal(trace_set("bob", 3), 0);
}

static void test_records(void **state)
{
	size_t len;
	char *text, *p;

	(void)state;
	open_ok();
	assert_int_equal(trace_set("alice", 5), 0);
	trace_client(1, "alice", 5, 7, "a1 SELECT INBOX\r\n", 17);
	trace_server(1, "alice", 5, 9, "a1 OK done\r\n", 12);
	trace_client(1, "alice", 5, 7, "", 0); /* nothing: no record */
	trace_clear();
	text = slurp(&len);
	/* PROXY record, then CLIENT, then SERVER, each after a blank line. */
	assert_true(strncmp(text, "\n\n-----> C= ", 12) == 0);
	p = strstr(text, " alice PROXY: user tracing enabled.\n");
	assert_non_null(p);
	p = strstr(p, "\n\n-----> C= ");
	assert_non_null(p);
	p = strstr(p, " alice CLIENT: sd [7]\na1 SELECT INBOX\r\n\n\n-----> C= ");
	assert_non_null(p);
	p = strstr(p, " alice SERVER: sd [9]\na1 OK done\r\n\n\n-----> C= ");
	assert_non_null(p);
	assert_non_null(strstr(p, " alice PROXY: user tracing disabled. Expect further output until client logout.\n"));
	assert_int_equal(strlen(text), len);
	free(text);
}

static void test_hostile_user_and_cap(void **state)
{
	size_t len, n = TRACE_RECORD_MAX + 10;
	char *big = malloc(n), *text, *p;

	(void)state;
	assert_non_null(big);
	memset(big, 'x', n);
	open_ok();
	/* A user name cannot add a line or fake a header. */
	trace_server(2, "ev il\r\n-----> C=", 16, 5, big, n);
	text = slurp(&len);
	p = strstr(text, " ev\\x20il\\x0d\\x0a----->\\x20C\\x3d SERVER: sd [5]\n");
	assert_non_null(p);
	p = strchr(p, '\n') + 1;
	assert_int_equal(strspn(p, "x"), TRACE_RECORD_MAX);
	assert_non_null(strstr(p, " PROXY: 10 more bytes of this record not traced\n"));
	free(text);
	free(big);
}

static void test_newlog_and_rotation(void **state)
{
	size_t len;
	char *text, old[160];

	(void)state;
	open_ok();
	trace_client(3, "bob", 3, 4, "one\r\n", 5);
	assert_int_equal(trace_newlog(), 0);
	trace_client(3, "bob", 3, 4, "two\r\n", 5);
	text = slurp(&len);
	/* Emptied, and the next record starts at offset 0 (O_APPEND). */
	assert_true(strncmp(text, "\n\n-----> C= ", 12) == 0);
	assert_null(strstr(text, "one"));
	assert_non_null(strstr(text, " bob CLIENT: sd [4]\ntwo\r\n"));
	free(text);
	/* Same path: no reopen. Moved away: kept until another file is
	 * there (rotation), then that one. */
	open_ok();
	snprintf(old, sizeof(old), "%s/old", dir);
	assert_int_equal(rename(path, old), 0);
	open_ok();
	close(open(path, O_CREAT | O_WRONLY, 0600));
	trace_client(3, "bob", 3, 4, "three\r\n", 7);
	text = slurp(&len);
	assert_int_equal(len, 0);
	free(text);
	open_ok();
	trace_client(3, "bob", 3, 4, "four\r\n", 6);
	text = slurp(&len);
	assert_null(strstr(text, "two"));
	assert_non_null(strstr(text, " bob CLIENT: sd [4]\nfour\r\n"));
	free(text);
	trace_close();
	assert_int_equal(trace_newlog(), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_who, setup, teardown),
		cmocka_unit_test_setup_teardown(test_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_user_and_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newlog_and_rotation, setup, teardown),
	};

	log_open(true, LOG_MAIL, LOG_DEBUG);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
