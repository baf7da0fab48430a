/*
 * guard_service — the guard's one instance and everything around it: the
 * event sink (log lines, counters, the SQLite store, the kernel drop's
 * reset), housekeeping, the control commands, and the decisions every
 * front door asks for (guard_service.h).
 *
 * Nothing here blocks the loop: the store writes from its own thread. It
 * never sees a password; the guard gets only a key naming it.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "banfilter.h"
#include "control.h"
#include "firewall.h"
#include "guard_service.h"
#include "guard_share.h"
#include "log.h"
#include "server.h"
#include "stats.h"
#include "store_sqlite.h"

static struct guard *guard;
/* A ban caused by a failure is logged after that failure's own line. */
static char held_line[512];
static bool holding;
static struct store_sqlite *store;
static struct loop_timer housekeeping;
static char store_state[400] = "memory only";

static uint64_t now_s(void)
{
	return (uint64_t)time(NULL);
}

static bool guard_on(void)
{
	return guard != NULL && srv.cfg->guard;
}

/* The user as the guard counts it: ASCII case folded, so BOB and bob are
 * one target. */
static void guard_user(const struct gs_attempt *a, char *out, size_t outsz)
{
	size_t n = a->user_len < outsz - 1 ? a->user_len : outsz - 1;

	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)a->user[i]);
	out[n] = '\0';
}

/* Counted failures by the door they came through. */
static enum stat_id proto_stat(const char *proto)
{
	static const struct {
		const char *name;
		enum stat_id id;
	} m[] = {
		{"imap", STAT_GUARD_FAILURES_IMAP}, {"pop3", STAT_GUARD_FAILURES_POP3},
		{"smtp", STAT_GUARD_FAILURES_SMTP}, {"submission", STAT_GUARD_FAILURES_SUBMISSION},
		{"sieve", STAT_GUARD_FAILURES_SIEVE},
	};

	for (size_t i = 0; proto && i < sizeof(m) / sizeof(m[0]); i++)
		if (strcmp(proto, m[i].name) == 0)
			return m[i].id;
	return STAT_GUARD_FAILURES_OTHER;
}

static void update_ban_gauge(void)
{
	struct guard_stats st;

	guard_get_stats(guard, &st);
	STATS_SET(STAT_GUARD_BANS_ACTIVE, st.bans_active);
}

static void fmt_time(uint64_t t, char *buf, size_t sz)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, sz, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Every guard event: one log line, and the store when there is one. */
static void guard_sink(void *ctx, const struct guard_event *ev)
{
	char prefix[ADDR_STRLEN + 8], until[32];

	(void)ctx;
	guard_cidr_format(&ev->key, prefix, sizeof(prefix));
	switch (ev->type) {
	case GUARD_EV_BAN:
		fmt_time(ev->ban.expiry, until, sizeof(until));
		STATS_INC(STAT_GUARD_BANS_TOTAL);
		snprintf(held_line, sizeof(held_line), "event=ban prefix=%s seconds=%llu until=%s count=%u source=%s reason=%s",
		         prefix, (unsigned long long)(ev->ban.expiry - ev->ban.started), until, ev->ban.ban_count,
		         guard_source_name(ev->ban.source), ev->ban.reason ? ev->ban.reason : "-");
		if (!holding) {
			log_notice("%s", held_line);
			held_line[0] = '\0';
		}
		firewall_ban(&ev->key, ev->ban.expiry);
		break;
	case GUARD_EV_UNBAN:
		log_notice("event=unban prefix=%s reason=%s", prefix, ev->expired ? "expired" : "manual");
		banfilter_clear(); /* rebuilt from the refusals that follow */
		firewall_unban(&ev->key);
		break;
	case GUARD_EV_FORGET:
		log_info("event=forget prefix=%s", prefix);
		break;
	case GUARD_EV_FAILURE:
		if (ev->status == GUARD_COUNTED) {
			STATS_INC(STAT_GUARD_FAILURES_TOTAL);
			STATS_INC(proto_stat(ev->proto));
		}
		break;
	}
	if (store)
		store_sqlite_event(store, ev);
	guard_share_event(ev);
	if (ev->type != GUARD_EV_FAILURE)
		update_ban_gauge();
}

