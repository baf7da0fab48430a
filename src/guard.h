/*
 * guard — brute-force protection policy: counts failed logins per client
 * address prefix and per user, decides bans and per-user slow-downs,
 * remembers which address logged in as whom.
 *
 * Pure logic: no I/O, no clock, no randomness, no logging. Every call gets
 * the time from the caller as `now`, in seconds of the wall clock
 * (CLOCK_REALTIME, as time(NULL) gives). Wall-clock seconds rather than a
 * monotonic clock because ban expiries are persisted and must mean the same
 * thing after a restart; sub-second precision buys nothing for windows of
 * minutes. A clock that steps backwards only makes windows last longer.
 * Delays are in milliseconds.
 *
 * Not thread-safe: one guard belongs to the loop thread. Every call is
 * O(1) (hash lookups) except the admin ones (ban/unban/why/listing) and
 * guard_expire, which walk the tables.
 */
#ifndef IMAPGATE_GUARD_H
#define IMAPGATE_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "addr.h"

struct config;

#define GUARD_RECENT 32       /* failures kept per prefix for "why" and de-duplication */
#define GUARD_USER_LEN 64     /* user names as kept in the recent ring (truncated), NUL incl. */
#define GUARD_USER_MAX 256    /* longer user names are counted by their first 256 bytes */
#define GUARD_REASON_LEN 16   /* reasons are truncated to 15 bytes */
#define GUARD_PROTO_LEN 12    /* protocol names ("imap", "smtp", "submission") */
#define GUARD_NODE_LEN 64     /* instance names (guard_redis_node), NUL incl.; "" = this one */
#define GUARD_PWHASH_LEN 32   /* keyed hash of the password, made by the caller */
#define GUARD_SEED_LEN 16     /* hash-table key; random, from the caller */

#define GUARD_DEFAULT_MAX_PREFIXES 20000
#define GUARD_DEFAULT_MAX_USERS 20000
#define GUARD_DEFAULT_MAX_TRUST 20000

struct guard_params {
	unsigned ipv4_prefix;       /* bits of an IPv4 address forming its key, 1..32 */
	unsigned ipv6_prefix;       /* 1..128 */
	uint64_t findtime;          /* s: sliding window of failures, prefix and user */
	unsigned maxretry;          /* counted failures in findtime that ban a prefix */
	uint64_t bantime;           /* s: first ban */
	uint64_t recidive_window;   /* s after a ban ends in which a new ban escalates; 0 = never */
	unsigned bantime_factor;    /* each escalation multiplies by this */
	uint64_t bantime_max;       /* s: cap of an escalated ban */
	uint64_t trust_time;        /* s a successful login trusts its prefix for that user */
	unsigned user_maxretry;     /* counted failures of one user (any address) before slowing */
	uint32_t user_delay_max;    /* ms: cap of the per-user slow-down; 0 = no slow-down */
	uint32_t failure_delay;     /* ms: upper bound of the random delay on failure */
	struct cidr_list ignore;    /* never counted, never banned */
	size_t max_prefixes;        /* tracked prefixes (active bans come on top); 0 = default */
	size_t max_users;           /* 0 = default */
	size_t max_trust;           /* (prefix, user) pairs trusted; 0 = default */
};

/* The config's guard_* values into p (caps set to the defaults). */
void guard_params_from_config(struct guard_params *p, const struct config *cfg);

/* Why a failure was or was not counted. */
enum guard_status {
	GUARD_COUNTED = 0,
	GUARD_DUPLICATE, /* same user, same password hash, same prefix within findtime */
	GUARD_TRUSTED,   /* the prefix logged in as this user within trust_time */
	GUARD_IGNORED,   /* address in guard_ignore: nothing recorded */
	GUARD_USER_ONLY, /* no client address known: counted for the user only */
};
const char *guard_status_name(enum guard_status s); /* "counted", "duplicate", ... */

