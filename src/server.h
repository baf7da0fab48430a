/*
 * server — the daemon's process-wide state: the loop, the config in force,
 * the resolved backend, the capabilities last seen from it, the sessions.
 */
#ifndef IMAPGATE_SERVER_H
#define IMAPGATE_SERVER_H

#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "loop.h"

struct session;
struct tls_ctx;

struct server {
	struct loop *loop;
	struct config *cfg;        /* in force; replaced whole on reload */
	struct addrinfo *backend_ai; /* resolved server_hostname:server_port */
	unsigned backend_rr;       /* dns_rr rotation */
	char caps[2048];           /* backend's pre-login capabilities, "" = unknown */
	struct session *sessions;  /* all live sessions */
	struct session *closing;   /* closed, freed in before-sleep */
	struct session *pending;   /* TLS holds decrypted bytes for them */
	struct tls_ctx *tls_server; /* toward clients; NULL = no client TLS */
	struct tls_ctx *tls_client; /* toward the backend */
	unsigned n_sessions;
	uint64_t next_id;
	bool shutting_down;
};

extern struct server srv;

/* Resolve the backend of cfg (blocking getaddrinfo; start and reload only).
 * Returns the list (caller owns) or NULL with the reason logged. */
struct addrinfo *server_resolve_backend(const struct config *cfg);

/* Remember the backend's capability list (atoms separated by spaces). */
void server_set_caps(const char *caps, size_t len);

#endif
