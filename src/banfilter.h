/*
 * banfilter — drop the connection attempts of banned addresses that keep
 * hammering in the kernel, before they cost an accept.
 *
 * A banned client first gets "* BYE" as its greeting (a person who mistyped
 * a password learns why). An address that is refused guard_drop_after
 * times during its ban is added to a classic BPF socket filter on the
 * listening sockets: its SYNs are dropped, as a firewall rule would, so a
 * flood of banned connections costs imapgate nothing. Any unban (or ban
 * expiry) empties the set. No privilege is needed; the program holds at
 * most BANFILTER_MAX addresses (later ones keep getting BYE).
 */
#ifndef IMAPGATE_BANFILTER_H
#define IMAPGATE_BANFILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <linux/filter.h>

#define BANFILTER_MAX 700         /* addresses in the kernel set (IPv6 ones take 5 insns) */
#define BANFILTER_INSNS 4096      /* BPF_MAXINSNS */

/* An address in the set: IPv4 (4 bytes) or the /64 of an IPv6 one (8 bytes). */
struct banfilter_key {
	uint8_t family;   /* 4 or 6 */
	uint8_t addr[8];
};

/* The key of a socket address (v4-mapped IPv6 counts as IPv4). */
void banfilter_key(const struct sockaddr *sa, struct banfilter_key *k);
/*
 * Build the program that drops packets whose source is one of keys[0..n)
 * and accepts everything else. out must hold BANFILTER_INSNS. Returns the
 * number of instructions.
 */
size_t banfilter_build(const struct banfilter_key *keys, size_t n, struct sock_filter *out);

/* The daemon's set (session_guard.c feeds it). */
/* A banned client was refused: count it; true when it is now dropped. */
bool banfilter_refused(const struct sockaddr *sa, unsigned drop_after);
/* Bans changed (unban, expiry, reload): forget the set, detach. */
void banfilter_clear(void);
/* As root, before dropping privileges: fork the child that attaches the
 * filter (see banfilter.c) and, when fw_fd is not -1, serves the
 * firewall's requests on it (firewall_prepare; the helper takes it over,
 * closed here). Returns 0 or -1. */
int banfilter_helper_start(int fw_fd);
/* Shutdown: let the helper go (it holds copies of the listeners). */
void banfilter_helper_stop(void);
/* Addresses in the kernel set. */
size_t banfilter_count(void);

#endif
