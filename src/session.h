/*
 * session — one client connection from accept to close: pre-login
 * commands, the backend login, then the relay.
 */
#ifndef IMAPGATE_SESSION_H
#define IMAPGATE_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "addr.h"
#include "backend.h"
#include "buf.h"
#include "conn.h"
#include "imap_parser.h"
#include "imap_track.h"
#include "loop.h"
#include "pool.h"

enum session_state {
	SS_PROXY,   /* waiting for the PROXY header of a trusted balancer */
	SS_PREAUTH, /* imapgate answers the client itself */
	SS_SASL,    /* waiting for an AUTHENTICATE response line */
	SS_LOGIN,   /* backend connection and LOGIN in progress */
	SS_RELAY,   /* logged in: bytes flow both ways */
	SS_CLOSED,
};

struct ipcount;

struct session {
	struct session *next, *prev;
	uint64_t id;
	enum session_state state;
	struct conn client;
	struct backend be;     /* during SS_LOGIN; be.conn is the relay's server side */
	struct sockaddr_storage peer;
	char peer_ip[ADDR_STRLEN];
	unsigned peer_port;
	struct buf cin;        /* client bytes not yet parsed (pre-login) */
	struct buf cout;       /* to the client */
	struct buf bout;       /* to the server (relay) */
	struct imap_parser *parser;
	struct loop_timer timer;
	unsigned bad_commands;
	bool flush_then_close; /* stop reading, close once cout is written */
	bool client_eof;
	const char *close_reason;
	char tag[IMAP_TAG_MAX + 1];      /* tag of the LOGIN/AUTHENTICATE in progress */
	char *user, *pass;     /* decoded credentials; pass wiped after login */
	size_t user_len, pass_len;
	char *id_fields;       /* the client's ID fields, re-serialised, to pass on */
	char *id_args;         /* the ID list sent to the backend at login */
	/* The real client behind a trusted webmail host (ID x-originating-ip). */
	bool has_origin;
	struct sockaddr_storage origin;
	char origin_ip[ADDR_STRLEN];
	unsigned origin_port;
	int sasl_mech;         /* 1 = PLAIN, 2 = LOGIN */
	int sasl_step;
	uint64_t started_ms;    /* accept time: duration_ms in the disconnect line */
	uint64_t active_ms;     /* last relay traffic either way: idle_timeout */
	uint64_t bytes_in, bytes_out;
	struct imap_track track; /* both directions of the relay (imap_track.h) */
	size_t bout_hold;      /* trailing bytes of bout held back (a command's head) */
	bool logout_pending;   /* the client's LOGOUT is waiting for its commands' replies */
	char logout_tag[TRACK_TAG_MAX + 1];
	bool be_pending;       /* counted in logins_in_progress (backend login, or a pooled connection not yet answered) */
	bool reused;           /* the backend connection came from the pool */
	uint64_t login_ms;     /* when the backend connection really logged in */
	uint64_t login_start_ms; /* when this session's login began (for the log) */
	unsigned reuses;       /* times it was handed out before this session */
	char *ok_text;         /* the server's LOGIN OK text, for reuse */
	bool traced;           /* relay bytes go to the protocol trace (trace.h) */
	uint8_t pwhash[32];    /* keyed hash of the password tried (credhash) */
	uint8_t guard_pwkey[32]; /* the guard's key of it (Dovecot's pwhash with policy_hash_nonce) */
	struct pool_waiter pool_wait; /* waiting for this user's connection being cleaned */
	bool pool_waiting;
	uint64_t pool_wait_ms; /* when that wait began */
	struct loop_timer login_timer; /* holds back a failure reply */
	char deferred[600];    /* the reply the failure delay holds back */
	bool deferred_close;   /* BYE after the deferred reply (now banned) */
	bool state_relay_counted; /* counted in server_connections_in_use */
	struct ipcount *ipc;   /* its address's count (per-address limit), or NULL */
	struct session *ip_next, *ip_prev; /* the other sessions of that address */
	struct session *wait_next, *wait_prev; /* the pre-login FIFO (eviction) */
	bool wait_linked;      /* on that FIFO */
	bool stuck;            /* a reply did not fit: the client does not read */
	bool client_tls;       /* the client side runs TLS (implicit or STARTTLS) */
	bool tls_noted;        /* handshake logged and counted */
	bool starttls_pending; /* STARTTLS answered; TLS starts once cout is out */
	bool pending_queued;   /* on srv.pending */
	struct session *pending_next;
	unsigned listen_opts;  /* LISTEN_OPT_* of the listener it came from */
};

/* Take over an accepted, set-up socket. Sends the greeting. */
void session_accept(int fd, const struct sockaddr *sa, socklen_t salen, unsigned listen_opts);
/* Run sessions whose TLS holds decrypted bytes (before-sleep, before reap). */
void session_run_pending(void);
/* Free sessions closed during this loop iteration (before-sleep hook). */
void session_reap(void);
/* Register the session module's control commands ("pool"). */
void session_register_control(void);
/* SIGTERM: pre-login sessions get BYE now; relays may finish. */
void session_shutdown_begin(void);
/* Shutdown deadline: end every session (BYE to client, LOGOUT to server). */
void session_shutdown_force(void);

/* Pre-login command handling (preauth.c). */
void preauth_greeting(struct session *s);
void preauth_command(struct session *s, const struct imap_command *cmd);
void preauth_sasl_line(struct session *s, const char *line, size_t len);
void preauth_login_done(struct session *s, enum backend_result r, const char *text);
void preauth_capability_line(const struct session *s, char *out, size_t outsz);

/* The IMAP front's side of the guard (session_guard.c; the guard itself
 * is guard_service.h). */
/* At admission: false when the address is banned (BYE sent, closing). */
bool session_guard_admit(struct session *s);
/* Would session_guard_admit refuse sa? Changes and logs nothing. */
bool session_guard_banned(const struct sockaddr *sa);
/* Before a login (credentials set): false when refused (reply sent). The
 * per-user slow-down holds back failure replies, never a login. */
bool session_guard_before_login(struct session *s);
/* The backend refused: record it. Returns the delay before the answer;
 * *close_after when this client's own address is now banned; note gets
 * " guard=counted failures=N/M ..." for the log line. */
uint32_t session_guard_failure(struct session *s, const char *reason, bool *close_after, char *note,
                               size_t notesz);
void session_guard_success(struct session *s);
/* Log the ban line a failure caused, after that failure's own line. */
void session_guard_log_held(void);

/* Services session.c gives preauth.c. */
void session_reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void session_bye(struct session *s, const char *text, const char *reason);
/* Stop reading; close once everything queued for the client is written. */
void session_flush_close(struct session *s, const char *reason);
void session_start_login(struct session *s);
void session_defer_reply(struct session *s, uint32_t delay_ms, bool close_after);
void session_enter_relay(struct session *s);
void session_forget_credentials(struct session *s);
/* Drop unparsed client input and the parser's partial command; returns the
 * number of bytes dropped. */
size_t session_discard_input(struct session *s);
/* Record the real client address (from a trusted ID). */
void session_set_origin(struct session *s, const struct cidr *addr, unsigned port);
/* The address that stands for the client: the origin when known, else the peer. */
const struct sockaddr *session_client_addr(const struct session *s);

#endif
