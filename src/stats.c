/*
 * stats — counters in a shared memory-mapped file, and their text forms.
 *
 * The daemon's loop thread is the only writer; other processes map the file
 * read-only. Updates are single aligned 64-bit stores through a volatile
 * pointer, so the compiler neither splits nor caches them and readers never
 * see half a value. This module must never block after stats_open, never
 * allocate on the counting path, never follow a symlink or write through a
 * hard link when creating the file (it may run as root in a shared
 * directory), and never make a caller check whether stats are enabled.
 */
#include "stats.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file.h"

_Static_assert(sizeof(struct stats_header) == 48, "stat file header layout");
_Static_assert(sizeof(STATS_MAGIC) == 17, "magic is 16 bytes");

#define STATS_FILE_SIZE (sizeof(struct stats_header) + STAT_COUNT * sizeof(uint64_t))

struct stat_def {
	const char *name;
	const char *help;
	enum stat_kind kind;
	int peak; /* for a gauge: index of its peak, or -1 */
	/* Members of one Prometheus family (consecutive): the family's name
	 * and this member's label; help is taken from the first member. */
	const char *family, *label;
};

#define C(id, name, help) [id] = {name, help, STAT_KIND_COUNTER, -1, NULL, NULL}
#define G(id, name, peak, help) [id] = {name, help, STAT_KIND_GAUGE, peak, NULL, NULL}
#define P(id, name, help) [id] = {name, help, STAT_KIND_PEAK, -1, NULL, NULL}
#define L(id, proto)                                                                                     \
	[id] = {"guard_failures_" proto "_total", "Failed logins counted by the guard, by protocol.",         \
	        STAT_KIND_COUNTER, -1, "guard_failures_by_proto_total", "proto=\"" proto "\""}

