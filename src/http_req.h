/*
 * http_req — incremental, strict HTTP/1.1 request parser (RFC 9112) for
 * the small policy server Dovecot POSTs to. Pure: no I/O, no allocation,
 * no logging, no globals. Everything lives in struct http_req (about
 * 27 KiB: the caller may heap-allocate it).
 */
#ifndef IMAPGATE_HTTP_REQ_H
#define IMAPGATE_HTTP_REQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_REQ_LINE_MAX 2048    /* request line, without its CRLF */
#define HTTP_REQ_HEADERS_MAX 8192 /* header section, every CRLF included */
#define HTTP_REQ_FIELDS_MAX 64    /* header fields */
#define HTTP_REQ_BODY_MAX 16384   /* Content-Length */

enum http_req_state {
	HTTP_REQ_MORE,  /* every byte given was used; feed more */
	HTTP_REQ_DONE,  /* one whole request; the result fields are set */
	HTTP_REQ_ERROR, /* status and error are set; answer status and close */
};

struct http_req_field {
	uint16_t name, name_len, value, value_len; /* offsets into hbuf */
};

struct http_req {
	/* Result: valid on DONE (method..body) or ERROR (status, error).
	 * method, path and query are NUL-terminated; body is NUL-terminated
	 * too, but may contain NULs of its own (use body_len). */
	enum http_req_state state;
	int status;        /* on ERROR: 400, 411, 413, 414, 431, 501, 505 */
	const char *error; /* on ERROR: short static English phrase */
	const char *method, *path, *query;
	size_t method_len, path_len, query_len;
	int version_minor; /* HTTP/1.0 or HTTP/1.1 */
	bool keep_alive;
	const char *body;
	size_t body_len;

	/* Parser state: private. */
	int phase;
	bool cr, skipped_empty;
	size_t len;       /* bytes of the current line so far */
	size_t hdr_total; /* header-section bytes so far, CRLFs included */
	size_t hused;     /* bytes of hbuf holding finished header lines */
	uint64_t content_length;
	bool have_cl, te, conn_close, conn_keep_alive;
	unsigned hosts;
	unsigned nfields;
	struct http_req_field fields[HTTP_REQ_FIELDS_MAX];
	char line[HTTP_REQ_LINE_MAX + 1];
	char hbuf[HTTP_REQ_HEADERS_MAX + 1];
	char bbuf[HTTP_REQ_BODY_MAX + 1];
};

/* Make r ready for a first request. */
void http_req_init(struct http_req *r);

/* Forget the finished (or failed) request; ready for the next one on a
 * keep-alive connection. Pointers from the old request become invalid. */
void http_req_reset(struct http_req *r);

/*
 * Feed len bytes of the connection. Consumes at most up to the end of one
 * request and sets *used to the bytes it took: on MORE that is len; on
 * DONE the rest (a pipelined next request) is the caller's; on ERROR the
 * bytes up to the offending one. Once DONE or ERROR, further calls take
 * nothing and return the same state until http_req_reset(). The result
 * never depends on how the bytes were split between calls.
 *
 * Strictness: lines end in CRLF only (a bare LF or a bare CR is 400; one
 * empty line before the request line is skipped, RFC 9112 2.2); origin-form
 * targets only; no obs-fold, no space before ':'; HTTP/1.1 needs exactly
 * one Host; Content-Length is digits only, repeated only with the same
 * value; Transfer-Encoding is refused (501).
 */
enum http_req_state http_req_feed(struct http_req *r, const char *data, size_t len, size_t *used);

/*
 * Value of the first header field called name (case-insensitive), with
 * leading and trailing spaces and tabs removed, NUL-terminated, its length
 * in *vlen (may be NULL). NULL if there is no such field. Valid on DONE.
 */
const char *http_req_header(const struct http_req *r, const char *name, size_t *vlen);

/*
 * Find name in a query string q (qlen bytes, "a=1&b=2"; no percent-decoding:
 * "%63ommand" is not "command"). Returns true with *v and *vlen pointing into
 * q (empty for "name" or "name="); false when absent. First match wins.
 */
bool http_query_param(const char *q, size_t qlen, const char *name, const char **v, size_t *vlen);

#endif
