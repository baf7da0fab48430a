/*
 * imap_track — follow both directions of a logged-in IMAP stream without
 * buffering it, so that imapgate knows when a backend connection is clean:
 * no command in flight, no literal half sent, no mailbox selected, and no
 * state that cannot be undone (COMPRESS, ENABLE, unknown commands).
 *
 * Pure logic, no I/O: fed the bytes as they pass, byte-split anywhere.
 * Commands are counted as their lines reach the server and tagged replies
 * as they come back; a literal's bytes are skipped by count, so bulk
 * FETCH bodies cost nothing. Whenever the picture becomes uncertain the
 * stream is marked unclean for good: such a connection is never parked.
 */
#ifndef IMAPGATE_IMAP_TRACK_H
#define IMAPGATE_IMAP_TRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACK_HEAD_MAX 128 /* bytes of a client line kept to read tag and command */
#define TRACK_TAG_MAX 64

enum track_idle { TRACK_IDLE_NO, TRACK_IDLE_SENT, TRACK_IDLE_RUNNING };

struct imap_track {
	/* client -> server */
	uint64_t c_literal;     /* literal bytes still to pass */
	bool c_mid_line;        /* inside a command line (or its continuation after a literal) */
	bool c_in_head;         /* the line's first bytes are being read: held back */
	bool c_await_plus;      /* the line ended in a synchronising literal, no "+" yet */
	char c_head[TRACK_HEAD_MAX];
	unsigned c_head_len;
	char c_tail[24];        /* end of the line, to spot "{n}" / "{n+}" */
	unsigned c_tail_len;
	char c_tag[TRACK_TAG_MAX + 1]; /* tag of the command being sent */
	bool c_args;            /* the command being sent takes arguments (it reads its literals) */
	bool c_nonsync;         /* a "{n+}" was sent: a BAD may mean it was not read */
	/* server -> client */
	uint64_t s_literal;
	bool s_mid_line;
	char s_head[TRACK_TAG_MAX + 24];
	unsigned s_head_len;
	bool s_head_done;
	bool s_data;            /* untagged data: the only server lines that carry literals */
	char s_tail[24];
	unsigned s_tail_len;
	/* what is known of the connection */
	unsigned in_flight;     /* commands sent and not yet completed */
	enum track_idle idle;
	bool selected;          /* SELECT or EXAMINE was sent: deselect before parking */
	bool unclean;           /* never park */
	bool lost;              /* the stream can no longer be read (COMPRESS): stop */
	bool bye;               /* the server said BYE */
	const char *unclean_why;
	/* the last tagged reply */
	char last_tag[TRACK_TAG_MAX + 1];
	char last_status[4];    /* "OK", "NO", "BAD" */
	uint64_t tagged_seen;
};

/* What a client chunk held that the relay must act on. */
struct track_client_result {
	size_t used;       /* bytes looked at (all of them unless logout) */
	size_t hold;       /* trailing bytes of used that must not be sent yet */
	bool logout;       /* a LOGOUT line ends at used; it is the last logout_len bytes */
	size_t logout_len;
	char logout_tag[TRACK_TAG_MAX + 1];
};

void imap_track_init(struct imap_track *t);
/* Bytes from the client on their way to the server. Stops right after a
 * LOGOUT line. While a line's head is being read its bytes are held:
 * r->hold counts them (they are the last bytes seen so far). */
void imap_track_client(struct imap_track *t, const char *p, size_t n, struct track_client_result *r);
/* Bytes from the server on their way to the client. */
void imap_track_server(struct imap_track *t, const char *p, size_t n);
/* No command in flight, both directions at a line boundary, nothing held. */
bool imap_track_quiet(const struct imap_track *t);
/* The client side is at a command boundary: every byte sent to the server
 * so far was whole commands (held head bytes were never sent). */
bool imap_track_client_boundary(const struct imap_track *t);
/* imapgate writes a command of its own (tag + SP + text + CRLF) */
void imap_track_own_command(struct imap_track *t, const char *tag);
/* Never park this connection; why is a static string for the log. */
void imap_track_set_unclean(struct imap_track *t, const char *why);
/* The held head of a command will never be sent (the client is gone). */
void imap_track_drop_held(struct imap_track *t);
/* Forget the session-level state for a new session on the same connection. */
void imap_track_reset_session(struct imap_track *t);

#endif