static void housekeeping_tick(struct loop_timer *t)
{
	char err[256];

	guard_expire(guard, now_s());
	update_ban_gauge();
	if (store && store_sqlite_take_error(store, err, sizeof(err))) {
		char clean[300];

		log_sanitize_text(err, strlen(err), clean, sizeof(clean));
		log_err("event=guard_db_error error=\"%s\"", clean);
	}
	loop_timer_start(srv.loop, t, 1000);
}

/* --- control commands ---------------------------------------------------- */

static int parse_target(const char *arg, struct cidr *c, char *errbuf, size_t errsz)
{
	const char *why;

	if (cidr_parse(arg, c, &why) == -1) {
		snprintf(errbuf, errsz, "bad address '%.64s': %s", arg, why);
		return -1;
	}
	return 0;
}

struct list_ctx {
	struct strbuf *out;
	bool json;
	unsigned n;
	uint64_t now;
};

static void list_ban(void *ctx, const struct guard_ban_info *b)
{
	struct list_ctx *l = ctx;
	char prefix[ADDR_STRLEN + 8], until[32];

	guard_cidr_format(&b->key, prefix, sizeof(prefix));
	fmt_time(b->expiry, until, sizeof(until));
	if (l->json) {
		sb_printf(l->out, "%s{\"prefix\":\"%s\",\"until\":\"%s\",\"seconds_left\":%llu,\"count\":%u,\"source\":\"%s\",\"reason\":",
		          l->n ? "," : "", prefix, until, (unsigned long long)(b->expiry - l->now), b->ban_count,
		          guard_source_name(b->source));
		sb_json_str(l->out, b->reason ? b->reason : "");
		sb_printf(l->out, "}");
	} else {
		sb_printf(l->out, "%-20s until %s (%llus left) count=%u source=%s reason=%s\n", prefix, until,
		          (unsigned long long)(b->expiry - l->now), b->ban_count, guard_source_name(b->source),
		          b->reason ? b->reason : "-");
	}
	l->n++;
}

static const char *ctl_bans(int argc, char **argv, bool json, struct strbuf *out, char *errbuf, size_t errsz)
{
	struct list_ctx l = { out, json, 0, now_s() };

	(void)argc, (void)argv, (void)errbuf, (void)errsz;
	if (!guard_on())
		return "the guard is off (guard no)";
	if (json)
		sb_printf(out, "[");
	guard_bans_foreach(guard, l.now, list_ban, &l);
	if (json)
		sb_printf(out, "]\n");
	else if (l.n == 0)
		sb_printf(out, "no active bans\n");
	return NULL;
}

static const char *ctl_ban(int argc, char **argv, bool json, struct strbuf *out, char *errbuf, size_t errsz)
{
	struct cidr c;
	struct guard_ban_info info;
	const char *why = NULL;
	unsigned long secs = 0;
	char prefix[ADDR_STRLEN + 8], until[32];

	if (!guard_on())
		return "the guard is off (guard no)";
	if (argc < 2 || argc > 3)
		return "usage: ban ADDRESS[/PREFIX] [SECONDS]";
	if (parse_target(argv[1], &c, errbuf, errsz) == -1)
		return errbuf;
	if (argc == 3) {
		char *end;

		secs = strtoul(argv[2], &end, 10);
		if (*end || argv[2][0] == '-' || secs == 0 || secs > 31536000) {
			snprintf(errbuf, errsz, "bad duration '%.32s': seconds from 1 to 31536000", argv[2]);
			return errbuf;
		}
	}
	if (guard_ban(guard, &c, secs, "manual", now_s(), &info, &why) == -1) {
		snprintf(errbuf, errsz, "cannot ban %s: %s", argv[1], why ? why : "error");
		return errbuf;
	}
	guard_cidr_format(&info.key, prefix, sizeof(prefix));
	fmt_time(info.expiry, until, sizeof(until));
	if (json)
		sb_printf(out, "{\"prefix\":\"%s\",\"until\":\"%s\"}\n", prefix, until);
	else
		sb_printf(out, "banned %s until %s\n", prefix, until);
	/* Sessions already open from there stay: the ban refuses their next
	 * connection and their next login. */
	return NULL;
}

