/*
 * buf — a bounded byte queue: append at the end, consume from the start.
 *
 * Memory is allocated on first use and released (wiped) when the buffer
 * empties with buf_release, so idle sessions hold none.
 */
#ifndef IMAPGATE_BUF_H
#define IMAPGATE_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t cap;   /* bound, fixed at buf_init */
	size_t start; /* first unread byte */
	size_t end;   /* one past the last byte */
	size_t used;  /* high-water mark of end since the allocation: what to wipe */
	bool alloc;   /* data allocated */
};

void buf_init(struct buf *b, size_t cap);
static inline size_t buf_len(const struct buf *b) { return b->end - b->start; }
static inline const char *buf_ptr(const struct buf *b) { return b->data + b->start; }
/* Room left after compaction. */
static inline size_t buf_space(const struct buf *b) { return b->cap - buf_len(b); }
/*
 * Make room at the end (allocating, compacting) and return where to write;
 * *room gets the contiguous room. Returns NULL on ENOMEM or when full.
 */
char *buf_reserve(struct buf *b, size_t *room);
/* After writing n bytes at buf_reserve's pointer. */
static inline void buf_commit(struct buf *b, size_t n)
{
	b->end += n;
	if (b->end > b->used)
		b->used = b->end;
}
/* Append; returns 0, or -1 when it does not fit (nothing appended). */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_consume(struct buf *b, size_t n);
/* Wipe and free the memory when empty (keeps the bound). */
void buf_release(struct buf *b);
/* Wipe, free, forget. */
void buf_free(struct buf *b);
/* Offset of the first '\n' from the start, or -1. */
long buf_find_lf(const struct buf *b);

#endif
