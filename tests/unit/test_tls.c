/* Unit tests for tls: contexts and the TLS conn transport.
 *
 * Certificates (a CA, a server certificate for localhost/127.0.0.1 signed by
 * it, a second CA, a second server certificate, a client certificate) are
 * made at start with OpenSSL into a temporary directory. Each test joins a
 * server conn and a client conn over a non-blocking socketpair and pumps
 * them with conn_read/conn_write and poll(), bounded. The tests reach
 * inside c->impl (the SSL*) only to observe: SNI, peer certificates, and to
 * cap a client's version. They never use the network beyond socketpairs and
 * one loopback TCP pair, and every wait is a bounded poll(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "conn.h"
#include "loop.h"
#include "tls.h"

static char dir[64];
static char ca_pem[128], ca2_pem[128], srv_pem[128], srv_key[128], srv2_pem[128], srv2_key[128];
static char other_key[128], cli_pem[128], cli_key[128], combined_pem[128], missing[128];
static struct loop *lp;

/* ------------------------------------------------------------------ */
/* certificates */

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(x, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/* A certificate for key; self-signed when issuer is NULL. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, long serial, X509 *issuer, EVP_PKEY *issuer_key, int is_ca,
                       const char *san, const char *eku)
{
	X509 *x = X509_new();
	X509_NAME *name;

	assert_non_null(x);
	assert_int_equal(X509_set_version(x, 2), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
	assert_int_equal(X509_set_pubkey(x, key), 1);
	name = X509_get_subject_name(x);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0), 1);
	assert_int_equal(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name), 1);
	add_ext(x, issuer ? issuer : x, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	add_ext(x, issuer ? issuer : x, NID_key_usage,
	        is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
	add_ext(x, issuer ? issuer : x, NID_subject_key_identifier, "hash");
	if (issuer)
		add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
	if (eku)
		add_ext(x, issuer ? issuer : x, NID_ext_key_usage, eku);
	if (san)
		add_ext(x, issuer ? issuer : x, NID_subject_alt_name, san);
	assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static void write_pem(const char *path, X509 *x, X509 *chain, EVP_PKEY *key)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	if (x)
		assert_int_equal(PEM_write_X509(f, x), 1);
	if (chain)
		assert_int_equal(PEM_write_X509(f, chain), 1);
	if (key)
		assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	assert_int_equal(fclose(f), 0);
}

static int make_certs(void **st)
{
	EVP_PKEY *ca_k, *ca2_k, *srv_k, *srv2_k, *oth_k, *cli_k;
	X509 *ca, *ca2, *srv, *srv2, *cli;

	(void)st;
	snprintf(dir, sizeof(dir), "/tmp/test_tls.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
#define P(var, name) snprintf(var, sizeof(var), "%s/" name, dir)
	P(ca_pem, "ca.pem");
	P(ca2_pem, "ca2.pem");
	P(srv_pem, "server.pem");
	P(srv_key, "server.key");
	P(srv2_pem, "server2.pem");
	P(srv2_key, "server2.key");
	P(other_key, "other.key");
	P(cli_pem, "client.pem");
	P(cli_key, "client.key");
	P(combined_pem, "combined.pem");
	P(missing, "no-such-file.pem");
#undef P
	ca_k = EVP_EC_gen("P-256");
	ca2_k = EVP_EC_gen("P-256");
	srv_k = EVP_EC_gen("P-256");
	srv2_k = EVP_EC_gen("P-256");
	oth_k = EVP_EC_gen("P-256");
	cli_k = EVP_EC_gen("P-256");
	if (!ca_k || !ca2_k || !srv_k || !srv2_k || !oth_k || !cli_k)
		return -1;
	ca = make_cert(ca_k, "imapgate test CA", 1, NULL, NULL, 1, NULL, NULL);
	ca2 = make_cert(ca2_k, "imapgate other CA", 1, NULL, NULL, 1, NULL, NULL);
	srv = make_cert(srv_k, "localhost", 1001, ca, ca_k, 0, "DNS:localhost,IP:127.0.0.1,IP:::1", "serverAuth");
	srv2 = make_cert(srv2_k, "localhost", 1002, ca, ca_k, 0, "DNS:localhost,IP:127.0.0.1", "serverAuth");
	cli = make_cert(cli_k, "imapgate client", 2001, ca, ca_k, 0, NULL, "clientAuth");
	write_pem(ca_pem, ca, NULL, NULL);
	write_pem(ca2_pem, ca2, NULL, NULL);
	write_pem(srv_pem, srv, ca, NULL); /* chain: leaf then CA */
	write_pem(srv_key, NULL, NULL, srv_k);
	write_pem(srv2_pem, srv2, NULL, NULL);
	write_pem(srv2_key, NULL, NULL, srv2_k);
	write_pem(other_key, NULL, NULL, oth_k);
	write_pem(cli_pem, cli, NULL, NULL);
	write_pem(cli_key, NULL, NULL, cli_k);
	write_pem(combined_pem, srv, NULL, srv_k); /* cert and key in one file */
	X509_free(ca);
	X509_free(ca2);
	X509_free(srv);
	X509_free(srv2);
	X509_free(cli);
	EVP_PKEY_free(ca_k);
	EVP_PKEY_free(ca2_k);
	EVP_PKEY_free(srv_k);
	EVP_PKEY_free(srv2_k);
	EVP_PKEY_free(oth_k);
	EVP_PKEY_free(cli_k);
	lp = loop_new();
	return lp ? 0 : -1;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int remove_certs(void **st)
{
	(void)st;
	loop_free(&lp);
	return nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* ------------------------------------------------------------------ */
/* contexts and a connected pair */

static struct config server_cfg(void)
{
	struct config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.client_tls_cert_file = srv_pem;
	cfg.client_tls_key_file = srv_key;
	cfg.client_tls_min_version = 0x0303;
	return cfg;
}

static struct config client_cfg(void)
{
	struct config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.server_hostname = "localhost";
	cfg.tls_ca_file = ca_pem;
	cfg.tls_verify_server = true;
	return cfg;
}

static struct tls_ctx *server_ctx(const struct config *cfg)
{
	char errbuf[512];
	const char *err = "unset";
	struct tls_ctx *t = tls_server_ctx_new(cfg, errbuf, sizeof(errbuf), &err);

	if (t == NULL)
		fail_msg("tls_server_ctx_new: %s", err ? err : "(no error)");
	assert_null(err);
	return t;
}

static struct tls_ctx *client_ctx(const struct config *cfg)
{
	char errbuf[512];
	const char *err = "unset";
	struct tls_ctx *t = tls_client_ctx_new(cfg, errbuf, sizeof(errbuf), &err);

	if (t == NULL)
		fail_msg("tls_client_ctx_new: %s", err ? err : "(no error)");
	assert_null(err);
	return t;
}

struct pair {
	struct conn s, c; /* server side (imapgate toward clients), client side */
};

static void noop_io(struct loop_io *io, unsigned events)
{
	(void)io;
	(void)events;
}

/* A socketpair as two TCP conns, then TLS on both; the contexts keep
 * only the references the conns took. */
static void pair_open(struct pair *p, struct tls_ctx *sctx, struct tls_ctx *cctx, const char *name, bool verify)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	conn_tcp_init(&p->s, sv[0], noop_io, p);
	conn_tcp_init(&p->c, sv[1], noop_io, p);
	assert_int_equal(conn_tls_start_server(&p->s, sctx), 0);
	assert_int_equal(conn_tls_start_client(&p->c, cctx, name, verify), 0);
	assert_false(conn_tls_established(&p->s));
	assert_false(conn_tls_established(&p->c));
}

static void pair_close(struct pair *p)
{
	conn_close(lp, &p->c);
	conn_close(lp, &p->s);
	assert_false(conn_is_open(&p->c));
	assert_false(conn_is_open(&p->s));
}

static short poll_events(const struct conn *c, unsigned base)
{
	unsigned w = base | conn_want(c);
	short ev = 0;

	if (w & LOOP_READ)
		ev |= POLLIN;
	if (w & LOOP_WRITE)
		ev |= POLLOUT;
	return ev ? ev : POLLIN;
}

/* Wait (bounded) until one of the two sockets is ready for what it needs.
 * Returns false when nothing happened for 500 ms. */
static bool wait_pair(struct pair *p, unsigned sbase, unsigned cbase)
{
	struct pollfd pfd[2] = {
		{ p->s.io.fd, poll_events(&p->s, sbase), 0 },
		{ p->c.io.fd, poll_events(&p->c, cbase), 0 },
	};

	return poll(pfd, 2, 500) > 0;
}

/* Handshake state of one side: 0 going on, 1 established, -1 failed
 * (errno in *err, 0 for EOF). */
static int step(struct conn *c, int *err)
{
	char b[64];
	ssize_t r = conn_read(c, b, sizeof(b));

	if (r > 0)
		fail_msg("unexpected application data during the handshake");
	if (r == 0) {
		*err = 0;
		return -1;
	}
	if (errno != EAGAIN) {
		*err = errno;
		return -1;
	}
	return conn_tls_established(c) ? 1 : 0;
}

/* Drive both handshakes through conn_read until each side is established
 * or failed. Results as step(). */
static void handshake(struct pair *p, int *rs, int *rc, int *es, int *ec)
{
	int i;

	*rs = *rc = 0;
	*es = *ec = 0;
	for (i = 0; i < 200; i++) {
		if (*rc == 0)
			*rc = step(&p->c, ec);
		if (*rs == 0)
			*rs = step(&p->s, es);
		if (*rs != 0 && *rc != 0)
			return;
		if (!wait_pair(p, 0, 0))
			return;
	}
}

static void handshake_ok(struct pair *p)
{
	int rs, rc, es, ec;

	handshake(p, &rs, &rc, &es, &ec);
	if (rs != 1 || rc != 1)
		fail_msg("handshake: server %d (%s) client %d (%s)", rs, conn_tls_error(&p->s) ? conn_tls_error(&p->s) : "-",
		         rc, conn_tls_error(&p->c) ? conn_tls_error(&p->c) : "-");
	assert_null(conn_tls_error(&p->s));
	assert_null(conn_tls_error(&p->c));
}

/* Move n bytes from one side to the other, writing from a buffer that is
 * copied to a new place before every retry (the caller's buffer may move).
 * Returns the bytes received, malloc'd. */
static unsigned char *transfer(struct pair *p, struct conn *from, struct conn *to, const unsigned char *data, size_t n)
{
	unsigned char *got = malloc(n ? n : 1);
	unsigned char *moving = NULL;
	size_t sent = 0, recvd = 0;
	int idle = 0;

	assert_non_null(got);
	while (recvd < n) {
		bool progress = false;
		ssize_t r;

		if (sent < n) {
			free(moving);
			moving = malloc(n - sent);
			assert_non_null(moving);
			memcpy(moving, data + sent, n - sent);
			r = conn_write(from, moving, n - sent);
			if (r > 0) {
				assert_true((size_t)r <= n - sent);
				sent += (size_t)r;
				progress = true;
			} else {
				assert_int_equal(r, -1);
				assert_int_equal(errno, EAGAIN);
			}
		}
		do {
			r = conn_read(to, got + recvd, n - recvd);
			if (r > 0) {
				recvd += (size_t)r;
				progress = true;
			} else {
				assert_int_equal(r, -1);
				assert_int_equal(errno, EAGAIN);
			}
		} while (r > 0 && recvd < n);
		if (!progress) {
			struct pollfd pfd[2] = {
				{ from->io.fd, poll_events(from, sent < n ? LOOP_WRITE : 0), 0 },
				{ to->io.fd, poll_events(to, LOOP_READ), 0 },
			};

			if (poll(pfd, 2, 500) == 0)
				assert_true(++idle < 4);
		}
	}
	free(moving);
	(void)p;
	return got;
}

static void check_transfer(struct pair *p, struct conn *from, struct conn *to, const void *data, size_t n)
{
	unsigned char *got = transfer(p, from, to, data, n);

	assert_memory_equal(got, data, n);
	free(got);
}

/* Read until EOF (bounded); returns what conn_read returned last. */
static ssize_t read_to_end(struct conn *c)
{
	char b[256];
	ssize_t r;
	int i;

	for (i = 0; i < 50; i++) {
		r = conn_read(c, b, sizeof(b));
		if (r == 0 || (r == -1 && errno != EAGAIN))
			return r;
		if (r == -1) {
			struct pollfd pfd = { c->io.fd, poll_events(c, LOOP_READ), 0 };

			(void)poll(&pfd, 1, 200);
		}
	}
	return -2;
}

static SSL *ssl_of(struct conn *c)
{
	return c->impl;
}

static long peer_serial(struct conn *c)
{
	X509 *x = SSL_get1_peer_certificate(ssl_of(c));
	long serial;

	assert_non_null(x);
	serial = ASN1_INTEGER_get(X509_get0_serialNumber(x));
	X509_free(x);
	return serial;
}

/* ------------------------------------------------------------------ */
/* tests */

static void test_handshake_data_eof(void **st)
{
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg), *cctx = client_ctx(&ccfg);
	static const char hello[] = "a1 CAPABILITY\r\n", reply[] = "* CAPABILITY IMAP4rev1\r\na1 OK done\r\n";
	struct pair p;
	char desc[128];
	char b[8];

	(void)st;
	pair_open(&p, sctx, cctx, "localhost", true);
	/* Both references now belong to the conns. */
	tls_ctx_unref(&sctx);
	tls_ctx_unref(&cctx);
	assert_null(sctx);

	/* The client starts the handshake from a read and waits for the server. */
	assert_int_equal(conn_read(&p.c, b, sizeof(b)), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(conn_want(&p.c), LOOP_READ);
	assert_null(conn_tls_describe(&p.c, desc, sizeof(desc)));

	handshake_ok(&p);
	assert_true(conn_tls_established(&p.s));
	assert_true(conn_tls_established(&p.c));
	assert_non_null(conn_tls_describe(&p.s, desc, sizeof(desc)));
	assert_true(strncmp(desc, "TLSv1.3 TLS_", 12) == 0);
	assert_non_null(conn_tls_describe(&p.c, desc, sizeof(desc)));
	assert_true(strncmp(desc, "TLSv1.3 TLS_", 12) == 0);
	/* Once up, a read waiting for data asks for nothing beyond the owner's own interest. */
	assert_int_equal(conn_want(&p.s), 0);
	assert_int_equal(conn_want(&p.c), 0);
	assert_false(conn_pending(&p.s));

	check_transfer(&p, &p.c, &p.s, hello, strlen(hello));
	check_transfer(&p, &p.s, &p.c, reply, strlen(reply));

	/* The client closes: close_notify reaches the server as EOF. */
	conn_close(lp, &p.c);
	assert_int_equal(read_to_end(&p.s), 0);
	assert_int_equal(conn_read(&p.s, b, sizeof(b)), 0); /* and stays at EOF */
	assert_null(conn_tls_error(&p.s));
	conn_close(lp, &p.s);
	conn_close(lp, &p.s); /* safe twice */
}

static void test_eof_without_close_notify(void **st)
{
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg), *cctx = client_ctx(&ccfg);
	struct pair p;
	char b[8];

	(void)st;
	pair_open(&p, sctx, cctx, "localhost", true);
	handshake_ok(&p);
	check_transfer(&p, &p.c, &p.s, "x", 1);
	/* A TCP close with no close_notify (many IMAP clients after LOGOUT). */
	assert_int_equal(shutdown(p.c.io.fd, SHUT_WR), 0);
	assert_int_equal(read_to_end(&p.s), 0);
	/* Writing to it fails without a signal or a crash; the conn closes cleanly. */
	assert_int_equal(conn_write(&p.s, "y", 1), -1);
	assert_int_equal(errno, EPIPE);
	assert_int_equal(conn_read(&p.s, b, sizeof(b)), 0);
	pair_close(&p);
	tls_ctx_unref(&sctx);
	tls_ctx_unref(&cctx);
}