static const struct stat_def defs[STAT_COUNT] = {
	G(STAT_CLIENT_CONNECTIONS_CURRENT, "client_connections_current", STAT_CLIENT_CONNECTIONS_PEAK,
	  "Client connections open now."),
	P(STAT_CLIENT_CONNECTIONS_PEAK, "client_connections_peak",
	  "Most client connections open at once since the last reset."),
	C(STAT_CLIENT_CONNECTIONS_TOTAL, "client_connections_total", "Client connections accepted."),
	C(STAT_CLIENT_LOGINS_TOTAL, "client_logins_total", "Successful client logins."),
	C(STAT_SERVER_CONNECTIONS_CREATED_TOTAL, "server_connections_created_total",
	  "Backend connections opened with a real login on the server."),
	C(STAT_SERVER_CONNECTIONS_REUSED_TOTAL, "server_connections_reused_total",
	  "Logins served by a parked backend connection (XPROXYREUSE)."),
	G(STAT_SERVER_CONNECTIONS_IN_USE_CURRENT, "server_connections_in_use_current",
	  STAT_SERVER_CONNECTIONS_IN_USE_PEAK, "Backend connections serving a client now."),
	P(STAT_SERVER_CONNECTIONS_IN_USE_PEAK, "server_connections_in_use_peak",
	  "Most backend connections in use at once since the last reset."),
	G(STAT_SERVER_CONNECTIONS_RETAINED_CURRENT, "server_connections_retained_current",
	  STAT_SERVER_CONNECTIONS_RETAINED_PEAK, "Backend connections parked in the cache now."),
	P(STAT_SERVER_CONNECTIONS_RETAINED_PEAK, "server_connections_retained_peak",
	  "Most backend connections parked at once since the last reset."),
	C(STAT_SELECT_COMMANDS_TOTAL, "select_commands_total", "SELECT commands from clients."),
	C(STAT_SELECT_CACHE_HITS_TOTAL, "select_cache_hits_total",
	  "SELECT commands answered from the SELECT cache."),
	C(STAT_SELECT_CACHE_MISSES_TOTAL, "select_cache_misses_total",
	  "SELECT commands the SELECT cache could not answer."),
	C(STAT_CLIENT_LOGIN_FAILURES_TOTAL, "client_login_failures_total", "Client logins refused."),
	C(STAT_BACKEND_FAILURES_TOTAL, "backend_failures_total",
	  "Backend connections that failed to connect, greet, start TLS or log in, or were lost."),
	C(STAT_TLS_HANDSHAKES_TOTAL, "tls_handshakes_total",
	  "TLS handshakes with clients completed (implicit TLS and STARTTLS)."),
	C(STAT_TLS_HANDSHAKE_FAILURES_TOTAL, "tls_handshake_failures_total",
	  "TLS handshakes with clients that failed."),
	C(STAT_GUARD_FAILURES_TOTAL, "guard_failures_total", "Failed logins counted by the guard."),
	G(STAT_GUARD_BANS_ACTIVE, "guard_bans_active", -1, "Client address prefixes banned now."),
	C(STAT_GUARD_BANS_TOTAL, "guard_bans_total", "Bans imposed, by the guard or by imapgate-ctl."),
	C(STAT_GUARD_REFUSED_CONNECTIONS_TOTAL, "guard_refused_connections_total",
	  "Client connections and logins refused because of a ban."),
	C(STAT_BYTES_FROM_CLIENTS_TOTAL, "bytes_from_clients_total",
	  "Bytes received from clients, after TLS decryption."),
	C(STAT_BYTES_TO_CLIENTS_TOTAL, "bytes_to_clients_total",
	  "Bytes sent to clients, before TLS encryption."),
	C(STAT_CLIENT_CONNECTIONS_EVICTED_TOTAL, "client_connections_evicted_total",
	  "Client connections not logged in closed to make room at max_connections."),
	L(STAT_GUARD_FAILURES_IMAP, "imap"),
	L(STAT_GUARD_FAILURES_POP3, "pop3"),
	L(STAT_GUARD_FAILURES_SMTP, "smtp"),
	L(STAT_GUARD_FAILURES_SUBMISSION, "submission"),
	L(STAT_GUARD_FAILURES_SIEVE, "sieve"),
	L(STAT_GUARD_FAILURES_OTHER, "other"),
	C(STAT_POLICY_REQUESTS_TOTAL, "policy_requests_total", "Auth policy requests answered (allow and report)."),
	C(STAT_POLICY_REFUSED_TOTAL, "policy_refused_total",
	  "Auth policy allow requests answered with a refusal (banned address)."),
	C(STAT_POLICY_DELAYED_TOTAL, "policy_delayed_total",
	  "Auth policy allow requests answered with a delay (the user's slow-down)."),
	C(STAT_POLICY_BAD_REQUESTS_TOTAL, "policy_bad_requests_total",
	  "Auth policy requests refused with a 4xx or 5xx status (bad HTTP, JSON, key, address)."),
	G(STAT_REDIS_UP, "redis_up", -1, "1 when the link to the shared guard's Redis is up, else 0."),
	C(STAT_REDIS_EVENTS_SENT_TOTAL, "redis_events_sent_total", "Commands handed to the Redis connection."),
	C(STAT_REDIS_EVENTS_RECEIVED_TOTAL, "redis_events_received_total",
	  "Messages received on the guard's Redis channel."),
	C(STAT_REDIS_EVENTS_DROPPED_TOTAL, "redis_events_dropped_total",
	  "Commands dropped from the full queue while Redis was down (the oldest first)."),
	C(STAT_REDIS_RECONNECTS_TOTAL, "redis_reconnects_total",
	  "Connection attempts to Redis after a failure or a lost link."),
	C(STAT_FIREWALL_UPDATES_TOTAL, "firewall_updates_total",
	  "nftables transactions applied to the ban sets (rebuilds and batched changes)."),
	C(STAT_FIREWALL_ERRORS_TOTAL, "firewall_errors_total",
	  "nftables transactions or helper requests that failed (each followed by a rebuild)."),
	G(STAT_REDIS_EVENTS_QUEUED, "redis_events_queued", -1,
	  "Commands waiting for the Redis link to come back (bounded; the oldest dropped first)."),
};

#undef L
#undef C
#undef G
#undef P

/* Process memory, used until (and unless) a file is mapped. */
static struct {
	struct stats_header h;
	uint64_t c[STAT_COUNT];
} anon;

