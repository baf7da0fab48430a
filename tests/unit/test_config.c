/* Unit tests for config: defaults, every value type, every error message
 * (exact text), comments, whitespace, CRLF, listen lines and folding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"

#define NAME "t.conf"
#define MIN "server_hostname imap.example.org\nlisten_port 1143\n"

struct errs {
	int n;
	char *msg[64];
};

static void collect(void *ctx, const char *msg)
{
	struct errs *e = ctx;
	if (e->n < 64)
		e->msg[e->n++] = strdup(msg);
}

static void errs_free(struct errs *e)
{
	for (int i = 0; i < e->n; i++)
		free(e->msg[i]);
	e->n = 0;
}

static struct config *parse_ok(const char *text)
{
	struct errs e = {0};
	struct config *c = NULL;
	int rc = config_parse(NAME, text, strlen(text), &c, collect, &e);
	if (e.n)
		print_error("unexpected: %s\n", e.msg[0]);
	assert_int_equal(e.n, 0);
	assert_int_equal(rc, 0);
	assert_non_null(c);
	errs_free(&e);
	return c;
}

/* Parse text, expect failure with exactly the messages given (NULL ends). */
static void expect_errors_len(const char *text, size_t len, const char *const *want)
{
	struct errs e = {0};
	struct config *sentinel = (struct config *)&e, *c = sentinel;
	int i;

	assert_int_equal(config_parse(NAME, text, len, &c, collect, &e), -1);
	assert_ptr_equal(c, sentinel); /* untouched */
	for (i = 0; want[i]; i++) {
		if (i >= e.n)
			fail_msg("missing error: %s", want[i]);
		assert_string_equal(e.msg[i], want[i]);
	}
	if (e.n > i)
		fail_msg("extra error: %s", e.msg[i]);
	errs_free(&e);
}
#define EXPECT_ERRORS(text, ...)                                                                  \
	expect_errors_len(text, strlen(text), (const char *const[]){__VA_ARGS__, NULL})

static void test_defaults(void **state)
{
	struct config *c = parse_ok(MIN);
	(void)state;

	assert_string_equal(c->path, NAME);
	assert_string_equal(c->server_hostname, "imap.example.org");
	assert_string_equal(c->server_port, "143");
	assert_null(c->listen_address);
	assert_string_equal(c->listen_port, "1143");
	assert_int_equal(c->connect_retries, 10);
	assert_int_equal(c->connect_delay, 5);
	assert_int_equal(c->cache_size, 3072);
	assert_int_equal(c->cache_expiration_time, 300);
	assert_null(c->proc_username);
	assert_null(c->proc_groupname);
	assert_null(c->stat_filename);
	assert_null(c->protocol_log_filename);
	assert_int_equal(c->syslog_facility, LOG_MAIL);
	assert_int_equal(c->syslog_prioritymask, LOG_DEBUG);
	assert_false(c->send_tcp_keepalives || c->enable_select_cache || c->foreground_mode ||
	             c->force_tls || c->enable_admin_commands || c->tls_verify_server ||
	             c->tls_no_tlsv1 || c->tls_no_tlsv1_1 || c->tls_no_tlsv1_2 || c->dns_rr);
	assert_null(c->chroot_directory);
	assert_null(c->preauth_command);
	assert_null(c->tls_ca_file);
	assert_null(c->tls_ca_path);
	assert_null(c->tls_cert_file);
	assert_null(c->tls_key_file);
	assert_null(c->tls_ciphers);
	assert_null(c->auth_sasl_plain_username);
	assert_null(c->auth_sasl_plain_password);
	assert_null(c->auth_shared_secret);
	assert_int_equal(c->ipversion_only, 0);
	assert_int_equal(c->shutdown_timeout, 10);
	assert_int_equal(c->max_line_length, 8192);
	assert_int_equal(c->preauth_max_literal, 8192);
	assert_int_equal(c->max_bad_commands, 3);
	assert_int_equal(c->auth_timeout, 60);
	assert_int_equal(c->idle_timeout, 1860);
	assert_int_equal(c->backend_timeout, 15);
	assert_int_equal(c->max_connections, 1000);
	assert_int_equal(c->max_connections_per_ip, 50);
	assert_int_equal(c->server_tls, TLS_MODE_AUTO);
	assert_null(c->tls_server_name);
	assert_int_equal(c->cache_max_age, 3600);
	assert_int_equal(c->cache_max_per_user, 0);

	assert_int_equal(c->admin_allow.n, 2);
	assert_int_equal(c->admin_allow.items[0].family, AF_INET);
	assert_int_equal(c->admin_allow.items[0].prefix, 8);
	assert_int_equal(c->admin_allow.items[1].family, AF_INET6);
	assert_int_equal(c->admin_allow.items[1].prefix, 128);

	assert_int_equal(c->n_listen, 1);
	assert_string_equal(c->listen[0].host, "");
	assert_string_equal(c->listen[0].port, "1143");
	assert_int_equal(c->listen[0].opts, 0);
	assert_int_equal(c->listen[0].line, 0);
	config_free(&c);
	assert_null(c);
	config_free(&c); /* NULL is fine */
}

