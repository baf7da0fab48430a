/*
 * guard_share — sharing the guard through Redis (guard_share.h).
 *
 * Keys, with P = guard_redis_prefix ("imapgate:"):
 *   P events          the channel: one encoded event per message (guard_event.h)
 *   P ban:<prefix>    an active ban, encoded, with the ban's remaining time as TTL
 *   P bans            sorted set: member <prefix>, score the ban's expiry in ms
 * A ban is written to its key and the index, then published; an unban
 * deletes both, then is published. Catch-up after (re)connecting: the
 * subscription is confirmed first, then the index is pruned and read, and
 * every ban still active is applied (the longest ban wins, so order and
 * repeats do not matter). Failures and successes are only published:
 * missing some while away costs a little counting, never a wrong ban.
 *
 * Our own messages come back on the channel: each published payload's
 * hash is kept in a small ring and an incoming payload found there is
 * skipped (instances on one host may share a node name).
 */
#include "guard_share.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "guard_event.h"
#include "hash.h"
#include "log.h"
#include "redis_link.h"
#include "redis_url.h"

#define SELF_RING 4096  /* hashes of our recent messages */
#define CATCHUP_PAGE 256 /* ban keys per MGET */
#define SUCCESS_SLOTS 4096 /* (prefix, user) pairs whose success was published lately */
#define SUCCESS_EVERY 300  /* s: a pair's success is published again after this */

static struct {
	bool on;
	struct loop *loop;
	struct guard *guard;
	const struct config *cfg;
	char url[1024];
	char prefix[80];
	char node[GEV_NODE_MAX];
	char channel[128];
	bool applying;     /* a peer's event is being applied */
	bool applying_ban; /* ... and it is a ban or an unban */
	uint64_t self[SELF_RING];
	unsigned self_next;
	uint64_t peer_events, peer_bad, catchup_bans, last_lag;
	struct {
		uint64_t h, t;
	} success[SUCCESS_SLOTS];
} S;

static uint64_t now_s(void)
{
	return (uint64_t)time(NULL);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void cidr_sockaddr(const struct cidr *c, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (c->family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, c->addr, 4);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, c->addr, 16);
	}
}

/* --- out ----------------------------------------------------------------- */

static void cmd(int argc, const char **argv)
{
	size_t len[8];

	for (int i = 0; i < argc; i++)
		len[i] = strlen(argv[i]);
	(void)redis_link_command(NULL, NULL, argc, argv, len);
}

static void publish(const struct gev *e)
{
	char text[GEV_TEXT_MAX];
	int n = gev_encode(e, text, sizeof(text));

	if (n < 0)
		return;
	S.self[S.self_next++ % SELF_RING] = hash_keyed(text, (size_t)n);
	cmd(3, (const char *[]){"PUBLISH", S.channel, text});
}

static void gev_base(struct gev *e, enum gev_type t, const struct cidr *key)
{
	memset(e, 0, sizeof(*e));
	e->type = t;
	snprintf(e->node, sizeof(e->node), "%s", S.node);
	e->time = now_s();
	e->prefix = *key;
}

static void ban_key(const struct cidr *c, char *buf, size_t sz, char *member, size_t msz)
{
	char p[ADDR_STRLEN + 8];

	guard_cidr_format(c, p, sizeof(p));
	snprintf(member, msz, "%s", p);
	snprintf(buf, sz, "%sban:%s", S.prefix, p);
}

static void share_ban(const struct guard_event *ev)
{
	struct gev e;
	char text[GEV_TEXT_MAX], key[200], member[ADDR_STRLEN + 8], ttl[32], score[32], bans[120];
	uint64_t now = now_ms(), exp_ms = ev->ban.expiry * 1000u;

	gev_base(&e, GEV_BAN, &ev->ban.key);
	e.started = ev->ban.started;
	e.expiry = ev->ban.expiry;
	e.ban_count = ev->ban.ban_count;
	e.source = ev->ban.source;
	snprintf(e.ban_reason, sizeof(e.ban_reason), "%s", ev->ban.reason ? ev->ban.reason : "");
	if (gev_encode(&e, text, sizeof(text)) < 0 || exp_ms <= now)
		return;
	ban_key(&ev->ban.key, key, sizeof(key), member, sizeof(member));
	snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)(exp_ms - now));
	snprintf(score, sizeof(score), "%llu", (unsigned long long)exp_ms);
	snprintf(bans, sizeof(bans), "%sbans", S.prefix);
	cmd(5, (const char *[]){"SET", key, text, "PX", ttl});
	cmd(4, (const char *[]){"ZADD", bans, score, member});
	publish(&e);
}