static void test_eof_during_handshake(void **st)
{
	struct config scfg = server_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg);
	struct conn s;
	char b[8];
	int sv[2];

	(void)st;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	conn_tcp_init(&s, sv[0], noop_io, NULL);
	assert_int_equal(conn_tls_start_server(&s, sctx), 0);
	assert_int_equal(conn_read(&s, b, sizeof(b)), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(conn_want(&s), LOOP_READ);
	close(sv[1]); /* a port scanner */
	assert_int_equal(conn_read(&s, b, sizeof(b)), 0);
	assert_non_null(conn_tls_error(&s));
	conn_close(lp, &s);
	tls_ctx_unref(&sctx);
}

static void test_reset_by_peer(void **st)
{
	static const unsigned char partial_hello[] = { 0x16, 0x03, 0x01, 0x00, 0x80, 0x01 };
	struct config scfg = server_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg);
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct linger lg = { 1, 0 };
	struct pollfd pfd;
	struct conn s;
	int lfd, cfd, afd;
	char b[8];

	(void)st;
	/* Over TCP: a RST is what a socketpair cannot give. */
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
	cfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(cfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	afd = accept(lfd, NULL, NULL);
	assert_true(afd >= 0);
	close(lfd);
	assert_int_equal(conn_setup_socket(afd, 0), 0);
	conn_tcp_init(&s, afd, noop_io, NULL);
	assert_int_equal(conn_tls_start_server(&s, sctx), 0);
	assert_int_equal(write(cfd, partial_hello, sizeof(partial_hello)), (ssize_t)sizeof(partial_hello));
	pfd.fd = afd;
	pfd.events = POLLIN;
	assert_int_equal(poll(&pfd, 1, 1000), 1);
	assert_int_equal(conn_read(&s, b, sizeof(b)), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(setsockopt(cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(cfd);
	assert_int_equal(poll(&pfd, 1, 1000), 1);
	assert_int_equal(conn_read(&s, b, sizeof(b)), -1);
	assert_int_equal(errno, ECONNRESET);
	assert_string_equal(conn_tls_error(&s), strerror(ECONNRESET));
	conn_close(lp, &s);
	tls_ctx_unref(&sctx);
}

static void test_garbage_instead_of_hello(void **st)
{
	static const char plain[] = "a LOGIN user pass\r\n";
	struct config scfg = server_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg);
	struct conn s;
	char b[8];
	int sv[2];

	(void)st;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	conn_tcp_init(&s, sv[0], noop_io, NULL);
	assert_int_equal(conn_tls_start_server(&s, sctx), 0);
	/* Plaintext where a ClientHello belongs (STARTTLS injection leftovers). */
	assert_int_equal(write(sv[1], plain, strlen(plain)), (ssize_t)strlen(plain));
	assert_int_equal(conn_read(&s, b, sizeof(b)), -1);
	assert_int_equal(errno, EPROTO);
	assert_non_null(conn_tls_error(&s));
	assert_false(conn_tls_established(&s));
	assert_int_equal(ERR_peek_error(), 0);
	/* The failure sticks, and asks nothing of the loop. */
	assert_int_equal(conn_write(&s, "x", 1), -1);
	assert_int_equal(errno, EPROTO);
	assert_int_equal(conn_want(&s), 0);
	conn_close(lp, &s);
	close(sv[1]);
	tls_ctx_unref(&sctx);
}

static void test_verify_ip_literal_no_sni(void **st)
{
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg), *cctx = client_ctx(&ccfg);
	struct pair p;
	int rs, rc, es, ec;

	(void)st;
	pair_open(&p, sctx, cctx, "127.0.0.1", true);
	handshake_ok(&p);
	/* RFC 6066: no SNI for an address. */
	assert_null(SSL_get_servername(ssl_of(&p.s), TLSEXT_NAMETYPE_host_name));
	pair_close(&p);

	/* An address the certificate does not carry. */
	pair_open(&p, sctx, cctx, "127.0.0.2", true);
	handshake(&p, &rs, &rc, &es, &ec);
	assert_int_equal(rc, -1);
	assert_int_equal(ec, EPROTO);
	assert_string_equal(conn_tls_error(&p.c), "certificate verify failed: IP address mismatch");
	assert_int_not_equal(rs, 1);
	pair_close(&p);

	/* The same in brackets. */
	pair_open(&p, sctx, cctx, "[::1]", true);
	handshake_ok(&p);
	pair_close(&p);
	tls_ctx_unref(&sctx);
	tls_ctx_unref(&cctx);
}

static void test_sni_sent(void **st)
{
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg), *cctx = client_ctx(&ccfg);
	struct pair p;

	(void)st;
	pair_open(&p, sctx, cctx, "localhost", true);
	handshake_ok(&p);
	assert_string_equal(SSL_get_servername(ssl_of(&p.s), TLSEXT_NAMETYPE_host_name), "localhost");
	pair_close(&p);

	/* SNI is sent without verification too. */
	pair_open(&p, sctx, cctx, "imap.example.org", false);
	handshake_ok(&p);
	assert_string_equal(SSL_get_servername(ssl_of(&p.s), TLSEXT_NAMETYPE_host_name), "imap.example.org");
	pair_close(&p);
	tls_ctx_unref(&sctx);
	tls_ctx_unref(&cctx);
}

