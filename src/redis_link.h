/*
 * redis_link — the shared guard's transport: two hiredis (0.14, async)
 * connections to one Redis, driven by imapgate's loop.
 *
 * One module instance (static state). The command connection carries the
 * caller's commands (PUBLISH, SET, ZADD, ...) and a PING heartbeat; the
 * subscriber connection is SUBSCRIBEd to one channel (RESP2 allows nothing
 * else on it). Both send AUTH ("AUTH user pass" with an ACL user, "AUTH
 * pass" with a password alone) and SELECT db (db != 0) before anything
 * else. The link is up when both have answered their handshake and the
 * subscription is confirmed.
 *
 * Failures: any error on either connection (refused, reset, AUTH/SELECT/
 * SUBSCRIBE refused, no connection within REDIS_LINK_CONNECT_TIMEOUT_MS, a
 * heartbeat PING unanswered for REDIS_LINK_PING_TIMEOUT_MS) closes both and
 * schedules a new attempt after an exponential backoff with jitter: the
 * n-th consecutive failure waits a random time in [d/2, d] with
 * d = min(100 ms * 2^(n-1), 30 s); being up resets n. "event=redis_down"
 * and "event=redis_up" are logged once per transition, a refusal by the
 * server (AUTH, SELECT, SUBSCRIBE, ACL) as "event=redis_error" once per
 * distinct message. The password is never logged.
 *
 * Nothing here blocks the loop, with one exception stated at
 * redis_link_start: a host name is resolved there, once.
 *
 * Callbacks (ops and redis_reply_fn) run on the loop, from inside the
 * module; they may call redis_link_command, redis_link_is_up and
 * redis_link_get_stats, and redis_link_stop. hiredis writes with
 * write(2): the process must ignore SIGPIPE (imapgate does).
 */
#ifndef IMAPGATE_REDIS_LINK_H
#define IMAPGATE_REDIS_LINK_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

#define REDIS_LINK_QUEUE_MAX 10000         /* commands kept while down */
#define REDIS_LINK_CONNECT_TIMEOUT_MS 5000 /* connect + handshake + subscribe */
#define REDIS_LINK_PING_INTERVAL_MS 5000   /* heartbeat on the command connection */
#define REDIS_LINK_PING_TIMEOUT_MS 10000   /* unanswered heartbeat: the link is lost */
#define REDIS_LINK_BACKOFF_MIN_MS 100
#define REDIS_LINK_BACKOFF_MAX_MS 30000

struct redis_link_ops {
	/* A message on the channel (data is valid during the call only).
	 * Messages may arrive just before up(). */
	void (*message)(void *ctx, const char *data, size_t len);
	/* Both connections ready, the subscription confirmed, and the queued
	 * commands already handed to the connection: the caller catches up now
	 * (whatever was published while it was away is lost to pub/sub). */
	void (*up)(void *ctx);
	/* Lost after having been up, or the first attempt (or the first one
	 * after a loss) failed; once per transition, not per retry. */
	void (*down)(void *ctx);
};

/*
 * Start the link to url (guard_redis's syntax, redis_url.h) on loop l,
 * subscribed to channel; ops (copied; members may be NULL) get ctx. The
 * first attempt is made from the loop, so no callback runs inside this
 * call.
 *
 * A host name (not an IPv4/IPv6 literal) is resolved here, once, with
 * getaddrinfo, which can block: call at start-up and reload only. Every
 * reconnect uses the address found (the first IPv4 one, else the first
 * IPv6 one); hiredis would otherwise resolve inside each connect attempt,
 * on the loop. A name that does not resolve is an error here; a Redis
 * that moves to another address needs a reload.
 *
 * From then on nothing blocks: hiredis connects non-blocking, and every
 * wait is bounded by our timers.
 *
 * Returns 0, or -1 with a message in err (never the password): a bad URL,
 * an unresolvable name, already started.
 */
int redis_link_start(struct loop *l, const char *url, const char *channel, const struct redis_link_ops *ops,
                     void *ctx, char *err, size_t errsz);

/*
 * Close both connections and forget everything: in-flight and queued
 * commands get their callback with NULL, ops are not called, the password
 * is wiped. A no-op when not started.
 */
void redis_link_stop(void);

/* A command's answer: r is the reply (an error reply included), valid
 * during the call only; NULL when there will be none (the link was lost
 * with the command in flight, it was dropped from the full queue, or the
 * link was stopped). */
typedef void redis_reply_fn(void *ctx, const redisReply *r);

/*
 * Send a command (argv form; argvlen NULL: NUL-terminated strings) on the
 * command connection; fn (may be NULL) is called later with the answer.
 * While the link is not up the command is formatted and queued, up to
 * REDIS_LINK_QUEUE_MAX (past that the oldest is dropped, counted, and its
 * fn called with NULL before this returns); the queue is sent, in order,
 * as soon as the link is up again, before any newer command. A command in
 * flight when the link drops is not resent (its fn gets NULL): it may or
 * may not have been applied.
 *
 * Returns 0 (sent or queued), or -1 (not started, argc < 1, no memory);
 * on -1 fn is never called.
 */
int redis_link_command(redis_reply_fn *fn, void *ctx, int argc, const char **argv, const size_t *argvlen);

bool redis_link_is_up(void);

struct redis_link_stats {
	uint64_t sent;       /* commands handed to the command connection */
	uint64_t received;   /* messages received on the channel */
	uint64_t queued;     /* commands waiting in the queue now */
	uint64_t dropped;    /* commands dropped from the full queue */
	uint64_t reconnects; /* connection attempts after a failure or a loss */
	bool up;
	uint64_t down_since; /* Unix seconds the link has been down since; 0 when up or not started */
};

/* Totals since redis_link_start. The same totals go to stats (redis_*). */
void redis_link_get_stats(struct redis_link_stats *st);

/* Tests only: the connect timeout, heartbeat interval and heartbeat
 * timeout in ms (0 restores each default). Takes effect at the next
 * attempt or heartbeat. */
void redis_link_set_timeouts_ms(unsigned connect, unsigned ping_interval, unsigned ping_timeout);

#endif
