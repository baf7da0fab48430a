/*
 * tls — OpenSSL contexts (client side and backend side) and the TLS
 * transport behind the conn interface (see tls.h).
 *
 * The transport turns an open, non-blocking TCP conn into TLS: it swaps
 * c->ops for its own table and keeps the SSL* in c->impl (its own state
 * rides along as the SSL's app data). Handshakes run lazily inside
 * conn_read/conn_write; WANT_READ/WANT_WRITE become -1/EAGAIN plus a
 * direction for conn_want(). This file must never block, never log (it
 * returns reasons instead), never keep global state beyond what OpenSSL
 * keeps itself, and never let an OpenSSL type escape into a header.
 *
 * OpenSSL's socket BIO writes with write(2): the daemon ignores SIGPIPE.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* Read-ahead buffer per connection while it holds bytes (released once
 * empty: SSL_MODE_RELEASE_BUFFERS). */
#define TLS_READ_BUF (64 * 1024)

struct tls_ctx {
	SSL_CTX *ssl_ctx;
	unsigned refs; /* one thread: a plain counter */
};

/* Per-connection state, the SSL's app data. c->impl is the SSL*. */
struct tls_conn {
	struct tls_ctx *ctx; /* our reference */
	unsigned rd_want;    /* LOOP_* the last conn_read waits for */
	unsigned wr_want;    /* LOOP_* the last conn_write waits for */
	int dead;            /* errno of a fatal failure; SSL no longer usable */
	bool eof;            /* the peer ended the stream: reads give 0 */
	bool up;             /* handshake seen complete */
	bool rd_blocked;     /* the last SSL_read waited for the socket: what
	                      * OpenSSL holds is at most part of a record */
	char err[128];       /* reason of the last failure, "" = none */
};

/* ------------------------------------------------------------------ */
/* error text */

/* The first (root cause) error of OpenSSL's queue as text; clears the
 * queue. Returns false when the queue was empty. */
static bool err_reason(char *buf, size_t sz)
{
	unsigned long e = ERR_get_error();
	const char *s;

	ERR_clear_error();
	if (e == 0)
		return false;
	if (ERR_SYSTEM_ERROR(e))
		snprintf(buf, sz, "%s", strerror(ERR_GET_REASON(e)));
	else if ((s = ERR_reason_error_string(e)) != NULL)
		snprintf(buf, sz, "%s", s);
	else
		ERR_error_string_n(e, buf, sz);
	return true;
}

__attribute__((format(printf, 4, 5)))
static struct tls_ctx *ctx_fail(struct tls_ctx *t, char *errbuf, size_t errsz, const char *fmt, ...)
{
	char why[160];
	va_list ap;
	int n;

	if (!err_reason(why, sizeof(why)))
		snprintf(why, sizeof(why), "unknown error");
	va_start(ap, fmt);
	n = vsnprintf(errbuf, errsz, fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < errsz)
		snprintf(errbuf + n, errsz - (size_t)n, ": %s", why);
	tls_ctx_unref(&t);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* contexts */

/* An encrypted key must fail to load, not prompt on the terminal. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return 0;
}

static struct tls_ctx *ctx_alloc(const SSL_METHOD *method)
{
	struct tls_ctx *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->refs = 1;
	t->ssl_ctx = SSL_CTX_new(method);
	if (t->ssl_ctx == NULL) {
		free(t);
		return NULL;
	}
	SSL_CTX_set_options(t->ssl_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	/* The caller's buffer may move and grow between retries of a write;
	 * idle sessions should not hold 2 x 17 KB of record buffers. */
	SSL_CTX_set_mode(t->ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                             SSL_MODE_RELEASE_BUFFERS);
	/* Return to the loop after every non-application record. */
	SSL_CTX_clear_mode(t->ssl_ctx, SSL_MODE_AUTO_RETRY);
	/* One read(2) takes in every record the socket holds, up to
	 * TLS_READ_BUF, instead of a 5-byte header and a body per record;
	 * tls_pending tells the owner about bytes read ahead. */
	SSL_CTX_set_read_ahead(t->ssl_ctx, 1);
	SSL_CTX_set_default_read_buffer_len(t->ssl_ctx, TLS_READ_BUF);
	SSL_CTX_set_default_passwd_cb(t->ssl_ctx, no_password);
	return t;
}