static void test_wrong_host_name(void **st)
{
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg), *cctx = client_ctx(&ccfg);
	struct pair p;
	int rs, rc, es, ec;
	char b[8];

	(void)st;
	pair_open(&p, sctx, cctx, "example.org", true);
	handshake(&p, &rs, &rc, &es, &ec);
	assert_int_equal(rc, -1);
	assert_int_equal(ec, EPROTO);
	assert_false(conn_tls_established(&p.c));
	assert_string_equal(conn_tls_error(&p.c), "certificate verify failed: hostname mismatch");
	/* The client's alert ends the server's side too. */
	assert_int_equal(rs, -1);
	assert_non_null(conn_tls_error(&p.s));
	/* Nothing left in OpenSSL's (per-thread, shared) error queue. */
	assert_int_equal(ERR_peek_error(), 0);
	/* Still failed, same errno, nothing wanted. */
	assert_int_equal(conn_read(&p.c, b, sizeof(b)), -1);
	assert_int_equal(errno, EPROTO);
	assert_int_equal(conn_want(&p.c), 0);
	pair_close(&p);

	/* No wildcard or partial match against a different domain either. */
	pair_open(&p, sctx, cctx, "localhost.example.org", true);
	handshake(&p, &rs, &rc, &es, &ec);
	assert_int_equal(rc, -1);
	assert_string_equal(conn_tls_error(&p.c), "certificate verify failed: hostname mismatch");
	pair_close(&p);

	/* Verification off: the same name is accepted. */
	pair_open(&p, sctx, cctx, "example.org", false);
	handshake_ok(&p);
	check_transfer(&p, &p.c, &p.s, "ok\r\n", 4);
	pair_close(&p);
	tls_ctx_unref(&sctx);
	tls_ctx_unref(&cctx);
}