/* Lines in the style of Debian's stock imapproxy.conf. */
static void test_imapproxy_style(void **state)
{
	(void)state;
	struct config *c = parse_ok("#\n"
	                            "## server_hostname\n"
	                            "##\n"
	                            "## The backend. A '#' comment; some text # more\n"
	                            "#\n"
	                            "server_hostname localhost\n"
	                            "\n"
	                            "connect_retries 7\n"
	                            "listen_port 1143\n"
	                            "#listen_address 127.0.0.1\n"
	                            "server_port 143\n"
	                            "cache_size 3072\n"
	                            "proc_username nobody\n"
	                            "proc_groupname nogroup\n"
	                            "stat_filename /var/run/pimpstats\n"
	                            "protocol_log_filename /var/log/imapproxy_protocol.log\n"
	                            "syslog_facility LOG_MAIL\n"
	                            "#syslog_prioritymask LOG_WARNING\n"
	                            "send_tcp_keepalives no\n"
	                            "enable_select_cache no\n"
	                            "foreground_mode no\n"
	                            "force_tls no\n"
	                            "chroot_directory /var/lib/imapproxy/chroot\n"
	                            "enable_admin_commands no\n"
	                            "# \n"
	                            "#tls_no_tlsv1.1 no\n");
	assert_string_equal(c->server_hostname, "localhost");
	assert_int_equal(c->connect_retries, 7);
	assert_string_equal(c->proc_username, "nobody");
	assert_string_equal(c->proc_groupname, "nogroup");
	assert_string_equal(c->stat_filename, "/var/run/pimpstats");
	assert_string_equal(c->protocol_log_filename, "/var/log/imapproxy_protocol.log");
	assert_string_equal(c->chroot_directory, "/var/lib/imapproxy/chroot");
	assert_false(c->tls_no_tlsv1_1);
	config_free(&c);
}

/* The imapproxy package's own file, when it is installed here. */
static void test_debian_stock_file(void **state)
{
	struct errs e = {0};
	struct config *c = NULL;
	(void)state;

	if (access("/etc/imapproxy.conf", R_OK) != 0)
		skip();
	assert_int_equal(config_load("/etc/imapproxy.conf", &c, collect, &e), 0);
	assert_int_equal(e.n, 0);
	assert_string_equal(c->path, "/etc/imapproxy.conf");
	assert_non_null(c->server_hostname);
	assert_true(c->n_listen >= 1);
	config_free(&c);
}