enum load_fail { LOAD_OK, LOAD_CERT, LOAD_KEY, LOAD_MISMATCH };

/* Certificate chain (PEM, leaf first) and private key into ctx. */
static enum load_fail load_cert_key(SSL_CTX *ctx, const char *cert, const char *key)
{
	unsigned long e;

	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		return LOAD_CERT;
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		/* A key of the certificate's type is compared on load. */
		e = ERR_peek_error();
		if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
			return LOAD_MISMATCH;
		return LOAD_KEY;
	}
	/* A key of another type lands in another slot: no certificate for it. */
	if (SSL_CTX_check_private_key(ctx) != 1)
		return LOAD_MISMATCH;
	return LOAD_OK;
}

/* Message for a failed load_cert_key, naming the config keys and files. */
static struct tls_ctx *load_fail(struct tls_ctx *t, enum load_fail f, const char *cert_key, const char *cert,
                                 const char *key_key, const char *key, char *errbuf, size_t errsz)
{
	unsigned long e;

	switch (f) {
	case LOAD_CERT:
		return ctx_fail(t, errbuf, errsz, "%s %s", cert_key, cert);
	case LOAD_KEY:
		e = ERR_peek_error();
		/* OpenSSL 3 says only "unsupported" for a file with no key in it. */
		if (ERR_GET_LIB(e) == ERR_LIB_OSSL_DECODER && ERR_GET_REASON(e) == ERR_R_UNSUPPORTED) {
			ERR_clear_error();
			snprintf(errbuf, errsz, "%s %s: no PEM private key found", key_key, key);
			tls_ctx_unref(&t);
			return NULL;
		}
		return ctx_fail(t, errbuf, errsz, "%s %s (private key)", key_key, key);
	default:
		e = ERR_peek_error();
		if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_NO_CERTIFICATE_ASSIGNED) {
			ERR_clear_error();
			snprintf(errbuf, errsz, "%s %s does not match %s %s: different key type", key_key, key,
			         cert_key, cert);
			tls_ctx_unref(&t);
			return NULL;
		}
		return ctx_fail(t, errbuf, errsz, "%s %s does not match %s %s", key_key, key, cert_key, cert);
	}
}

struct tls_ctx *tls_server_ctx_new(const struct config *cfg, char *errbuf, size_t errsz, const char **err)
{
	const char *cert = cfg->client_tls_cert_file;
	const char *key;
	enum load_fail f;
	struct tls_ctx *t;
	int minv;

