/* Unit tests for the event loop: timer order, re-arming, stopping, and io
 * readiness over a pipe. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "loop.h"

static struct loop *L;
static int order[64];
static int n_order;

struct tt {
	struct loop_timer t;
	int id;
};

static void fired(struct loop_timer *t)
{
	struct tt *x = t->data;

	order[n_order++] = x->id;
	if (n_order == 5)
		loop_stop(L);
}

static void test_timers_fire_in_deadline_order(void **state)
{
	struct tt t[6];
	static const int ms[6] = { 30, 10, 50, 20, 40, 15 };

	(void)state;
	L = loop_new();
	n_order = 0;
	for (int i = 0; i < 6; i++) {
		t[i].id = i;
		t[i].t.fn = fired;
		t[i].t.data = &t[i];
		t[i].t.heap_idx = 0;
		loop_timer_start(L, &t[i].t, (uint64_t)ms[i]);
	}
	loop_timer_stop(L, &t[5].t); /* 15 ms never fires */
	assert_false(loop_timer_armed(&t[5].t));
	loop_timer_start(L, &t[2].t, 5); /* re-armed: now first */
	assert_int_equal(loop_run(L), 0);
	assert_int_equal(n_order, 5);
	assert_int_equal(order[0], 2);
	assert_int_equal(order[1], 1);
	assert_int_equal(order[2], 3);
	assert_int_equal(order[3], 0);
	assert_int_equal(order[4], 4);
	loop_free(&L);
	assert_null(L);
}

static int io_seen;

static void on_read(struct loop_io *io, unsigned ev)
{
	char c;

	assert_true(ev & LOOP_READ);
	assert_int_equal(read(io->fd, &c, 1), 1);
	io_seen = c;
	loop_stop(L);
}

static void test_io_readiness(void **state)
{
	int p[2];
	struct loop_io io;

	(void)state;
	L = loop_new();
	assert_int_equal(pipe(p), 0);
	memset(&io, 0, sizeof(io));
	io.fd = p[0];
	io.fn = on_read;
	assert_int_equal(loop_io_set(L, &io, LOOP_READ), 0);
	assert_int_equal(write(p[1], "z", 1), 1);
	assert_int_equal(loop_run(L), 0);
	assert_int_equal(io_seen, 'z');
	loop_io_del(L, &io);
	assert_false(io.registered);
	close(p[0]);
	close(p[1]);
	loop_free(&L);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timers_fire_in_deadline_order),
		cmocka_unit_test(test_io_readiness),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
