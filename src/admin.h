/*
 * admin — imapproxy's XPROXY_* admin commands, answered before login, and
 * the "trace" control command.
 *
 * They have no authentication of their own: only enable_admin_commands and
 * admin_allow (client addresses) protect them.
 */
#ifndef IMAPGATE_ADMIN_H
#define IMAPGATE_ADMIN_H

#include <stdbool.h>

#include "imap_parser.h"

struct session;

/* Is name (any case) one of XPROXY_DUMPICC, XPROXY_NEWLOG,
 * XPROXY_RESETCOUNTERS, XPROXY_TRACE, XPROXY_VERSION? */
bool admin_is_command(const char *name);

/*
 * Answer one of them for a client not logged in. Unless
 * enable_admin_commands is on and the client's address is in admin_allow,
 * the answer is imapproxy's "<tag> BAD Unrecognized command", the refusal
 * is logged (event=admin_refused) and counted as a bad command. Never
 * blocks, except for the small synchronous writes of the trace file.
 */
void admin_command(struct session *s, const struct imap_command *cmd);

/* Register "trace [USER | --clear]" on the control socket. */
void admin_register_control(void);

#endif