/* Every keyword set to something other than its default. */
static void test_every_key(void **state)
{
	(void)state;
	struct config *c = parse_ok("server_hostname backend.example.org\n"
	                            "server_port imap2\n"
	                            "listen_address 127.0.0.2\n"
	                            "listen_port 2143\n"
	                            "connect_retries 3\n"
	                            "connect_delay 2\n"
	                            "cache_size 10\n"
	                            "cache_expiration_time 60\n"
	                            "proc_username imapgate\n"
	                            "proc_groupname mail\n"
	                            "stat_filename /run/imapgate.stat\n"
	                            "protocol_log_filename /var/log/imapgate trace.log\n"
	                            "syslog_facility LOG_LOCAL3\n"
	                            "syslog_prioritymask LOG_WARNING\n"
	                            "send_tcp_keepalives yes\n"
	                            "enable_select_cache yes\n"
	                            "foreground_mode yes\n"
	                            "force_tls yes\n"
	                            "chroot_directory /var/empty\n"
	                            "enable_admin_commands yes\n"
	                            "preauth_command XPREAUTH  two  spaces\n"
	                            "tls_ca_file /etc/ssl/ca.pem\n"
	                            "tls_ca_path /etc/ssl/certs\n"
	                            "tls_cert_file /etc/ssl/me.crt\n"
	                            "tls_key_file /etc/ssl/me.key\n"
	                            "tls_ciphers HIGH:!aNULL\n"
	                            "tls_verify_server yes\n"
	                            "tls_no_tlsv1 yes\n"
	                            "tls_no_tlsv1.1 yes\n"
	                            "tls_no_tlsv1.2 yes\n"
	                            "auth_sasl_plain_username master\n"
	                            "auth_sasl_plain_password pass word\n"
	                            "auth_shared_secret s3cret\n"
	                            "ipversion_only 6\n"
	                            "dns_rr yes\n"
	                            "listen [::1]:2143 tls\n"
	                            "shutdown_timeout 30\n"
	                            "max_line_length 512\n"
	                            "preauth_max_literal 0\n"
	                            "max_bad_commands 100\n"
	                            "auth_timeout 3600\n"
	                            "idle_timeout 60\n"
	                            "backend_timeout 600\n"
	                            "max_connections 1000000\n"
	                            "max_connections_per_ip 0\n"
	                            "server_tls starttls\n"
	                            "tls_server_name imap.example.org\n"
	                            "cache_max_age 604800\n"
	                            "cache_max_per_user 100000\n"
	                            "admin_allow 10.0.0.0/8\n");
	assert_string_equal(c->server_hostname, "backend.example.org");
	assert_string_equal(c->server_port, "imap2");
	assert_string_equal(c->listen_address, "127.0.0.2");
	assert_string_equal(c->listen_port, "2143");
	assert_int_equal(c->connect_retries, 3);
	assert_int_equal(c->connect_delay, 2);
	assert_int_equal(c->cache_size, 10);
	assert_int_equal(c->cache_expiration_time, 60);
	assert_string_equal(c->proc_username, "imapgate");
	assert_string_equal(c->proc_groupname, "mail");
	assert_string_equal(c->stat_filename, "/run/imapgate.stat");
	assert_string_equal(c->protocol_log_filename, "/var/log/imapgate trace.log");
	assert_int_equal(c->syslog_facility, LOG_LOCAL3);
	assert_int_equal(c->syslog_prioritymask, LOG_WARNING);
	assert_true(c->send_tcp_keepalives && c->enable_select_cache && c->foreground_mode &&
	            c->force_tls && c->enable_admin_commands && c->tls_verify_server &&
	            c->tls_no_tlsv1 && c->tls_no_tlsv1_1 && c->tls_no_tlsv1_2 && c->dns_rr);
	assert_string_equal(c->chroot_directory, "/var/empty");
	assert_string_equal(c->preauth_command, "XPREAUTH  two  spaces");
	assert_string_equal(c->tls_ca_file, "/etc/ssl/ca.pem");
	assert_string_equal(c->tls_ca_path, "/etc/ssl/certs");
	assert_string_equal(c->tls_cert_file, "/etc/ssl/me.crt");
	assert_string_equal(c->tls_key_file, "/etc/ssl/me.key");
	assert_string_equal(c->tls_ciphers, "HIGH:!aNULL");
	assert_string_equal(c->auth_sasl_plain_username, "master");
	assert_string_equal(c->auth_sasl_plain_password, "pass word");
	assert_string_equal(c->auth_shared_secret, "s3cret");
	assert_int_equal(c->ipversion_only, 6);
	assert_int_equal(c->shutdown_timeout, 30);
	assert_int_equal(c->max_line_length, 512);
	assert_int_equal(c->preauth_max_literal, 0);
	assert_int_equal(c->max_bad_commands, 100);
	assert_int_equal(c->auth_timeout, 3600);
	assert_int_equal(c->idle_timeout, 60);
	assert_int_equal(c->backend_timeout, 600);
	assert_int_equal(c->max_connections, 1000000);
	assert_int_equal(c->max_connections_per_ip, 0);
	assert_int_equal(c->server_tls, TLS_MODE_STARTTLS);
	assert_string_equal(c->tls_server_name, "imap.example.org");
	assert_int_equal(c->cache_max_age, 604800);
	assert_int_equal(c->cache_max_per_user, 100000);
	assert_int_equal(c->admin_allow.n, 1);
	assert_int_equal(c->admin_allow.items[0].prefix, 8);
	assert_int_equal(c->n_listen, 2);
	config_free(&c);
}

static void test_keys_case_insensitive(void **state)
{
	(void)state;
	struct config *c = parse_ok("SERVER_HOSTNAME h\nListen_Port 1\nTLS_NO_TLSV1.2 Yes\n"
	                            "tls_no_tlsv1_1 ON\nCache_Size 5\n");
	assert_string_equal(c->server_hostname, "h");
	assert_string_equal(c->listen_port, "1");
	assert_true(c->tls_no_tlsv1_2);
	assert_true(c->tls_no_tlsv1_1);
	assert_int_equal(c->cache_size, 5);
	config_free(&c);
}

static void test_whitespace_comments_crlf(void **state)
{
	(void)state;
	struct config *c = parse_ok("\t server_hostname\t\t host.example  \t\r\n"
	                            "listen_port 1143#no space before the comment\r\n"
	                            "   # indented comment\r\n"
	                            "\r\n"
	                            " \t \n"
	                            "preauth_command\tXCMD a\tb  # trailing comment\r\n"
	                            "cache_size 42"); /* no final newline */
	assert_string_equal(c->server_hostname, "host.example");
	assert_string_equal(c->listen_port, "1143");
	assert_string_equal(c->preauth_command, "XCMD a\tb");
	assert_int_equal(c->cache_size, 42);
	config_free(&c);

	c = parse_ok("\xef\xbb\xbf" MIN); /* UTF-8 BOM */
	config_free(&c);
}

