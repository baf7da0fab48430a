/* Unit tests for firewall's script builder: bans to nft text (the cover of
 * nested prefixes, the rebuild, the batched changes), and, when root with
 * nft installed, nft -c's verdict on that text (checks, changes nothing). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "firewall.h"

static struct firewall_elem el(const char *prefix, uint32_t timeout)
{
	struct firewall_elem e;
	const char *why;

	memset(&e, 0, sizeof(e));
	if (cidr_parse(prefix, &e.key, &why) == -1)
		fail_msg("bad prefix %s: %s", prefix, why);
	e.timeout = timeout;
	return e;
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

/* nft -c on the text, when this test may (root, nft present). */
static void nft_accepts(const char *script, size_t len)
{
	char err[1024];

	if (geteuid() != 0 || access(FIREWALL_NFT, X_OK) != 0)
		return;
	if (firewall_run_nft(script, len, true, err, sizeof(err)) != 0)
		fail_msg("nft -c refused:\n%s\n--- %s", script, err);
}

static void test_cover(void **state)
{
	struct firewall_elem e[] = {
		el("10.0.0.5", 60),     el("2001:db8:1:2::/64", 60), el("10.0.0.0/16", 30), el("192.0.2.1", 0),
		el("10.1.0.1", 60),     el("2001:db8::/32", 60),     el("10.0.200.0/24", 90), el("9.255.255.255", 5),
		el("2001:db9::/64", 7),
	};
	size_t n = firewall_cover(e, sizeof(e) / sizeof(e[0]));
	char buf[80];

	(void)state;
	/* v4 first, by address; inner prefixes and timeout 0 gone. */
	assert_int_equal(n, 5);
	assert_int_equal(e[0].key.family, AF_INET);
	assert_int_equal(e[0].key.addr[0], 9);
	assert_int_equal(e[1].key.prefix, 16);
	assert_int_equal(e[1].timeout, 30); /* the outer keeps its own time */
	assert_int_equal(e[2].key.addr[1], 1);
	assert_int_equal(e[3].key.family, AF_INET6);
	assert_int_equal(e[3].key.prefix, 32);
	assert_int_equal(e[4].key.prefix, 64);
	snprintf(buf, sizeof(buf), "%02x%02x", e[4].key.addr[2], e[4].key.addr[3]);
	assert_string_equal(buf, "0db9");
	assert_int_equal(firewall_cover(e, 0), 0);
}

static void test_sync_script(void **state)
{
	struct firewall_rules r = { false, 2, { 143, 993 } };
	struct firewall_elem e[] = { el("127.0.0.5", 3600), el("2001:db8::/64", 600), el("10.0.0.0/8", 60),
		                     el("10.1.2.3", 60) };
	size_t len;
	char *s = firewall_script_sync(&r, e, 4, &len);

	(void)state;
	assert_non_null(s);
	assert_int_equal(strlen(s), len);
	assert_string_equal(
	    s, "add table inet imapgate\n"
	       "add set inet imapgate ban4 { type ipv4_addr; flags interval, timeout; }\n"
	       "add set inet imapgate ban6 { type ipv6_addr; flags interval, timeout; }\n"
	       "add chain inet imapgate drop_banned { type filter hook input priority -10; policy accept; }\n"
	       "flush chain inet imapgate drop_banned\n"
	       "add rule inet imapgate drop_banned tcp dport { 143, 993 } ip saddr @ban4 drop\n"
	       "add rule inet imapgate drop_banned tcp dport { 143, 993 } ip6 saddr @ban6 drop\n"
	       "flush set inet imapgate ban4\n"
	       "flush set inet imapgate ban6\n"
	       "add element inet imapgate ban4 { 10.0.0.0/8 timeout 60s, 127.0.0.5 timeout 3600s }\n"
	       "add element inet imapgate ban6 { 2001:db8::/64 timeout 600s }\n");
	nft_accepts(s, len);
	free(s);

	/* setonly: our chain goes (add, flush, delete work whether or not it
	 * is there), the sets stay; no bans: no element line. */
	r.setonly = true;
	s = firewall_script_sync(&r, NULL, 0, &len);
	assert_non_null(s);
	assert_non_null(strstr(s, "flush chain inet imapgate drop_banned\ndelete chain inet imapgate drop_banned\n"));
	assert_null(strstr(s, "add rule"));
	assert_null(strstr(s, "element"));
	assert_null(strstr(s, "delete table"));
	nft_accepts(s, len);
	free(s);
}

static void test_sync_lines(void **state)
{
	struct firewall_rules r = { false, 1, { 143 } };
	size_t n = 2 * FIREWALL_ELEMS_PER_LINE + 500, len;
	struct firewall_elem *e = calloc(n + 1, sizeof(*e));
	char *s;

	(void)state;
	for (size_t i = 0; i < n; i++) {
		char a[64];

		snprintf(a, sizeof(a), "2001:db8:%zx::/48", i);
		e[i] = el(a, 100 + (uint32_t)i);
	}
	s = firewall_script_sync(&r, e, n, &len);
	assert_non_null(s);
	assert_int_equal(count(s, "add element inet imapgate ban6 {"), 3);
	assert_int_equal(count(s, " timeout "), n);
	assert_int_equal(count(s, "element inet imapgate ban4"), 0);
	nft_accepts(s, len);
	free(s);
	free(e);
}

static void test_update_script(void **state)
{
	struct firewall_elem e[] = { el("192.0.2.7", 120), el("2001:db8:0:1::/64", 0), el("198.51.100.0/24", 0) };
	size_t len;
	char *s = firewall_script_update(e, 3, &len);

	(void)state;
	assert_non_null(s);
	/* add (a no-op when there), delete (never fails then), add again
	 * with the time left unless it is a removal. */
	assert_string_equal(s, "add element inet imapgate ban4 { 192.0.2.7 timeout 1s, 198.51.100.0/24 timeout 1s }\n"
	                       "delete element inet imapgate ban4 { 192.0.2.7, 198.51.100.0/24 }\n"
	                       "add element inet imapgate ban4 { 192.0.2.7 timeout 120s }\n"
	                       "add element inet imapgate ban6 { 2001:db8:0:1::/64 timeout 1s }\n"
	                       "delete element inet imapgate ban6 { 2001:db8:0:1::/64 }\n");
	free(s);
	s = firewall_script_update(e, 0, &len);
	assert_non_null(s);
	assert_int_equal(len, 0);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cover),
		cmocka_unit_test(test_sync_script),
		cmocka_unit_test(test_sync_lines),
		cmocka_unit_test(test_update_script),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