static void test_unknown_ca(void **st)
{
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg), *cctx;
	struct pair p;
	int rs, rc, es, ec;

	(void)st;
	/* Another CA only. */
	ccfg.tls_ca_file = ca2_pem;
	cctx = client_ctx(&ccfg);
	pair_open(&p, sctx, cctx, "localhost", true);
	handshake(&p, &rs, &rc, &es, &ec);
	assert_int_equal(rc, -1);
	assert_int_equal(ec, EPROTO);
	/* The server sends its chain up to the root, which nobody here trusts. */
	assert_string_equal(conn_tls_error(&p.c), "certificate verify failed: self-signed certificate in certificate chain");
	pair_close(&p);
	/* ... which does not matter with verification off. */
	pair_open(&p, sctx, cctx, "localhost", false);
	handshake_ok(&p);
	pair_close(&p);
	tls_ctx_unref(&cctx);

	/* The system's CAs (default paths) do not know the test CA either. */
	ccfg.tls_ca_file = NULL;
	cctx = client_ctx(&ccfg);
	pair_open(&p, sctx, cctx, "localhost", true);
	handshake(&p, &rs, &rc, &es, &ec);
	assert_int_equal(rc, -1);
	assert_string_equal(conn_tls_error(&p.c), "certificate verify failed: self-signed certificate in certificate chain");
	pair_close(&p);
	tls_ctx_unref(&cctx);
	tls_ctx_unref(&sctx);

	/* With the leaf alone, the issuer is missing. */
	scfg.client_tls_cert_file = srv2_pem;
	scfg.client_tls_key_file = srv2_key;
	sctx = server_ctx(&scfg);
	ccfg.tls_ca_file = ca2_pem;
	cctx = client_ctx(&ccfg);
	pair_open(&p, sctx, cctx, "localhost", true);
	handshake(&p, &rs, &rc, &es, &ec);
	assert_int_equal(rc, -1);
	assert_string_equal(conn_tls_error(&p.c), "certificate verify failed: unable to get local issuer certificate");
	pair_close(&p);
	tls_ctx_unref(&cctx);
	ccfg.tls_ca_file = ca_pem;

	/* A CA directory (c_rehash layout) works like a file. */
	{
		char link[160];
		X509 *x;
		FILE *f = fopen(ca_pem, "r");

		assert_non_null(f);
		x = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
		assert_non_null(x);
		snprintf(link, sizeof(link), "%s/%08lx.0", dir, X509_subject_name_hash(x));
		X509_free(x);
		assert_int_equal(symlink(ca_pem, link), 0);
		ccfg.tls_ca_path = dir;
		cctx = client_ctx(&ccfg);
		pair_open(&p, sctx, cctx, "localhost", true);
		handshake_ok(&p);
		pair_close(&p);
		tls_ctx_unref(&cctx);
		assert_int_equal(unlink(link), 0);
	}
	tls_ctx_unref(&sctx);
}

