/* Unit tests for guard: counting, bans, escalation, trust, per-user
 * slow-down, admin calls and memory caps, over a fake clock (now is just
 * a number the tests move). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "guard.h"

#define T0 1700000000ULL

static uint64_t now;

struct events {
	unsigned failures, bans, unbans, expired, forgets;
	struct guard_event last_ban;
};

static void on_event(void *ctx, const struct guard_event *ev)
{
	struct events *e = ctx;
	switch (ev->type) {
	case GUARD_EV_FAILURE:
		e->failures++;
		break;
	case GUARD_EV_BAN:
		e->bans++;
		e->last_ban = *ev;
		e->last_ban.ban.reason = NULL;
		break;
	case GUARD_EV_UNBAN:
		e->unbans++;
		e->expired += ev->expired;
		break;
	case GUARD_EV_FORGET:
		e->forgets++;
		break;
	}
}

static struct sockaddr_storage *sa(const char *ip)
{
	static struct sockaddr_storage ring[8];
	static unsigned i;
	struct sockaddr_storage *ss = &ring[i++ % 8];

	memset(ss, 0, sizeof *ss);
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
	}
	return ss;
}
#define SA(ip) ((const struct sockaddr *)sa(ip))

static struct cidr cidr(const char *s)
{
	struct cidr c;
	const char *why;
	assert_int_equal(cidr_parse(s, &c, &why), 0);
	return c;
}

static void defaults(struct guard_params *p)
{
	const char *why;
	memset(p, 0, sizeof *p);
	p->ipv4_prefix = 32;
	p->ipv6_prefix = 64;
	p->findtime = 600;
	p->maxretry = 5;
	p->bantime = 600;
	p->recidive_window = 86400;
	p->bantime_factor = 2;
	p->bantime_max = 604800;
	p->trust_time = 86400;
	p->user_maxretry = 10;
	p->user_delay_max = 15000;
	p->failure_delay = 500;
	assert_int_equal(cidr_list_parse("127.0.0.1/32 ::1/128", &p->ignore, &why), 0);
}

static struct guard *mk(const struct guard_params *p, struct events *e)
{
	static const uint8_t seed[GUARD_SEED_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	struct guard *g = guard_create(p, seed);
	assert_non_null(g);
	if (e) {
		memset(e, 0, sizeof *e);
		guard_set_sink(g, on_event, e);
	}
	now = T0;
	return g;
}

static struct guard *mk_default(struct events *e)
{
	struct guard_params p;
	defaults(&p);
	return mk(&p, e);
}

/* A distinct password per call unless pw is given. */
static struct guard_failure_result flop_pw(struct guard *g, const char *ip, const char *user,
                                           unsigned pw)
{
	struct guard_failure_result r;
	uint8_t h[GUARD_PWHASH_LEN] = {0};
	memcpy(h, &pw, sizeof pw);
	assert_int_equal(guard_record_failure(g, SA(ip), user, h, "auth_failed", "imap", now, &r), 0);
	return r;
}

static unsigned pwseq = 1000;
static struct guard_failure_result flop(struct guard *g, const char *ip, const char *user)
{
	return flop_pw(g, ip, user, pwseq++);
}

static bool banned(struct guard *g, const char *ip)
{
	uint64_t exp = 0;
	bool b = guard_check_connect(g, SA(ip), now, &exp);
	if (b)
		assert_true(exp > now);
	return b;
}

static void test_ban_at_exactly_maxretry(void **state)
{
	(void)state;
	struct events e;
	struct guard *g = mk_default(&e);
	struct guard_failure_result r;

	for (int i = 1; i <= 4; i++) {
		r = flop(g, "192.0.2.7", "alice");
		assert_int_equal(r.status, GUARD_COUNTED);
		assert_int_equal(r.failures, i);
		assert_false(r.banned);
		assert_false(banned(g, "192.0.2.7"));
		now += 10;
	}
	r = flop(g, "192.0.2.7", "alice");
	assert_true(r.banned);
	assert_int_equal(r.ban_seconds, 600);
	assert_int_equal(r.ban_expiry, now + 600);
	assert_int_equal(r.ban_count, 1);
	assert_int_equal(r.failures, 0);
	assert_true(banned(g, "192.0.2.7"));
	assert_false(banned(g, "192.0.2.8"));
	assert_int_equal(e.failures, 5);
	assert_int_equal(e.bans, 1);
	assert_int_equal(e.last_ban.ban.expiry, now + 600);
	assert_int_equal(e.last_ban.ban.source, GUARD_SRC_AUTO);

	struct guard_verdict v;
	guard_check_login(g, SA("192.0.2.7"), "bob", now, &v);
	assert_true(v.banned);
	assert_int_equal(v.ban_expiry, now + 600);

	/* Ends at its expiry, announced by guard_expire. */
	now += 599;
	assert_true(banned(g, "192.0.2.7"));
	now += 1;
	assert_false(banned(g, "192.0.2.7"));
	guard_expire(g, now);
	assert_int_equal(e.unbans, 1);
	assert_int_equal(e.expired, 1);
	guard_free(&g);
	assert_null(g);
}

