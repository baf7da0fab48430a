/* Unit tests for preflight's state directory (made with its parents,
 * given to the user, an existing one left alone) and for
 * store_sqlite_check (what may and may not be a guard_db), in a
 * temporary directory. */
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

#include "preflight.h"
#include "store_sqlite.h"

static char dir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/imapgate-preflight-XXXXXX");
	return mkdtemp(dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* As root: to nobody's uid; otherwise to ourselves (chown to another
 * user needs root). */
static uid_t other_uid(void)
{
	return geteuid() == 0 ? 65534 : geteuid();
}

static void test_state_dir_created(void **state)
{
	char path[160], err[300];
	struct stat st;

	(void)state;
	snprintf(path, sizeof(path), "%s/var/lib/imapgate", dir);
	assert_int_equal(preflight_state_dir_create(path, other_uid(), getegid(), err, sizeof(err)), 1);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0750);
	assert_int_equal(st.st_uid, other_uid());
	snprintf(path, sizeof(path), "%s/var/lib", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, geteuid());
	assert_int_equal(st.st_mode & 0777, 0755);
}

static void test_state_dir_existing_left_alone(void **state)
{
	char path[160], err[300];
	struct stat st;

	(void)state;
	snprintf(path, sizeof(path), "%s/imapgate", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	assert_int_equal(chmod(path, 0755), 0);
	assert_int_equal(preflight_state_dir_create(path, other_uid(), getegid(), err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, geteuid());
	assert_int_equal(st.st_mode & 07777, 0755);
	/* a file in the way is an error, not a directory made elsewhere */
	snprintf(path, sizeof(path), "%s/file", dir);
	assert_int_equal(close(creat(path, 0600)), 0);
	snprintf(path, sizeof(path), "%s/file/imapgate", dir);
	assert_int_equal(preflight_state_dir_create(path, other_uid(), getegid(), err, sizeof(err)), -1);
	assert_non_null(strstr(err, "Not a directory"));
}

static void write_file(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, n, f), n);
	fclose(f);
}

static void test_check_db(void **state)
{
	char path[160], err[400];
	unsigned char head[100] = "SQLite format 3";

	(void)state;
	snprintf(path, sizeof(path), "%s/guard.db", dir);
	/* missing: made at start */
	assert_int_equal(store_sqlite_check(path, "me", err, sizeof(err)), 0);
	/* empty: SQLite makes it a database */
	write_file(path, "", 0);
	assert_int_equal(store_sqlite_check(path, "me", err, sizeof(err)), 0);
	write_file(path, "not a database at all, but long enough to have a header of a hundred bytes, "
	                 "which it does not have\n", 100);
	assert_int_equal(store_sqlite_check(path, "me", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "is not an SQLite database"));
	write_file(path, "short", 5);
	assert_int_equal(store_sqlite_check(path, "me", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "is not an SQLite database"));
	head[63] = 4; /* user_version 4: a newer imapgate's */
	write_file(path, head, sizeof(head));
	assert_int_equal(store_sqlite_check(path, "me", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "newer imapgate"));
	head[63] = 1;
	write_file(path, head, sizeof(head));
	assert_int_equal(store_sqlite_check(path, "me", err, sizeof(err)), 0);
	/* a directory where the file should be */
	unlink(path);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(store_sqlite_check(path, "me", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "is not a regular file"));
	/* no directory */
	snprintf(path, sizeof(path), "%s/nodir/guard.db", dir);
	assert_int_equal(store_sqlite_check(path, "me", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "No such file or directory"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_state_dir_created, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_dir_existing_left_alone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_db, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