static void share_unban(const struct cidr *key, bool forget)
{
	struct gev e;
	char k[200], member[ADDR_STRLEN + 8], bans[120];

	gev_base(&e, GEV_UNBAN, key);
	e.forget = forget;
	ban_key(key, k, sizeof(k), member, sizeof(member));
	snprintf(bans, sizeof(bans), "%sbans", S.prefix);
	cmd(2, (const char *[]){"DEL", k});
	cmd(3, (const char *[]){"ZREM", bans, member});
	publish(&e);
}

void guard_share_event(const struct guard_event *ev)
{
	struct gev e;

	if (!S.on)
		return;
	switch (ev->type) {
	case GUARD_EV_FAILURE:
		if (S.applying || ev->status == GUARD_IGNORED || ev->status == GUARD_USER_ONLY)
			return;
		gev_base(&e, GEV_FAILURE, &ev->key);
		snprintf(e.user, sizeof(e.user), "%s", ev->user ? ev->user : "");
		if (ev->pwhash) {
			e.has_pwkey = true;
			memcpy(e.pwkey, ev->pwhash, GEV_PWKEY_LEN);
		}
		snprintf(e.proto, sizeof(e.proto), "%s", ev->proto ? ev->proto : "imap");
		snprintf(e.reason, sizeof(e.reason), "%s", ev->reason ? ev->reason : "");
		publish(&e);
		return;
	case GUARD_EV_BAN:
		/* A ban that a peer's failures tipped here is published too (the
		 * index must have it); one applied from a peer's ban is not. */
		if (!S.applying_ban)
			share_ban(ev);
		return;
	case GUARD_EV_UNBAN:
		/* Each instance lets its bans run out by itself. */
		if (!S.applying && !ev->expired)
			share_unban(&ev->key, false);
		return;
	case GUARD_EV_FORGET:
		if (!S.applying)
			share_unban(&ev->key, true);
		return;
	}
}

void guard_share_success(const struct cidr *key, const char *user)
{
	struct gev e;

	if (!S.on || S.applying)
		return;
	/* A webmail user logs in on every page view: the first success of a
	 * pair is news for the peers, the next ones for a while are not. A
	 * slot taken by another pair only means one more message. */
	{
		uint8_t buf[18 + GUARD_USER_MAX];
		size_t ul = strlen(user) < GUARD_USER_MAX ? strlen(user) : GUARD_USER_MAX;
		uint64_t h, now = now_s();

		buf[0] = (uint8_t)key->family;
		buf[1] = (uint8_t)key->prefix;
		memcpy(buf + 2, key->addr, 16);
		memcpy(buf + 18, user, ul);
		h = hash_keyed(buf, 18 + ul);
		if (S.success[h % SUCCESS_SLOTS].h == h && now - S.success[h % SUCCESS_SLOTS].t < SUCCESS_EVERY)
			return;
		S.success[h % SUCCESS_SLOTS].h = h;
		S.success[h % SUCCESS_SLOTS].t = now;
	}
	gev_base(&e, GEV_SUCCESS, key);
	snprintf(e.user, sizeof(e.user), "%s", user);
	publish(&e);
}

/* --- in ------------------------------------------------------------------ */

static void apply_ban(const struct gev *e)
{
	struct guard_ban_info b = {0};

	/* A peer never bans half the Internet here: shorter prefixes than a
	 * /8 or a /16 are an error (or an attack through Redis), not a ban. */
	if (e->prefix.prefix < (e->prefix.family == AF_INET ? 8 : 16)) {
		char p[ADDR_STRLEN + 8];

		guard_cidr_format(&e->prefix, p, sizeof(p));
		S.peer_bad++;
		log_warn("event=redis_bad_event error=\"ban of %s refused: broader than /8 (IPv4) or /16 (IPv6)\" node=%s", p,
		         e->node);
		return;
	}

	b.key = e->prefix;
	b.started = e->started;
	b.expiry = e->expiry;
	b.ban_count = e->ban_count;
	b.source = e->source;
	b.reason = e->ban_reason;
	S.applying = S.applying_ban = true;
	(void)guard_apply_ban(S.guard, &b, now_s());
	S.applying = S.applying_ban = false;
}

