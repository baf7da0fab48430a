/* Cost of a ban check with 10,000 bans. A quick measurement, not the
 * benchmark. Build: cc -O2 -std=c11 -D_GNU_SOURCE -Isrc -o /tmp/guard_check
 *   bench/quick/guard_check.c build/libimapgate.a -lssl -lcrypto -lsqlite3 -lpthread */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "config.h"
#include "guard.h"
int main(void) {
	struct config *cfg = NULL;
	const char *txt = "server_hostname x\nlisten 127.0.0.1:1\nguard_ignore 127.0.0.1\n";
	config_parse("b", txt, strlen(txt), &cfg, NULL, NULL);
	struct guard_params p; guard_params_from_config(&p, cfg);
	uint8_t seed[16] = {1};
	struct guard *g = guard_create(&p, seed);
	uint64_t now = 1000000;
	for (unsigned i = 0; i < 10000; i++) {
		struct cidr c = { .family = AF_INET, .prefix = 32 };
		uint32_t a = htonl(0x0a000000u + i); memcpy(c.addr, &a, 4);
		const char *why; guard_ban(g, &c, 600, "bench", now, NULL, &why);
	}
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct timespec t0, t1; unsigned hits = 0; const unsigned N = 10000000;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned i = 0; i < N; i++) { sin.sin_addr.s_addr = htonl(0x0a000000u + (i % 20000)); hits += guard_check_connect(g, (struct sockaddr *)&sin, now, NULL); }
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / N;
	printf("guard_check_connect with 10000 bans: %.1f ns/check (%u hits of %u)\n", ns, hits, N);
	return 0;
}