static const char *ctl_unban(int argc, char **argv, bool json, struct strbuf *out, char *errbuf, size_t errsz)
{
	struct cidr c;
	bool forget = false;
	const char *target = NULL;
	size_t lifted, forgotten = 0;

	if (!guard_on())
		return "the guard is off (guard no)";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--forget") == 0)
			forget = true;
		else if (target == NULL)
			target = argv[i];
		else
			return "usage: unban ADDRESS[/PREFIX] [--forget]";
	}
	if (target == NULL)
		return "usage: unban ADDRESS[/PREFIX] [--forget]";
	if (parse_target(target, &c, errbuf, errsz) == -1)
		return errbuf;
	lifted = guard_unban(guard, &c, forget, now_s(), &forgotten);
	if (json)
		sb_printf(out, "{\"lifted\":%zu,\"forgotten\":%zu}\n", lifted, forgotten);
	else
		sb_printf(out, "lifted %zu ban(s)%s\n", lifted, forget ? ", history forgotten" : "");
	return NULL;
}

static void why_prefix(void *ctx, const struct guard_prefix_info *p)
{
	struct list_ctx *l = ctx;
	char prefix[ADDR_STRLEN + 8], t[32];

	guard_cidr_format(&p->key, prefix, sizeof(prefix));
	if (l->json) {
		sb_printf(l->out, "%s{\"prefix\":\"%s\",\"banned\":%s,\"failures_in_window\":%u", l->n ? "," : "", prefix,
		          p->banned ? "true" : "false", p->failures);
		if (p->banned) {
			fmt_time(p->ban.expiry, t, sizeof(t));
			sb_printf(l->out, ",\"until\":\"%s\",\"count\":%u", t, p->ban.ban_count);
		}
		sb_printf(l->out, ",\"recent\":[");
		for (size_t i = 0; i < p->nrecent; i++) {
			fmt_time(p->recent[i].time, t, sizeof(t));
			sb_printf(l->out, "%s{\"time\":\"%s\",\"user\":", i ? "," : "", t);
			sb_json_str(l->out, p->recent[i].user);
			sb_printf(l->out, ",\"reason\":");
			sb_json_str(l->out, p->recent[i].reason);
			sb_printf(l->out, ",\"proto\":");
			sb_json_str(l->out, p->recent[i].proto);
			if (guard_share_on()) {
				sb_printf(l->out, ",\"node\":");
				sb_json_str(l->out, p->recent[i].node[0] ? p->recent[i].node : guard_share_node());
			}
			sb_printf(l->out, ",\"status\":\"%s\",\"repeats\":%u}", guard_status_name(p->recent[i].status),
			          p->recent[i].repeats);
		}
		sb_printf(l->out, "]}");
	} else {
		sb_printf(l->out, "%s: %s, %u failure(s) counted in the window%s\n", prefix,
		          p->banned ? "banned" : "not banned", p->failures, p->banned ? " since the ban" : "");
		if (p->banned) {
			fmt_time(p->ban.expiry, t, sizeof(t));
			sb_printf(l->out, "  banned until %s (ban %u in its chain)\n", t, p->ban.ban_count);
		}
		for (size_t i = 0; i < p->nrecent; i++) {
			char user[80];

			log_sanitize(p->recent[i].user, strlen(p->recent[i].user), user, sizeof(user));
			fmt_time(p->recent[i].time, t, sizeof(t));
			char node[GUARD_NODE_LEN + 8] = "";

			if (guard_share_on())
				snprintf(node, sizeof(node), " node=%s",
				         p->recent[i].node[0] ? p->recent[i].node : guard_share_node());
			sb_printf(l->out, "  %s user=%s proto=%s reason=%s status=%s repeats=%u%s\n", t, user,
			          p->recent[i].proto, p->recent[i].reason, guard_status_name(p->recent[i].status),
			          p->recent[i].repeats, node);
		}
	}
	l->n++;
}