static void apply(const struct gev *e)
{
	struct sockaddr_storage ss;
	char prefix[ADDR_STRLEN + 8];

	guard_cidr_format(&e->prefix, prefix, sizeof(prefix));
	cidr_sockaddr(&e->prefix, &ss);
	switch (e->type) {
	case GEV_FAILURE: {
		struct guard_failure_result r;
		uint8_t pw[GUARD_PWHASH_LEN] = {0};
		char u[160];

		memcpy(pw, e->pwkey, GEV_PWKEY_LEN);
		S.applying = true;
		if (guard_record_failure_node(S.guard, (struct sockaddr *)&ss, e->user, e->has_pwkey ? pw : NULL,
		                              e->reason, e->proto, e->node, now_s(), &r) == 0) {
			log_sanitize(e->user, strlen(e->user), u, sizeof(u));
			log_info("event=peer_failure node=%s prefix=%s user=%s proto=%s guard=%s failures=%u/%u", e->node,
			         prefix, u, e->proto, guard_status_name(r.status),
			         r.banned ? S.cfg->guard_maxretry : r.failures, S.cfg->guard_maxretry);
		}
		S.applying = false;
		break;
	}
	case GEV_SUCCESS:
		S.applying = true;
		(void)guard_record_success(S.guard, (struct sockaddr *)&ss, e->user, now_s());
		S.applying = false;
		break;
	case GEV_BAN:
		apply_ban(e);
		break;
	case GEV_UNBAN: {
		size_t lifted;

		S.applying = S.applying_ban = true;
		lifted = guard_unban(S.guard, &e->prefix, e->forget, now_s(), NULL);
		S.applying = S.applying_ban = false;
		if (lifted)
			log_notice("event=peer_unban node=%s prefix=%s lifted=%zu", e->node, prefix, lifted);
		break;
	}
	}
}

static void on_message(void *ctx, const char *data, size_t len)
{
	struct gev e;
	const char *why = NULL;
	uint64_t h = hash_keyed(data, len), now = now_s();

	(void)ctx;
	for (unsigned i = 0; i < SELF_RING; i++)
		if (S.self[i] == h)
			return; /* our own, back from the channel */
	if (gev_decode(data, len, &e, &why) == -1) {
		char clean[200];

		S.peer_bad++;
		log_sanitize(data, len < 120 ? len : 120, clean, sizeof(clean));
		log_warn("event=redis_bad_event error=\"%s\" data=\"%s\"", why ? why : "?", clean);
		return;
	}
	S.peer_events++;
	S.last_lag = now > e.time ? now - e.time : 0;
	apply(&e);
}

static void on_bans(void *ctx, const redisReply *r)
{
	(void)ctx;
	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return;
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *x = r->element[i];
		struct gev e;
		const char *why;

		if (x->type != REDIS_REPLY_STRING || gev_decode(x->str, (size_t)x->len, &e, &why) == -1 ||
		    e.type != GEV_BAN)
			continue; /* gone since (TTL) or not ours */
		S.catchup_bans++;
		apply_ban(&e);
	}
}

static void on_index(void *ctx, const redisReply *r)
{
	const char *argv[1 + CATCHUP_PAGE];
	size_t len[1 + CATCHUP_PAGE];
	char keys[CATCHUP_PAGE][160];
	size_t n = 0;

	(void)ctx;
	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return;
	/* MGET in pages. */
	for (size_t i = 0; i <= r->elements; i++) {
		if (n == CATCHUP_PAGE || (i == r->elements && n > 0)) {
			argv[0] = "MGET";
			len[0] = 4;
			for (size_t k = 0; k < n; k++) {
				argv[1 + k] = keys[k];
				len[1 + k] = strlen(keys[k]);
			}
			(void)redis_link_command(on_bans, NULL, (int)(1 + n), argv, len);
			n = 0;
		}
		if (i == r->elements)
			break;
		if (r->element[i]->type == REDIS_REPLY_STRING)
			snprintf(keys[n++], sizeof(keys[0]), "%sban:%.*s", S.prefix, (int)r->element[i]->len,
			         r->element[i]->str);
	}
}

static void on_up(void *ctx)
{
	char bans[120], now[32], before[34];

	(void)ctx;
	snprintf(bans, sizeof(bans), "%sbans", S.prefix);
	snprintf(now, sizeof(now), "%llu", (unsigned long long)now_ms());
	snprintf(before, sizeof(before), "(%s", now);
	cmd(4, (const char *[]){"ZREMRANGEBYSCORE", bans, "-inf", before});
	{
		const char *argv[] = {"ZRANGEBYSCORE", bans, now, "+inf"};
		size_t len[4];

		for (int i = 0; i < 4; i++)
			len[i] = strlen(argv[i]);
		(void)redis_link_command(on_index, NULL, 4, argv, len);
	}
}