static void test_last_wins(void **state)
{
	(void)state;
	struct config *c = parse_ok(MIN "server_port 144\nserver_port 145\ncache_size 1\n"
	                                "cache_size 2\nadmin_allow 10.0.0.1\nadmin_allow 10.0.0.2 "
	                                "10.0.0.3\nforce_tls yes\nforce_tls no\n"
	                                "server_hostname second\n");
	assert_string_equal(c->server_port, "145");
	assert_int_equal(c->cache_size, 2);
	assert_int_equal(c->admin_allow.n, 2);
	assert_false(c->force_tls);
	assert_string_equal(c->server_hostname, "second");
	config_free(&c);
}

static void test_booleans(void **state)
{
	static const char *const yes[] = {"yes", "YES", "true", "True", "on", "On", "1"};
	static const char *const no[] = {"no", "NO", "false", "FALSE", "off", "oFF", "0"};
	char buf[256];
	(void)state;

	for (size_t i = 0; i < 7; i++) {
		snprintf(buf, sizeof buf, MIN "dns_rr %s\nforce_tls yes\nforce_tls %s\n", yes[i], no[i]);
		struct config *c = parse_ok(buf);
		assert_true(c->dns_rr);
		assert_false(c->force_tls);
		config_free(&c);
	}
	EXPECT_ERRORS(MIN "dns_rr maybe\nforce_tls y\nforeground_mode 2\nfoo_bar yes\n"
	                  "tls_verify_server yes please\n",
	              "t.conf:3: dns_rr: 'maybe' is not a boolean (yes/no, true/false, on/off, 1/0)",
	              "t.conf:4: force_tls: 'y' is not a boolean (yes/no, true/false, on/off, 1/0)",
	              "t.conf:5: foreground_mode: '2' is not a boolean (yes/no, true/false, on/off, "
	              "1/0)",
	              "t.conf:6: foo_bar: unknown keyword",
	              "t.conf:7: tls_verify_server: 'yes please' is not a boolean (yes/no, "
	              "true/false, on/off, 1/0)");
}

static void test_numbers(void **state)
{
	(void)state;
	struct config *c = parse_ok(MIN "cache_size 1\nconnect_retries 0\nconnect_delay 3600\n"
	                                "cache_expiration_time 604800\nmax_line_length 1048576\n"
	                                "preauth_max_literal 1048576\nmax_bad_commands 1\n"
	                                "auth_timeout 1\nidle_timeout 86400\nbackend_timeout 1\n"
	                                "shutdown_timeout 0\nmax_connections 1\n"
	                                "max_connections_per_ip 1000000\nidle_timeout 0086400\n");
	assert_int_equal(c->cache_size, 1);
	assert_int_equal(c->connect_delay, 3600);
	assert_int_equal(c->cache_expiration_time, 604800);
	assert_int_equal(c->max_line_length, 1048576);
	assert_int_equal(c->idle_timeout, 86400);
	config_free(&c);

	EXPECT_ERRORS(MIN "cache_size 0\ncache_size 1000001\nconnect_retries 1001\n"
	                  "max_line_length 511\nidle_timeout 59\nbackend_timeout 601\n"
	                  "max_bad_commands 0\ncache_size -1\ncache_size +5\ncache_size 0x10\n"
	                  "cache_size 12abc\ncache_size 1 2\ncache_size 18446744073709551616\n"
	                  "cache_size 4294967297\ncache_size five\n",
	              "t.conf:3: cache_size: '0' is out of range (1..1000000)",
	              "t.conf:4: cache_size: '1000001' is out of range (1..1000000)",
	              "t.conf:5: connect_retries: '1001' is out of range (0..1000)",
	              "t.conf:6: max_line_length: '511' is out of range (512..1048576)",
	              "t.conf:7: idle_timeout: '59' is out of range (60..86400)",
	              "t.conf:8: backend_timeout: '601' is out of range (1..600)",
	              "t.conf:9: max_bad_commands: '0' is out of range (1..100)",
	              "t.conf:10: cache_size: '-1' is not a number",
	              "t.conf:11: cache_size: '+5' is not a number",
	              "t.conf:12: cache_size: '0x10' is not a number",
	              "t.conf:13: cache_size: '12abc' is not a number",
	              "t.conf:14: cache_size: '1 2' is not a number",
	              "t.conf:15: cache_size: '18446744073709551616' is out of range (1..1000000)",
	              "t.conf:16: cache_size: '4294967297' is out of range (1..1000000)",
	              "t.conf:17: cache_size: 'five' is not a number");
}

static void test_ports(void **state)
{
	(void)state;
	struct config *c = parse_ok("server_hostname h\nlisten_port imap-alt\nserver_port 65535\n");
	assert_string_equal(c->listen_port, "imap-alt");
	assert_string_equal(c->server_port, "65535");
	config_free(&c);

	EXPECT_ERRORS("server_hostname h\nlisten_port 0\nserver_port 65536\nserver_port IMAP\n"
	              "server_port -imap\nserver_port im ap\nserver_port 1234567890123456\n",
	              "t.conf:2: listen_port: '0' is not a port (1..65535) or a service name",
	              "t.conf:3: server_port: '65536' is not a port (1..65535) or a service name",
	              "t.conf:4: server_port: 'IMAP' is not a port (1..65535) or a service name",
	              "t.conf:5: server_port: '-imap' is not a port (1..65535) or a service name",
	              "t.conf:6: server_port: 'im ap' is not a port (1..65535) or a service name",
	              "t.conf:7: server_port: '1234567890123456' is not a port (1..65535) or a "
	              "service name");
}

