/*
 * libFuzzer target for json_flat.
 *
 * The input is one request body, parsed three ways: all at once, one byte
 * at a time, and in 7-byte chunks. The callbacks, the result, the error
 * and its offset must be identical, and every key and value handed out
 * must respect the limits and be a C string of the length given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_out.h"
#include "json_flat.h"

static int collect(void *ctx, const char *key, size_t klen, enum json_type type, const char *val, size_t vlen)
{
	struct out *o = ctx;

	CHECK(klen <= JSON_FLAT_KEY_MAX && strlen(key) == klen);
	CHECK(vlen <= JSON_FLAT_VALUE_MAX && strlen(val) == vlen);
	CHECK(type == JSON_STRING || type == JSON_NUMBER || vlen > 0);
	out_num(o, (uint64_t)type);
	out_str(o, key, klen);
	out_str(o, val, vlen);
	/* Stop on a key the input chooses, to exercise the refusal path. */
	return klen == 4 && memcmp(key, "stop", 4) == 0 ? -1 : 0;
}

static void run(const uint8_t *data, size_t size, size_t chunk, struct out *o)
{
	struct json_flat j;
	size_t off = 0;
	int rc = 0;

	json_flat_init(&j, collect, o);
	while (rc == 0 && off < size) {
		size_t take = chunk == 0 || size - off < chunk ? size - off : chunk;

		rc = json_flat_feed(&j, (const char *)data + off, take);
		off += take;
	}
	if (rc == 0)
		rc = json_flat_finish(&j);
	else
		CHECK(json_flat_finish(&j) == -1);
	CHECK(j.offset <= size);
	out_num(o, (uint64_t)(rc + 1));
	if (rc != 0) {
		CHECK(j.error != NULL);
		out_str(o, j.error, strlen(j.error));
		out_num(o, j.offset);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t chunks[] = { 0, 1, 7 };
	struct out o[3];

	memset(o, 0, sizeof(o));
	for (size_t i = 0; i < 3; i++)
		run(data, size, chunks[i], &o[i]);
	out_same(o, 3);
	return 0;
}