enum guard_source { GUARD_SRC_AUTO = 0, GUARD_SRC_MANUAL };
const char *guard_source_name(enum guard_source s); /* "auto", "manual" */

struct guard_ban_info {
	struct cidr key;         /* the banned prefix */
	uint64_t started;        /* s */
	uint64_t expiry;         /* s: banned while now < expiry */
	unsigned ban_count;      /* automatic bans of this prefix in the recidive chain */
	enum guard_source source;
	const char *reason;      /* auto: reason of the failure that tipped it; manual: caller's */
};

/*
 * Events for whoever persists or logs state. Pointers inside are valid
 * only during the callback. The callback runs inside the guard call that
 * caused it and must not call back into the guard.
 */
enum guard_event_type {
	GUARD_EV_FAILURE, /* a failure was recorded (not sent for IGNORED) */
	GUARD_EV_BAN,     /* a ban was set or replaced (ban) */
	GUARD_EV_UNBAN,   /* a ban ended: expired (guard_expire) or lifted (guard_unban) */
	GUARD_EV_FORGET,  /* a prefix's failure history and ban count were dropped */
};

struct guard_event {
	enum guard_event_type type;
	struct cidr key;
	uint64_t time;              /* when it happened (now of the call) */
	/* GUARD_EV_FAILURE */
	const char *user;           /* as given by the caller, untruncated */
	const char *reason;
	const char *proto;          /* the door it came through: "imap", "smtp", ... */
	const char *node;           /* the instance that saw it; "" = this one */
	const uint8_t *pwhash;      /* the caller's password key (GUARD_PWHASH_LEN), or NULL */
	enum guard_status status;
	/* GUARD_EV_BAN */
	struct guard_ban_info ban;
	/* GUARD_EV_UNBAN */
	bool expired;               /* true: ran out; false: lifted by guard_unban */
};

typedef void guard_event_fn(void *ctx, const struct guard_event *ev);

struct guard;

/*
 * New guard with params p (copied) and a random seed for its hash tables
 * (so peers cannot aim collisions). Returns NULL when out of memory.
 */
struct guard *guard_create(const struct guard_params *p, const uint8_t seed[GUARD_SEED_LEN]);
/* Free and NULL the pointer; NULL is fine. Sends no events. */
void guard_free(struct guard **g);
/* Where events go; fn NULL = nowhere. */
void guard_set_sink(struct guard *g, guard_event_fn *fn, void *ctx);
/*
 * Apply new parameters (reload). Counters, bans, ban counts and trust are
 * kept; keys already tracked at an old prefix length keep working (their
 * bans still match) while new failures use the new lengths. Lower caps take
 * effect at the next guard_expire.
 */
void guard_set_params(struct guard *g, const struct guard_params *p);

/* The parameters in force (caps with their defaults filled in). */
void guard_get_params(const struct guard *g, struct guard_params *p);

/*
 * The prefix key of an address, per ipv4_prefix/ipv6_prefix. A v4-mapped
 * IPv6 address is an IPv4 address. Returns 0, or -1 for a family other
 * than AF_INET/AF_INET6.
 */
int guard_key_from_sockaddr(const struct guard *g, const struct sockaddr *sa, struct cidr *key);
/* Same from raw bytes: family AF_INET (4 bytes used) or AF_INET6 (16). */
int guard_key_from_raw(const struct guard *g, int family, const uint8_t *bytes, struct cidr *key);
/* The address itself as a full-length prefix (for unban/why). -1 as above. */
int guard_cidr_from_sockaddr(const struct sockaddr *sa, struct cidr *out);
/* "192.0.2.0/24", "2001:db8::/64" into buf (ADDR_STRLEN is enough). */
void guard_cidr_format(const struct cidr *c, char *buf, size_t bufsz);

/*
 * At accept (or once the PROXY header told the real address): true when
 * sa is inside an active ban; *expiry (may be NULL) gets its end. Fast: no
 * ban at all is one compare, else one hash lookup per distinct banned
 * prefix length (one, unless manual bans use other lengths). Addresses in
 * guard_ignore are never banned.
 */
