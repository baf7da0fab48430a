/*
 * policy_http — Dovecot's auth policy server, on imapgate's loop.
 *
 * Dovecot (auth_policy_server_url) asks before and after each
 * authentication of every protocol it serves, and Postfix's SMTP AUTH
 * through it: "command=allow" gets {"status":-1} for a banned address, a
 * positive status (seconds Dovecot waits) for a user under the guard's
 * slow-down, else {"status":0}; "command=report" counts a failure or a
 * success in the same guard the IMAP front uses (guard_service.h).
 *
 * A small strict HTTP/1.1 server: keep-alive, one request at a time per
 * connection, bounded request (http_req.h), an idle and request timeout,
 * at most policy_max_connections connections, callers limited to
 * policy_allow and to those sending the API key. Every error closes the
 * connection after a 4xx/5xx answer and a log line.
 */
#ifndef IMAPGATE_POLICY_HTTP_H
#define IMAPGATE_POLICY_HTTP_H

#include <stddef.h>

#include "config.h"
#include "loop.h"

/* Bind every policy_listen address of cfg (none: nothing). On error
 * *error_r says which address and why, and nothing stays open. */
int policy_open(struct loop *l, const struct config *cfg, const char **error_r);
/* After a reload: the listeners are reopened when policy_listen changed
 * (an error is returned and the old ones are kept); the other keys apply
 * from the next request. */
int policy_reload(const struct config *cfg, const char **error_r);
/* Stop accepting (shutdown begins); open connections finish their request. */
void policy_stop_accepting(void);
/* Close everything and free it. */
void policy_close(void);

/* Port of the first listener (0 when off), and connections open now. */
unsigned policy_port(void);
size_t policy_connections(void);

#endif