static void test_syslog(void **state)
{
	static const struct {
		const char *fac, *pri;
		int f, p;
	} ok[] = {
		{"LOG_LOCAL3", "LOG_WARNING", LOG_LOCAL3, LOG_WARNING},
		{"local7", "err", LOG_LOCAL7, LOG_ERR},
		{"Log_Daemon", "log_emerg", LOG_DAEMON, LOG_EMERG},
		{"LOG_AUTHPRIV", "INFO", LOG_AUTHPRIV, LOG_INFO},
		{"user", "LOG_NOTICE", LOG_USER, LOG_NOTICE},
		{"LOG_FTP", "LOG_CRIT", LOG_FTP, LOG_CRIT},
		{"LOG_SYSLOG", "LOG_ALERT", LOG_SYSLOG, LOG_ALERT},
	};
	char buf[256];
	(void)state;

	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		snprintf(buf, sizeof buf, MIN "syslog_facility %s\nsyslog_prioritymask %s\n", ok[i].fac,
		         ok[i].pri);
		struct config *c = parse_ok(buf);
		assert_int_equal(c->syslog_facility, ok[i].f);
		assert_int_equal(c->syslog_prioritymask, ok[i].p);
		config_free(&c);
	}
	EXPECT_ERRORS(MIN "syslog_facility LOG_KERN\nsyslog_facility kern\nsyslog_facility LOG_FOO\n"
	                  "syslog_facility LOG_\nsyslog_prioritymask LOG_WARN\n"
	                  "syslog_prioritymask 3\n",
	              "t.conf:3: syslog_facility: LOG_KERN is reserved for the kernel",
	              "t.conf:4: syslog_facility: LOG_KERN is reserved for the kernel",
	              "t.conf:5: syslog_facility: 'LOG_FOO' is not a syslog facility (LOG_MAIL, "
	              "LOG_LOCAL0, ...)",
	              "t.conf:6: syslog_facility: 'LOG_' is not a syslog facility (LOG_MAIL, "
	              "LOG_LOCAL0, ...)",
	              "t.conf:7: syslog_prioritymask: 'LOG_WARN' is not a syslog priority "
	              "(LOG_EMERG..LOG_DEBUG)",
	              "t.conf:8: syslog_prioritymask: '3' is not a syslog priority "
	              "(LOG_EMERG..LOG_DEBUG)");
}

static void test_enums(void **state)
{
	static const struct {
		const char *text;
		enum config_tls_mode mode;
	} modes[] = {{"none", TLS_MODE_NONE},
	             {"STARTTLS", TLS_MODE_STARTTLS},
	             {"implicit", TLS_MODE_IMPLICIT},
	             {"auto", TLS_MODE_AUTO}};
	char buf[256];
	(void)state;

	for (size_t i = 0; i < 4; i++) {
		snprintf(buf, sizeof buf, MIN "server_tls implicit\nserver_tls %s\nipversion_only %zu\n",
		         modes[i].text, i == 0 ? (size_t)0 : i == 1 ? (size_t)4 : (size_t)6);
		struct config *c = parse_ok(buf);
		assert_int_equal(c->server_tls, modes[i].mode);
		assert_int_equal(c->ipversion_only, i == 0 ? 0 : i == 1 ? 4 : 6);
		config_free(&c);
	}
	EXPECT_ERRORS(MIN "server_tls tls\nipversion_only 5\nipversion_only 04\nipversion_only ipv6\n",
	              "t.conf:3: server_tls: 'tls' is not one of none, starttls, implicit, auto",
	              "t.conf:4: ipversion_only: '5' is not 4, 6 or 0 (both)",
	              "t.conf:5: ipversion_only: '04' is not 4, 6 or 0 (both)",
	              "t.conf:6: ipversion_only: 'ipv6' is not 4, 6 or 0 (both)");
}

static void test_admin_allow(void **state)
{
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
	(void)state;

	struct config *c = parse_ok(MIN "admin_allow 192.0.2.0/24, 2001:db8::/32\n");
	assert_int_equal(c->admin_allow.n, 2);
	assert_int_equal(inet_pton(AF_INET6, "::ffff:192.0.2.9", &s6.sin6_addr), 1);
	assert_true(cidr_list_match(&c->admin_allow, (struct sockaddr *)&s6));
	assert_int_equal(inet_pton(AF_INET6, "::1", &s6.sin6_addr), 1);
	assert_false(cidr_list_match(&c->admin_allow, (struct sockaddr *)&s6));
	config_free(&c);

	EXPECT_ERRORS(MIN "admin_allow 10.0.0.0/33\nadmin_allow 10.0.0.1 bogus\nadmin_allow ,\n",
	              "t.conf:3: admin_allow: bad address list: prefix length too long",
	              "t.conf:4: admin_allow: bad address list: not an IPv4 address",
	              "t.conf:5: admin_allow: bad address list: empty address list");
}

