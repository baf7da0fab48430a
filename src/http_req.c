/*
 * http_req — a strict HTTP/1.1 request parser (RFC 9112) for one client:
 * Dovecot's auth policy HTTP client. Bytes are copied into the request's
 * own buffers, one line at a time, so the result never depends on how the
 * stream was cut; a line is judged whole when its CRLF arrives.
 *
 * It never accepts what a front proxy could read differently (bare CR or
 * LF, obs-fold, space before ':', two different Content-Lengths,
 * Transfer-Encoding), never grows past its fixed buffers, never reads past
 * the end of the request it was given. No I/O, no logging, no globals.
 */
#include "http_req.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

enum { P_LINE, P_HEADERS, P_BODY, P_END };

/* Content-Lengths above this are only "too large"; no overflow below it. */
#define CL_SATURATE 1000000000000000000ULL

void http_req_init(struct http_req *r)
{
	memset(r, 0, offsetof(struct http_req, fields));
	r->state = HTTP_REQ_MORE;
	r->phase = P_LINE;
	r->method = r->path = r->query = r->body = "";
}

void http_req_reset(struct http_req *r)
{
	http_req_init(r);
}

static enum http_req_state fail(struct http_req *r, int status, const char *error)
{
	r->state = HTTP_REQ_ERROR;
	r->phase = P_END;
	r->status = status;
	r->error = error;
	return HTTP_REQ_ERROR;
}

static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* origin-form = absolute-path [ "?" query ], RFC 3986 characters only. */
static bool target_ok(const char *t, size_t n)
{
	if (n == 0 || t[0] != '/')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)t[i];

		if (c == '%') {
			if (i + 2 >= n || !is_hex((unsigned char)t[i + 1]) || !is_hex((unsigned char)t[i + 2]))
				return false;
			i += 2;
		} else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		             (c != '\0' && strchr("-._~!$&'()*+,;=:@/?", c) != NULL))) {
			return false;
		}
	}
	return true;
}

static enum http_req_state request_line(struct http_req *r)
{
	char *l = r->line, *sp1, *sp2, *q, *v;
	size_t n = r->len;

	l[n] = '\0';
	sp1 = memchr(l, ' ', n);
	if (sp1 == NULL || sp1 == l)
		return fail(r, 400, "malformed request line");
	for (char *p = l; p < sp1; p++)
		if (!is_tchar((unsigned char)*p))
			return fail(r, 400, "bad method");
	sp2 = memchr(sp1 + 1, ' ', (size_t)(l + n - sp1 - 1));
	if (sp2 == NULL)
		return fail(r, 400, "malformed request line");
	if (!target_ok(sp1 + 1, (size_t)(sp2 - sp1 - 1)))
		return fail(r, 400, "bad request target");
	v = sp2 + 1;
	if ((size_t)(l + n - v) != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
	    v[7] < '0' || v[7] > '9')
		return fail(r, 400, "malformed HTTP version");
	if (v[5] != '1' || v[7] > '1')
		return fail(r, 505, "HTTP version not supported");
	r->version_minor = v[7] - '0';
	*sp1 = *sp2 = '\0';
	r->method = l;
	r->method_len = (size_t)(sp1 - l);
	r->path = sp1 + 1;
	q = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
	if (q != NULL) {
		*q = '\0';
		r->query = q + 1;
		r->query_len = (size_t)(sp2 - q - 1);
	} else {
		r->query = sp2;
		r->query_len = 0;
	}
	r->path_len = strlen(r->path);
	r->phase = P_HEADERS;
	return HTTP_REQ_MORE;
}

static bool name_is(const char *h, size_t hlen, const char *name)
{
	return hlen == strlen(name) && strncasecmp(h, name, hlen) == 0;
}

/* Connection = #connection-option: note "close" and "keep-alive". */
static void connection_options(struct http_req *r, const char *v, size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t s, e;

		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		s = i;
		while (i < n && v[i] != ',')
			i++;
		e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (name_is(v + s, e - s, "close"))
			r->conn_close = true;
		else if (name_is(v + s, e - s, "keep-alive"))
			r->conn_keep_alive = true;
	}
}

static enum http_req_state content_length(struct http_req *r, const char *v, size_t n)
{
	uint64_t cl = 0;

	if (n == 0)
		return fail(r, 400, "bad Content-Length");
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return fail(r, 400, "bad Content-Length");
		if (cl < CL_SATURATE)
			cl = cl * 10 + (uint64_t)(v[i] - '0');
	}
	if (r->have_cl && r->content_length != cl)
		return fail(r, 400, "conflicting Content-Length");
	r->have_cl = true;
	r->content_length = cl;
	return HTTP_REQ_MORE;
}

static enum http_req_state header_line(struct http_req *r)
{
	char *l = r->hbuf + r->hused, *colon, *v, *e;
	size_t n = r->len;
	struct http_req_field *f;