static void test_sliding_window(void **state)
{
	(void)state;
	struct guard *g = mk_default(NULL);
	struct guard_failure_result r;

	/* t=0,100,200,300 then the first leaves the window at t=600. */
	for (int i = 0; i < 4; i++) {
		flop(g, "198.51.100.1", "u");
		now += 100;
	}
	now = T0 + 600;
	r = flop(g, "198.51.100.1", "u"); /* window (0,600]: 100,200,300,600 */
	assert_false(r.banned);
	assert_int_equal(r.failures, 4);
	now = T0 + 650;
	r = flop(g, "198.51.100.1", "u");
	assert_true(r.banned);

	/* Spread failures never ban: one per findtime. */
	for (int i = 0; i < 20; i++) {
		now += 600;
		r = flop(g, "198.51.100.2", "u");
		assert_false(r.banned);
		assert_int_equal(r.failures, 1);
	}
	guard_free(&g);
}

static void test_escalation_and_cap(void **state)
{
	(void)state;
	struct guard_params p;
	defaults(&p);
	p.bantime = 600;
	p.bantime_factor = 3;
	p.bantime_max = 10000;
	struct guard *g = mk(&p, NULL);
	uint64_t want[] = {600, 1800, 5400, 10000, 10000};

	for (unsigned b = 0; b < 5; b++) {
		struct guard_failure_result r;
		for (int i = 0; i < 5; i++)
			r = flop(g, "203.0.113.9", "x");
		assert_true(r.banned);
		assert_int_equal(r.ban_seconds, want[b]);
		assert_int_equal(r.ban_count, b + 1);
		now = r.ban_expiry + 3600; /* well inside the recidive window */
		guard_expire(g, now);
		assert_false(banned(g, "203.0.113.9"));
	}
	guard_free(&g);
}

static void test_recidive_window_resets(void **state)
{
	(void)state;
	struct guard *g = mk_default(NULL);
	struct guard_failure_result r;

	for (int i = 0; i < 5; i++)
		r = flop(g, "203.0.113.10", "x");
	assert_int_equal(r.ban_seconds, 600);
	now = r.ban_expiry + 100;
	for (int i = 0; i < 5; i++)
		r = flop(g, "203.0.113.10", "x");
	assert_int_equal(r.ban_seconds, 1200);
	assert_int_equal(r.ban_count, 2);
	/* A full recidive window after the ban ended: escalation forgotten. */
	now = r.ban_expiry + 86400;
	guard_expire(g, now);
	for (int i = 0; i < 5; i++)
		r = flop(g, "203.0.113.10", "x");
	assert_true(r.banned);
	assert_int_equal(r.ban_seconds, 600);
	assert_int_equal(r.ban_count, 1);
	guard_free(&g);
}

static void test_same_password_counts_once(void **state)
{
	(void)state;
	struct events e;
	struct guard *g = mk_default(&e);
	struct guard_failure_result r;

	r = flop_pw(g, "192.0.2.50", "carol", 7);
	assert_int_equal(r.status, GUARD_COUNTED);
	for (int i = 0; i < 50; i++) {
		now += 10;
		r = flop_pw(g, "192.0.2.50", "carol", 7);
		assert_int_equal(r.status, GUARD_DUPLICATE);
		assert_int_equal(r.failures, 1);
		assert_false(r.banned);
	}
	/* Same password for another user, or another password: counted. */
	assert_int_equal(flop_pw(g, "192.0.2.50", "dave", 7).status, GUARD_COUNTED);
	assert_int_equal(flop_pw(g, "192.0.2.50", "carol", 8).status, GUARD_COUNTED);
	/* No password hash: never a duplicate. */
	assert_int_equal(guard_record_failure(g, SA("192.0.2.50"), "carol", NULL, "x", "pop3", now, &r), 0);
	assert_int_equal(r.status, GUARD_COUNTED);
	assert_int_equal(r.failures, 4);
	/* After findtime of silence the same password counts again. */
	now += 600;
	assert_int_equal(flop_pw(g, "192.0.2.50", "carol", 7).status, GUARD_COUNTED);
	assert_int_equal(e.failures, 55);
	/* Each retry refreshes it: a phone retrying every 5 minutes for hours
	 * still counts once. */
	assert_int_equal(flop_pw(g, "192.0.2.51", "carol", 7).status, GUARD_COUNTED);
	for (int i = 0; i < 30; i++) {
		now += 300;
		assert_int_equal(flop_pw(g, "192.0.2.51", "carol", 7).status, GUARD_DUPLICATE);
	}
	guard_free(&g);
}

static void test_trust_after_success(void **state)
{
	(void)state;
	struct guard *g = mk_default(NULL);
	struct guard_failure_result r;
	struct guard_verdict v;

	assert_int_equal(guard_record_success(g, SA("192.0.2.60"), "erin", now), 0);
	now += 3600;
	for (int i = 0; i < 20; i++) {
		r = flop(g, "192.0.2.60", "erin");
		assert_int_equal(r.status, GUARD_TRUSTED);
		assert_false(r.banned);
	}
	assert_false(banned(g, "192.0.2.60"));
	/* Other users from the same address are counted. */
	for (int i = 0; i < 4; i++)
		assert_int_equal(flop(g, "192.0.2.60", "frank").status, GUARD_COUNTED);
	r = flop(g, "192.0.2.60", "frank");
	assert_true(r.banned);
	guard_check_login(g, SA("192.0.2.60"), "erin", now, &v);
	assert_true(v.banned); /* a ban shuts the prefix, trust or not */

	/* Trust runs out after trust_time. */
	now = T0 + 86400;
	guard_expire(g, now);
	assert_int_equal(flop(g, "192.0.2.60", "erin").status, GUARD_COUNTED);
	guard_free(&g);
}

