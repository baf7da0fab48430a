/*
 * stats — the daemon's counters, shared with other processes through a
 * memory-mapped file at stat_filename (imapgate-stat reads it), and
 * formatted as text or Prometheus exposition.
 *
 * File layout (host byte order, everything naturally aligned):
 *
 *   offset  0  char     magic[16]    "IMAPGATE-STATS\0\0"
 *          16  uint32   version      STATS_VERSION; bumped when a counter
 *                                    is removed, renamed or moved
 *          20  uint32   header_size  offset of the first counter
 *          24  uint32   n_counters   counters that follow (appending new
 *                                    ones at the end keeps the version)
 *          28  uint32   pid          process id of the writer
 *          32  uint64   start_time   daemon start, Unix seconds
 *          40  uint64   count_time   last reset (XPROXY_RESETCOUNTERS)
 *   header_size  uint64 counters[n_counters], in enum stat_id order
 *
 * One writer (the daemon's loop thread), any number of read-only readers.
 * Every value is an aligned 64-bit word written with one store, which is
 * tear-free on x86_64 and aarch64; readers see each value whole, not a
 * consistent set of values.
 */
#ifndef IMAPGATE_STATS_H
#define IMAPGATE_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "buf.h"

#define STATS_MAGIC "IMAPGATE-STATS\0\0" /* the 16 bytes of magic[] */
#define STATS_VERSION 1u

struct stats_header {
	char magic[16];
	uint32_t version;
	uint32_t header_size;
	uint32_t n_counters;
	uint32_t pid;
	uint64_t start_time;
	uint64_t count_time;
};

/* The order is the file format: append only; anything else bumps
 * STATS_VERSION. Names, help and kinds are in stats.c's table. */
enum stat_id {
	/* imapproxy's */
	STAT_CLIENT_CONNECTIONS_CURRENT,
	STAT_CLIENT_CONNECTIONS_PEAK,
	STAT_CLIENT_CONNECTIONS_TOTAL,
	STAT_CLIENT_LOGINS_TOTAL,
	STAT_SERVER_CONNECTIONS_CREATED_TOTAL,
	STAT_SERVER_CONNECTIONS_REUSED_TOTAL,
	STAT_SERVER_CONNECTIONS_IN_USE_CURRENT,
	STAT_SERVER_CONNECTIONS_IN_USE_PEAK,
	STAT_SERVER_CONNECTIONS_RETAINED_CURRENT,
	STAT_SERVER_CONNECTIONS_RETAINED_PEAK,
	STAT_SELECT_COMMANDS_TOTAL,
	STAT_SELECT_CACHE_HITS_TOTAL,
	STAT_SELECT_CACHE_MISSES_TOTAL,
	/* imapgate's */
	STAT_CLIENT_LOGIN_FAILURES_TOTAL,
	STAT_BACKEND_FAILURES_TOTAL,
	STAT_TLS_HANDSHAKES_TOTAL,
	STAT_TLS_HANDSHAKE_FAILURES_TOTAL,
	STAT_GUARD_FAILURES_TOTAL,
	STAT_GUARD_BANS_ACTIVE,
	STAT_GUARD_BANS_TOTAL,
	STAT_GUARD_REFUSED_CONNECTIONS_TOTAL,
	STAT_BYTES_FROM_CLIENTS_TOTAL,
	STAT_BYTES_TO_CLIENTS_TOTAL,
	STAT_CLIENT_CONNECTIONS_EVICTED_TOTAL,
	/* counted failures by the door they came through (one Prometheus
	 * family, labelled proto) */
	STAT_GUARD_FAILURES_IMAP,
	STAT_GUARD_FAILURES_POP3,
	STAT_GUARD_FAILURES_SMTP,
	STAT_GUARD_FAILURES_SUBMISSION,
	STAT_GUARD_FAILURES_SIEVE,
	STAT_GUARD_FAILURES_OTHER,
	/* Dovecot's auth policy requests (policy_http.c) */
	STAT_POLICY_REQUESTS_TOTAL,
	STAT_POLICY_REFUSED_TOTAL,
	STAT_POLICY_DELAYED_TOTAL,
	STAT_POLICY_BAD_REQUESTS_TOTAL,
	/* the shared guard's Redis link (redis_link.c) */
	STAT_REDIS_UP,
	STAT_REDIS_EVENTS_SENT_TOTAL,
	STAT_REDIS_EVENTS_RECEIVED_TOTAL,
	STAT_REDIS_EVENTS_DROPPED_TOTAL,
	STAT_REDIS_RECONNECTS_TOTAL,
	/* nftables transactions run by the helper (firewall.c) */
	STAT_FIREWALL_UPDATES_TOTAL,
	STAT_FIREWALL_ERRORS_TOTAL,
	STAT_REDIS_EVENTS_QUEUED,
	STAT_COUNT
};