static void test_ctx_verify_default(void **st)
{
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg), *cctx;
	struct pair p;

	(void)st;
	/* The ctx's tls_verify_server is a default; the conn's flag decides. */
	ccfg.tls_verify_server = false;
	cctx = client_ctx(&ccfg);
	pair_open(&p, sctx, cctx, "example.org", false);
	handshake_ok(&p);
	pair_close(&p);
	tls_ctx_unref(&cctx);
	tls_ctx_unref(&sctx);
}

static void test_pending_after_large_write(void **st)
{
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg), *cctx = client_ctx(&ccfg);
	unsigned char big[10000], got[10000];
	size_t have = 0;
	struct pair p;
	ssize_t r;
	int i;

	(void)st;
	for (i = 0; i < (int)sizeof(big); i++)
		big[i] = (unsigned char)(i * 7 + 3);
	pair_open(&p, sctx, cctx, "localhost", true);
	handshake_ok(&p);
	/* One record (< 16 KB) in one write. */
	assert_int_equal(conn_write(&p.c, big, sizeof(big)), (ssize_t)sizeof(big));
	for (i = 0; i < 20 && have == 0; i++) {
		struct pollfd pfd = { p.s.io.fd, POLLIN, 0 };

		assert_int_equal(poll(&pfd, 1, 500), 1);
		r = conn_read(&p.s, got, 100);
		if (r > 0)
			have = (size_t)r;
	}
	assert_int_equal(have, 100);
	/* The rest is decrypted inside OpenSSL; the socket has nothing left. */
	assert_true(conn_pending(&p.s));
	{
		struct pollfd pfd = { p.s.io.fd, POLLIN, 0 };

		assert_int_equal(poll(&pfd, 1, 0), 0);
	}
	while (have < sizeof(big)) {
		r = conn_read(&p.s, got + have, sizeof(big) - have);
		assert_true(r > 0);
		have += (size_t)r;
	}
	assert_false(conn_pending(&p.s));
	assert_memory_equal(got, big, sizeof(big));
	pair_close(&p);
	tls_ctx_unref(&sctx);
	tls_ctx_unref(&cctx);
}

