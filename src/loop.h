/*
 * loop — the epoll event loop: fd interest, timers, a before-sleep hook.
 *
 * One loop, one thread. Callbacks must not free the object that owns an
 * io or timer they were called for; owners defer frees to before-sleep.
 */
#ifndef IMAPGATE_LOOP_H
#define IMAPGATE_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOOP_READ 0x1u
#define LOOP_WRITE 0x2u
#define LOOP_ERROR 0x4u /* reported with READ|WRITE on HUP/ERR */

struct loop;
struct loop_io;
struct loop_timer;

typedef void loop_io_fn(struct loop_io *io, unsigned events);
typedef void loop_timer_fn(struct loop_timer *t);
typedef void loop_hook_fn(void *data);

/* Embedded in its owner; data points back at the owner. */
struct loop_io {
	int fd;
	unsigned want;    /* LOOP_READ|LOOP_WRITE currently registered */
	bool registered;
	loop_io_fn *fn;
	void *data;
};

struct loop_timer {
	uint64_t when;    /* ms, loop clock */
	size_t heap_idx;  /* 0 = not armed; else index+1 */
	loop_timer_fn *fn;
	void *data;
};

/* Returns NULL on failure (errno set). */
struct loop *loop_new(void);
void loop_free(struct loop **l);

/* Set io's interest to want (0 = none). Returns 0 or -1 (errno). */
int loop_io_set(struct loop *l, struct loop_io *io, unsigned want);
/* Forget io (before closing its fd). */
void loop_io_del(struct loop *l, struct loop_io *io);

/* Arm (or re-arm) t to fire after ms milliseconds. */
void loop_timer_start(struct loop *l, struct loop_timer *t, uint64_t ms);
void loop_timer_stop(struct loop *l, struct loop_timer *t);
static inline bool loop_timer_armed(const struct loop_timer *t) { return t->heap_idx != 0; }

/* Milliseconds of the monotonic clock, as of the current iteration. */
uint64_t loop_now(const struct loop *l);

/* Called once per iteration before waiting (deferred frees, TLS pending). */
void loop_set_before_sleep(struct loop *l, loop_hook_fn *fn, void *data);

/* Run until loop_stop. Returns 0, or -1 on an epoll failure. */
int loop_run(struct loop *l);
void loop_stop(struct loop *l);

#endif