static void test_listen_lines(void **state)
{
	(void)state;
	struct config *c = parse_ok("server_hostname h\n"
	                            "listen 127.0.0.1:1143\n"
	                            "listen [::1]:1143 tls\n"
	                            "listen *:993\tproxy_protocol  TLS\n"
	                            "listen :1144 proxy_protocol\n"
	                            "listen localhost:imap\n"
	                            "listen 1145\n");
	assert_null(c->listen_port);
	assert_int_equal(c->n_listen, 6);
	const struct {
		const char *host, *port;
		unsigned opts, line;
	} want[] = {
		{"127.0.0.1", "1143", 0, 2},
		{"::1", "1143", LISTEN_OPT_TLS, 3},
		{"", "993", LISTEN_OPT_TLS | LISTEN_OPT_PROXY_PROTOCOL, 4},
		{"", "1144", LISTEN_OPT_PROXY_PROTOCOL, 5},
		{"localhost", "imap", 0, 6},
		{"", "1145", 0, 7},
	};
	for (size_t i = 0; i < 6; i++) {
		assert_string_equal(c->listen[i].host, want[i].host);
		assert_string_equal(c->listen[i].port, want[i].port);
		assert_int_equal(c->listen[i].opts, want[i].opts);
		assert_int_equal(c->listen[i].line, want[i].line);
	}
	config_free(&c);

	EXPECT_ERRORS("server_hostname h\nlisten ::1:1143\nlisten [::1]\nlisten 1.2.3.4:0\n"
	              "listen 1.2.3.4:1 tls bogus\nlisten 1.2.3.4:2\nlisten 1.2.3.4:2 tls\n"
	              "listen [::1:3\nlisten\n",
	              "t.conf:2: listen: '::1:1143': an IPv6 address must be written in [ ]",
	              "t.conf:3: listen: '[::1]': expected ':PORT' after ']'",
	              "t.conf:4: listen: '0': bad port (1..65535 or a service name)",
	              "t.conf:5: listen: unknown option 'bogus'",
	              "t.conf:8: listen: '[::1:3': missing ']'",
	              "t.conf:9: listen: missing value",
	              "t.conf:7: listen: duplicate of line 6");
}

static void test_listen_max(void **state)
{
	char buf[2048];
	size_t n;
	(void)state;

	n = (size_t)snprintf(buf, sizeof buf, "server_hostname h\n");
	for (int i = 0; i < CONFIG_MAX_LISTEN; i++)
		n += (size_t)snprintf(buf + n, sizeof buf - n, "listen 127.0.0.1:%d\n", 2000 + i);
	struct config *c = parse_ok(buf);
	assert_int_equal(c->n_listen, CONFIG_MAX_LISTEN);
	assert_string_equal(c->listen[15].port, "2015");
	config_free(&c);

	char more[2200];
	snprintf(more, sizeof more, "%slisten_port 1143\n", buf);
	EXPECT_ERRORS(more, "t.conf:18: listen_port: too many listen addresses (max 16)");
	snprintf(more, sizeof more, "%slisten 127.0.0.1:3000\n", buf);
	EXPECT_ERRORS(more, "t.conf:18: listen: too many listen addresses (max 16)");
}

static void test_listen_fold(void **state)
{
	(void)state;
	struct config *c = parse_ok("server_hostname h\nlisten [::1]:1143 tls\n"
	                            "listen_address 127.0.0.1\nlisten_port 1143\n");
	assert_int_equal(c->n_listen, 2);
	assert_string_equal(c->listen[0].host, "127.0.0.1");
	assert_string_equal(c->listen[0].port, "1143");
	assert_int_equal(c->listen[0].line, 0);
	assert_int_equal(c->listen[0].opts, 0);
	assert_string_equal(c->listen[1].host, "::1");
	assert_int_equal(c->listen[1].line, 2);
	assert_int_equal(c->listen[1].opts, LISTEN_OPT_TLS);
	config_free(&c);

	c = parse_ok("server_hostname h\nlisten_address [::1]\nlisten_port 1143\n");
	assert_string_equal(c->listen_address, "::1");
	assert_string_equal(c->listen[0].host, "::1");
	config_free(&c);

	c = parse_ok("server_hostname h\nlisten_address ::\nlisten_port 1143\n");
	assert_string_equal(c->listen[0].host, "::");
	config_free(&c);

	c = parse_ok("server_hostname h\nlisten_address 10.0.0.1\nlisten_address *\nlisten_port 1\n");
	assert_null(c->listen_address);
	assert_string_equal(c->listen[0].host, "");
	config_free(&c);

	EXPECT_ERRORS("server_hostname h\nlisten_address 127.0.0.1\nlisten 127.0.0.1:1143\n",
	              "t.conf:2: listen_address: needs listen_port");
	EXPECT_ERRORS("server_hostname h\nlisten_address a b\nlisten_address [1.2.3.4]\n"
	              "listen_address ::g\nlisten_port 1143\n",
	              "t.conf:2: listen_address: 'a b': bad host name",
	              "t.conf:3: listen_address: '[1.2.3.4]': not an IPv6 address in [ ]",
	              "t.conf:4: listen_address: '::g': not an IPv6 address in [ ]");
	EXPECT_ERRORS("server_hostname h\nlisten_port 1143\nlisten *:1143\nlisten 1.2.3.4:1143\n",
	              "t.conf:3: listen: duplicate of listen_address/listen_port");
}