static void test_ignore(void **state)
{
	(void)state;
	struct events e;
	struct guard *g = mk_default(&e);
	struct guard_failure_result r;
	struct guard_stats st;
	const char *why = NULL;

	for (int i = 0; i < 20; i++) {
		r = flop(g, "127.0.0.1", "root");
		assert_int_equal(r.status, GUARD_IGNORED);
		r = flop(g, "::1", "root");
		assert_int_equal(r.status, GUARD_IGNORED);
		r = flop(g, "::ffff:127.0.0.1", "root");
		assert_int_equal(r.status, GUARD_IGNORED);
	}
	assert_false(banned(g, "127.0.0.1"));
	assert_int_equal(e.failures, 0);
	guard_get_stats(g, &st);
	assert_int_equal(st.prefixes, 0);
	assert_int_equal(st.failures_total, 0);

	/* Not even by hand. */
	struct cidr c = cidr("127.0.0.1");
	assert_int_equal(guard_ban(g, &c, 60, "ctl", now, NULL, &why), -1);
	assert_string_equal(why, "inside guard_ignore");
	/* A wider manual ban still leaves the ignored address alone. */
	c = cidr("127.0.0.0/8");
	assert_int_equal(guard_ban(g, &c, 60, "ctl", now, NULL, &why), 0);
	assert_true(banned(g, "127.0.0.2"));
	assert_false(banned(g, "127.0.0.1"));
	guard_free(&g);
}

static void test_ipv4_prefix(void **state)
{
	(void)state;
	struct guard_params p;
	struct cidr k;
	char buf[ADDR_STRLEN];

	defaults(&p);
	struct guard *g = mk(&p, NULL);
	/* /32: neighbours are separate clients. */
	for (int i = 0; i < 4; i++)
		flop(g, "192.0.2.1", "u");
	assert_false(flop(g, "192.0.2.2", "u").banned);
	assert_true(flop(g, "192.0.2.1", "u").banned);
	assert_false(banned(g, "192.0.2.2"));
	assert_int_equal(guard_key_from_sockaddr(g, SA("192.0.2.1"), &k), 0);
	guard_cidr_format(&k, buf, sizeof buf);
	assert_string_equal(buf, "192.0.2.1/32");
	guard_free(&g);

	/* /24: the whole network shares one counter and one ban. */
	p.ipv4_prefix = 24;
	g = mk(&p, NULL);
	for (int i = 1; i <= 4; i++) {
		snprintf(buf, sizeof buf, "192.0.2.%d", i * 10);
		assert_false(flop(g, buf, "u").banned);
	}
	struct guard_failure_result r = flop(g, "192.0.2.250", "u");
	assert_true(r.banned);
	guard_cidr_format(&r.key, buf, sizeof buf);
	assert_string_equal(buf, "192.0.2.0/24");
	assert_true(banned(g, "192.0.2.99"));
	assert_false(banned(g, "192.0.3.1"));
	guard_free(&g);
}

static void test_ipv6_prefix_and_mapped(void **state)
{
	(void)state;
	struct guard *g = mk_default(NULL);
	struct guard_failure_result r;
	struct cidr k;
	char buf[ADDR_STRLEN];
	static const uint8_t raw[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 9, 9, 9, 9, 9, 9, 9, 9};

	/* Rotating through one /64 does not escape its counter. */
	flop(g, "2001:db8:1:2::1", "u");
	flop(g, "2001:db8:1:2::2", "u");
	flop(g, "2001:db8:1:2:aaaa::5", "u");
	r = flop(g, "2001:db8:1:2:ffff:ffff:ffff:ffff", "u");
	assert_int_equal(r.failures, 4);
	guard_cidr_format(&r.key, buf, sizeof buf);
	assert_string_equal(buf, "2001:db8:1:2::/64");
	assert_false(flop(g, "2001:db8:1:3::1", "u").banned); /* next /64 is another client */
	assert_true(flop(g, "2001:db8:1:2::dead", "u").banned);
	assert_true(banned(g, "2001:db8:1:2::77"));
	assert_false(banned(g, "2001:db8:1:3::1"));
	assert_int_equal(guard_key_from_raw(g, AF_INET6, raw, &k), 0);
	guard_cidr_format(&k, buf, sizeof buf);
	assert_string_equal(buf, "2001:db8:1:2::/64");
	static const uint8_t raw4[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 9};
	assert_int_equal(guard_key_from_raw(g, AF_INET6, raw4, &k), 0);
	guard_cidr_format(&k, buf, sizeof buf);
	assert_string_equal(buf, "198.51.100.9/32");
	assert_int_equal(guard_key_from_raw(g, AF_INET, raw4 + 12, &k), 0);
	guard_cidr_format(&k, buf, sizeof buf);
	assert_string_equal(buf, "198.51.100.9/32");
	assert_int_equal(guard_key_from_raw(g, AF_UNIX, raw4, &k), -1);

	/* v4-mapped IPv6 is the IPv4 address. */
	for (int i = 0; i < 2; i++)
		flop(g, "::ffff:198.51.100.9", "u");
	for (int i = 0; i < 2; i++)
		flop(g, "198.51.100.9", "u");
	r = flop(g, "::ffff:198.51.100.9", "u");
	assert_true(r.banned);
	assert_int_equal(r.key.family, AF_INET);
	assert_true(banned(g, "198.51.100.9"));
	assert_true(banned(g, "::ffff:198.51.100.9"));
	assert_int_equal(guard_key_from_sockaddr(g, SA("::ffff:198.51.100.9"), &k), 0);
	guard_cidr_format(&k, buf, sizeof buf);
	assert_string_equal(buf, "198.51.100.9/32");
	guard_free(&g);
}