static volatile struct stats_header *hdr = &anon.h;
static volatile uint64_t *ctr = anon.c;
static void *file_map;   /* NULL: in process memory */
static char *file_path;  /* path of file_map */
static bool started;     /* start_time set */
static char errbuf[512];

static const char *set_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *set_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
	va_end(ap);
	return errbuf;
}

static bool valid(enum stat_id id)
{
	return (unsigned)id < STAT_COUNT;
}

/* ------------------------------------------------------------------ */
/* Writing                                                              */

/* Fill a zeroed block: header, then copy the values from the block in use.
 * The magic goes last so a reader never trusts a half-written header. */
static void init_block(volatile struct stats_header *h, volatile uint64_t *c)
{
	h->version = STATS_VERSION;
	h->header_size = sizeof(struct stats_header);
	h->n_counters = STAT_COUNT;
	h->pid = (uint32_t)getpid();
	h->start_time = hdr->start_time;
	h->count_time = hdr->count_time;
	if (!started) {
		h->start_time = h->count_time = (uint64_t)time(NULL);
		started = true;
	}
	for (size_t i = 0; i < STAT_COUNT; i++)
		c[i] = ctr[i];
	__atomic_thread_fence(__ATOMIC_RELEASE);
	for (size_t i = 0; i < sizeof(h->magic); i++)
		h->magic[i] = STATS_MAGIC[i];
}

int stats_open(const char *path, uid_t uid, gid_t gid, const char **error_r)
{
	struct stat st;
	void *map;
	char *copy;
	int fd;

	*error_r = NULL;
	if (path == NULL) {
		if (file_map != NULL)
			stats_close();
		else
			init_block(&anon.h, anon.c); /* copies onto itself, sets start_time once */
		return 0;
	}
	if (file_map != NULL && strcmp(path, file_path) == 0)
		return 0;
	if ((copy = strdup(path)) == NULL) {
		*error_r = set_err("out of memory");
		return -1;
	}
	if ((fd = file_open_checked(path, O_RDWR, 0644, uid, "stat file ", &st, errbuf, sizeof(errbuf))) == -1) {
		*error_r = errbuf;
		free(copy);
		return -1;
	}
	if (fstat(fd, &st) == -1 || ((size_t)st.st_size != STATS_FILE_SIZE && ftruncate(fd, STATS_FILE_SIZE) == -1)) {
		/* Resizing only when needed: a reader still mapping a file of the
		 * right size keeps working (truncating to 0 would SIGBUS it). */
		*error_r = set_err("cannot size stat file %s: %s", path, strerror(errno));
		goto fail;
	}
	if (fchmod(fd, 0644) == -1) {
		*error_r = set_err("cannot chmod stat file %s: %s", path, strerror(errno));
		goto fail;
	}
	if (geteuid() == 0 && (uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) == -1) {
		*error_r = set_err("cannot chown stat file %s: %s", path, strerror(errno));
		goto fail;
	}
	map = mmap(NULL, STATS_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		*error_r = set_err("cannot map stat file %s: %s", path, strerror(errno));
		goto fail;
	}
	close(fd);
	/* init_block writes every byte of the file. No memset first: a reader
	 * of the file left by the previous run would see a zero header. */
	init_block(map, (uint64_t *)((char *)map + sizeof(struct stats_header)));
	if (file_map != NULL) {
		munmap(file_map, STATS_FILE_SIZE);
		free(file_path);
	}
	file_map = map;
	file_path = copy;
	hdr = map;
	ctr = (uint64_t *)((char *)map + sizeof(struct stats_header));
	return 0;
fail:
	close(fd);
	free(copy);
	return -1;
}

void stats_close(void)
{
	if (file_map == NULL)
		return;
	/* Copy back into process memory first: counting goes on. */
	anon.h.start_time = hdr->start_time;
	anon.h.count_time = hdr->count_time;
	for (size_t i = 0; i < STAT_COUNT; i++)
		anon.c[i] = ctr[i];
	memcpy(anon.h.magic, STATS_MAGIC, sizeof(anon.h.magic));
	anon.h.version = STATS_VERSION;
	anon.h.header_size = sizeof(struct stats_header);
	anon.h.n_counters = STAT_COUNT;
	anon.h.pid = (uint32_t)getpid();
	hdr = &anon.h;
	ctr = anon.c;
	munmap(file_map, STATS_FILE_SIZE);
	free(file_path);
	file_map = NULL;
	file_path = NULL;
}