static void test_required(void **state)
{
	(void)state;
	EXPECT_ERRORS("", "t.conf: server_hostname: missing required key",
	              "t.conf: listen_port: missing required key (or use listen ADDRESS:PORT)");
	EXPECT_ERRORS("# nothing\n\n", "t.conf: server_hostname: missing required key",
	              "t.conf: listen_port: missing required key (or use listen ADDRESS:PORT)");
	EXPECT_ERRORS("listen_port 1143\n", "t.conf: server_hostname: missing required key");
	/* a key given with a bad value is reported once, not also as missing */
	EXPECT_ERRORS("server_hostname\nlisten_port 0\n", "t.conf:1: server_hostname: missing value",
	              "t.conf:2: listen_port: '0' is not a port (1..65535) or a service name");
	EXPECT_ERRORS("server_hostname h\nlisten bogus:x:y\n",
	              "t.conf:2: listen: 'bogus:x:y': an IPv6 address must be written in [ ]");
}

static void test_missing_value_and_unknown(void **state)
{
	char longkey[200];
	(void)state;

	EXPECT_ERRORS(MIN "cache_size\ncache_size   # only a comment\nCACHE_SIZE \t\r\n"
	                  "cache-size 3\nimapproxy_option x\nlisten_port: 1143\n",
	              "t.conf:3: cache_size: missing value", "t.conf:4: cache_size: missing value",
	              "t.conf:5: cache_size: missing value", "t.conf:6: cache-size: unknown keyword",
	              "t.conf:7: imapproxy_option: unknown keyword",
	              "t.conf:8: listen_port:: unknown keyword");

	/* Control bytes in a key are shown as '?'; long keys are cut. */
	static const char ctl[] = MIN "cache\x01size 3\nfoo\x7f 1\n";
	expect_errors_len(ctl, sizeof ctl - 1,
	                  (const char *const[]){"t.conf:3: cache?size: unknown keyword",
	                                        "t.conf:4: foo?: unknown keyword", NULL});
	memset(longkey, 'k', 100);
	strcpy(longkey + 100, " 1\n");
	EXPECT_ERRORS(longkey,
	              "t.conf:1: kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...: unknown keyword",
	              "t.conf: server_hostname: missing required key",
	              "t.conf: listen_port: missing required key (or use listen ADDRESS:PORT)");
}

static void test_bad_values(void **state)
{
	char *big;
	(void)state;

	EXPECT_ERRORS(MIN "server_hostname two words\nproc_username a b\n",
	              "t.conf:3: server_hostname: must be a single word",
	              "t.conf:4: proc_username: must be a single word");

	static const char ctl[] = MIN "preauth_command X\x01Y\ntls_ciphers A\0B\nstat_filename a\rb\n";
	expect_errors_len(ctl, sizeof ctl - 1,
	                  (const char *const[]){"t.conf:3: preauth_command: control character in value",
	                                        "t.conf:4: tls_ciphers: control character in value",
	                                        "t.conf:5: stat_filename: control character in value",
	                                        NULL});

	big = malloc(5000 + sizeof MIN);
	assert_non_null(big);
	strcpy(big, MIN "preauth_command ");
	memset(big + strlen(big), 'x', 4097);
	strcpy(big + strlen(MIN "preauth_command ") + 4097, "\n");
	EXPECT_ERRORS(big, "t.conf:3: preauth_command: value too long (max 4096 bytes)");
	big[strlen(big) - 2] = '\n'; /* 4096 bytes is fine */
	struct config *c = parse_ok(big);
	assert_int_equal(strlen(c->preauth_command), 4096);
	config_free(&c);
	free(big);
}

