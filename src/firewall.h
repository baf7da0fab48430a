/*
 * firewall — the guard's bans in the kernel: nftables sets in imapgate's
 * own table (guard_firewall nftables).
 *
 * The table is `inet imapgate`: sets ban4 (ipv4_addr) and ban6
 * (ipv6_addr), both `flags interval, timeout`, each element carrying the
 * ban's remaining time, so a ban ends in the kernel even when imapgate is
 * dead. Unless guard_firewall_setonly, a base chain drop_banned (hook
 * input, priority -10) drops the banned sources for the listed TCP ports.
 * No other table is ever named.
 *
 * The daemon holds no capability: it sends structured requests (prefixes
 * and timeouts, never script text) over a socket pair to the privileged
 * helper (banfilter.c forks it, CAP_NET_ADMIN only), which validates them,
 * builds the script with the functions below and feeds it to
 * `/usr/sbin/nft -f -`: one nft transaction per batch. The daemon never
 * waits: changes are batched (at most one transaction per
 * FIREWALL_BATCH_MS), replies are read on the loop, a failure is logged
 * (event=firewall_error), counted, and followed by a full rebuild.
 */
#ifndef IMAPGATE_FIREWALL_H
#define IMAPGATE_FIREWALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "config.h"

#define FIREWALL_NFT "/usr/sbin/nft"
#define FIREWALL_TABLE "inet imapgate"
#define FIREWALL_CHAIN "drop_banned"
#define FIREWALL_BATCH_MS 100
/* Longest element timeout sent (the guard's longest ban; nft 1.0.6 says
 * "value too large" from 100,000,000 s on). */
#define FIREWALL_TIMEOUT_MAX 31536000u
/* Elements per `add element` statement: nft 1.0.6 checks each statement of
 * an interval set against all before it, so 100 lines of 1,000 cost twice
 * as much as 10 of 10,000 (3.5 s against 1.5 s for 100,000). */
#define FIREWALL_ELEMS_PER_LINE 10000

struct guard;

/* One element: a prefix and the seconds it has left (0: remove it). */
struct firewall_elem {
	struct cidr key;
	uint32_t timeout;
};

/* What the table holds besides the sets. */
struct firewall_rules {
	bool setonly;   /* no chain of ours: the admin's rules use the sets */
	size_t nports;  /* 1..CONFIG_MAX_FIREWALL_PORTS when !setonly */
	uint16_t ports[CONFIG_MAX_FIREWALL_PORTS];
};

/* --- pure: elements to nft script text (unit-tested) --------------------- */

/*
 * Sort e[0..n) and drop every element inside another one (interval sets
 * refuse overlapping elements; the outer prefix covers the inner). Elements
 * with timeout 0 are dropped too. Returns the number kept, in place.
 */
size_t firewall_cover(struct firewall_elem *e, size_t n);

/*
 * The whole table in one transaction: (re)create table, sets and chain
 * idempotently (add; a setonly table loses our chain, never the admin's),
 * flush both sets, add the elements (covered first: e is reordered).
 * Returns malloc'd NUL-terminated text (*len without the NUL), or NULL
 * when out of memory.
 */
char *firewall_script_sync(const struct firewall_rules *r, struct firewall_elem *e, size_t n, size_t *len);

/*
 * Changes to elements already in place, in one transaction: each element
 * is added (timeout 1 s, a no-op when present), deleted, and added again
 * with its timeout unless that is 0. The first add makes the delete safe
 * when the kernel has already expired the element (a failed delete would
 * fail the whole transaction), and the delete is the only way to change a
 * timeout. Elements must not overlap each other or others in the set.
 * Returns malloc'd text as above, or NULL.
 */
char *firewall_script_update(const struct firewall_elem *e, size_t n, size_t *len);

/* --- the helper side ------------------------------------------------------ */

/* Before the helper forks: make the socket pair. Returns the helper's end
 * (the daemon keeps the other), or -1 with errno set. */
int firewall_prepare(void);
/* In the helper: the daemon's end is not ours, close it. */
void firewall_helper_close_daemon_end(void);
/* In the helper: read and serve what fd has (blocking). Returns -1 at EOF. */
int firewall_helper_serve(int fd);

/*
 * Feed script to `nft -f -` and wait for it (as the helper or preflight;
 * blocks). dry_run adds -c (check only). Returns 0, or -1 with nft's
 * error text (or ours) in err.
 */
int firewall_run_nft(const char *script, size_t len, bool dry_run, char *err, size_t errsz);

/* --- the daemon side ------------------------------------------------------ */

/* Can this start have the firewall it asks for (root, CAP_NET_ADMIN, nft,
 * a kernel with nf_tables)? 0, or -1 with err naming the key. */
int firewall_check(const struct config *cfg, char *err, size_t errsz);

/*
 * At start, after the guard loaded its bans: take every active ban and
 * rebuild the table in one transaction. Nothing when guard_firewall none
 * or the helper is missing (the start checked for it).
 */
void firewall_sync(const struct guard *g);
/* A ban set or replaced / lifted or expired: batched, never waits. */
void firewall_ban(const struct cidr *c, uint64_t expiry);
void firewall_unban(const struct cidr *c);
/* Reload: a change of ports or setonly rebuilds the table. */
void firewall_reload(void);
/* Bans the sets hold (nested ones included), and the last state: "off",
 * "starting", "ok", "error", "helper gone". */
size_t firewall_count(void);
const char *firewall_state(void);

#endif
