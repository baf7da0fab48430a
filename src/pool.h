/*
 * pool — the connection cache: authenticated backend connections kept
 * after a client's LOGOUT and handed to the same user's next login with
 * the same password.
 *
 * A connection enters the pool only through pool_adopt, which first makes
 * it clean (waits for commands in flight, ends an IDLE, deselects the
 * mailbox, each reply checked by tag) and parks it only then; anything
 * doubtful is logged out and closed instead. A parked connection is
 * watched: the server closing it or saying BYE removes it at once.
 */
#ifndef IMAPGATE_POOL_H
#define IMAPGATE_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "credhash.h"
#include "imap_track.h"
#include "control.h"

/* What the pool needs to know about a connection handed to it. */
struct pool_handoff {
	const char *user;
	size_t user_len;
	const uint8_t *pwhash;  /* CREDHASH_LEN bytes */
	uint64_t login_ms;      /* when the real backend LOGIN happened */
	const char *ok_text;    /* the server's LOGIN OK text ("[CAPABILITY ...] Logged in") */
	bool tls;
	uint64_t session_id;    /* for the log */
	unsigned reuses;        /* times this connection was handed out before */
};

/* A parked connection taken for a new session. */
struct pool_taken {
	uint64_t login_ms;
	char ok_text[512];
	bool tls;
	unsigned reuses;
};

struct pool_conn;

/*
 * A login waiting for a connection of its user that is still being cleaned
 * (the same user's LOGOUT a moment ago). One cleaning connection is
 * promised to at most one waiter. done is called once, from the pool's own
 * event, unless the waiter cancels first: ready means the connection is
 * clean and pool_take_promised hands it over (within done, or it parks as
 * usual); otherwise it is gone (server closed, not clean, shutdown).
 */
struct pool_waiter {
	void (*done)(struct pool_waiter *w, bool ready);
	void *data;
	struct pool_conn *entry;   /* the promised connection, NULL when not waiting */
	uint64_t cleaning_session; /* its session, for the log */
};

/* Is the cache on (cache_size and cache_expiration_time non-zero)? */
bool pool_enabled(void);
/* Take over the connection c (moved out; c is left closed) with its
 * tracker, and park it once clean or close it. */
void pool_adopt(struct conn *c, const struct imap_track *t, const struct pool_handoff *h);
/* Find a parked connection of user whose password hash matches; on success
 * move it into *c (io callback fn/data) and fill *out. */
bool pool_take(const char *user, size_t ulen, const uint8_t *pwhash, struct conn *c, struct imap_track *t,
               void (*fn)(struct loop_io *, unsigned), void *data, struct pool_taken *out);
/* Wait for a connection of user, with the same password hash, that is
 * being cleaned and not yet promised to another login: true when w now
 * waits. */
bool pool_wait(const char *user, size_t ulen, const uint8_t *pwhash, struct pool_waiter *w);
/* The waiter gives up (its client left, its time is up): the connection
 * parks as if nobody had waited. No-op when not waiting. */
void pool_wait_cancel(struct pool_waiter *w);
/* From done(w, true): move the promised connection into *c, as pool_take. */
bool pool_take_promised(struct pool_waiter *w, struct conn *c, struct imap_track *t,
                        void (*fn)(struct loop_io *, unsigned), void *data, struct pool_taken *out);
/* Room for one more backend connection under cache_size (evicting the
 * oldest parked one if needed)? in_use counts connections held by sessions
 * (logged in or logging in). */
bool pool_make_room(unsigned in_use);
/* Parked and cleaning connections. */
unsigned pool_count(void);
/* The backend changed or the cache went off (reload): close every parked
 * and cleaning connection. */
void pool_flush(const char *reason);
/* The ages may have changed (reload): re-arm the parked connections' timers. */
void pool_reconfigure(void);
/* Shutdown: LOGOUT and close everything. */
void pool_shutdown(void);
/* Free closed entries (before-sleep). */
void pool_reap(void);
/* "pool" control listing of the pool's own entries. */
unsigned pool_list(struct strbuf *out, bool json, bool comma);
/* XPROXY_DUMPICC lines: one "* XPROXY_DUMPICC <fd> <user> Cached" each. */
void pool_dump(void (*emit)(void *arg, int fd, const char *user, const char *what), void *arg);

#endif
