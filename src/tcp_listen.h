/*
 * tcp_listen — the listening sockets of imapgate's small HTTP endpoints
 * (metrics_listen, policy_listen): "HOST:PORT" to non-blocking,
 * close-on-exec listening sockets. The IMAP listeners have their own
 * (listener.c: backlog, EMFILE reserve, socket filters).
 */
#ifndef IMAPGATE_TCP_LISTEN_H
#define IMAPGATE_TCP_LISTEN_H

#include <stddef.h>

/*
 * Bind and listen on spec: a named or numeric host binds its first
 * address, an empty host ("*:PORT", ":PORT") binds IPv4 and IPv6 (v6
 * only). SO_REUSEADDR is set. Each socket is appended to fds (at most max
 * in all, *n counts them) and logged as "event=WHAT address=... port=...".
 * Returns 0, or -1 with err "WHAT SPEC: reason" and every socket this call
 * opened closed.
 */
int tcp_listen_spec(const char *what, const char *spec, int backlog, int *fds, size_t max, size_t *n,
                    char *err, size_t errsz);

#endif
