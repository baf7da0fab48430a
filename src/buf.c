/*
 * buf — bounded byte queues for sockets. Never grows past its bound; the
 * caller decides what a full buffer means (back-pressure or an error).
 */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t cap)
{
	memset(b, 0, sizeof(*b));
	b->cap = cap;
}

char *buf_reserve(struct buf *b, size_t *room)
{
	if (!b->alloc) {
		b->data = malloc(b->cap);
		if (b->data == NULL)
			return NULL;
		b->alloc = true;
		b->start = b->end = b->used = 0;
	}
	if (b->start > 0 && (b->end == b->cap || b->start == b->end)) {
		memmove(b->data, b->data + b->start, b->end - b->start);
		b->end -= b->start;
		b->start = 0;
	}
	*room = b->cap - b->end;
	return *room ? b->data + b->end : NULL;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	size_t room;
	char *w;

	if (n == 0)
		return 0;
	if (buf_space(b) < n)
		return -1;
	w = buf_reserve(b, &room);
	if (w != NULL && room < n) {
		/* Free space is split around the data: compact fully. */
		memmove(b->data, b->data + b->start, buf_len(b));
		b->end -= b->start;
		b->start = 0;
		w = b->data + b->end;
		room = b->cap - b->end;
	}
	if (w == NULL || room < n)
		return -1;
	memcpy(w, p, n);
	buf_commit(b, n);
	return 0;
}

int buf_appendf(struct buf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -1;
	return buf_append(b, tmp, (size_t)n);
}

void buf_consume(struct buf *b, size_t n)
{
	b->start += n;
	if (b->start >= b->end)
		b->start = b->end = 0;
}

void buf_release(struct buf *b)
{
	if (b->alloc && buf_len(b) == 0) {
		/* Only what was written: a relay empties its 256 KiB buffer after
		 * every few KiB, and wiping all of it each time cost more than the
		 * relaying. */
		explicit_bzero(b->data, b->used);
		free(b->data);
		b->data = NULL;
		b->alloc = false;
		b->start = b->end = 0;
	}
}

void buf_free(struct buf *b)
{
	if (b->alloc) {
		explicit_bzero(b->data, b->used);
		free(b->data);
	}
	b->data = NULL;
	b->alloc = false;
	b->start = b->end = 0;
}

long buf_find_lf(const struct buf *b)
{
	const char *p;

	if (buf_len(b) == 0)
		return -1;
	p = memchr(buf_ptr(b), '\n', buf_len(b));
	return p ? (long)(p - buf_ptr(b)) : -1;
}
