/*
 * store_sqlite — keeps the guard's bans and failure history in SQLite
 * (guard_db), so bans and escalation survive a restart, kill -9 included.
 *
 * The loop thread only enqueues (store_sqlite_push / store_sqlite_event,
 * never blocking on the disk); a writer thread of its own commits the queue
 * in batched transactions. Loading at start is synchronous. Nothing here
 * logs: errors come back as text (err buffers, store_sqlite_take_error).
 */
#ifndef IMAPGATE_STORE_SQLITE_H
#define IMAPGATE_STORE_SQLITE_H

#include <stddef.h>
#include <stdint.h>

#include "guard.h"

#define STORE_SQLITE_DEFAULT_QUEUE 4096
#define STORE_SQLITE_ERRLEN 256

struct store_sqlite_opts {
	size_t queue_max;        /* failure records waiting at most; 0 = default.
	                            Ban records are never dropped, so not capped. */
	uint64_t keep_failures;  /* s a failure row is kept (longer while its prefix
	                            is banned); 0 = 86400. Use >= guard_findtime. */
	uint64_t keep_bans;      /* s a ban row is kept after the ban ended, for
	                            escalation; 0 = 86400. Use >= guard_recidive_window. */
	unsigned busy_timeout_ms; /* the writer waits this long for a lock held by
	                            another process before a batch fails and is
	                            retried (ban records) a second later; 0 = 5000 */
};

struct store_sqlite_stats {
	uint64_t written;  /* records committed */
	uint64_t dropped;  /* failure records dropped: queue full, or a failed write */
	uint64_t errors;   /* failed transactions */
	size_t queued;     /* records waiting now */
};

struct store_sqlite;

/*
 * Open (creating file 0600 and schema if missing) the database at path,
 * switch it to WAL and start the writer thread. o may be NULL. Blocks on
 * the disk: call at start or reload, not from a loop callback. Returns 0
 * and *out, or -1 with a message in err ("PATH: why").
 */
int store_sqlite_open(const char *path, const struct store_sqlite_opts *o, struct store_sqlite **out,
                      char *err, size_t errsz);

/*
 * Whether this process, as it is now (user, groups, root directory), could
 * open path for writing: its directory exists and is writable (the -wal
 * and -shm files live there), an existing file and its -wal and -shm are
 * regular and writable, and the file is empty or an SQLite database of a
 * schema we know. Creates and changes nothing. user names this process in
 * messages. Returns 0, or -1 with a message (naming the file and the fix)
 * in err.
 */
int store_sqlite_check(const char *path, const char *user, char *err, size_t errsz);

/*
 * Feed the guard what it must remember at start: bans still active, ended
 * bans whose recidive window is still open (their ban count), counted
 * failures still in findtime, and the last GUARD_RECENT failures of every
 * banned prefix (for "why"). Uses its own read connection; synchronous.
 * Returns 0, or -1 with err set.
 */
int store_sqlite_load(struct store_sqlite *s, struct guard *g, uint64_t now, char *err, size_t errsz);

/*
 * Queue one guard event for the writer. Never blocks on the disk (it only
 * takes the queue's mutex, which the writer holds for a pointer swap).
 * When the failure queue is full its oldest record is dropped and counted;
 * ban, unban and forget records are always kept. Expired-unban events and
 * duplicate failures are not written (nothing to change on disk).
 */
void store_sqlite_push(struct store_sqlite *s, const struct guard_event *ev);
/* The same as a guard_event_fn: guard_set_sink(g, store_sqlite_event, s). */
void store_sqlite_event(void *ctx, const struct guard_event *ev);

/* Change retention (reload). 0 keeps the current value. */
void store_sqlite_set_retention(struct store_sqlite *s, uint64_t keep_failures, uint64_t keep_bans);

/*
 * Wait until everything queued before the call has been written (or its
 * write failed). Blocks: for tests and shutdown, never from the loop.
 * Returns 0, or -1 when a write failed since the call.
 */
int store_sqlite_sync(struct store_sqlite *s);

void store_sqlite_get_stats(struct store_sqlite *s, struct store_sqlite_stats *st);

/*
 * The latest writer error not yet taken, into buf. Returns 1 if there was
 * one (the caller logs it), 0 if none. Poll it from a timer.
 */
int store_sqlite_take_error(struct store_sqlite *s, char *buf, size_t bufsz);

/*
 * Write what is queued, stop and join the writer, close the database, free
 * and NULL *s. Blocks until the last batch is committed. Returns 0, or -1
 * with err set when the final writes failed. NULL is fine.
 */
int store_sqlite_close(struct store_sqlite **s, char *err, size_t errsz);

#endif
