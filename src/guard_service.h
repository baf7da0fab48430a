/*
 * guard_service — the guard as one service for every front door.
 *
 * Two callers ask it today: the IMAP front (session_guard.c, for logins
 * through imapgate) and Dovecot's auth policy endpoint (policy_http.c, for
 * SMTP AUTH, POP3, ManageSieve and direct IMAP). It decides on what an
 * attempt is made of (address, user, protocol, password key, time) and
 * knows nothing of IMAP sessions or HTTP. Behind it: the guard's state
 * (guard.c), persistence (store_sqlite.c), the ban log lines, the
 * counters, the housekeeping timer and the control commands (bans, ban,
 * unban, why). Loop thread only; nothing here blocks.
 */
#ifndef IMAPGATE_GUARD_SERVICE_H
#define IMAPGATE_GUARD_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "guard.h"

/* One login attempt, from whichever door. */
struct gs_attempt {
	const struct sockaddr *addr; /* the real client (ban checks, trust); NULL: unknown */
	bool user_only;              /* addr stands for many clients (a webmail host that did not
	                              * name its browser): count the failure per user only */
	const char *user;            /* as the client sent it; folded to lower case inside */
	size_t user_len;
	const char *proto;           /* the door: "imap", "pop3", "smtp", "submission", "sieve" */
	const uint8_t *pwkey;        /* GUARD_PWHASH_LEN bytes naming the password tried; NULL = unknown */
};

/* Create the guard (and its SQLite store); after privileges are dropped.
 * A store that was asked for and cannot be opened is fatal. */
int guard_service_init(void);
void guard_service_reload(void);
void guard_service_shutdown(void);
/* "off", "memory only", "sqlite PATH" for status. */
const char *guard_service_describe(void);
bool guard_service_on(void);

/* Is sa inside an active ban? *expiry (may be NULL) gets its end. Changes
 * and logs nothing. */
bool guard_service_banned(const struct sockaddr *sa, uint64_t *expiry);

/* Before an attempt: banned, or the user's slow-down (delay_ms), which the
 * caller applies to failures only. Changes nothing. */
void guard_service_may_try(const struct gs_attempt *a, struct guard_verdict *v);

/*
 * A failed attempt: counted (or not: duplicate, trusted, ignored) under
 * the guard's rules, with its protocol kept for the log, why and the
 * metrics. reason is a short word ("auth_failed"). A ban it causes is
 * logged at guard_service_log_held(), after the caller's own line.
 * Returns 0, or -1 (nothing counted: out of memory, not an IP address).
 */
int guard_service_failure(const struct gs_attempt *a, const char *reason, struct guard_failure_result *r);
/* Log the ban line the last failure caused, if any. */
void guard_service_log_held(void);
/* How long to hold the answer to that failure: the random failure delay,
 * or the user's slow-down when longer; 0 when trusted or ignored. */
uint32_t guard_service_failure_delay(const struct guard_failure_result *r);
/* " guard=counted failures=N/M user_failures=U" for the caller's log line. */
void guard_service_note(const struct guard_failure_result *r, int rc, char *note, size_t notesz);

/* A successful login: trusts the address's prefix for that user. */
void guard_service_success(const struct gs_attempt *a);

/*
 * The password key both doors agree on: Dovecot's pwhash (hex text, as
 * policy_hash() makes it and Dovecot sends it) folded into the guard's
 * GUARD_PWHASH_LEN bytes, so one wrong password seen through imapgate and
 * reported again by Dovecot is one failure.
 */
void guard_service_pwkey(const char *hex, size_t len, uint8_t out[GUARD_PWHASH_LEN]);

#endif
