/*
 * loop — epoll plus a binary min-heap of timers.
 *
 * The loop owns no objects: ios and timers are embedded in their owners.
 * It must never call back into an io after loop_io_del, and never block
 * except in epoll_wait.
 */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256

struct loop {
	int epfd;
	bool stop;
	uint64_t now;
	struct loop_timer **heap;
	size_t n_heap, cap_heap;
	loop_hook_fn *before_sleep;
	void *before_sleep_data;
};

static uint64_t clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct loop *loop_new(void)
{
	struct loop *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd == -1) {
		free(l);
		return NULL;
	}
	l->now = clock_ms();
	return l;
}

void loop_free(struct loop **lp)
{
	struct loop *l = *lp;

	if (l == NULL)
		return;
	close(l->epfd);
	free(l->heap);
	free(l);
	*lp = NULL;
}

int loop_io_set(struct loop *l, struct loop_io *io, unsigned want)
{
	struct epoll_event ev;

	if (io->registered && io->want == want)
		return 0;
	memset(&ev, 0, sizeof(ev));
	ev.data.ptr = io;
	if (want & LOOP_READ)
		ev.events |= EPOLLIN | EPOLLRDHUP;
	if (want & LOOP_WRITE)
		ev.events |= EPOLLOUT;
	if (epoll_ctl(l->epfd, io->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, io->fd, &ev) == -1)
		return -1;
	io->registered = true;
	io->want = want;
	return 0;
}

void loop_io_del(struct loop *l, struct loop_io *io)
{
	if (io->registered)
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	io->registered = false;
	io->want = 0;
}

/* --- timer heap (heap_idx is index + 1 so that 0 means "not armed") --- */

static void heap_swap(struct loop *l, size_t a, size_t b)
{
	struct loop_timer *t = l->heap[a];

	l->heap[a] = l->heap[b];
	l->heap[b] = t;
	l->heap[a]->heap_idx = a + 1;
	l->heap[b]->heap_idx = b + 1;
}

static void heap_up(struct loop *l, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;

		if (l->heap[p]->when <= l->heap[i]->when)
			break;
		heap_swap(l, i, p);
		i = p;
	}
}

static void heap_down(struct loop *l, size_t i)
{
	for (;;) {
		size_t c = 2 * i + 1, m = i;

		if (c < l->n_heap && l->heap[c]->when < l->heap[m]->when)
			m = c;
		if (c + 1 < l->n_heap && l->heap[c + 1]->when < l->heap[m]->when)
			m = c + 1;
		if (m == i)
			break;
		heap_swap(l, i, m);
		i = m;
	}
}

void loop_timer_stop(struct loop *l, struct loop_timer *t)
{
	size_t i;

	if (t->heap_idx == 0)
		return;
	i = t->heap_idx - 1;
	t->heap_idx = 0;
	l->n_heap--;
	if (i == l->n_heap)
		return;
	l->heap[i] = l->heap[l->n_heap];
	l->heap[i]->heap_idx = i + 1;
	heap_up(l, i);
	heap_down(l, l->heap[i]->heap_idx - 1);
}

void loop_timer_start(struct loop *l, struct loop_timer *t, uint64_t ms)
{
	loop_timer_stop(l, t);
	if (l->n_heap == l->cap_heap) {
		size_t ncap = l->cap_heap ? l->cap_heap * 2 : 64;
		struct loop_timer **nh = realloc(l->heap, ncap * sizeof(*nh));

		if (nh == NULL)
			abort(); /* a session without its timeout is worse than a crash */
		l->heap = nh;
		l->cap_heap = ncap;
	}
	t->when = l->now + ms;
	l->heap[l->n_heap] = t;
	t->heap_idx = ++l->n_heap;
	heap_up(l, l->n_heap - 1);
}

uint64_t loop_now(const struct loop *l)
{
	return l->now;
}

void loop_set_before_sleep(struct loop *l, loop_hook_fn *fn, void *data)
{
	l->before_sleep = fn;
	l->before_sleep_data = data;
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}

static void run_timers(struct loop *l)
{
	while (l->n_heap > 0 && l->heap[0]->when <= l->now) {
		struct loop_timer *t = l->heap[0];

		loop_timer_stop(l, t);
		t->fn(t);
	}
}

int loop_run(struct loop *l)
{
	struct epoll_event evs[LOOP_MAX_EVENTS];

	l->stop = false;
	while (!l->stop) {
		int timeout = -1, n;

		if (l->before_sleep)
			l->before_sleep(l->before_sleep_data);
		if (l->stop)
			break;
		l->now = clock_ms();
		if (l->n_heap > 0)
			timeout = l->heap[0]->when <= l->now ? 0 : (int)(l->heap[0]->when - l->now);
		n = epoll_wait(l->epfd, evs, LOOP_MAX_EVENTS, timeout);
		if (n == -1 && errno != EINTR)
			return -1;
		l->now = clock_ms();
		for (int i = 0; i < n; i++) {
			struct loop_io *io = evs[i].data.ptr;
			unsigned ev = 0;

			if (evs[i].events & (EPOLLIN | EPOLLRDHUP))
				ev |= LOOP_READ;
			if (evs[i].events & EPOLLOUT)
				ev |= LOOP_WRITE;
			if (evs[i].events & (EPOLLERR | EPOLLHUP))
				ev |= LOOP_ERROR | LOOP_READ | LOOP_WRITE;
			/* An io deleted earlier in this batch reports nothing. */
			if (io->registered)
				io->fn(io, ev & (io->want | LOOP_ERROR));
		}
		run_timers(l);
	}
	return 0;
}