static void test_user_delay(void **state)
{
	(void)state;
	struct guard *g = mk_default(NULL);
	struct guard_failure_result r;
	struct guard_verdict v;
	char ip[32];
	uint32_t want[] = {1000, 2000, 4000, 8000, 15000, 15000, 15000};

	/* A botnet: every address tries once. */
	for (int i = 1; i <= 9; i++) {
		snprintf(ip, sizeof ip, "10.0.%d.1", i);
		r = flop(g, ip, "grace");
		assert_int_equal(r.user_failures, i);
		assert_int_equal(r.user_delay_ms, 0);
	}
	guard_check_login(g, SA("10.9.9.9"), "grace", now, &v);
	assert_int_equal(v.delay_ms, 0);
	for (int i = 0; i < 7; i++) {
		snprintf(ip, sizeof ip, "10.1.%d.1", i);
		r = flop(g, ip, "grace");
		assert_int_equal(r.user_delay_ms, want[i]);
		assert_false(r.banned);
		guard_check_login(g, SA("10.9.9.9"), "grace", now, &v);
		assert_false(v.banned);
		assert_int_equal(v.delay_ms, want[i]);
	}
	/* Other users are not slowed; the owner's trusted address is not either. */
	guard_check_login(g, SA("10.9.9.9"), "heidi", now, &v);
	assert_int_equal(v.delay_ms, 0);
	guard_record_success(g, SA("10.8.8.8"), "grace", now);
	guard_check_login(g, SA("10.8.8.8"), "grace", now, &v);
	assert_int_equal(v.delay_ms, 0);
	/* Never a lock: the delay goes away with the window. */
	now += 600;
	guard_check_login(g, SA("10.9.9.9"), "grace", now, &v);
	assert_int_equal(v.delay_ms, 0);
	assert_false(v.banned);
	guard_free(&g);
}

struct listing {
	unsigned n;
	char keys[8][ADDR_STRLEN];
	struct guard_ban_info b[8];
	size_t nrecent;
	char users[GUARD_RECENT][GUARD_USER_LEN];
	unsigned repeats[GUARD_RECENT];
	enum guard_status status[GUARD_RECENT];
	bool is_banned;
	unsigned failures;
};

static void on_ban(void *ctx, const struct guard_ban_info *b)
{
	struct listing *l = ctx;
	if (l->n < 8) {
		guard_cidr_format(&b->key, l->keys[l->n], ADDR_STRLEN);
		l->b[l->n] = *b;
		l->b[l->n].reason = NULL;
	}
	l->n++;
}

static void on_why(void *ctx, const struct guard_prefix_info *p)
{
	struct listing *l = ctx;
	guard_cidr_format(&p->key, l->keys[l->n++ % 8], ADDR_STRLEN);
	l->nrecent = p->nrecent;
	l->is_banned = p->banned;
	l->failures = p->failures;
	for (size_t i = 0; i < p->nrecent; i++) {
		snprintf(l->users[i], GUARD_USER_LEN, "%s", p->recent[i].user);
		l->repeats[i] = p->recent[i].repeats;
		l->status[i] = p->recent[i].status;
		assert_string_equal(p->recent[i].reason, "auth_failed");
	}
}