	if (l[0] == ' ' || l[0] == '\t')
		return fail(r, 400, "obsolete header line folding");
	colon = memchr(l, ':', n);
	if (colon == NULL || colon == l)
		return fail(r, 400, "malformed header field");
	for (char *p = l; p < colon; p++)
		if (!is_tchar((unsigned char)*p))
			return fail(r, 400, "bad header field name");
	v = colon + 1;
	e = l + n;
	while (v < e && (*v == ' ' || *v == '\t'))
		v++;
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	for (char *p = v; p < e; p++) {
		unsigned char c = (unsigned char)*p;

		if (c < 0x20 ? c != '\t' : c == 0x7f)
			return fail(r, 400, "bad header field value");
	}
	if (r->nfields == HTTP_REQ_FIELDS_MAX)
		return fail(r, 431, "too many header fields");
	*e = '\0';
	f = &r->fields[r->nfields++];
	f->name = (uint16_t)r->hused;
	f->name_len = (uint16_t)(colon - l);
	f->value = (uint16_t)(v - r->hbuf);
	f->value_len = (uint16_t)(e - v);
	r->hused += n + 1;

	if (name_is(l, f->name_len, "Content-Length"))
		return content_length(r, v, f->value_len);
	if (name_is(l, f->name_len, "Transfer-Encoding"))
		r->te = true;
	else if (name_is(l, f->name_len, "Host"))
		r->hosts++;
	else if (name_is(l, f->name_len, "Connection"))
		connection_options(r, v, f->value_len);
	return HTTP_REQ_MORE;
}

static enum http_req_state end_of_headers(struct http_req *r)
{
	/* RFC 9112 3.2: exactly one Host in 1.1, never two in any version. */
	if (r->hosts > 1 || (r->version_minor == 1 && r->hosts == 0))
		return fail(r, 400, "missing or repeated Host header");
	/* Chunked bodies are not needed by Dovecot; refusing every
	 * Transfer-Encoding also closes the CL/TE smuggling door. */
	if (r->te)
		return fail(r, 501, "Transfer-Encoding not supported");
	if (r->have_cl && r->content_length > HTTP_REQ_BODY_MAX)
		return fail(r, 413, "request body too large");
	if (!r->have_cl && strcmp(r->method, "POST") == 0)
		return fail(r, 411, "POST without Content-Length");
	r->keep_alive = r->version_minor == 1 ? !r->conn_close : r->conn_keep_alive && !r->conn_close;
	r->body = r->bbuf;
	r->bbuf[0] = '\0';
	if (r->content_length == 0) {
		r->phase = P_END;
		return r->state = HTTP_REQ_DONE;
	}
	r->phase = P_BODY;
	return HTTP_REQ_MORE;
}

/* A whole line (without CRLF) is in line[] or at hbuf + hused. */
static enum http_req_state end_of_line(struct http_req *r)
{
	enum http_req_state st;

	if (r->phase == P_LINE) {
		if (r->len == 0) {
			if (r->skipped_empty)
				return fail(r, 400, "empty request line");
			r->skipped_empty = true;
			return HTTP_REQ_MORE;
		}
		st = request_line(r);
	} else if (r->len == 0) {
		st = end_of_headers(r);
	} else {
		st = header_line(r);
	}
	r->len = 0;
	return st;
}

enum http_req_state http_req_feed(struct http_req *r, const char *data, size_t len, size_t *used)
{
	size_t i = 0;
	enum http_req_state st = r->state;

	while (st == HTTP_REQ_MORE && i < len) {
		unsigned char c;

		if (r->phase == P_BODY) {
			size_t want = (size_t)r->content_length - r->body_len;
			size_t take = len - i < want ? len - i : want;

			memcpy(r->bbuf + r->body_len, data + i, take);
			r->body_len += take;
			i += take;
			if (r->body_len == r->content_length) {
				r->bbuf[r->body_len] = '\0';
				r->phase = P_END;
				st = r->state = HTTP_REQ_DONE;
			}
			break;
		}
		c = (unsigned char)data[i++];
		if (r->phase == P_HEADERS && ++r->hdr_total > HTTP_REQ_HEADERS_MAX) {
			st = fail(r, 431, "request header section too large");
		} else if (r->cr) {
			r->cr = false;
			st = c == '\n' ? end_of_line(r) : fail(r, 400, "bare CR in request");
		} else if (c == '\r') {
			r->cr = true;
		} else if (c == '\n') {
			st = fail(r, 400, "bare LF in request");
		} else if (r->phase == P_LINE) {
			if (r->len == HTTP_REQ_LINE_MAX)
				st = fail(r, 414, "request line too long");
			else
				r->line[r->len++] = (char)c;
		} else {
			r->hbuf[r->hused + r->len++] = (char)c;
		}
	}
	*used = i;
	return st;
}

const char *http_req_header(const struct http_req *r, const char *name, size_t *vlen)
{
	for (unsigned i = 0; i < r->nfields; i++) {
		const struct http_req_field *f = &r->fields[i];

		if (name_is(r->hbuf + f->name, f->name_len, name)) {
			if (vlen != NULL)
				*vlen = f->value_len;
			return r->hbuf + f->value;
		}
	}
	return NULL;
}

bool http_query_param(const char *q, size_t qlen, const char *name, const char **v, size_t *vlen)
{
	size_t nlen = strlen(name), i = 0;

	while (i <= qlen) {
		size_t s = i, e;
		const char *eq;

		while (i < qlen && q[i] != '&')
			i++;
		e = i++;
		eq = memchr(q + s, '=', e - s);
		if ((size_t)((eq != NULL ? eq : q + e) - (q + s)) == nlen && memcmp(q + s, name, nlen) == 0) {
			*v = eq != NULL ? eq + 1 : q + e;
			*vlen = (size_t)(q + e - *v);
			return true;
		}
	}
	return false;
}