static void on_down(void *ctx)
{
	(void)ctx;
}

/* --- life cycle ------------------------------------------------------------ */

static int link_start(char *err, size_t errsz)
{
	static const struct redis_link_ops ops = {on_message, on_up, on_down};
	const struct config *cfg = S.cfg;

	snprintf(S.url, sizeof(S.url), "%s", cfg->guard_redis);
	snprintf(S.prefix, sizeof(S.prefix), "%s", cfg->guard_redis_prefix);
	if (cfg->guard_redis_node) {
		snprintf(S.node, sizeof(S.node), "%s", cfg->guard_redis_node);
	} else {
		char host[256] = "";

		if (gethostname(host, sizeof(host) - 1) == -1 || host[0] == '\0')
			snprintf(host, sizeof(host), "imapgate");
		host[strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")] = '\0';
		snprintf(S.node, sizeof(S.node), "%s", host[0] ? host : "imapgate");
	}
	snprintf(S.channel, sizeof(S.channel), "%sevents", S.prefix);
	if (redis_link_start(S.loop, S.url, S.channel, &ops, NULL, err, errsz) == -1)
		return -1;
	S.on = true;
	return 0;
}

int guard_share_start(struct loop *l, struct guard *g, const struct config *cfg, char *err, size_t errsz)
{
	S.loop = l;
	S.guard = g;
	S.cfg = cfg;
	if (cfg->guard_redis == NULL)
		return 0;
	return link_start(err, errsz);
}

void guard_share_stop(void)
{
	if (S.on)
		redis_link_stop();
	S.on = false;
}

void guard_share_reload(const struct config *cfg)
{
	char err[256];
	bool same = S.on && cfg->guard_redis && strcmp(cfg->guard_redis, S.url) == 0 &&
	            strcmp(cfg->guard_redis_prefix, S.prefix) == 0 &&
	            (cfg->guard_redis_node ? strcmp(cfg->guard_redis_node, S.node) == 0 : true);

	S.cfg = cfg;
	if (same || S.loop == NULL)
		return;
	guard_share_stop();
	if (cfg->guard_redis && link_start(err, sizeof(err)) == -1)
		log_warn("event=reload warning=\"guard_redis: %s\"", err);
}

bool guard_share_on(void)
{
	return S.on;
}

bool guard_share_applying(void)
{
	return S.applying;
}

const char *guard_share_node(void)
{
	return S.on ? S.node : "";
}

void guard_share_status(struct strbuf *out, bool json)
{
	struct redis_link_stats st;
	struct redis_url u;
	const char *why;
	char shown[600] = "";

	if (!S.on)
		return;
	redis_link_get_stats(&st);
	if (redis_url_parse(S.url, &u, &why) == 0)
		redis_url_display(&u, shown, sizeof(shown));
	if (json) {
		sb_printf(out, ",\"redis\":{\"server\":");
		sb_json_str(out, shown);
		sb_printf(out, ",\"node\":");
		sb_json_str(out, S.node);
		sb_printf(out,
		          ",\"up\":%s,\"events_out\":%llu,\"events_in\":%llu,\"bad_in\":%llu,\"queued\":%llu,"
		          "\"dropped\":%llu,\"reconnects\":%llu,\"catchup_bans\":%llu,\"lag_seconds\":%llu}",
		          st.up ? "true" : "false", (unsigned long long)st.sent, (unsigned long long)S.peer_events,
		          (unsigned long long)S.peer_bad, (unsigned long long)st.queued, (unsigned long long)st.dropped,
		          (unsigned long long)st.reconnects, (unsigned long long)S.catchup_bans,
		          (unsigned long long)S.last_lag);
		return;
	}
	sb_printf(out,
	          "redis %s %s node=%s events out=%llu in=%llu bad=%llu queued=%llu dropped=%llu reconnects=%llu "
	          "catchup_bans=%llu lag=%llus\n",
	          shown, st.up ? "up" : "down", S.node, (unsigned long long)st.sent,
	          (unsigned long long)S.peer_events, (unsigned long long)S.peer_bad, (unsigned long long)st.queued,
	          (unsigned long long)st.dropped, (unsigned long long)st.reconnects,
	          (unsigned long long)S.catchup_bans, (unsigned long long)S.last_lag);
}