static void test_bulk_both_ways(void **st)
{
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg), *cctx = client_ctx(&ccfg);
	size_t n = 1 << 20, i;
	unsigned char *data = malloc(n);
	struct pair p;

	(void)st;
	assert_non_null(data);
	for (i = 0; i < n; i++)
		data[i] = (unsigned char)((i * 2654435761u) >> 13);
	pair_open(&p, sctx, cctx, "localhost", true);
	/* Writes drive the handshake too. */
	check_transfer(&p, &p.c, &p.s, data, n);
	check_transfer(&p, &p.s, &p.c, data, n);
	assert_true(conn_tls_established(&p.s));
	pair_close(&p);
	free(data);
	tls_ctx_unref(&sctx);
	tls_ctx_unref(&cctx);
}

static void test_write_drives_server_handshake(void **st)
{
	static const char greeting[] = "* OK imapgate ready\r\n";
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg), *cctx = client_ctx(&ccfg);
	struct pair p;

	(void)st;
	pair_open(&p, sctx, cctx, "localhost", true);
	/* An implicit-TLS listener writes its greeting first: the write waits
	 * for the ClientHello. */
	assert_int_equal(conn_write(&p.s, greeting, strlen(greeting)), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(conn_want(&p.s), LOOP_READ);
	check_transfer(&p, &p.s, &p.c, greeting, strlen(greeting));
	pair_close(&p);
	tls_ctx_unref(&sctx);
	tls_ctx_unref(&cctx);
}

static void test_min_tls13_refuses_tls12_client(void **st)
{
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *sctx, *cctx = client_ctx(&ccfg);
	struct pair p;
	char desc[128];
	int rs, rc, es, ec;

	(void)st;
	/* TLS 1.2 is fine with the default minimum. */
	sctx = server_ctx(&scfg);
	pair_open(&p, sctx, cctx, "localhost", true);
	assert_int_equal(SSL_set_max_proto_version(ssl_of(&p.c), TLS1_2_VERSION), 1);
	handshake_ok(&p);
	assert_non_null(conn_tls_describe(&p.s, desc, sizeof(desc)));
	assert_true(strncmp(desc, "TLSv1.2 ", 8) == 0);
	pair_close(&p);
	tls_ctx_unref(&sctx);

	scfg.client_tls_min_version = 0x0304;
	sctx = server_ctx(&scfg);
	pair_open(&p, sctx, cctx, "localhost", true);
	assert_int_equal(SSL_set_max_proto_version(ssl_of(&p.c), TLS1_2_VERSION), 1);
	handshake(&p, &rs, &rc, &es, &ec);
	assert_int_equal(rs, -1);
	assert_int_equal(es, EPROTO);
	assert_string_equal(conn_tls_error(&p.s), "unsupported protocol");
	assert_int_equal(rc, -1);
	assert_non_null(strstr(conn_tls_error(&p.c), "protocol version"));
	pair_close(&p);
	tls_ctx_unref(&sctx);
	tls_ctx_unref(&cctx);
}