static void test_manual_ban_unban_forget(void **state)
{
	(void)state;
	struct events e;
	struct guard *g = mk_default(&e);
	struct guard_ban_info b;
	struct cidr c;
	const char *why;
	size_t forgotten;
	struct listing l;

	c = cidr("203.0.113.0/24");
	assert_int_equal(guard_ban(g, &c, 3600, "ctl", now, &b, &why), 0);
	assert_int_equal(b.expiry, now + 3600);
	assert_int_equal(b.source, GUARD_SRC_MANUAL);
	assert_string_equal(b.reason, "ctl");
	assert_true(banned(g, "203.0.113.77"));
	assert_false(banned(g, "203.0.114.1"));

	/* 0 seconds = bantime. IPv6 /48 while counting at /64. */
	c = cidr("2001:db8:aa::/48");
	assert_int_equal(guard_ban(g, &c, 0, "ctl", now, &b, &why), 0);
	assert_int_equal(b.expiry, now + 600);
	assert_true(banned(g, "2001:db8:aa:1::1"));
	assert_int_equal(e.bans, 2);

	memset(&l, 0, sizeof l);
	guard_bans_foreach(g, now, on_ban, &l);
	assert_int_equal(l.n, 2);

	/* Unban by a single address inside the banned network. */
	c = cidr("203.0.113.77");
	assert_int_equal(guard_unban(g, &c, false, now, NULL), 1);
	assert_false(banned(g, "203.0.113.77"));
	assert_int_equal(e.unbans, 1);
	assert_int_equal(e.expired, 0);
	assert_int_equal(guard_unban(g, &c, false, now, NULL), 0);

	/* Plain unban keeps the escalation; forget drops it. */
	for (int i = 0; i < 5; i++)
		flop(g, "192.0.2.99", "u");
	c = cidr("192.0.2.99");
	assert_int_equal(guard_unban(g, &c, false, now, &forgotten), 1);
	assert_int_equal(forgotten, 0);
	struct guard_failure_result r;
	for (int i = 0; i < 5; i++)
		r = flop(g, "192.0.2.99", "u");
	assert_int_equal(r.ban_seconds, 1200);
	memset(&l, 0, sizeof l);
	assert_int_equal(guard_why(g, &c, now, on_why, &l), 1);
	assert_int_equal(l.nrecent, 10);
	assert_true(l.is_banned);

	assert_int_equal(guard_unban(g, &c, true, now, &forgotten), 1);
	assert_int_equal(forgotten, 1);
	assert_int_equal(e.forgets, 1);
	memset(&l, 0, sizeof l);
	assert_int_equal(guard_why(g, &c, now, on_why, &l), 0);
	for (int i = 0; i < 5; i++)
		r = flop(g, "192.0.2.99", "u");
	assert_int_equal(r.ban_seconds, 600);
	assert_int_equal(r.ban_count, 1);

	/* Forget without a ban drops counters too. */
	for (int i = 0; i < 3; i++)
		flop(g, "192.0.2.100", "u");
	c = cidr("192.0.2.0/24");
	guard_unban(g, &c, true, now, &forgotten);
	assert_int_equal(forgotten, 2);
	assert_int_equal(flop(g, "192.0.2.100", "u").failures, 1);
	guard_free(&g);
}

static void test_listing_and_why(void **state)
{
	(void)state;
	struct guard *g = mk_default(NULL);
	struct listing l;
	struct cidr c;

	flop_pw(g, "192.0.2.5", "ivan", 1);
	now += 5;
	flop_pw(g, "192.0.2.5", "ivan", 1);
	now += 5;
	flop_pw(g, "192.0.2.5", "judy", 2);
	guard_record_success(g, SA("192.0.2.5"), "kim", now);
	flop_pw(g, "192.0.2.5", "kim", 3);

	c = cidr("192.0.2.5");
	memset(&l, 0, sizeof l);
	assert_int_equal(guard_why(g, &c, now, on_why, &l), 1);
	assert_string_equal(l.keys[0], "192.0.2.5/32");
	assert_int_equal(l.nrecent, 3);
	assert_string_equal(l.users[0], "ivan");
	assert_int_equal(l.repeats[0], 1);
	assert_int_equal(l.status[0], GUARD_COUNTED);
	assert_string_equal(l.users[1], "judy");
	assert_string_equal(l.users[2], "kim");
	assert_int_equal(l.status[2], GUARD_TRUSTED);
	assert_int_equal(l.failures, 2);
	assert_false(l.is_banned);

	/* The ring keeps the last GUARD_RECENT failures. */
	struct guard_params p;
	defaults(&p);
	p.maxretry = 1000;
	guard_set_params(g, &p);
	for (int i = 0; i < 40; i++) {
		char u[16];
		snprintf(u, sizeof u, "user%d", i);
		flop(g, "192.0.2.6", u);
	}
	c = cidr("192.0.2.6");
	memset(&l, 0, sizeof l);
	guard_why(g, &c, now, on_why, &l);
	assert_int_equal(l.nrecent, GUARD_RECENT);
	assert_string_equal(l.users[0], "user8");
	assert_string_equal(l.users[GUARD_RECENT - 1], "user39");
	assert_int_equal(l.failures, 40);

	/* Listing shows only active bans, with what is needed to print them. */
	defaults(&p);
	guard_set_params(g, &p);
	struct guard_failure_result r;
	for (int i = 0; i < 5; i++)
		r = flop(g, "198.51.100.44", "x");
	assert_true(r.banned);
	memset(&l, 0, sizeof l);
	guard_bans_foreach(g, now, on_ban, &l);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.keys[0], "198.51.100.44/32");
	assert_int_equal(l.b[0].expiry, now + 600);
	assert_int_equal(l.b[0].ban_count, 1);
	assert_int_equal(l.b[0].source, GUARD_SRC_AUTO);
	memset(&l, 0, sizeof l);
	guard_bans_foreach(g, now + 600, on_ban, &l);
	assert_int_equal(l.n, 0);
	guard_free(&g);
}