static const char *ctl_why(int argc, char **argv, bool json, struct strbuf *out, char *errbuf, size_t errsz)
{
	struct cidr c;
	struct list_ctx l = { out, json, 0, now_s() };

	if (!guard_on())
		return "the guard is off (guard no)";
	if (argc != 2)
		return "usage: why ADDRESS";
	if (parse_target(argv[1], &c, errbuf, errsz) == -1)
		return errbuf;
	if (json)
		sb_printf(out, "[");
	guard_why(guard, &c, l.now, why_prefix, &l);
	if (json)
		sb_printf(out, "]\n");
	else if (l.n == 0)
		sb_printf(out, "%s: nothing recorded\n", argv[1]);
	return NULL;
}

/* --- life cycle ---------------------------------------------------------- */

int guard_service_init(void)
{
	struct guard_params p;
	uint8_t seed[GUARD_SEED_LEN];
	const struct config *cfg = srv.cfg;

	control_register("bans", ctl_bans, "active bans");
	control_register("ban", ctl_ban, "ban ADDRESS[/PREFIX] [SECONDS]");
	control_register("unban", ctl_unban, "unban ADDRESS[/PREFIX] [--forget]");
	control_register("why", ctl_why, "why ADDRESS: its recent failures and bans");
	if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
		return -1;
	guard_params_from_config(&p, cfg);
	guard = guard_create(&p, seed);
	if (guard == NULL)
		return -1;
	if (cfg->guard && cfg->guard_db && strcmp(cfg->guard_db, "none") != 0) {
		struct store_sqlite_opts o = { 0 };
		char err[256], clean[300];

		o.keep_failures = cfg->guard_findtime > 86400 ? cfg->guard_findtime : 86400;
		o.keep_bans = cfg->guard_recidive_window > 86400 ? cfg->guard_recidive_window : 86400;
		if (store_sqlite_open(cfg->guard_db, &o, &store, err, sizeof(err)) == -1 ||
		    store_sqlite_load(store, guard, now_s(), err, sizeof(err)) == -1) {
			/* Persistence was asked for: never lose it silently. The
			 * start checked this as our user (preflight.c), so only a
			 * change since then or a broken file gets here. */
			log_sanitize_text(err, strlen(err), clean, sizeof(clean));
			fatal("event=guard_db_error error=\"%s\" hint=\"set guard_db none to keep bans in memory only\"",
			      clean);
		} else {
			struct guard_stats st;

			guard_get_stats(guard, &st);
			log_info("event=guard_db file=%s restored_bans=%zu", cfg->guard_db, st.bans_active);
			snprintf(store_state, sizeof(store_state), "sqlite %s", cfg->guard_db);
		}
	}
	guard_set_sink(guard, guard_sink, NULL);
	if (cfg->guard)
		firewall_sync(guard);
	update_ban_gauge();
	if (cfg->guard) {
		char err[256];

		if (guard_share_start(srv.loop, guard, cfg, err, sizeof(err)) == -1)
			fatal("event=start error=\"guard_redis: %s\"", err);
	}
	housekeeping.fn = housekeeping_tick;
	loop_timer_start(srv.loop, &housekeeping, 1000);
	return 0;
}

void guard_service_reload(void)
{
	struct guard_params p;

	banfilter_clear(); /* guard_drop_after may have changed */
	if (guard == NULL)
		return;
	guard_params_from_config(&p, srv.cfg);
	guard_set_params(guard, &p);
	if (store)
		store_sqlite_set_retention(store, srv.cfg->guard_findtime > 86400 ? srv.cfg->guard_findtime : 86400,
		                           srv.cfg->guard_recidive_window > 86400 ? srv.cfg->guard_recidive_window : 86400);
	if (srv.cfg->guard)
		guard_share_reload(srv.cfg);
	else
		guard_share_stop();
}

void guard_service_shutdown(void)
{
	char err[256];

	loop_timer_stop(srv.loop, &housekeeping);
	guard_share_stop();
	if (store && store_sqlite_close(&store, err, sizeof(err)) == -1)
		log_err("event=guard_db_error error=\"%s\"", err);
	guard_free(&guard);
}

