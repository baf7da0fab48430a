/* Unit tests for the bounded byte queue. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "buf.h"

static void test_append_consume_bound(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 8);
	assert_int_equal(buf_len(&b), 0);
	assert_null(b.data); /* nothing allocated before use */
	assert_int_equal(buf_append(&b, "abcde", 5), 0);
	assert_int_equal(buf_append(&b, "fghi", 4), -1); /* over the bound: nothing appended */
	assert_int_equal(buf_len(&b), 5);
	buf_consume(&b, 3);
	assert_memory_equal(buf_ptr(&b), "de", 2);
	/* Free space split around the data is compacted to fit. */
	assert_int_equal(buf_append(&b, "fghijk", 6), 0);
	assert_memory_equal(buf_ptr(&b), "defghijk", 8);
	assert_int_equal(buf_space(&b), 0);
	buf_free(&b);
}

static void test_reserve_commit_and_release(void **state)
{
	struct buf b;
	size_t room;
	char *w;

	(void)state;
	buf_init(&b, 16);
	w = buf_reserve(&b, &room);
	assert_non_null(w);
	assert_int_equal(room, 16);
	memcpy(w, "x\ny\n", 4);
	buf_commit(&b, 4);
	assert_int_equal(buf_find_lf(&b), 1);
	buf_consume(&b, 2);
	assert_int_equal(buf_find_lf(&b), 1);
	buf_release(&b); /* not empty: kept */
	assert_non_null(b.data);
	buf_consume(&b, 2);
	buf_release(&b); /* empty: memory goes */
	assert_null(b.data);
	assert_int_equal(buf_find_lf(&b), -1);
	assert_int_equal(buf_appendf(&b, "%d-%s", 42, "ok"), 0);
	assert_memory_equal(buf_ptr(&b), "42-ok", 5);
	buf_free(&b);
}

static void test_full_reserve_returns_null(void **state)
{
	struct buf b;
	size_t room;

	(void)state;
	buf_init(&b, 4);
	assert_int_equal(buf_append(&b, "abcd", 4), 0);
	assert_null(buf_reserve(&b, &room));
	assert_int_equal(room, 0);
	buf_consume(&b, 1);
	assert_non_null(buf_reserve(&b, &room)); /* compacted */
	assert_int_equal(room, 1);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_append_consume_bound),
		cmocka_unit_test(test_reserve_commit_and_release),
		cmocka_unit_test(test_full_reserve_returns_null),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
