/*
 * guard_share — the guard's state shared between imapgate instances
 * through Redis (guard_redis).
 *
 * Each instance publishes its own failures, successes, bans and unbans on
 * one channel and applies its peers' to its local guard, so guard_maxretry
 * counts across the fleet and a ban anywhere is refused everywhere. Bans
 * are also kept in Redis (a key per ban with the ban's TTL, and a sorted
 * set by expiry as the index), so an instance that starts or comes back
 * subscribes first and then loads the active bans it missed.
 *
 * The login path never waits on Redis: decisions are local, publishing is
 * queued (bounded), and Redis down only means no sharing until it is back.
 */
#ifndef IMAPGATE_GUARD_SHARE_H
#define IMAPGATE_GUARD_SHARE_H

#include <stdbool.h>

#include "config.h"
#include "control.h"
#include "guard.h"
#include "loop.h"

/* With guard_redis set: connect (in the background) and share. 0, or -1
 * with err (bad URL: the config check already refused those). */
int guard_share_start(struct loop *l, struct guard *g, const struct config *cfg, char *err, size_t errsz);
/* A reload: a changed URL, prefix or node restarts the link. */
void guard_share_reload(const struct config *cfg);
void guard_share_stop(void);
bool guard_share_on(void);

/* True while a peer's event is being applied: what the guard reports then
 * is not published again. */
bool guard_share_applying(void);
/* This instance's name in events and why ("" when sharing is off). */
const char *guard_share_node(void);

/* The guard service's events and successes, to publish. */
void guard_share_event(const struct guard_event *ev);
void guard_share_success(const struct cidr *key, const char *user);

/* For imapgate-ctl status. */
void guard_share_status(struct strbuf *out, bool json);

#endif