static void test_memory_cap_keeps_bans(void **state)
{
	(void)state;
	struct guard_params p;
	struct guard_stats st;
	char ip[32];

	defaults(&p);
	p.max_prefixes = 8;
	p.max_users = 4;
	p.max_trust = 4;
	struct guard *g = mk(&p, NULL);

	for (int i = 0; i < 10; i++) {
		snprintf(ip, sizeof ip, "10.0.0.%d", i);
		for (int j = 0; j < 5; j++)
			flop(g, ip, "u");
		assert_true(banned(g, ip));
	}
	/* A flood of one-off addresses and users. */
	for (int i = 0; i < 1000; i++) {
		snprintf(ip, sizeof ip, "10.1.%d.%d", i / 250, i % 250);
		char u[16];
		snprintf(u, sizeof u, "u%d", i);
		flop(g, ip, u);
		guard_record_success(g, SA(ip), u, now);
	}
	guard_get_stats(g, &st);
	assert_int_equal(st.bans_active, 10);
	assert_true(st.prefixes <= 10 + 1);
	assert_true(st.users <= 4);
	assert_true(st.trusted <= 4);
	assert_true(st.evictions > 0);
	for (int i = 0; i < 10; i++) {
		snprintf(ip, sizeof ip, "10.0.0.%d", i);
		assert_true(banned(g, ip));
	}
	/* The newest survives eviction. */
	assert_int_equal(flop(g, "10.1.3.249", "zz").failures, 2);

	/* After the bans end, guard_expire brings the table under its cap. */
	now += 600;
	guard_expire(g, now);
	guard_get_stats(g, &st);
	assert_int_equal(st.bans_active, 0);
	assert_true(st.prefixes <= 8);
	guard_free(&g);
}

static void test_expire_drops_idle(void **state)
{
	(void)state;
	struct guard *g = mk_default(NULL);
	struct guard_stats st;

	flop(g, "192.0.2.1", "a");
	guard_record_success(g, SA("192.0.2.2"), "b", now);
	guard_get_stats(g, &st);
	assert_int_equal(st.prefixes, 1);
	assert_int_equal(st.users, 1);
	assert_int_equal(st.trusted, 1);
	now += 600;
	guard_expire(g, now);
	guard_get_stats(g, &st);
	assert_int_equal(st.prefixes, 0);
	assert_int_equal(st.users, 0);
	assert_int_equal(st.trusted, 1);
	now += 86400;
	guard_expire(g, now);
	guard_get_stats(g, &st);
	assert_int_equal(st.trusted, 0);

	/* An ended ban is remembered for its recidive window, then dropped. */
	struct guard_failure_result r;
	for (int i = 0; i < 5; i++)
		r = flop(g, "192.0.2.3", "a");
	now = r.ban_expiry;
	guard_expire(g, now);
	guard_get_stats(g, &st);
	assert_int_equal(st.bans_active, 0);
	assert_int_equal(st.prefixes, 1);
	now += 86400;
	guard_expire(g, now);
	guard_get_stats(g, &st);
	assert_int_equal(st.prefixes, 0);
	guard_free(&g);
}

static void test_reload_keeps_state(void **state)
{
	(void)state;
	struct guard_params p;
	defaults(&p);
	struct guard *g = mk(&p, NULL);
	struct guard_failure_result r;

	for (int i = 0; i < 5; i++)
		r = flop(g, "192.0.2.10", "u");
	assert_true(r.banned);
	for (int i = 0; i < 3; i++)
		flop(g, "192.0.2.20", "u");
	guard_record_success(g, SA("192.0.2.30"), "v", now);

	p.maxretry = 4;
	p.ipv4_prefix = 24;
	p.bantime = 100;
	guard_set_params(g, &p);
	/* The /32 ban still holds; the /32 count stays but new ones go to /24. */
	assert_true(banned(g, "192.0.2.10"));
	assert_false(banned(g, "192.0.2.11"));
	struct cidr c = cidr("192.0.2.20");
	struct listing l;
	memset(&l, 0, sizeof l);
	guard_why(g, &c, now, on_why, &l);
	assert_int_equal(l.failures, 3);
	assert_int_equal(flop(g, "192.0.2.30", "v").status, GUARD_COUNTED); /* trust was at /32 */

	p.ipv4_prefix = 32;
	guard_set_params(g, &p);
	assert_int_equal(flop(g, "192.0.2.30", "v").status, GUARD_TRUSTED);
	r = flop(g, "192.0.2.20", "u");
	assert_true(r.banned); /* 3 before the reload + 1 = the new maxretry */
	assert_int_equal(r.ban_seconds, 100);
	guard_free(&g);
}

