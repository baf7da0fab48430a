/*
 * tls — OpenSSL behind the conn interface: contexts for the client side
 * (imapgate as TLS server: implicit TLS listeners and STARTTLS) and for the
 * backend side (imapgate as TLS client: verified, with SNI), and a conn
 * transport that runs non-blocking handshakes in the event loop.
 *
 * Nothing outside tls.c / conn_tls.c includes OpenSSL headers for TLS.
 */
#ifndef IMAPGATE_TLS_H
#define IMAPGATE_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "conn.h"

struct tls_ctx; /* wraps an SSL_CTX; reference counted */

/*
 * Server-side context from cfg's client_tls_cert_file, client_tls_key_file
 * (PEM, chain in the cert file), client_tls_ciphers, client_tls_min_version.
 * Returns NULL when no certificate is configured (*err NULL) or on error
 * (*err set to a message in errbuf naming the file and OpenSSL's reason).
 */
struct tls_ctx *tls_server_ctx_new(const struct config *cfg, char *errbuf, size_t errsz, const char **err);

/*
 * Client-side (toward the backend) context from tls_ca_file, tls_ca_path
 * (else the system default paths), tls_cert_file/tls_key_file (client
 * certificate), tls_ciphers, tls_no_tlsv1*, tls_verify_server. Returns
 * NULL with *err set on error.
 */
struct tls_ctx *tls_client_ctx_new(const struct config *cfg, char *errbuf, size_t errsz, const char **err);

void tls_ctx_ref(struct tls_ctx *t);
/* Drop a reference; frees on the last; NULLs the pointer. */
void tls_ctx_unref(struct tls_ctx **t);

/*
 * Turn an open TCP conn into TLS (the fd and loop io stay the same).
 * Server role: accept a handshake from a client. Client role: connect,
 * sending SNI = server_name and, when verify, checking the chain and that
 * the certificate matches server_name (host name or IP address).
 * The handshake runs inside conn_read/conn_write: until it completes they
 * return -1/EAGAIN and conn_want() tells which direction it waits for.
 * A failed handshake or verification makes them return -1 with errno
 * EPROTO; conn_tls_error() then gives a short reason for the log.
 * Returns 0, or -1 on allocation failure. Takes a ref on ctx.
 */
int conn_tls_start_server(struct conn *c, struct tls_ctx *ctx);
int conn_tls_start_client(struct conn *c, struct tls_ctx *ctx, const char *server_name, bool verify);

/* True once the handshake completed. */
bool conn_tls_established(const struct conn *c);
/* Reason of the last TLS failure on c ("certificate verify failed: ..."),
 * or NULL. */
const char *conn_tls_error(const struct conn *c);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384" for logs, or NULL before the handshake. */
const char *conn_tls_describe(const struct conn *c, char *buf, size_t bufsz);

#endif