	*err = NULL;
	if (cert == NULL || cert[0] == '\0')
		return NULL;
	key = cfg->client_tls_key_file && cfg->client_tls_key_file[0] ? cfg->client_tls_key_file : cert;
	*err = errbuf;
	switch (cfg->client_tls_min_version) {
	case 0:
	case 0x0303:
		minv = TLS1_2_VERSION;
		break;
	case 0x0304:
		minv = TLS1_3_VERSION;
		break;
	default:
		snprintf(errbuf, errsz, "client_tls_min_version 0x%04x: not supported", cfg->client_tls_min_version);
		return NULL;
	}
	ERR_clear_error();
	t = ctx_alloc(TLS_server_method());
	if (t == NULL)
		return ctx_fail(t, errbuf, errsz, "client TLS context");
	SSL_CTX_set_options(t->ssl_ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Resumption works through stateless tickets; a server-side session
	 * cache would only grow memory. */
	SSL_CTX_set_session_cache_mode(t->ssl_ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_set_min_proto_version(t->ssl_ctx, minv) != 1)
		return ctx_fail(t, errbuf, errsz, "client_tls_min_version");
	if (cfg->client_tls_ciphers && SSL_CTX_set_cipher_list(t->ssl_ctx, cfg->client_tls_ciphers) != 1)
		return ctx_fail(t, errbuf, errsz, "client_tls_ciphers \"%s\"", cfg->client_tls_ciphers);
	f = load_cert_key(t->ssl_ctx, cert, key);
	if (f != LOAD_OK)
		return load_fail(t, f, "client_tls_cert_file", cert,
		                 key == cert ? "client_tls_cert_file" : "client_tls_key_file", key, errbuf, errsz);
	*err = NULL;
	return t;
}

/* imapproxy's tls_no_tlsv1* flags as a minimum version: each flag lifts
 * the floor above the version it names (a "hole", e.g. only TLS 1.1 off,
 * cannot be offered by a client anyway). */
static int client_min_version(const struct config *cfg)
{
	if (cfg->tls_no_tlsv1_2)
		return TLS1_3_VERSION;
	if (cfg->tls_no_tlsv1_1)
		return TLS1_2_VERSION;
	if (cfg->tls_no_tlsv1)
		return TLS1_1_VERSION;
	return TLS1_VERSION;
}

struct tls_ctx *tls_client_ctx_new(const struct config *cfg, char *errbuf, size_t errsz, const char **err)
{
	struct tls_ctx *t;
	struct stat st;
	enum load_fail f;