static void test_client_min_version_flags(void **st)
{
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *sctx, *cctx;
	struct pair p;
	int rs, rc, es, ec;

	(void)st;
	/* tls_no_tlsv1_2 (with 1.0 and 1.1 off) leaves TLS 1.3 only: a server
	 * capped at TLS 1.2 cannot be reached. */
	ccfg.tls_no_tlsv1 = ccfg.tls_no_tlsv1_1 = ccfg.tls_no_tlsv1_2 = true;
	cctx = client_ctx(&ccfg);
	sctx = server_ctx(&scfg);
	pair_open(&p, sctx, cctx, "localhost", true);
	assert_int_equal(SSL_set_max_proto_version(ssl_of(&p.s), TLS1_2_VERSION), 1);
	handshake(&p, &rs, &rc, &es, &ec);
	assert_int_equal(rc, -1);
	assert_int_equal(rs, -1);
	pair_close(&p);
	pair_open(&p, sctx, cctx, "localhost", true);
	handshake_ok(&p);
	pair_close(&p);
	tls_ctx_unref(&sctx);
	tls_ctx_unref(&cctx);
}

static void test_server_ctx_errors(void **st)
{
	struct config cfg = server_cfg();
	char errbuf[512];
	const char *err = "unset";
	struct tls_ctx *t;

	(void)st;
	/* No certificate: no context, and no error. */
	cfg.client_tls_cert_file = NULL;
	assert_null(tls_server_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_null(err);

	cfg = server_cfg();
	cfg.client_tls_cert_file = missing;
	err = NULL;
	assert_null(tls_server_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_non_null(err);
	assert_non_null(strstr(err, "client_tls_cert_file"));
	assert_non_null(strstr(err, missing));
	assert_non_null(strstr(err, "No such file or directory"));

	cfg = server_cfg();
	cfg.client_tls_key_file = missing;
	assert_null(tls_server_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_non_null(strstr(err, "client_tls_key_file"));
	assert_non_null(strstr(err, missing));

	/* A key of another certificate: both files named. */
	cfg = server_cfg();
	cfg.client_tls_key_file = other_key;
	assert_null(tls_server_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_non_null(err);
	assert_non_null(strstr(err, other_key));
	assert_non_null(strstr(err, srv_pem));
	assert_non_null(strstr(err, "does not match"));
	assert_non_null(strstr(err, "key values mismatch"));

	/* A key file holding no key. */
	cfg = server_cfg();
	cfg.client_tls_key_file = ca_pem;
	assert_null(tls_server_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_non_null(strstr(err, ca_pem));
	assert_non_null(strstr(err, "no PEM private key found"));

	/* A certificate file with no certificate in it (a key). */
	cfg = server_cfg();
	cfg.client_tls_cert_file = srv_key;
	assert_null(tls_server_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_non_null(strstr(err, srv_key));
	assert_non_null(strstr(err, "no start line"));

	cfg = server_cfg();
	cfg.client_tls_ciphers = "NO-SUCH-CIPHER";
	assert_null(tls_server_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_non_null(strstr(err, "client_tls_ciphers"));
	assert_non_null(strstr(err, "no cipher match"));

	cfg = server_cfg();
	cfg.client_tls_min_version = 0x0301;
	assert_null(tls_server_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_non_null(strstr(err, "client_tls_min_version"));

	/* Truncated messages stay NUL-terminated. */
	cfg = server_cfg();
	cfg.client_tls_cert_file = missing;
	assert_null(tls_server_ctx_new(&cfg, errbuf, 16, &err));
	assert_int_equal(strlen(err), 15);

	/* Key in the certificate file; ciphers accepted. */
	cfg = server_cfg();
	cfg.client_tls_cert_file = combined_pem;
	cfg.client_tls_key_file = NULL;
	cfg.client_tls_ciphers = "ECDHE+AESGCM";
	err = "unset";
	t = tls_server_ctx_new(&cfg, errbuf, sizeof(errbuf), &err);
	assert_non_null(t);
	assert_null(err);
	tls_ctx_unref(&t);
	assert_null(t);
	tls_ctx_unref(&t); /* NULL is fine */

	/* Key defaults to the certificate file, which here holds none. */
	cfg.client_tls_cert_file = srv_pem;
	assert_null(tls_server_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	{
		char want[256];

		snprintf(want, sizeof(want), "client_tls_cert_file %s: no PEM private key found", srv_pem);
		assert_string_equal(err, want);
	}
}

static void test_client_ctx_errors(void **st)
{
	struct config cfg = client_cfg();
	char errbuf[512];
	const char *err = NULL;
	struct tls_ctx *t;

	(void)st;
	cfg.tls_ca_file = missing;
	assert_null(tls_client_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_non_null(err);
	assert_non_null(strstr(err, "tls_ca_file"));
	assert_non_null(strstr(err, missing));

	cfg = client_cfg();
	cfg.tls_ca_path = missing;
	assert_null(tls_client_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_non_null(strstr(err, "tls_ca_path"));
	assert_non_null(strstr(err, "No such file or directory"));
	cfg.tls_ca_path = ca_pem;
	assert_null(tls_client_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_non_null(strstr(err, "not a directory"));

	cfg = client_cfg();
	cfg.tls_ciphers = "NO-SUCH-CIPHER";
	assert_null(tls_client_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_non_null(strstr(err, "tls_ciphers"));

	cfg = client_cfg();
	cfg.tls_cert_file = cli_pem;
	cfg.tls_key_file = other_key;
	assert_null(tls_client_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_non_null(strstr(err, "tls_key_file"));
	assert_non_null(strstr(err, other_key));
	assert_non_null(strstr(err, "does not match"));

	cfg.tls_cert_file = missing;
	assert_null(tls_client_ctx_new(&cfg, errbuf, sizeof(errbuf), &err));
	assert_non_null(strstr(err, "tls_cert_file"));
	assert_non_null(strstr(err, missing));

	cfg = client_cfg();
	cfg.tls_ca_path = dir;
	err = "unset";
	t = tls_client_ctx_new(&cfg, errbuf, sizeof(errbuf), &err);
	assert_non_null(t);
	assert_null(err);
	tls_ctx_unref(&t);
}

static int accept_any(int ok, X509_STORE_CTX *x)
{
	(void)ok;
	(void)x;
	return 1;
}

static void test_client_certificate(void **st)
{
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg), *cctx;
	struct pair p;
	X509 *x;

	(void)st;
	ccfg.tls_cert_file = cli_pem;
	ccfg.tls_key_file = cli_key;
	cctx = client_ctx(&ccfg);
	pair_open(&p, sctx, cctx, "localhost", true);
	/* The server side asks for a certificate only in this test. */
	SSL_set_verify(ssl_of(&p.s), SSL_VERIFY_PEER, accept_any);
	handshake_ok(&p);
	check_transfer(&p, &p.c, &p.s, "x", 1); /* TLS 1.3: the certificate arrives with Finished */
	x = SSL_get1_peer_certificate(ssl_of(&p.s));
	assert_non_null(x);
	assert_int_equal(ASN1_INTEGER_get(X509_get0_serialNumber(x)), 2001);
	X509_free(x);
	pair_close(&p);
	tls_ctx_unref(&cctx);
	tls_ctx_unref(&sctx);
}

static void test_reload_keeps_old_sessions(void **st)
{
	struct config scfg = server_cfg(), ccfg = client_cfg();
	struct tls_ctx *current = server_ctx(&scfg), *cctx = client_ctx(&ccfg);
	struct pair old, fresh;

	(void)st;
	pair_open(&old, current, cctx, "localhost", true);
	handshake_ok(&old);
	assert_int_equal(peer_serial(&old.c), 1001);

	/* SIGHUP: a new context replaces the current one; the old session
	 * holds the only reference to the old context now. */
	scfg.client_tls_cert_file = srv2_pem;
	scfg.client_tls_key_file = srv2_key;
	tls_ctx_unref(&current);
	current = server_ctx(&scfg);

	pair_open(&fresh, current, cctx, "localhost", true);
	handshake_ok(&fresh);
	assert_int_equal(peer_serial(&fresh.c), 1002);
	check_transfer(&old, &old.c, &old.s, "old\r\n", 5);
	check_transfer(&old, &old.s, &old.c, "still\r\n", 7);
	check_transfer(&fresh, &fresh.c, &fresh.s, "new\r\n", 5);
	pair_close(&old); /* frees the old context (ASan would tell) */
	check_transfer(&fresh, &fresh.s, &fresh.c, "ok\r\n", 4);
	pair_close(&fresh);
	tls_ctx_unref(&current);
	tls_ctx_unref(&cctx);
}

static void test_start_errors(void **st)
{
	struct config scfg = server_cfg();
	struct tls_ctx *sctx = server_ctx(&scfg);
	struct conn c;
	int sv[2];

	(void)st;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	conn_tcp_init(&c, sv[0], noop_io, NULL);
	assert_int_equal(conn_tls_start_server(&c, sctx), 0);
	/* Not twice. */
	assert_int_equal(conn_tls_start_server(&c, sctx), -1);
	assert_null(conn_tls_error(&c));
	conn_close(lp, &c);
	close(sv[1]);

	/* A plain conn is not TLS. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	conn_tcp_init(&c, sv[0], noop_io, NULL);
	assert_false(conn_tls_established(&c));
	assert_null(conn_tls_error(&c));
	conn_close(lp, &c);
	close(sv[1]);
	tls_ctx_unref(&sctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake_data_eof),
		cmocka_unit_test(test_eof_without_close_notify),
		cmocka_unit_test(test_eof_during_handshake),
		cmocka_unit_test(test_reset_by_peer),
		cmocka_unit_test(test_garbage_instead_of_hello),
		cmocka_unit_test(test_verify_ip_literal_no_sni),
		cmocka_unit_test(test_sni_sent),
		cmocka_unit_test(test_wrong_host_name),
		cmocka_unit_test(test_unknown_ca),
		cmocka_unit_test(test_ctx_verify_default),
		cmocka_unit_test(test_pending_after_large_write),
		cmocka_unit_test(test_bulk_both_ways),
		cmocka_unit_test(test_write_drives_server_handshake),
		cmocka_unit_test(test_min_tls13_refuses_tls12_client),
		cmocka_unit_test(test_client_min_version_flags),
		cmocka_unit_test(test_server_ctx_errors),
		cmocka_unit_test(test_client_ctx_errors),
		cmocka_unit_test(test_client_certificate),
		cmocka_unit_test(test_reload_keeps_old_sessions),
		cmocka_unit_test(test_start_errors),
	};

	/* OpenSSL's socket BIO writes with write(2), like the daemon. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, make_certs, remove_certs);
}
