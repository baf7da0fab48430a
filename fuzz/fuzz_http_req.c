/*
 * libFuzzer target for http_req.
 *
 * The input is a connection's byte stream, parsed as a run of pipelined
 * requests (reset after each DONE) three ways: all at once, one byte at a
 * time, and in 7-byte chunks. The three transcripts (every result field,
 * every header, the bytes used) must be identical, and every result must
 * keep the parser's promises.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_out.h"
#include "http_req.h"

static void record(struct out *o, const struct http_req *r, size_t consumed)
{
	static const char *const names[] = { "host", "content-length", "connection", "x-api-key", "user-agent" };
	const char *v;
	size_t vlen;

	out_num(o, (uint64_t)r->state);
	out_num(o, consumed);
	if (r->state == HTTP_REQ_ERROR) {
		CHECK(r->error != NULL);
		CHECK(r->status == 400 || r->status == 411 || r->status == 413 || r->status == 414 ||
		      r->status == 431 || r->status == 501 || r->status == 505);
		out_num(o, (uint64_t)r->status);
		out_str(o, r->error, strlen(r->error));
		return;
	}
	CHECK(strlen(r->method) == r->method_len && r->method_len > 0);
	CHECK(strlen(r->path) == r->path_len && r->path[0] == '/');
	CHECK(strlen(r->query) == r->query_len);
	CHECK(r->version_minor == 0 || r->version_minor == 1);
	CHECK(r->body_len <= HTTP_REQ_BODY_MAX && r->body[r->body_len] == '\0');
	CHECK(r->nfields <= HTTP_REQ_FIELDS_MAX);
	CHECK(r->version_minor == 0 || http_req_header(r, "host", NULL) != NULL);
	CHECK(http_req_header(r, "transfer-encoding", NULL) == NULL);
	out_str(o, r->method, r->method_len);
	out_str(o, r->path, r->path_len);
	out_str(o, r->query, r->query_len);
	out_num(o, (uint64_t)r->version_minor);
	out_num(o, r->keep_alive);
	out_str(o, r->body, r->body_len);
	out_num(o, r->nfields);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		v = http_req_header(r, names[i], &vlen);
		out_num(o, v != NULL);
		if (v != NULL) {
			CHECK(strlen(v) == vlen);
			CHECK(vlen == 0 || (v[0] != ' ' && v[0] != '\t' && v[vlen - 1] != ' ' && v[vlen - 1] != '\t'));
			out_str(o, v, vlen);
		}
	}
	if (http_query_param(r->query, r->query_len, "command", &v, &vlen)) {
		CHECK(v >= r->query && v + vlen <= r->query + r->query_len);
		out_str(o, v, vlen);
	}
}

/* Parse the stream in pieces of chunk bytes (0: whole) into o. */
static void run(struct http_req *r, const uint8_t *data, size_t size, size_t chunk, struct out *o)
{
	size_t off = 0, consumed = 0;

	http_req_init(r);
	while (off < size) {
		size_t take = chunk == 0 || size - off < chunk ? size - off : chunk, used = 0;
		enum http_req_state st = http_req_feed(r, (const char *)data + off, take, &used);

		CHECK(used <= take);
		CHECK(st != HTTP_REQ_MORE || used == take);
		off += used;
		consumed += used;
		if (st == HTTP_REQ_ERROR) {
			record(o, r, consumed);
			return;
		}
		if (st == HTTP_REQ_DONE) {
			record(o, r, consumed);
			consumed = 0;
			http_req_reset(r);
		}
	}
	out_num(o, 0xffff);
	out_num(o, consumed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http_req r;
	static const size_t chunks[] = { 0, 1, 7 };
	struct out o[3];

	memset(o, 0, sizeof(o));
	for (size_t i = 0; i < 3; i++)
		run(&r, data, size, chunks[i], &o[i]);
	out_same(o, 3);
	return 0;
}