	*err = errbuf;
	ERR_clear_error();
	t = ctx_alloc(TLS_client_method());
	if (t == NULL)
		return ctx_fail(t, errbuf, errsz, "backend TLS context");
	if (SSL_CTX_set_min_proto_version(t->ssl_ctx, client_min_version(cfg)) != 1)
		return ctx_fail(t, errbuf, errsz, "tls_no_tlsv1*");
	SSL_CTX_set_verify(t->ssl_ctx, cfg->tls_verify_server ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	if (cfg->tls_ciphers && SSL_CTX_set_cipher_list(t->ssl_ctx, cfg->tls_ciphers) != 1)
		return ctx_fail(t, errbuf, errsz, "tls_ciphers \"%s\"", cfg->tls_ciphers);
	if (cfg->tls_ca_file && SSL_CTX_load_verify_file(t->ssl_ctx, cfg->tls_ca_file) != 1)
		return ctx_fail(t, errbuf, errsz, "tls_ca_file %s", cfg->tls_ca_file);
	if (cfg->tls_ca_path) {
		/* OpenSSL accepts any directory name here and fails only at
		 * verification time; say it now. */
		const char *bad = NULL;

		if (stat(cfg->tls_ca_path, &st) == -1)
			bad = strerror(errno);
		else if (!S_ISDIR(st.st_mode))
			bad = "not a directory";
		if (bad != NULL) {
			snprintf(errbuf, errsz, "tls_ca_path %s: %s", cfg->tls_ca_path, bad);
			tls_ctx_unref(&t);
			return NULL;
		}
		if (SSL_CTX_load_verify_dir(t->ssl_ctx, cfg->tls_ca_path) != 1)
			return ctx_fail(t, errbuf, errsz, "tls_ca_path %s", cfg->tls_ca_path);
	}
	if (!cfg->tls_ca_file && !cfg->tls_ca_path && SSL_CTX_set_default_verify_paths(t->ssl_ctx) != 1)
		return ctx_fail(t, errbuf, errsz, "system CA paths");
	if (cfg->tls_cert_file) {
		const char *key = cfg->tls_key_file ? cfg->tls_key_file : cfg->tls_cert_file;

		f = load_cert_key(t->ssl_ctx, cfg->tls_cert_file, key);
		if (f != LOAD_OK)
			return load_fail(t, f, "tls_cert_file", cfg->tls_cert_file,
			                 cfg->tls_key_file ? "tls_key_file" : "tls_cert_file", key, errbuf, errsz);
	}
	*err = NULL;
	return t;
}

void tls_ctx_ref(struct tls_ctx *t)
{
	t->refs++;
}

void tls_ctx_unref(struct tls_ctx **tp)
{
	struct tls_ctx *t = *tp;

	*tp = NULL;
	if (t == NULL || --t->refs > 0)
		return;
	SSL_CTX_free(t->ssl_ctx);
	free(t);
}

/* ------------------------------------------------------------------ */
/* the transport */

static struct tls_conn *state(const struct conn *c)
{
	return SSL_get_app_data((SSL *)c->impl);
}

/* Forget stale directions once the handshake is over. */
static void settle(struct tls_conn *t, SSL *ssl)
{
	if (!t->up && SSL_is_init_finished(ssl)) {
		t->up = true;
		t->rd_want = t->wr_want = 0;
	}
}

/* The peer is gone (close_notify or a bare TCP close). */
static ssize_t ended(struct tls_conn *t, SSL *ssl, bool reading, bool usable)
{
	t->eof = true;
	if (!usable)
		t->dead = EPIPE;
	if (!SSL_is_init_finished(ssl))
		snprintf(t->err, sizeof(t->err), "connection closed during the handshake");
	if (reading)
		return 0;
	errno = EPIPE;
	return -1;
}

/* Map a failed SSL_read/SSL_write (ret r, errno sys right after it). */
static ssize_t failed(struct tls_conn *t, SSL *ssl, int r, int sys, bool reading)
{
	int e = SSL_get_error(ssl, r);
	unsigned long q;
	long vr;

	settle(t, ssl);
	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		*(reading ? &t->rd_want : &t->wr_want) = e == SSL_ERROR_WANT_READ ? LOOP_READ : LOOP_WRITE;
		if (reading)
			t->rd_blocked = true;
		ERR_clear_error();
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		ERR_clear_error();
		return ended(t, ssl, reading, true);
	case SSL_ERROR_SYSCALL:
		q = ERR_peek_error();
		if (q == 0 && (r == 0 || sys == 0))
			return ended(t, ssl, reading, false);
		if (sys != 0 && (q == 0 || ERR_SYSTEM_ERROR(q))) {
			ERR_clear_error();
			t->dead = sys;
			snprintf(t->err, sizeof(t->err), "%s", strerror(sys));
			errno = sys;
			return -1;
		}
		break;
	case SSL_ERROR_SSL:
		q = ERR_peek_error();
		if (ERR_GET_LIB(q) == ERR_LIB_SSL && ERR_GET_REASON(q) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
			ERR_clear_error();
			return ended(t, ssl, reading, false);
		}
		if (ERR_GET_LIB(q) == ERR_LIB_SSL && ERR_GET_REASON(q) == SSL_R_CERTIFICATE_VERIFY_FAILED &&
		    (vr = SSL_get_verify_result(ssl)) != X509_V_OK) {
			ERR_clear_error();
			snprintf(t->err, sizeof(t->err), "certificate verify failed: %s",
			         X509_verify_cert_error_string(vr));
			t->dead = EPROTO;
			errno = EPROTO;
			return -1;
		}
		break;
	default:
		break;
	}
	if (!err_reason(t->err, sizeof(t->err)))
		snprintf(t->err, sizeof(t->err), "TLS error %d", e);
	t->dead = EPROTO;
	errno = EPROTO;
	return -1;
}

/*
 * Fill p from as many records as OpenSSL holds or the socket gives, until
 * p is full or a read would block: one call per wake-up, not one per
 * record. An end or error met after some bytes is returned by the next
 * call (tls_pending says so, the socket may never be readable again).
 */
static ssize_t tls_read(struct conn *c, void *p, size_t n)
{
	SSL *ssl = c->impl;
	struct tls_conn *t;
	size_t got = 0;
	int r, sys;

	if (ssl == NULL) {
		errno = EBADF;
		return -1;
	}
	t = SSL_get_app_data(ssl);
	if (t->eof)
		return 0;
	if (t->dead) {
		errno = t->dead;
		return -1;
	}
	while (got < n) {
		size_t want = n - got;

		ERR_clear_error();
		errno = 0;
		r = SSL_read(ssl, (char *)p + got, want > INT_MAX ? INT_MAX : (int)want);
		sys = errno;
		if (r <= 0) {
			if (got == 0)
				return failed(t, ssl, r, sys, true);
			(void)failed(t, ssl, r, sys, true);
			break;
		}
		settle(t, ssl);
		t->rd_want = 0;
		t->rd_blocked = false;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/*
 * After -1/EAGAIN the caller must retry with the same bytes at the start
 * of its buffer (the buffer may have moved and grown, never shrunk):
 * OpenSSL may already have sealed part of them into a record.
 */
static ssize_t tls_write(struct conn *c, const void *p, size_t n)
{
	SSL *ssl = c->impl;
	struct tls_conn *t;
	int r, sys;

	if (ssl == NULL) {
		errno = EBADF;
		return -1;
	}
	t = SSL_get_app_data(ssl);
	if (t->dead) {
		errno = t->dead;
		return -1;
	}
	if (n == 0)
		return 0;
	ERR_clear_error();
	errno = 0;
	r = SSL_write(ssl, p, n > INT_MAX ? INT_MAX : (int)n);
	sys = errno;
	if (r > 0) {
		settle(t, ssl);
		t->wr_want = 0;
		return r;
	}
	return failed(t, ssl, r, sys, false);
}

static void tls_close(struct conn *c)
{
	SSL *ssl = c->impl;
	struct tls_conn *t;

	if (ssl != NULL) {
		t = SSL_get_app_data(ssl);
		/* One close_notify, best effort: never wait for the peer's. */
		if (!t->dead && SSL_is_init_finished(ssl)) {
			ERR_clear_error();
			(void)SSL_shutdown(ssl);
		}
		ERR_clear_error();
		tls_ctx_unref(&t->ctx);
		free(t);
		SSL_free(ssl);
		c->impl = NULL;
	}
	close(c->io.fd);
}

/* During the handshake both directions count; afterwards only the
 * crossed ones (a read waiting for writability, a write for readability):
 * the owner already asks for its own directions, and an owner that paused
 * reading must not be woken for readable bytes. */
static unsigned tls_want(const struct conn *c)
{
	struct tls_conn *t;

	if (c->impl == NULL)
		return 0;
	t = state(c);
	if (t->dead || (!t->up && !SSL_is_init_finished(c->impl)))
		return t->dead ? 0 : (t->rd_want | t->wr_want);
	return (t->rd_want & LOOP_WRITE) | (t->wr_want & LOOP_READ);
}

/*
 * Would conn_read give something without a socket event? Decrypted bytes
 * of the current record, whole records read ahead, or an end or error
 * held back behind bytes already returned. After a read that waited for
 * the socket, what remains is part of a record: the socket brings the
 * rest (claiming it pending then would spin the loop).
 */
static int tls_pending(const struct conn *c)
{
	SSL *ssl = c->impl;
	struct tls_conn *t;

	if (ssl == NULL)
		return 0;
	t = state(c);
	if (t->eof || t->dead)
		return 1;
	return SSL_pending(ssl) > 0 || (!t->rd_blocked && SSL_has_pending(ssl));
}

/*
 * OpenSSL does not say how many bytes its read-ahead buffer holds; it holds
 * at most the buffer (TLS_READ_BUF, or one largest record if larger), and
 * the decrypted bytes not yet returned sit in it too. Counted twice and
 * with a whole record of slack, the bound errs on the high side only.
 */
static size_t tls_held(const struct conn *c)
{
	SSL *ssl = c->impl;
	int p;

	if (ssl == NULL)
		return 0;
	p = SSL_pending(ssl);
	return TLS_READ_BUF + SSL3_RT_MAX_PACKET_SIZE + (p > 0 ? (size_t)p : 0);
}

static const struct conn_ops tls_ops = { tls_read, tls_write, tls_close, tls_want, tls_pending, tls_held };

static SSL *start(struct conn *c, struct tls_ctx *ctx)
{
	struct tls_conn *t;
	SSL *ssl;

	if (c->impl != NULL || c->io.fd == -1) {
		errno = EINVAL;
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	ERR_clear_error();
	ssl = SSL_new(ctx->ssl_ctx);
	if (ssl == NULL || SSL_set_fd(ssl, c->io.fd) != 1) {
		ERR_clear_error();
		SSL_free(ssl);
		free(t);
		errno = ENOMEM;
		return NULL;
	}
	SSL_set_app_data(ssl, t);
	return ssl;
}

static void attach(struct conn *c, SSL *ssl, struct tls_ctx *ctx)
{
	struct tls_conn *t = SSL_get_app_data(ssl);

	tls_ctx_ref(ctx);
	t->ctx = ctx;
	c->impl = ssl;
	c->ops = &tls_ops;
}

static void discard(SSL *ssl)
{
	free(SSL_get_app_data(ssl));
	SSL_free(ssl);
	ERR_clear_error();
}

int conn_tls_start_server(struct conn *c, struct tls_ctx *ctx)
{
	SSL *ssl = start(c, ctx);

	if (ssl == NULL)
		return -1;
	SSL_set_accept_state(ssl);
	attach(c, ssl, ctx);
	return 0;
}

/* "1.2.3.4", "::1" or "[::1]" → the bare address in buf; else false. */
static bool ip_literal(const char *name, char *buf, size_t sz)
{
	unsigned char bin[sizeof(struct in6_addr)];
	size_t len = strlen(name);

	if (len >= 2 && name[0] == '[' && name[len - 1] == ']') {
		name++;
		len -= 2;
	}
	if (len == 0 || len >= sz)
		return false;
	memcpy(buf, name, len);
	buf[len] = '\0';
	return inet_pton(AF_INET, buf, bin) == 1 || inet_pton(AF_INET6, buf, bin) == 1;
}

int conn_tls_start_client(struct conn *c, struct tls_ctx *ctx, const char *server_name, bool verify)
{
	char ip[INET6_ADDRSTRLEN + 1];
	SSL *ssl = start(c, ctx);
	bool is_ip;

	if (ssl == NULL)
		return -1;
	SSL_set_connect_state(ssl);
	SSL_set_verify(ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	if (server_name != NULL && server_name[0] != '\0') {
		is_ip = ip_literal(server_name, ip, sizeof(ip));
		/* RFC 6066: SNI carries host names only. */
		if (!is_ip && SSL_set_tlsext_host_name(ssl, server_name) != 1)
			goto fail;
		if (verify) {
			SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ip) != 1
			          : SSL_set1_host(ssl, server_name) != 1)
				goto fail;
		}
	}
	attach(c, ssl, ctx);
	return 0;
fail:
	discard(ssl);
	errno = ENOMEM;
	return -1;
}

bool conn_tls_established(const struct conn *c)
{
	return c->ops == &tls_ops && c->impl != NULL && SSL_is_init_finished((SSL *)c->impl);
}

const char *conn_tls_error(const struct conn *c)
{
	if (c->ops != &tls_ops || c->impl == NULL)
		return NULL;
	return state(c)->err[0] ? state(c)->err : NULL;
}

const char *conn_tls_describe(const struct conn *c, char *buf, size_t bufsz)
{
	SSL *ssl;

	if (!conn_tls_established(c))
		return NULL;
	ssl = c->impl;
	snprintf(buf, bufsz, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
	return buf;
}
