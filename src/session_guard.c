/*
 * session_guard — the IMAP front's side of the guard: where a session asks
 * the guard service (guard_service.h) and where its answers become IMAP
 * replies, BYE and the kernel drop of a client that keeps coming back.
 *
 * It never logs a password. With policy_hash_nonce set, the password key
 * it gives the guard is Dovecot's pwhash of the same credentials, so a
 * failure seen here and reported again by Dovecot's auth policy request
 * is counted once.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "banfilter.h"
#include "credhash.h"
#include "guard_service.h"
#include "log.h"
#include "policy_hash.h"
#include "server.h"
#include "session.h"
#include "stats.h"

static void fmt_time(uint64_t t, char *buf, size_t sz)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, sz, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/*
 * A trusted webmail host that sent no x-originating-ip: its own address
 * stands for all its users, so it is never counted (it would get itself
 * banned, or, in guard_ignore, its users' failures would go unseen); its
 * failures count per user only. This wins over guard_ignore, which holds
 * loopback by default, where webmail often runs.
 */
static bool webmail_no_origin(const struct session *s)
{
	return !s->has_origin && cidr_list_match(&srv.cfg->trusted_webmail, (const struct sockaddr *)&s->peer);
}

static void attempt(const struct session *s, struct gs_attempt *a)
{
	memset(a, 0, sizeof(*a));
	a->addr = session_client_addr(s);
	a->user_only = webmail_no_origin(s);
	a->user = s->user;
	a->user_len = s->user_len;
	a->proto = "imap";
	a->pwkey = s->guard_pwkey;
}

/* --- decisions ----------------------------------------------------------- */

bool session_guard_admit(struct session *s)
{
	uint64_t expiry = 0;
	char until[32];

	if (!guard_service_banned((struct sockaddr *)&s->peer, &expiry))
		return true;
	fmt_time(expiry, until, sizeof(until));
	STATS_INC(STAT_GUARD_REFUSED_CONNECTIONS_TOTAL);
	log_info("event=refused session=%llu client=%s:%u reason=banned until=%s", (unsigned long long)s->id,
	         s->peer_ip, s->peer_port, until);
	/* One that keeps coming is dropped in the kernel from now on (its
	 * socket address, not one from a PROXY header). */
	if (!(s->listen_opts & LISTEN_OPT_PROXY_PROTOCOL) &&
	    banfilter_refused((struct sockaddr *)&s->peer, srv.cfg->guard_drop_after))
		log_notice("event=ban_drop client=%s refused=%u kernel_set=%zu", s->peer_ip, srv.cfg->guard_drop_after,
		           banfilter_count());
	/* Plain text even on a TLS port: a banned client gets no handshake. */
	session_bye(s, "Too many failed logins from your address, try again later", "banned");
	return false;
}

bool session_guard_banned(const struct sockaddr *sa)
{
	return guard_service_banned(sa, NULL);
}

/* Warned hosts: once per host per hour, a small table is plenty (few webmails). */
#define WEBMAIL_WARN_SLOTS 16
#define WEBMAIL_WARN_EVERY 3600

static void webmail_warn_no_origin(const struct session *s)
{
	static struct {
		char ip[ADDR_STRLEN];
		uint64_t t;
	} warned[WEBMAIL_WARN_SLOTS];
	uint64_t now = (uint64_t)time(NULL);
	size_t slot = 0;

	for (size_t i = 0; i < WEBMAIL_WARN_SLOTS; i++) {
		if (strcmp(warned[i].ip, s->peer_ip) == 0) {
			if (now - warned[i].t < WEBMAIL_WARN_EVERY)
				return;
			slot = i;
			break;
		}
		if (warned[i].t < warned[slot].t)
			slot = i; /* the oldest (or an empty) slot */
	}
	snprintf(warned[slot].ip, sizeof(warned[slot].ip), "%s", s->peer_ip);
	warned[slot].t = now;
	log_warn("event=webmail_no_origin host=%s hint=\"this trusted_webmail host sent no ID x-originating-ip "
	            "before login: its failed logins are counted per user only and no browser address can be "
	            "banned; make the webmail send it (Roundcube: install contrib/roundcube/imapgate_origin)\"",
	            s->peer_ip);
}

/* The password key: Dovecot's pwhash when the policy endpoint shares the
 * nonce with Dovecot (one failure, two reports, counted once), else a
 * keyed hash of our own. */
static void make_pwkey(struct session *s)
{
	const struct config *cfg = srv.cfg;
	char hex[POLICY_HASH_HEX_MAX];
	int n;

	if (cfg->policy_hash_nonce &&
	    (n = policy_hash(cfg->policy_hash_mech, cfg->policy_hash_truncate, cfg->policy_hash_nonce,
	                     strlen(cfg->policy_hash_nonce), s->user, s->user_len, s->pass, s->pass_len, hex,
	                     sizeof(hex))) > 0) {
		guard_service_pwkey(hex, (size_t)n, s->guard_pwkey);
		explicit_bzero(hex, sizeof(hex));
		return;
	}
	memcpy(s->guard_pwkey, s->pwhash, sizeof(s->guard_pwkey));
}

bool session_guard_before_login(struct session *s)
{
	struct guard_verdict v;
	struct gs_attempt a;

	credhash(s->user, s->user_len, s->pass, s->pass_len, s->pwhash);
	if (!guard_service_on())
		return true;
	make_pwkey(s);
	if (webmail_no_origin(s))
		webmail_warn_no_origin(s);
	attempt(s, &a);
	guard_service_may_try(&a, &v);
	if (v.banned) {
		char u[160];

		log_sanitize(s->user, s->user_len, u, sizeof(u));
		STATS_INC(STAT_GUARD_REFUSED_CONNECTIONS_TOTAL);
		log_info("event=login_refused session=%llu user=%s client=%s:%u rip=%s reason=banned",
		         (unsigned long long)s->id, u, s->peer_ip, s->peer_port, s->has_origin ? s->origin_ip : s->peer_ip);
		session_reply(s, "%s NO [UNAVAILABLE] Too many failed logins from your address, try again later", s->tag);
		/* A banned socket goes; behind webmail only this login fails. */
		if (!s->has_origin)
			session_bye(s, "Too many failed logins from your address", "banned");
		return false;
	}
	/* The user's slow-down applies to failures (session_guard_failure):
	 * the real user's right password is never held back. */
	return true;
}

uint32_t session_guard_failure(struct session *s, const char *reason, bool *close_after, char *note,
                               size_t notesz)
{
	struct guard_failure_result r;
	struct gs_attempt a;
	int rc;

	*close_after = false;
	attempt(s, &a);
	rc = guard_service_failure(&a, reason, &r);
	guard_service_note(&r, rc, note, notesz);
	if (rc == -1)
		return 0;
	if (r.banned && !s->has_origin)
		*close_after = true;
	return guard_service_failure_delay(&r);
}

void session_guard_log_held(void)
{
	guard_service_log_held();
}

void session_guard_success(struct session *s)
{
	struct gs_attempt a;

	attempt(s, &a);
	guard_service_success(&a);
}
