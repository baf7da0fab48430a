/* A growing byte transcript for the fuzz targets that compare several
 * parses of one input: each run appends what it saw, then the transcripts
 * are compared with memcmp. */
#ifndef IMAPGATE_FUZZ_OUT_H
#define IMAPGATE_FUZZ_OUT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

struct out {
	uint8_t *s;
	size_t len, cap;
};

static inline void out_put(struct out *o, const void *p, size_t n)
{
	if (o->len + n > o->cap) {
		size_t cap = o->cap ? o->cap : 1024;

		while (cap < o->len + n)
			cap *= 2;
		o->s = realloc(o->s, cap);
		CHECK(o->s != NULL);
		o->cap = cap;
	}
	memcpy(o->s + o->len, p, n);
	o->len += n;
}

static inline void out_num(struct out *o, uint64_t v)
{
	out_put(o, &v, sizeof v);
}

static inline void out_str(struct out *o, const char *s, size_t n)
{
	out_num(o, n);
	out_put(o, s, n);
}

/* Abort unless the n transcripts are identical; free them all. */
static inline void out_same(struct out *o, size_t n)
{
	for (size_t i = 1; i < n; i++)
		CHECK(o[i].len == o[0].len && memcmp(o[i].s, o[0].s, o[0].len) == 0);
	for (size_t i = 0; i < n; i++)
		free(o[i].s);
}

#endif
