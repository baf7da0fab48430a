/*
 * backend — open a connection to the IMAP server and log in on it:
 * connect (with timeout), greeting, capabilities, ID, preauth_command,
 * LOGIN with the credentials as synchronising literals under our own tags.
 */
#ifndef IMAPGATE_BACKEND_H
#define IMAPGATE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "conn.h"
#include "loop.h"

enum backend_result {
	BACKEND_OK,          /* logged in; text = the tagged OK's text */
	BACKEND_REFUSED,     /* the server said NO/BAD to LOGIN; text = "NO ..." */
	BACKEND_ID_REFUSED,  /* the server refused the client's ID */
	BACKEND_PREAUTH_REFUSED, /* preauth_command was not answered OK */
	BACKEND_UNAVAILABLE, /* connect/greeting/timeout/protocol failure */
};

struct backend;
typedef void backend_done_fn(struct backend *b, enum backend_result r, const char *text);

struct backend {
	struct conn conn;
	struct loop_timer timer;
	struct buf in, out;
	int state;
	unsigned ai_tried;
	/* Borrowed from the owner until done() is called: */
	const char *user, *pass; /* NULL user = probe only (CAPABILITY, LOGOUT) */
	size_t user_len, pass_len;
	const char *id_args;     /* "(...)" to send as ID, or NULL */
	backend_done_fn *done;
	void *data;
	char reason[96];         /* snake_case reason when UNAVAILABLE */
	char text[512];          /* the server's OK text, for the client */
	char detail[160];        /* e.g. the TLS verification error */
	bool tls;                /* the connection runs TLS (implicit or STARTTLS) */
	bool caps_starttls, caps_logindisabled; /* as this server said */
	bool discard_after_line;
	bool overflow;           /* a command did not fit: the login fails */
};

/*
 * Start connecting and logging in; done() is called exactly once from the
 * loop (never from inside this call). On BACKEND_OK the caller takes over
 * b->conn (its io callback must be replaced) and the bytes left in b->in;
 * otherwise the connection is already closed.
 */
void backend_start(struct backend *b, backend_done_fn *done, void *data);
/* Abort: close everything, done() is not called. Safe when idle. */
void backend_abort(struct backend *b);
/* Is word (case-insensitive) one of the space-separated atoms in p[0..len),
 * the list ending at len or at ']'? */
bool backend_caps_have(const char *p, size_t len, const char *word);
/* Release buffers (after the owner took what it needs). */
void backend_release(struct backend *b);

#endif