enum stat_kind {
	STAT_KIND_COUNTER, /* only grows (until a reset) */
	STAT_KIND_GAUGE,   /* goes up and down; a reset keeps it */
	STAT_KIND_PEAK,    /* highest value of a gauge since the last reset */
};

/*
 * Keep the counters in a file at path, created if missing (never through a
 * symlink), resized, zeroed, mode 0644, and given to uid:gid when running
 * as root ((uid_t)-1 / (gid_t)-1: leave that part alone). path NULL keeps
 * them in process memory: the macros below always work, even before the
 * first stats_open, so callers never check.
 *
 * The values counted so far (and start/count times) move to the new place,
 * so calling it again on reload with a different stat_filename loses
 * nothing; the same path again is a no-op. The first call sets start_time;
 * call it once at start-up even with NULL.
 *
 * Returns 0, or -1 with *error_r set to a message (valid until the next
 * call) and the previous place still in use. Blocks only on the local file
 * system; start-up and reload only.
 */
int stats_open(const char *path, uid_t uid, gid_t gid, const char **error_r);

/* Unmap the file (it stays on disk) and go back to process memory, values
 * kept. */
void stats_close(void);

/* Add n; for a gauge, also raise its peak when it has one. */
void stats_add(enum stat_id id, uint64_t n);
/* Subtract n from a gauge; stops at 0 rather than wrapping. */
void stats_sub(enum stat_id id, uint64_t n);
/* Set a gauge (e.g. from the size of a table), raising its peak. */
void stats_set(enum stat_id id, uint64_t v);

#define STATS_INC(id) stats_add((id), 1)
#define STATS_ADD(id, n) stats_add((id), (uint64_t)(n))
#define STATS_DEC(id) stats_sub((id), 1)
#define STATS_SET(id, v) stats_set((id), (uint64_t)(v))

/*
 * XPROXY_RESETCOUNTERS: zero every counter, set every peak to its gauge's
 * current value (imapproxy zeroes them, which would show a peak below the
 * current value), set count_time to now. Gauges are kept.
 */
void stats_reset(void);

/* Current value; 0 for an id out of range. */
uint64_t stats_get(enum stat_id id);
/* "client_connections_current" etc.; NULL for an id out of range. */
const char *stats_name(enum stat_id id);
/* One sentence for # HELP and the live screen; NULL out of range. */
const char *stats_help(enum stat_id id);
enum stat_kind stats_kind(enum stat_id id);
/* Unix seconds of the start and of the last reset. */
uint64_t stats_start_time(void);
uint64_t stats_count_time(void);

/* ------------------------------------------------------------------ */
/* Reading: a snapshot, from this process or from a file mapped by a    */
/* reader (imapgate-stat).                                              */

struct stats_snapshot {
	uint64_t start_time, count_time;
	uint32_t pid;
	size_t n;      /* values this build knows and the file has (<= STAT_COUNT) */
	size_t n_file; /* counters in the file (more: a newer writer) */
	uint64_t v[STAT_COUNT];
};

/* A read-only mapping of a stat file. */
struct stats_view {
	const void *map;
	size_t len;
	dev_t dev; /* to notice the file being replaced */
	ino_t ino;
};

/*
 * Map the stat file at path read-only and check its magic, version and
 * sizes. Returns 0, or -1 with *error_r set (valid until the next call)
 * and v untouched. A view must be closed with stats_view_close.
 */
int stats_view_open(const char *path, struct stats_view *v, const char **error_r);
void stats_view_close(struct stats_view *v);
/* Copy the values out of a view. The file shrinking under the view raises
 * SIGBUS here; a reader that cares catches it around this call. */
void stats_view_snapshot(const struct stats_view *v, struct stats_snapshot *s);
/* This process's own values. */
void stats_snapshot(struct stats_snapshot *s);

/*
 * Append "start_time N", "count_time N", "uptime_seconds N" (relative to
 * now), then "name value" for each counter, one per line ("\n"). Returns
 * 0, or -1 when b is too small (b then holds a partial text).
 */
int stats_format_text_snapshot(const struct stats_snapshot *s, time_t now, struct buf *b);
/*
 * Append the Prometheus text exposition (format 0.0.4): for each counter
 * "# HELP imapgate_NAME ...", "# TYPE imapgate_NAME counter|gauge" and
 * "imapgate_NAME value", plus imapgate_start_time_seconds and
 * imapgate_count_time_seconds gauges. Returns 0 or -1 as above.
 */
int stats_format_prometheus_snapshot(const struct stats_snapshot *s, struct buf *b);

/* The same over this process's own values, now = time(NULL). */
int stats_format_text(struct buf *b);
int stats_format_prometheus(struct buf *b);

/* Bytes stats_format_prometheus needs at most (for sizing a buf). */
#define STATS_PROMETHEUS_MAX 16384

#endif