static void test_restore(void **state)
{
	(void)state;
	struct guard *g = mk_default(NULL);
	struct guard_ban_info b = {.key = cidr("192.0.2.1"), .started = T0 - 100, .expiry = T0 + 500,
	                           .ban_count = 2, .reason = "auth_failed"};
	struct guard_failure_result r;

	assert_int_equal(guard_restore_ban(g, &b, now), 0);
	assert_true(banned(g, "192.0.2.1"));
	/* Expired, but in its recidive window: escalation continues. */
	b.key = cidr("192.0.2.2");
	b.expiry = T0 - 10;
	b.ban_count = 3;
	assert_int_equal(guard_restore_ban(g, &b, now), 0);
	assert_false(banned(g, "192.0.2.2"));
	for (int i = 0; i < 5; i++)
		r = flop(g, "192.0.2.2", "u");
	assert_int_equal(r.ban_seconds, 600 * 8);
	assert_int_equal(r.ban_count, 4);
	/* Long expired: nothing. */
	b.key = cidr("192.0.2.3");
	b.expiry = T0 - 90000;
	assert_int_equal(guard_restore_ban(g, &b, now), 0);
	struct guard_stats st;
	guard_get_stats(g, &st);
	assert_int_equal(st.prefixes, 2);

	/* Failures: counted ones in the window count again. */
	struct cidr k = cidr("192.0.2.4");
	assert_int_equal(guard_restore_failure(g, &k, "u", T0 - 700, "auth_failed", "smtp", GUARD_COUNTED, now), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(guard_restore_failure(g, &k, "u", T0 - 30 + (uint64_t)i, "auth_failed",
		                                       "pop3", GUARD_COUNTED, now), 0);
	assert_int_equal(guard_restore_failure(g, &k, "u", T0 - 5, "auth_failed", "imap", GUARD_TRUSTED, now), 0);
	r = flop(g, "192.0.2.4", "u");
	assert_int_equal(r.failures, 4);
	assert_int_equal(r.user_failures, 4 + 5);
	assert_true(flop(g, "192.0.2.4", "u").banned);
	guard_free(&g);
}

/* No client address (webmail without origin): the user counts, no prefix. */
static void test_user_only_failure(void **state)
{
	(void)state;
	struct events e;
	struct guard *g = mk_default(&e);
	struct guard_failure_result r;
	struct guard_stats st;

	for (unsigned i = 1; i <= 12; i++) {
		assert_int_equal(guard_record_user_failure(g, "ivan", now, &r), 0);
		assert_int_equal(r.status, GUARD_USER_ONLY);
		assert_int_equal(r.user_failures, i);
		assert_false(r.banned);
		assert_int_equal(r.failures, 0);
	}
	assert_int_equal(r.user_delay_ms, 4000); /* past user_maxretry 10 */
	/* They add to the same user's failures from real addresses. */
	r = flop(g, "10.0.0.1", "ivan");
	assert_int_equal(r.user_failures, 13);
	guard_get_stats(g, &st);
	assert_int_equal(st.prefixes, 1);
	assert_int_equal(st.bans_active, 0);
	assert_string_equal(guard_status_name(GUARD_USER_ONLY), "user_only");
	/* The window slides for them too. */
	now += 601;
	assert_int_equal(guard_record_user_failure(g, "ivan", now, &r), 0);
	assert_int_equal(r.user_failures, 1);
	guard_free(&g);
}

static void test_failure_delay_and_names(void **state)
{
	(void)state;
	struct guard *g = mk_default(NULL);
	assert_int_equal(guard_failure_delay(g, 0), 250);
	assert_int_equal(guard_failure_delay(g, 250), 500);
	assert_int_equal(guard_failure_delay(g, 251), 250);
	assert_string_equal(guard_status_name(GUARD_DUPLICATE), "duplicate");
	assert_string_equal(guard_source_name(GUARD_SRC_MANUAL), "manual");
	/* A non-IP address is refused, not counted. */
	struct sockaddr_storage ss = {.ss_family = AF_UNIX};
	struct guard_failure_result r;
	assert_int_equal(guard_record_failure(g, (struct sockaddr *)&ss, "u", NULL, "x", "pop3", now, &r), -1);
	assert_false(guard_check_connect(g, (struct sockaddr *)&ss, now, NULL));
	guard_free(&g);
}

/* More distinct seconds than the counter has slots: still bans at maxretry,
 * and a long recidive chain caps instead of overflowing. */
static void test_large_counts(void **state)
{
	(void)state;
	struct guard_params p;
	struct guard_failure_result r;

	defaults(&p);
	p.maxretry = 100;
	p.findtime = 100000;
	p.bantime = 1;
	p.bantime_factor = 100;
	p.bantime_max = 31536000;
	struct guard *g = mk(&p, NULL);
	for (int i = 1; i < 100; i++) {
		r = flop(g, "192.0.2.1", "u");
		assert_false(r.banned);
		assert_int_equal(r.failures, i);
		now += 7;
	}
	r = flop(g, "192.0.2.1", "u");
	assert_true(r.banned);
	assert_int_equal(r.ban_seconds, 1);

	/* Slots folded, then the window slides past them. */
	p.findtime = 1000;
	guard_set_params(g, &p);
	uint64_t t0 = now;
	for (int i = 0; i < 99; i++) {
		now = t0 + 7 * (uint64_t)i;
		flop(g, "192.0.2.3", "u");
	}
	now = t0 + 1350;
	r = flop(g, "192.0.2.3", "u");
	assert_int_equal(r.failures, 48 + 1); /* 51..98 are at t0+357.. */
	p.findtime = 100000;
	guard_set_params(g, &p);

	struct guard_ban_info b = {.key = cidr("192.0.2.2"), .started = now - 100, .expiry = now - 1,
	                           .ban_count = 40, .reason = "x"};
	assert_int_equal(guard_restore_ban(g, &b, now), 0);
	for (int i = 0; i < 100; i++)
		r = flop(g, "192.0.2.2", "u");
	assert_true(r.banned);
	assert_int_equal(r.ban_seconds, 31536000);
	assert_int_equal(r.ban_count, 41);
	guard_free(&g);
}

/* Many bans at many lengths and a heap under churn stay consistent. */
static void test_heap_churn(void **state)
{
	(void)state;
	struct guard *g = mk_default(NULL);
	char ip[32];
	const char *why;

	for (int i = 0; i < 200; i++) {
		snprintf(ip, sizeof ip, "10.%d.%d.0/%d", i % 7, i, 24 + i % 9);
		struct cidr c = cidr(ip);
		assert_int_equal(guard_ban(g, &c, (uint64_t)(1 + (i * 37) % 500), "t", now, NULL, &why), 0);
	}
	uint64_t last_active = 200;
	for (uint64_t t = 0; t <= 501; t++) {
		struct guard_stats st;
		guard_expire(g, T0 + t);
		guard_get_stats(g, &st);
		assert_true(st.bans_active <= last_active);
		last_active = st.bans_active;
		struct listing l;
		memset(&l, 0, sizeof l);
		guard_bans_foreach(g, T0 + t, on_ban, &l);
		assert_int_equal(l.n, st.bans_active);
	}
	struct guard_stats st;
	guard_get_stats(g, &st);
	assert_int_equal(st.bans_active, 0);
	guard_free(&g);
}

/* A peer's ban (Redis): applied as given, idempotent (the longest wins),
 * never inside guard_ignore, never when already over; a peer's failure
 * counts here and keeps its node for why. */
static void test_apply_peer_ban_and_failure_node(void **state)
{
	struct events e = {0};
	struct guard *g = mk_default(&e);
	struct guard_ban_info b = {0};
	uint64_t t = T0 + 100, exp = 0;

	(void)state;
	b.key = cidr("198.51.100.7");
	b.started = t - 10;
	b.expiry = t + 500;
	b.ban_count = 3;
	b.source = GUARD_SRC_AUTO;
	b.reason = "auth_failed";
	assert_int_equal(guard_apply_ban(g, &b, t), 1);
	assert_int_equal(e.bans, 1);
	assert_true(guard_check_connect(g, SA("198.51.100.7"), t, &exp));
	assert_int_equal(exp, t + 500);
	assert_int_equal(e.last_ban.ban.ban_count, 3);
	/* The same again, or a shorter one: nothing changes, no event. */
	assert_int_equal(guard_apply_ban(g, &b, t + 1), 0);
	b.expiry = t + 400;
	assert_int_equal(guard_apply_ban(g, &b, t + 1), 0);
	assert_int_equal(e.bans, 1);
	/* A longer one replaces it. */
	b.expiry = t + 900;
	assert_int_equal(guard_apply_ban(g, &b, t + 2), 1);
	assert_true(guard_check_connect(g, SA("198.51.100.7"), t + 800, &exp));
	/* Over already, or inside guard_ignore (loopback): not applied. */
	b.key = cidr("198.51.100.8");
	b.expiry = t;
	assert_int_equal(guard_apply_ban(g, &b, t), 0);
	b.key = cidr("127.0.0.1");
	b.expiry = t + 100;
	assert_int_equal(guard_apply_ban(g, &b, t), 0);
	assert_false(guard_check_connect(g, SA("127.0.0.1"), t, &exp));

	struct guard_failure_result r;
	uint8_t h[GUARD_PWHASH_LEN] = {1};
	assert_int_equal(guard_record_failure_node(g, SA("203.0.113.9"), "u", h, "auth_failed", "pop3", "nodeB",
	                                           t, &r), 0);
	assert_int_equal(r.status, GUARD_COUNTED);
	/* The same password seen here afterwards is the same failure. */
	assert_int_equal(guard_record_failure(g, SA("203.0.113.9"), "u", h, "auth_failed", "imap", t, &r), 0);
	assert_int_equal(r.status, GUARD_DUPLICATE);
	guard_free(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ban_at_exactly_maxretry),
		cmocka_unit_test(test_sliding_window),
		cmocka_unit_test(test_escalation_and_cap),
		cmocka_unit_test(test_recidive_window_resets),
		cmocka_unit_test(test_same_password_counts_once),
		cmocka_unit_test(test_trust_after_success),
		cmocka_unit_test(test_ignore),
		cmocka_unit_test(test_ipv4_prefix),
		cmocka_unit_test(test_ipv6_prefix_and_mapped),
		cmocka_unit_test(test_user_delay),
		cmocka_unit_test(test_manual_ban_unban_forget),
		cmocka_unit_test(test_listing_and_why),
		cmocka_unit_test(test_memory_cap_keeps_bans),
		cmocka_unit_test(test_expire_drops_idle),
		cmocka_unit_test(test_reload_keeps_state),
		cmocka_unit_test(test_restore),
		cmocka_unit_test(test_user_only_failure),
		cmocka_unit_test(test_failure_delay_and_names),
		cmocka_unit_test(test_large_counts),
		cmocka_unit_test(test_heap_churn),
		cmocka_unit_test(test_apply_peer_ban_and_failure_node),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
