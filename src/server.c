/*
 * server — process-wide state and the few helpers that act on it.
 */
#include "server.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "log.h"

struct server srv;

struct addrinfo *server_resolve_backend(const struct config *cfg)
{
	struct addrinfo hints, *res = NULL;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_family = cfg->ipversion_only == 4 ? AF_INET : cfg->ipversion_only == 6 ? AF_INET6 : AF_UNSPEC;
	rc = getaddrinfo(cfg->server_hostname, cfg->server_port, &hints, &res);
	if (rc != 0) {
		log_err("event=resolve_failed host=%s port=%s error=\"%s\"", cfg->server_hostname, cfg->server_port,
		        gai_strerror(rc));
		return NULL;
	}
	return res;
}

void server_set_caps(const char *caps, size_t len)
{
	char tmp[sizeof(srv.caps)];
	size_t o = 0;

	/* Keep only atom characters and single spaces: this text is replayed. */
	for (size_t i = 0; i < len && o + 1 < sizeof(tmp); i++) {
		unsigned char c = (unsigned char)caps[i];

		if (c > 0x20 && c < 0x7f && c != '"' && c != '(' && c != ')' && c != '{' && c != '\\')
			tmp[o++] = (char)c;
		else if (c == ' ' && o > 0 && tmp[o - 1] != ' ')
			tmp[o++] = ' ';
	}
	while (o > 0 && tmp[o - 1] == ' ')
		o--;
	tmp[o] = '\0';
	if (o == 0)
		return;
	if (strcmp(tmp, srv.caps) != 0) {
		memcpy(srv.caps, tmp, o + 1);
		log_info("event=backend_capabilities caps=\"%s\"", srv.caps);
	}
}