static void raise_peak(enum stat_id id, uint64_t v)
{
	int p = defs[id].peak;

	if (p >= 0 && v > ctr[p])
		ctr[p] = v;
}

void stats_add(enum stat_id id, uint64_t n)
{
	uint64_t v;

	if (!valid(id))
		return;
	v = ctr[id] + n;
	ctr[id] = v;
	raise_peak(id, v);
}

void stats_sub(enum stat_id id, uint64_t n)
{
	uint64_t v;

	if (!valid(id))
		return;
	v = ctr[id];
	/* A gauge below zero is a caller's bug (imapproxy's drift); showing
	 * 18446744073709551615 connections would hide it worse than 0. */
	ctr[id] = v > n ? v - n : 0;
}

void stats_set(enum stat_id id, uint64_t v)
{
	if (!valid(id))
		return;
	ctr[id] = v;
	raise_peak(id, v);
}

void stats_reset(void)
{
	for (size_t i = 0; i < STAT_COUNT; i++)
		if (defs[i].kind == STAT_KIND_COUNTER)
			ctr[i] = 0;
	for (size_t i = 0; i < STAT_COUNT; i++)
		if (defs[i].peak >= 0)
			ctr[defs[i].peak] = ctr[i];
	hdr->count_time = (uint64_t)time(NULL);
}

uint64_t stats_get(enum stat_id id)
{
	return valid(id) ? ctr[id] : 0;
}

const char *stats_name(enum stat_id id)
{
	return valid(id) ? defs[id].name : NULL;
}

const char *stats_help(enum stat_id id)
{
	return valid(id) ? defs[id].help : NULL;
}

enum stat_kind stats_kind(enum stat_id id)
{
	return valid(id) ? defs[id].kind : STAT_KIND_COUNTER;
}

uint64_t stats_start_time(void)
{
	return hdr->start_time;
}

uint64_t stats_count_time(void)
{
	return hdr->count_time;
}

/* ------------------------------------------------------------------ */
/* Reading                                                              */

int stats_view_open(const char *path, struct stats_view *v, const char **error_r)
{
	struct stats_header h;
	struct stat st;
	void *map;
	int fd;

	*error_r = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd == -1) {
		*error_r = set_err("cannot open stat file %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		*error_r = set_err("cannot stat %s: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		*error_r = set_err("%s is not a regular file", path);
		goto fail;
	}
	if ((size_t)st.st_size < sizeof(h)) {
		*error_r = set_err("%s is not an imapgate stat file (%s)", path,
		                   st.st_size == 0 ? "empty" : "too short");
		goto fail;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		*error_r = set_err("cannot map %s: %s", path, strerror(errno));
		goto fail;
	}
	close(fd);
	memcpy(&h, map, sizeof(h));
	if (memcmp(h.magic, STATS_MAGIC, sizeof(h.magic)) != 0) {
		*error_r = set_err("%s is not an imapgate stat file (bad magic)", path);
		goto fail_map;
	}
	if (h.version != STATS_VERSION) {
		*error_r = set_err("%s has stat file version %" PRIu32 "; this imapgate-stat reads version %u",
		                   path, h.version, STATS_VERSION);
		goto fail_map;
	}
	if (h.header_size < sizeof(h) || h.header_size % 8 != 0 ||
	    (uint64_t)h.header_size + (uint64_t)h.n_counters * 8 > (uint64_t)st.st_size) {
		*error_r = set_err("%s is damaged (header size %" PRIu32 ", %" PRIu32 " counters, %lld bytes)", path,
		                   h.header_size, h.n_counters, (long long)st.st_size);
		goto fail_map;
	}
	v->map = map;
	v->len = (size_t)st.st_size;
	v->dev = st.st_dev;
	v->ino = st.st_ino;
	return 0;
fail_map:
	munmap(map, (size_t)st.st_size);
	return -1;
fail:
	close(fd);
	return -1;
}