static void test_auth_trio(void **state)
{
	(void)state;
	struct config *c = parse_ok(MIN "auth_sasl_plain_username proxy\n"
	                                "auth_sasl_plain_password  secret with spaces \n"
	                                "auth_shared_secret s#not part of it\n");
	assert_string_equal(c->auth_sasl_plain_password, "secret with spaces");
	assert_string_equal(c->auth_shared_secret, "s");
	config_free(&c);

	EXPECT_ERRORS(MIN "auth_shared_secret x\n",
	              "t.conf: auth_sasl_plain_username: missing (auth_sasl_plain_username, "
	              "auth_sasl_plain_password and auth_shared_secret go together)",
	              "t.conf: auth_sasl_plain_password: missing (auth_sasl_plain_username, "
	              "auth_sasl_plain_password and auth_shared_secret go together)");
	EXPECT_ERRORS(MIN "auth_sasl_plain_username u\nauth_sasl_plain_password p\n",
	              "t.conf: auth_shared_secret: missing (auth_sasl_plain_username, "
	              "auth_sasl_plain_password and auth_shared_secret go together)");
}

static void test_tls_conflict(void **state)
{
	(void)state;
	EXPECT_ERRORS(MIN "force_tls yes\nserver_tls none\n",
	              "t.conf:3: force_tls: contradicts server_tls none");
	struct config *c = parse_ok(MIN "force_tls yes\nserver_tls starttls\n");
	assert_true(c->force_tls);
	config_free(&c);
}

/* Line errors and whole-file errors all come out, in order. */
static void test_all_errors_reported(void **state)
{
	(void)state;
	EXPECT_ERRORS("cache_size x\n"
	              "\n"
	              "nonsense 1\n"
	              "dns_rr perhaps\r\n"
	              "\tlisten [::1]:1143 bogus\n"
	              "auth_shared_secret s\n"
	              "auth_sasl_plain_username u\n",
	              "t.conf:1: cache_size: 'x' is not a number",
	              "t.conf:3: nonsense: unknown keyword",
	              "t.conf:4: dns_rr: 'perhaps' is not a boolean (yes/no, true/false, on/off, 1/0)",
	              "t.conf:5: listen: unknown option 'bogus'",
	              "t.conf: server_hostname: missing required key",
	              "t.conf: auth_sasl_plain_password: missing (auth_sasl_plain_username, "
	              "auth_sasl_plain_password and auth_shared_secret go together)");
}

static void test_null_report(void **state)
{
	struct config *c = NULL;
	(void)state;

	assert_int_equal(config_parse(NAME, "bogus\n", 6, &c, NULL, NULL), -1);
	assert_null(c);
	assert_int_equal(config_parse(NAME, MIN, strlen(MIN), &c, NULL, NULL), 0);
	assert_non_null(c);
	config_free(&c);
}

static void test_load(void **state)
{
	char path[] = "/tmp/test_config_XXXXXX";
	struct errs e = {0};
	struct config *c = NULL;
	int fd = mkstemp(path);
	(void)state;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, MIN "cache_size 77\n", strlen(MIN) + 14), strlen(MIN) + 14);
	assert_int_equal(config_load(path, &c, collect, &e), 0);
	assert_int_equal(e.n, 0);
	assert_string_equal(c->path, path);
	assert_int_equal(c->cache_size, 77);
	config_free(&c);

	/* messages name the file */
	assert_int_equal(write(fd, "bogus 1\n", 8), 8);
	assert_int_equal(config_load(path, &c, collect, &e), -1);
	assert_null(c);
	assert_int_equal(e.n, 1);
	char want[128];
	snprintf(want, sizeof want, "%s:4: bogus: unknown keyword", path);
	assert_string_equal(e.msg[0], want);
	errs_free(&e);

	/* over 1 MiB */
	assert_int_equal(ftruncate(fd, 1024 * 1024 + 1), 0);
	assert_int_equal(config_load(path, &c, collect, &e), -1);
	assert_int_equal(e.n, 1);
	snprintf(want, sizeof want, "%s: file too large (max 1048576 bytes)", path);
	assert_string_equal(e.msg[0], want);
	errs_free(&e);
	close(fd);
	unlink(path);

	assert_int_equal(config_load(path, &c, collect, &e), -1);
	assert_int_equal(e.n, 1);
	snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
	assert_string_equal(e.msg[0], want);
	errs_free(&e);

	assert_int_equal(config_load("/", &c, collect, &e), -1);
	assert_int_equal(e.n, 1);
	assert_string_equal(e.msg[0], "/: cannot read: Is a directory");
	errs_free(&e);
	assert_null(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_imapproxy_style),
		cmocka_unit_test(test_debian_stock_file),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_keys_case_insensitive),
		cmocka_unit_test(test_whitespace_comments_crlf),
		cmocka_unit_test(test_last_wins),
		cmocka_unit_test(test_booleans),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_ports),
		cmocka_unit_test(test_syslog),
		cmocka_unit_test(test_enums),
		cmocka_unit_test(test_admin_allow),
		cmocka_unit_test(test_listen_lines),
		cmocka_unit_test(test_listen_max),
		cmocka_unit_test(test_listen_fold),
		cmocka_unit_test(test_required),
		cmocka_unit_test(test_missing_value_and_unknown),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_auth_trio),
		cmocka_unit_test(test_tls_conflict),
		cmocka_unit_test(test_all_errors_reported),
		cmocka_unit_test(test_null_report),
		cmocka_unit_test(test_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