bool guard_check_connect(const struct guard *g, const struct sockaddr *sa, uint64_t now,
                         uint64_t *expiry);

struct guard_verdict {
	bool banned;          /* refuse the login */
	uint64_t ban_expiry;  /* s, when banned */
	uint32_t delay_ms;    /* answer this login only after this long (per-user slow-down) */
};

/*
 * Before a login attempt by user from sa (the real client: socket, PROXY
 * or trusted webmail ID). The delay is the user's slow-down, 0 when the
 * prefix is trusted for that user or ignored. Changes nothing.
 */
void guard_check_login(const struct guard *g, const struct sockaddr *sa, const char *user,
                       uint64_t now, struct guard_verdict *v);

struct guard_failure_result {
	enum guard_status status;
	struct cidr key;          /* the prefix (set unless IGNORED) */
	unsigned failures;        /* counted failures of the prefix now in the window (0 after a ban) */
	unsigned user_failures;   /* counted failures of the user now in the window */
	uint32_t user_delay_ms;   /* the user's slow-down from now on */
	bool banned;              /* this failure set a new ban */
	uint64_t ban_expiry;      /* end of the prefix's active ban (new or older), 0 if none */
	uint64_t ban_seconds;     /* length of the new ban */
	unsigned ban_count;       /* with a new ban: its place in the recidive chain, 1 = first */
};

/*
 * A failed login: user as the caller normalises it, pwhash a keyed hash
 * of the password tried (GUARD_PWHASH_LEN bytes; NULL = unknown, never a
 * duplicate), reason a short word ("auth_failed"), proto the door it came
 * through ("imap", "pop3", "smtp"; NULL = "imap"; kept, never decisive). Counts it unless
 * ignored, duplicate or trusted; bans the prefix when the counted failures
 * in findtime reach maxretry. Sends FAILURE (and BAN) events. Returns 0,
 * or -1 (not an IP address, or out of memory: nothing counted).
 */
int guard_record_failure(struct guard *g, const struct sockaddr *sa, const char *user,
                         const uint8_t *pwhash, const char *reason, const char *proto,
                         uint64_t now, struct guard_failure_result *r);
/* The same, seen by another instance (node, shown by why and persisted):
 * a peer's failure counts here as if it had been seen here. */
int guard_record_failure_node(struct guard *g, const struct sockaddr *sa, const char *user,
                              const uint8_t *pwhash, const char *reason, const char *proto,
                              const char *node, uint64_t now, struct guard_failure_result *r);

/*
 * A failed login whose client address is unknown (a trusted webmail host
 * that sent no x-originating-ip): counted for the user only, so the user's
 * slow-down applies, and no prefix is counted or banned. No event (memory
 * only). Returns 0, or -1 when out of memory.
 */
int guard_record_user_failure(struct guard *g, const char *user, uint64_t now,
                              struct guard_failure_result *r);

/* A successful login: trusts sa's prefix for user for trust_time. 0 / -1. */
int guard_record_success(struct guard *g, const struct sockaddr *sa, const char *user,
                         uint64_t now);

/*
 * Manual ban of c (any prefix length) for seconds (0 = bantime), replacing
 * any ban on exactly that prefix. Does not change the ban count. Sends BAN.
 * Returns 0, or -1 with *why (static text): inside guard_ignore, or out of
 * memory. out (may be NULL) gets the ban; its reason points into the guard.
 */
int guard_ban(struct guard *g, const struct cidr *c, uint64_t seconds, const char *reason,
              uint64_t now, struct guard_ban_info *out, const char **why);

/*
 * Lift every active ban whose prefix overlaps c (contains it or lies
 * inside it); sends UNBAN for each. With forget, also drop the failure
 * history, ban count and recidive memory of every tracked prefix that
 * overlaps c (FORGET events); *forgotten (may be NULL) gets how many.
 * Returns the number of bans lifted.
 */