void stats_view_close(struct stats_view *v)
{
	if (v->map != NULL)
		munmap((void *)v->map, v->len);
	v->map = NULL;
	v->len = 0;
}

static void snapshot_from(const volatile struct stats_header *h, const volatile uint64_t *c, size_t n_file,
                          struct stats_snapshot *s)
{
	memset(s, 0, sizeof(*s));
	s->start_time = h->start_time;
	s->count_time = h->count_time;
	s->pid = h->pid;
	s->n_file = n_file;
	s->n = n_file < STAT_COUNT ? n_file : STAT_COUNT;
	for (size_t i = 0; i < s->n; i++)
		s->v[i] = c[i];
}

void stats_view_snapshot(const struct stats_view *v, struct stats_snapshot *s)
{
	const volatile struct stats_header *h = v->map;
	/* Bounds were checked at open, but another writer may have taken the
	 * file since: re-check, never read past the mapping. */
	size_t hs = h->header_size, n = h->n_counters;

	if (hs < sizeof(struct stats_header) || hs % 8 != 0 || hs > v->len) {
		hs = sizeof(struct stats_header);
		n = 0;
	} else if (n > (v->len - hs) / 8) {
		n = (v->len - hs) / 8;
	}
	snapshot_from(h, (const volatile uint64_t *)((const char *)v->map + hs), n, s);
}

void stats_snapshot(struct stats_snapshot *s)
{
	snapshot_from(hdr, ctr, STAT_COUNT, s);
}

int stats_format_text_snapshot(const struct stats_snapshot *s, time_t now, struct buf *b)
{
	uint64_t up = (uint64_t)now > s->start_time ? (uint64_t)now - s->start_time : 0;

	if (buf_appendf(b, "start_time %" PRIu64 "\ncount_time %" PRIu64 "\nuptime_seconds %" PRIu64 "\n",
	                s->start_time, s->count_time, up) == -1)
		return -1;
	for (size_t i = 0; i < s->n; i++)
		if (buf_appendf(b, "%s %" PRIu64 "\n", defs[i].name, s->v[i]) == -1)
			return -1;
	return 0;
}

int stats_format_prometheus_snapshot(const struct stats_snapshot *s, struct buf *b)
{
	for (size_t i = 0; i < s->n; i++) {
		const struct stat_def *d = &defs[i];
		const char *kind = d->kind == STAT_KIND_COUNTER ? "counter" : "gauge";

		if (d->family) {
			if ((i == 0 || !defs[i - 1].family || strcmp(defs[i - 1].family, d->family) != 0) &&
			    buf_appendf(b, "# HELP imapgate_%s %s\n# TYPE imapgate_%s %s\n", d->family, d->help,
			                d->family, kind) == -1)
				return -1;
			if (buf_appendf(b, "imapgate_%s{%s} %" PRIu64 "\n", d->family, d->label, s->v[i]) == -1)
				return -1;
			continue;
		}
		if (buf_appendf(b, "# HELP imapgate_%s %s\n# TYPE imapgate_%s %s\nimapgate_%s %" PRIu64 "\n",
		                d->name, d->help, d->name, kind, d->name, s->v[i]) == -1)
			return -1;
	}
	if (buf_appendf(b,
	                "# HELP imapgate_start_time_seconds Start time of the daemon, Unix seconds.\n"
	                "# TYPE imapgate_start_time_seconds gauge\n"
	                "imapgate_start_time_seconds %" PRIu64 "\n"
	                "# HELP imapgate_count_time_seconds Time counters were last reset, Unix seconds.\n"
	                "# TYPE imapgate_count_time_seconds gauge\n"
	                "imapgate_count_time_seconds %" PRIu64 "\n",
	                s->start_time, s->count_time) == -1)
		return -1;
	return 0;
}

int stats_format_text(struct buf *b)
{
	struct stats_snapshot s;

	stats_snapshot(&s);
	return stats_format_text_snapshot(&s, time(NULL), b);
}

int stats_format_prometheus(struct buf *b)
{
	struct stats_snapshot s;

	stats_snapshot(&s);
	return stats_format_prometheus_snapshot(&s, b);
}