const char *guard_service_describe(void)
{
	return guard_on() ? store_state : "off";
}

bool guard_service_on(void)
{
	return guard_on();
}

/* --- decisions ----------------------------------------------------------- */

bool guard_service_banned(const struct sockaddr *sa, uint64_t *expiry)
{
	uint64_t e = 0;
	bool b = guard_on() && sa != NULL && guard_check_connect(guard, sa, now_s(), &e);

	if (expiry)
		*expiry = e;
	return b;
}

void guard_service_may_try(const struct gs_attempt *a, struct guard_verdict *v)
{
	char user[GUARD_USER_MAX];

	memset(v, 0, sizeof(*v));
	if (!guard_on() || a->addr == NULL)
		return;
	guard_user(a, user, sizeof(user));
	guard_check_login(guard, a->addr, user, now_s(), v);
}

int guard_service_failure(const struct gs_attempt *a, const char *reason, struct guard_failure_result *r)
{
	char user[GUARD_USER_MAX];
	int rc;

	memset(r, 0, sizeof(*r));
	if (!guard_on())
		return -1;
	guard_user(a, user, sizeof(user));
	holding = true;
	held_line[0] = '\0';
	if (a->addr && !a->user_only) {
		rc = guard_record_failure(guard, a->addr, user, a->pwkey, reason, a->proto, now_s(), r);
	} else {
		rc = guard_record_user_failure(guard, user, now_s(), r);
		if (rc == 0) {
			STATS_INC(STAT_GUARD_FAILURES_TOTAL);
			STATS_INC(proto_stat(a->proto));
		}
	}
	holding = false;
	return rc;
}

void guard_service_log_held(void)
{
	if (held_line[0]) {
		log_notice("%s", held_line);
		held_line[0] = '\0';
	}
}

uint32_t guard_service_failure_delay(const struct guard_failure_result *r)
{
	uint32_t rnd = 0, d;

	if (!guard_on() || r->status == GUARD_IGNORED || r->status == GUARD_TRUSTED)
		return 0;
	/* Jitter only: without entropy the delay is just not random. */
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		rnd = 0;
	d = guard_failure_delay(guard, rnd);
	/* A distributed guess at one user: its failures slow down. */
	return r->user_delay_ms > d ? r->user_delay_ms : d;
}

void guard_service_note(const struct guard_failure_result *r, int rc, char *note, size_t notesz)
{
	if (!guard_on())
		snprintf(note, notesz, " guard=off");
	else if (rc == -1)
		snprintf(note, notesz, " guard=error");
	else
		snprintf(note, notesz, " guard=%s failures=%u/%u user_failures=%u", guard_status_name(r->status),
		         r->banned ? srv.cfg->guard_maxretry : r->failures, srv.cfg->guard_maxretry,
		         r->user_failures);
}

void guard_service_success(const struct gs_attempt *a)
{
	char user[GUARD_USER_MAX];

	if (!guard_on() || a->addr == NULL)
		return;
	guard_user(a, user, sizeof(user));
	if (guard_record_success(guard, a->addr, user, now_s()) == 0 && guard_share_on() &&
	    !cidr_list_match(&srv.cfg->guard_ignore, a->addr)) {
		struct cidr key;

		if (guard_key_from_sockaddr(guard, a->addr, &key) == 0)
			guard_share_success(&key, user);
	}
}

void guard_service_pwkey(const char *hex, size_t len, uint8_t out[GUARD_PWHASH_LEN])
{
	/* The guard compares the first 8 bytes; Dovecot's default 12-bit
	 * pwhash is 4 hex digits, a full SHA-512 128. Fold every byte in,
	 * case-insensitively (hex from other tools may be upper case). */
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

	memset(out, 0, GUARD_PWHASH_LEN);
	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)tolower((unsigned char)hex[i]);
		h *= 0x100000001b3ull;
	}
	h ^= len; /* "0" and "00" differ */
	memcpy(out, &h, sizeof(h));
}