size_t guard_unban(struct guard *g, const struct cidr *c, bool forget, uint64_t now,
                   size_t *forgotten);

/* Active bans (expiry > now), in no particular order. */
typedef void guard_ban_fn(void *ctx, const struct guard_ban_info *b);
void guard_bans_foreach(const struct guard *g, uint64_t now, guard_ban_fn *fn, void *ctx);

struct guard_failure_info {
	uint64_t time;            /* s, last time seen */
	unsigned repeats;         /* duplicates folded into it */
	enum guard_status status;
	const char *user;         /* truncated to GUARD_USER_LEN-1 bytes */
	const char *reason;
	const char *proto;
	const char *node;         /* "" = this instance */
};

struct guard_prefix_info {
	struct cidr key;
	bool banned;
	struct guard_ban_info ban;   /* valid when banned, or ban.ban_count > 0 (last ban) */
	unsigned failures;           /* counted in the window now */
	size_t nrecent;
	const struct guard_failure_info *recent; /* oldest first */
};

/*
 * "why ADDRESS": every tracked prefix overlapping c, with its ban and its
 * recent failures (at most GUARD_RECENT). Returns how many were reported.
 */
typedef void guard_prefix_fn(void *ctx, const struct guard_prefix_info *p);
size_t guard_why(const struct guard *g, const struct cidr *c, uint64_t now, guard_prefix_fn *fn,
                 void *ctx);

/*
 * Housekeeping; call it every second or so. Ends bans that ran out
 * (UNBAN events, expired), drops prefixes, users and trust pairs that have
 * nothing left to remember, and brings the tables back under their caps by
 * evicting the least recently touched entries. Never drops an active ban.
 * Walks the tables: O(tracked entries).
 */
void guard_expire(struct guard *g, uint64_t now);

/*
 * Restore persisted state at start (no events are sent). A ban whose
 * expiry is past only restores its ban count, if its recidive window is
 * still open. Returns 0, or -1 when out of memory.
 */
int guard_restore_ban(struct guard *g, const struct guard_ban_info *b, uint64_t now);
/*
 * A persisted failure, oldest first. Counted failures still in findtime
 * and newer than the prefix's last ban count again (for the prefix and
 * for the user); it never sets a ban by itself. Returns 0 / -1.
 */
int guard_restore_failure(struct guard *g, const struct cidr *key, const char *user, uint64_t time,
                          const char *reason, const char *proto, enum guard_status status,
                          uint64_t now);
/* Its node, for the failure just restored (persisted with it). */
void guard_restore_failure_node(struct guard *g, const struct cidr *key, const char *node);

/*
 * A ban another instance set (shared through Redis): applied as given —
 * start, expiry, ban count, source, reason — unless this prefix already
 * has a ban lasting as long or longer (idempotent: the longest wins).
 * Sends BAN when it changed something; returns 1 if applied, 0 if not
 * needed (or inside guard_ignore, or already past), -1 out of memory.
 */
int guard_apply_ban(struct guard *g, const struct guard_ban_info *b, uint64_t now);

struct guard_stats {
	size_t prefixes;          /* tracked, banned ones included */
	size_t users;
	size_t trusted;
	size_t bans_active;       /* until the next guard_expire, may include just-expired bans */
	uint64_t bans_total;      /* bans set since start (auto + manual) */
	uint64_t failures_total;  /* failures recorded (ignored ones excluded) */
	uint64_t failures_counted;
	uint64_t evictions;       /* entries dropped to stay under the caps */
};
void guard_get_stats(const struct guard *g, struct guard_stats *st);

/*
 * The random delay before answering a failed login: uniform in
 * [failure_delay/2, failure_delay] ms, from the caller's random rnd.
 */
uint32_t guard_failure_delay(const struct guard *g, uint32_t rnd);

#endif
