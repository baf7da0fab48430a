/*
 * libFuzzer target: random sequences of guard operations over a small
 * space of addresses, users and times. Checks that nothing crashes or
 * leaks, that a connect-time ban is always backed by a listed ban, and
 * that ignored addresses are never banned.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "guard.h"

struct find {
	const struct sockaddr *sa;
	uint64_t now;
	int found;
};

static void find_ban(void *ctx, const struct guard_ban_info *b)
{
	struct find *f = ctx;

	if (b->expiry > f->now && cidr_match(&b->key, f->sa))
		f->found = 1;
}

static void make_addr(uint8_t sel, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (sel & 0x80) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_addr.s6_addr[0] = 0x20;
		s6->sin6_addr.s6_addr[1] = 0x01;
		s6->sin6_addr.s6_addr[7] = sel & 0x03;  /* a few /64s */
		s6->sin6_addr.s6_addr[15] = sel & 0x1c; /* several hosts in each */
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(0x7f000000u | (sel & 0x0f)); /* 127.0.0.0..15 */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *users[] = { "alice", "bob", "carol", "ALICE", "" };
	static const char cfgtext[] = "server_hostname x\nlisten 127.0.0.1:1\nguard_maxretry 3\n"
	                              "guard_bantime 5\nguard_findtime 20\nguard_recidive_window 30\n"
	                              "guard_bantime_max 40\nguard_user_maxretry 2\nguard_trust_time 10\n"
	                              "guard_ignore 127.0.0.1/32\n";
	struct config *cfg = NULL;
	struct guard_params p;
	uint8_t seed[GUARD_SEED_LEN] = { 7 };
	struct guard *g;
	uint64_t now = 1000;

	if (config_parse("fuzz", cfgtext, sizeof(cfgtext) - 1, &cfg, NULL, NULL) == -1)
		abort();
	guard_params_from_config(&p, cfg);
	config_free(&cfg);
	g = guard_create(&p, seed);
	for (size_t i = 0; i + 3 <= size; i += 3) {
		uint8_t op = data[i], a = data[i + 1], b = data[i + 2];
		struct sockaddr_storage ss;
		const struct sockaddr *sa = (struct sockaddr *)&ss;
		const char *user = users[b % 5];
		uint8_t hash[GUARD_PWHASH_LEN];
		struct guard_failure_result r;
		struct guard_verdict v;
		uint64_t expiry;

		make_addr(a, &ss);
		memset(hash, b >> 4, sizeof(hash));
		switch (op % 8) {
		case 0:
		case 1:
			guard_record_failure(g, sa, user, (b & 8) ? NULL : hash, "auth_failed", "imap", now, &r);
			break;
		case 2:
			guard_record_success(g, sa, user, now);
			break;
		case 3:
			now += b % 16;
			guard_expire(g, now);
			break;
		case 4: {
			struct cidr c;
			const char *why;

			guard_cidr_from_sockaddr(sa, &c);
			c.prefix = c.family == AF_INET ? 24 + b % 9 : 48 + b % 81;
			guard_ban(g, &c, b % 8, "fuzz", now, NULL, &why);
			break;
		}
		case 5: {
			struct cidr c;

			guard_cidr_from_sockaddr(sa, &c);
			guard_unban(g, &c, b & 1, now, NULL);
			break;
		}
		case 6:
			guard_check_login(g, sa, user, now, &v);
			break;
		default:
			break;
		}
		/* Invariants after every step. */
		if (guard_check_connect(g, sa, now, &expiry)) {
			struct find f = { sa, now, 0 };

			guard_bans_foreach(g, now, find_ban, &f);
			if (!f.found || expiry <= now)
				abort();
			if (ss.ss_family == AF_INET && ((struct sockaddr_in *)&ss)->sin_addr.s_addr == htonl(0x7f000001u))
				abort(); /* guard_ignore */
		}
	}
	guard_free(&g);
	return 0;
}
