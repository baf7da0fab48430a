/*
 * config — reads imapgate.conf: imapproxy.conf's 35 keywords with their
 * meanings, plus imapgate's own, from one sorted table of keyword, type,
 * range, default and destination field.
 *
 * The whole text is parsed and every problem reported as
 * "FILE:LINE: KEY: message" through the caller's callback; the caller gets
 * a complete config or nothing. It must never log, exit, resolve names,
 * touch any file but the one it reads, or echo a secret value in a message.
 * Unlike imapproxy it is strict: unknown keys, bad booleans and bad numbers
 * are errors, not silent zeros.
 */
#include "config.h"
#include "policy_hash.h"
#include "redis_url.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>

#define CONFIG_MAX_FILE (1024 * 1024)
#define VALUE_MAX 4096 /* longest value accepted, bytes */

enum ktype {
	T_STR,      /* any text, spaces included */
	T_WORD,     /* text without spaces */
	T_LADDR,    /* listen_address: host, [v6] or "*" */
	T_BOOL,
	T_UINT,     /* unsigned, min..max */
	T_PORT,     /* 1..65535 or service name */
	T_FACILITY, /* syslog facility name */
	T_PRIORITY, /* syslog priority name */
	T_CIDRS,
	T_LISTEN,
	T_TLSMODE,
	T_IPVER,
	T_TLSVER,   /* TLSv1.2 / TLSv1.3 (also 1.2, 1.3) */
	T_PLISTEN,  /* policy_listen: ADDRESS:PORT, repeatable */
	T_FIREWALL, /* none | nftables */
	T_PORTS,    /* numeric ports, separated by spaces or commas */
};

struct keyword {
	const char *name;
	enum ktype type;
	size_t off;
	unsigned min, max; /* T_UINT only */
	const char *def;   /* parsed like a value before the file; NULL = none */
};

#define F(field) offsetof(struct config, field)
/* Sorted for strcasecmp (bsearch). tls_no_tlsv1.1/.2 are imapproxy's
 * spellings; the _1/_2 forms are accepted as aliases. */
static const struct keyword keywords[] = {
	{"admin_allow", T_CIDRS, F(admin_allow), 0, 0, "127.0.0.0/8 ::1/128"},
	{"auth_sasl_plain_password", T_STR, F(auth_sasl_plain_password), 0, 0, NULL},
	{"auth_sasl_plain_username", T_WORD, F(auth_sasl_plain_username), 0, 0, NULL},
	{"auth_shared_secret", T_STR, F(auth_shared_secret), 0, 0, NULL},
	{"auth_timeout", T_UINT, F(auth_timeout), 1, 3600, "60"},
	{"backend_timeout", T_UINT, F(backend_timeout), 1, 600, "15"},
	{"cache_expiration_time", T_UINT, F(cache_expiration_time), 0, 604800, "300"},
	{"cache_max_age", T_UINT, F(cache_max_age), 0, 604800, "3600"},
	{"cache_max_per_user", T_UINT, F(cache_max_per_user), 0, 100000, "0"},
	{"cache_size", T_UINT, F(cache_size), 1, 1000000, "3072"},
	{"chroot_directory", T_STR, F(chroot_directory), 0, 0, NULL},
	{"client_tls_cert_file", T_STR, F(client_tls_cert_file), 0, 0, NULL},
	{"client_tls_ciphers", T_STR, F(client_tls_ciphers), 0, 0, NULL},
	{"client_tls_key_file", T_STR, F(client_tls_key_file), 0, 0, NULL},
	{"client_tls_min_version", T_TLSVER, F(client_tls_min_version), 0, 0, "TLSv1.2"},
	{"client_tls_required", T_BOOL, F(client_tls_required), 0, 0, "no"},
	{"connect_delay", T_UINT, F(connect_delay), 0, 3600, "5"},
	{"connect_retries", T_UINT, F(connect_retries), 0, 1000, "10"},
	{"control_socket", T_STR, F(control_socket), 0, 0, NULL},
	{"dns_rr", T_BOOL, F(dns_rr), 0, 0, "no"},
	{"enable_admin_commands", T_BOOL, F(enable_admin_commands), 0, 0, "no"},
	{"enable_select_cache", T_BOOL, F(enable_select_cache), 0, 0, "no"},
	{"force_tls", T_BOOL, F(force_tls), 0, 0, "no"},
	{"foreground_mode", T_BOOL, F(foreground_mode), 0, 0, "no"},
	{"forward_client_address", T_BOOL, F(forward_client_address), 0, 0, "no"},
	{"guard", T_BOOL, F(guard), 0, 0, "yes"},
	{"guard_bantime", T_UINT, F(guard_bantime), 1, 31536000, "600"},
	{"guard_bantime_factor", T_UINT, F(guard_bantime_factor), 1, 100, "2"},
	{"guard_bantime_max", T_UINT, F(guard_bantime_max), 1, 31536000, "604800"},
	{"guard_db", T_STR, F(guard_db), 0, 0, CONFIG_DEFAULT_GUARD_DB},
	{"guard_drop_after", T_UINT, F(guard_drop_after), 0, 1000000, "10"},
	{"guard_failure_delay", T_UINT, F(guard_failure_delay), 0, 60000, "500"},
	{"guard_findtime", T_UINT, F(guard_findtime), 1, 31536000, "600"},
	{"guard_firewall", T_FIREWALL, F(guard_firewall), 0, 0, "none"},
	{"guard_firewall_ports", T_PORTS, F(guard_firewall_ports), 0, 0, NULL},
	{"guard_firewall_setonly", T_BOOL, F(guard_firewall_setonly), 0, 0, "no"},
	{"guard_ignore", T_CIDRS, F(guard_ignore), 0, 0, "127.0.0.1/32 ::1/128"},
	{"guard_ipv4_prefix", T_UINT, F(guard_ipv4_prefix), 8, 32, "32"},
	{"guard_ipv6_prefix", T_UINT, F(guard_ipv6_prefix), 16, 128, "64"},
	{"guard_maxretry", T_UINT, F(guard_maxretry), 1, 100000, "5"},
	{"guard_recidive_window", T_UINT, F(guard_recidive_window), 0, 31536000, "86400"},
	{"guard_redis", T_STR, F(guard_redis), 0, 0, NULL},
	{"guard_redis_node", T_WORD, F(guard_redis_node), 0, 0, NULL},
	{"guard_redis_prefix", T_WORD, F(guard_redis_prefix), 0, 0, "imapgate:"},
	{"guard_trust_time", T_UINT, F(guard_trust_time), 0, 31536000, "86400"},
	{"guard_user_delay_max", T_UINT, F(guard_user_delay_max), 0, 600000, "15000"},
	{"guard_user_maxretry", T_UINT, F(guard_user_maxretry), 1, 100000, "10"},
	{"idle_timeout", T_UINT, F(idle_timeout), 60, 86400, "1860"},
	{"ipversion_only", T_IPVER, F(ipversion_only), 0, 0, "0"},
	{"listen", T_LISTEN, F(listen), 0, 0, NULL},
	{"listen_address", T_LADDR, F(listen_address), 0, 0, NULL},
	{"listen_port", T_PORT, F(listen_port), 0, 0, NULL},
	{"max_bad_commands", T_UINT, F(max_bad_commands), 1, 100, "3"},
	{"max_connections", T_UINT, F(max_connections), 1, 1000000, "1000"},
	{"max_connections_per_ip", T_UINT, F(max_connections_per_ip), 0, 1000000, "50"},
	{"max_line_length", T_UINT, F(max_line_length), 512, 1048576, "8192"},
	{"metrics_listen", T_WORD, F(metrics_listen), 0, 0, NULL},
	{"policy_allow", T_CIDRS, F(policy_allow), 0, 0, "127.0.0.0/8 ::1/128"},
	{"policy_api_key", T_STR, F(policy_api_key), 0, 0, NULL},
	{"policy_hash_mech", T_WORD, F(policy_hash_mech), 0, 0, "sha256"},
	{"policy_hash_nonce", T_STR, F(policy_hash_nonce), 0, 0, NULL},
	{"policy_hash_truncate", T_UINT, F(policy_hash_truncate), 0, 512, "12"},
	{"policy_listen", T_PLISTEN, F(policy_listen), 0, 0, NULL},
	{"policy_max_connections", T_UINT, F(policy_max_connections), 1, 10000, "256"},
	{"policy_timeout", T_UINT, F(policy_timeout), 1, 3600, "60"},
	{"preauth_command", T_STR, F(preauth_command), 0, 0, NULL},
	{"preauth_max_literal", T_UINT, F(preauth_max_literal), 0, 1048576, "8192"},
	{"proc_groupname", T_WORD, F(proc_groupname), 0, 0, NULL},
	{"proc_username", T_WORD, F(proc_username), 0, 0, NULL},
	{"protocol_log_filename", T_STR, F(protocol_log_filename), 0, 0, NULL},
	{"proxy_header_timeout", T_UINT, F(proxy_header_timeout), 1, 60, "3"},
	{"select_cache_ttl", T_UINT, F(select_cache_ttl), 1, 3600, "10"},
	{"send_tcp_keepalives", T_BOOL, F(send_tcp_keepalives), 0, 0, "no"},
	{"server_hostname", T_WORD, F(server_hostname), 0, 0, NULL},
	{"server_port", T_PORT, F(server_port), 0, 0, "143"},
	{"server_tls", T_TLSMODE, F(server_tls), 0, 0, "auto"},
	{"shutdown_timeout", T_UINT, F(shutdown_timeout), 0, 3600, "10"},
	{"stat_filename", T_STR, F(stat_filename), 0, 0, NULL},
	{"syslog_facility", T_FACILITY, F(syslog_facility), 0, 0, "LOG_MAIL"},
	{"syslog_prioritymask", T_PRIORITY, F(syslog_prioritymask), 0, 0, "LOG_DEBUG"},
	{"tls_ca_file", T_STR, F(tls_ca_file), 0, 0, NULL},
	{"tls_ca_path", T_STR, F(tls_ca_path), 0, 0, NULL},
	{"tls_cert_file", T_STR, F(tls_cert_file), 0, 0, NULL},
	{"tls_ciphers", T_STR, F(tls_ciphers), 0, 0, NULL},
	{"tls_key_file", T_STR, F(tls_key_file), 0, 0, NULL},
	{"tls_no_tlsv1", T_BOOL, F(tls_no_tlsv1), 0, 0, "no"},
	{"tls_no_tlsv1.1", T_BOOL, F(tls_no_tlsv1_1), 0, 0, "no"},
	{"tls_no_tlsv1.2", T_BOOL, F(tls_no_tlsv1_2), 0, 0, "no"},
	{"tls_no_tlsv1_1", T_BOOL, F(tls_no_tlsv1_1), 0, 0, NULL},
	{"tls_no_tlsv1_2", T_BOOL, F(tls_no_tlsv1_2), 0, 0, NULL},
	{"tls_server_name", T_WORD, F(tls_server_name), 0, 0, NULL},
	{"tls_verify_server", T_BOOL, F(tls_verify_server), 0, 0, "no"},
	{"trusted_proxies", T_CIDRS, F(trusted_proxies), 0, 0, NULL},
	{"trusted_webmail", T_CIDRS, F(trusted_webmail), 0, 0, NULL},
};
#define NKEYS (sizeof keywords / sizeof keywords[0])

struct name_value {
	const char *name;
	int value;
};

static const struct name_value facilities[] = {
	{"auth", LOG_AUTH},     {"authpriv", LOG_AUTHPRIV}, {"cron", LOG_CRON},     {"daemon", LOG_DAEMON},
	{"ftp", LOG_FTP},       {"local0", LOG_LOCAL0},     {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2},
	{"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4},     {"local5", LOG_LOCAL5}, {"local6", LOG_LOCAL6},
	{"local7", LOG_LOCAL7}, {"lpr", LOG_LPR},           {"mail", LOG_MAIL},     {"news", LOG_NEWS},
	{"syslog", LOG_SYSLOG}, {"user", LOG_USER},         {"uucp", LOG_UUCP},     {NULL, 0},
};

static const struct name_value priorities[] = {
	{"emerg", LOG_EMERG},   {"alert", LOG_ALERT},   {"crit", LOG_CRIT}, {"err", LOG_ERR},
	{"warning", LOG_WARNING}, {"notice", LOG_NOTICE}, {"info", LOG_INFO}, {"debug", LOG_DEBUG},
	{NULL, 0},
};

static const struct name_value tls_modes[] = {
	{"auto", TLS_MODE_AUTO},         {"none", TLS_MODE_NONE},
	{"starttls", TLS_MODE_STARTTLS}, {"implicit", TLS_MODE_IMPLICIT},
	{NULL, 0},
};

static const struct name_value booleans[] = {
	{"yes", 1}, {"true", 1}, {"on", 1}, {"1", 1},
	{"no", 0},  {"false", 0}, {"off", 0}, {"0", 0},
	{NULL, 0},
};

struct parser {
	const char *name;
	config_report_fn *report;
	void *ctx;
	unsigned nerr;
	struct config *cfg;
	unsigned seen[NKEYS]; /* line each key was last set on, 0 = not set */
	bool given[NKEYS];    /* named in the file, even with a bad value */
	char why[256];        /* scratch for formatted messages */
};

__attribute__((format(printf, 4, 5))) static void perr(struct parser *p, unsigned line,
                                                       const char *key, const char *fmt, ...)
{
	char msg[512];
	int n;
	va_list ap;

	if (line)
		n = snprintf(msg, sizeof msg, "%s:%u: ", p->name, line);
	else
		n = snprintf(msg, sizeof msg, "%s: ", p->name);
	if (key && n >= 0 && (size_t)n < sizeof msg)
		n += snprintf(msg + n, sizeof msg - (size_t)n, "%s: ", key);
	if (n >= 0 && (size_t)n < sizeof msg) {
		va_start(ap, fmt);
		vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
		va_end(ap);
	}
	p->nerr++;
	if (p->report)
		p->report(p->ctx, msg);
}

__attribute__((format(printf, 2, 3))) static const char *whyf(struct parser *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->why, sizeof p->why, fmt, ap);
	va_end(ap);
	return p->why;
}

static int key_cmp(const void *key, const void *elem)
{
	return strcasecmp(key, ((const struct keyword *)elem)->name);
}

static const struct keyword *keyword_find(const char *name)
{
	return bsearch(name, keywords, NKEYS, sizeof keywords[0], key_cmp);
}

/* Look s up in t, ignoring case and, when strip_log, a "LOG_" prefix. */
static const struct name_value *lookup(const struct name_value *t, const char *s, bool strip_log)
{
	if (strip_log && strncasecmp(s, "LOG_", 4) == 0)
		s += 4;
	for (; t->name; t++)
		if (strcasecmp(t->name, s) == 0)
			return t;
	return NULL;
}

/* Decimal digits only: no sign, no spaces, no 0x, no overflow. */
static int parse_ulong(const char *s, unsigned long *out)
{
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	*out = strtoul(s, &end, 10);
	if (*end != '\0')
		return -1;
	if (errno == ERANGE)
		*out = ULONG_MAX;
	return 0;
}

static bool port_ok(const char *s)
{
	size_t n = strlen(s);
	unsigned long v;

	if (n == 0 || n >= sizeof(((struct config_listen *)0)->port))
		return false;
	if (strspn(s, "0123456789") == n)
		return parse_ulong(s, &v) == 0 && v >= 1 && v <= 65535;
	return s[0] != '-' && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

static void str_free(char **s)
{
	if (*s) {
		explicit_bzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

static const char *str_set(char **dst, const char *v)
{
	char *s = strdup(v);
	if (!s)
		return "out of memory";
	str_free(dst);
	*dst = s;
	return NULL;
}

/* A host, [IPv6] or "*" (= any, as if absent); stored without brackets. */
static const char *set_listen_address(struct parser *p, char **dst, const char *v)
{
	char tmp[VALUE_MAX + 8], host[sizeof(((struct config_listen *)0)->host)], port[8];
	const char *why;

	/* Through the listen-line parser, so the fold cannot fail later. */
	snprintf(tmp, sizeof tmp, v[0] != '[' && strchr(v, ':') ? "[%s]:1" : "%s:1", v);
	if (addr_split_hostport(tmp, host, sizeof host, port, sizeof port, &why) == -1)
		return whyf(p, "'%.64s': %s", v, why);
	if (host[0] == '\0') {
		str_free(dst);
		return NULL;
	}
	return str_set(dst, host);
}

static const char *add_listen(struct parser *p, char *v, unsigned line)
{
	struct config *c = p->cfg;
	struct config_listen l = {.line = line};
	char *save = NULL, *tok = strtok_r(v, " \t", &save);
	const char *why;

	if (addr_split_hostport(tok, l.host, sizeof l.host, l.port, sizeof l.port, &why) == -1)
		return whyf(p, "'%.64s': %s", tok, why);
	if (!port_ok(l.port))
		return whyf(p, "'%.64s': bad port (1..65535 or a service name)", l.port);
	while ((tok = strtok_r(NULL, " \t", &save))) {
		if (strcasecmp(tok, "tls") == 0)
			l.opts |= LISTEN_OPT_TLS;
		else if (strcasecmp(tok, "proxy_protocol") == 0)
			l.opts |= LISTEN_OPT_PROXY_PROTOCOL;
		else
			return whyf(p, "unknown option '%.64s'", tok);
	}
	if (c->n_listen == CONFIG_MAX_LISTEN)
		return whyf(p, "too many listen addresses (max %d)", CONFIG_MAX_LISTEN);
	c->listen[c->n_listen++] = l;
	return NULL;
}

static const char *set_ports(struct parser *p, char *v)
{
	struct config *c = p->cfg;
	char *save = NULL;

	c->n_guard_firewall_ports = 0;
	for (char *tok = strtok_r(v, " \t,", &save); tok; tok = strtok_r(NULL, " \t,", &save)) {
		char *end;
		unsigned long n = strtoul(tok, &end, 10);

		if (*end || tok[0] == '-' || n < 1 || n > 65535)
			return whyf(p, "'%.32s' is not a port number (1..65535)", tok);
		if (c->n_guard_firewall_ports == CONFIG_MAX_FIREWALL_PORTS)
			return whyf(p, "too many ports (max %d)", CONFIG_MAX_FIREWALL_PORTS);
		c->guard_firewall_ports[c->n_guard_firewall_ports++] = (uint16_t)n;
	}
	if (c->n_guard_firewall_ports == 0)
		return "needs at least one port";
	return NULL;
}

static const char *add_policy_listen(struct parser *p, char *v, unsigned line)
{
	struct config *c = p->cfg;
	char host[256], port[64];
	const char *why;

	if (v[strcspn(v, " \t")])
		return "must be a single ADDRESS:PORT (repeat the key for more)";
	if (addr_split_hostport(v, host, sizeof host, port, sizeof port, &why) == -1)
		return whyf(p, "'%.64s': %s", v, why);
	if (port[0] == '\0' || !port_ok(port))
		return whyf(p, "'%.64s': needs a port (1..65535 or a service name)", v);
	for (size_t i = 0; i < c->n_policy_listen; i++)
		if (strcasecmp(c->policy_listen[i], v) == 0)
			return whyf(p, "duplicate of line %u", c->policy_listen_line[i]);
	if (c->n_policy_listen == CONFIG_MAX_POLICY_LISTEN)
		return whyf(p, "too many addresses (max %d)", CONFIG_MAX_POLICY_LISTEN);
	if ((c->policy_listen[c->n_policy_listen] = strdup(v)) == NULL)
		return "out of memory";
	c->policy_listen_line[c->n_policy_listen++] = line;
	return NULL;
}

/* Apply one value; returns NULL or what is wrong with it. */
static const char *set_value(struct parser *p, const struct keyword *k, char *v, unsigned line)
{
	void *dst = (char *)p->cfg + k->off;
	const struct name_value *nv;
	const char *why;
	unsigned long n;

	switch (k->type) {
	case T_WORD:
		if (v[strcspn(v, " \t")])
			return "must be a single word";
		return str_set(dst, v);
	case T_STR:
		return str_set(dst, v);
	case T_LADDR:
		return set_listen_address(p, dst, v);
	case T_PORT:
		if (!port_ok(v))
			return whyf(p, "'%.64s' is not a port (1..65535) or a service name", v);
		return str_set(dst, v);
	case T_BOOL:
		if (!(nv = lookup(booleans, v, false)))
			return whyf(p, "'%.64s' is not a boolean (yes/no, true/false, on/off, 1/0)", v);
		*(bool *)dst = nv->value;
		return NULL;
	case T_UINT:
		if (parse_ulong(v, &n) == -1)
			return whyf(p, "'%.64s' is not a number", v);
		if (n < k->min || n > k->max)
			return whyf(p, "'%.64s' is out of range (%u..%u)", v, k->min, k->max);
		*(unsigned *)dst = (unsigned)n;
		return NULL;
	case T_FACILITY:
		if (strcasecmp(v, "LOG_KERN") == 0 || strcasecmp(v, "kern") == 0)
			return "LOG_KERN is reserved for the kernel";
		if (!(nv = lookup(facilities, v, true)))
			return whyf(p, "'%.64s' is not a syslog facility (LOG_MAIL, LOG_LOCAL0, ...)", v);
		*(int *)dst = nv->value;
		return NULL;
	case T_PRIORITY:
		if (!(nv = lookup(priorities, v, true)))
			return whyf(p, "'%.64s' is not a syslog priority (LOG_EMERG..LOG_DEBUG)", v);
		*(int *)dst = nv->value;
		return NULL;
	case T_TLSMODE:
		if (!(nv = lookup(tls_modes, v, false)))
			return whyf(p, "'%.64s' is not one of none, starttls, implicit, auto", v);
		*(enum config_tls_mode *)dst = (enum config_tls_mode)nv->value;
		return NULL;
	case T_IPVER:
		if (strcmp(v, "0") && strcmp(v, "4") && strcmp(v, "6"))
			return whyf(p, "'%.64s' is not 4, 6 or 0 (both)", v);
		*(int *)dst = v[0] - '0';
		return NULL;
	case T_TLSVER:
		if (strcasecmp(v, "TLSv1.2") == 0 || strcmp(v, "1.2") == 0)
			*(unsigned *)dst = 0x0303;
		else if (strcasecmp(v, "TLSv1.3") == 0 || strcmp(v, "1.3") == 0)
			*(unsigned *)dst = 0x0304;
		else
			return whyf(p, "'%.64s' is not TLSv1.2 or TLSv1.3", v);
		return NULL;
	case T_CIDRS:
		if (cidr_list_parse(v, dst, &why) == -1)
			return whyf(p, "bad address list: %s", why);
		return NULL;
	case T_LISTEN:
		return add_listen(p, v, line);
	case T_PLISTEN:
		return add_policy_listen(p, v, line);
	case T_FIREWALL:
		if (strcasecmp(v, "none") == 0)
			*(enum config_firewall *)dst = FIREWALL_NONE;
		else if (strcasecmp(v, "nftables") == 0)
			*(enum config_firewall *)dst = FIREWALL_NFTABLES;
		else
			return "must be none or nftables";
		return NULL;
	case T_PORTS:
		return set_ports(p, v);
	}
	return "internal error";
}

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

static void parse_line(struct parser *p, const char *s, size_t n, unsigned line)
{
	const char *hash = memchr(s, '#', n);
	char key[48];
	size_t i = 0, ks, klen;

	if (hash)
		n = (size_t)(hash - s);
	while (n && (is_blank(s[n - 1]) || s[n - 1] == '\r'))
		n--;
	while (i < n && is_blank(s[i]))
		i++;
	if (i == n)
		return;
	for (ks = i; i < n && !is_blank(s[i]); i++)
		;
	klen = i - ks;
	while (i < n && is_blank(s[i]))
		i++;

	/* The key as shown in messages: printable, bounded. */
	bool clean = klen < sizeof key;
	size_t shown = clean ? klen : sizeof key - 4;
	for (size_t j = 0; j < shown; j++) {
		unsigned char ch = (unsigned char)s[ks + j];
		bool printable = ch > 0x20 && ch < 0x7f;
		clean &= printable;
		key[j] = printable ? (char)ch : '?';
	}
	strcpy(key + shown, shown < klen ? "..." : "");
	const struct keyword *k = clean ? keyword_find(key) : NULL;
	if (!k) {
		perr(p, line, key, "unknown keyword");
		return;
	}
	p->given[k - keywords] = true;
	if (i == n) {
		perr(p, line, k->name, "missing value");
		return;
	}
	size_t vlen = n - i;
	if (vlen > VALUE_MAX) {
		perr(p, line, k->name, "value too long (max %d bytes)", VALUE_MAX);
		return;
	}
	for (size_t j = i; j < n; j++) {
		unsigned char ch = (unsigned char)s[j];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
			perr(p, line, k->name, "control character in value");
			return;
		}
	}
	char *v = malloc(vlen + 1);
	if (!v) {
		perr(p, line, k->name, "out of memory");
		return;
	}
	memcpy(v, s + i, vlen);
	v[vlen] = '\0';
	const char *why = set_value(p, k, v, line);
	if (why)
		perr(p, line, k->name, "%s", why);
	else
		p->seen[k - keywords] = line;
	explicit_bzero(v, vlen);
	free(v);
}

static unsigned seen(const struct parser *p, const char *name)
{
	return p->seen[keyword_find(name) - keywords];
}

static bool given(const struct parser *p, const char *name)
{
	return p->given[keyword_find(name) - keywords];
}

/* listen_address/listen_port become listen[0], ahead of the listen lines. */
static void fold_listen(struct parser *p)
{
	struct config *c = p->cfg;
	unsigned pline = seen(p, "listen_port");

	if (!c->listen_port) {
		if (c->listen_address && !given(p, "listen_port"))
			perr(p, seen(p, "listen_address"), "listen_address", "needs listen_port");
		if (c->n_listen == 0 && !given(p, "listen_port") && !given(p, "listen"))
			perr(p, 0, "listen_port", "missing required key (or use listen ADDRESS:PORT)");
		return;
	}
	if (c->n_listen == CONFIG_MAX_LISTEN) {
		perr(p, pline, "listen_port", "too many listen addresses (max %d)", CONFIG_MAX_LISTEN);
		return;
	}
	memmove(&c->listen[1], &c->listen[0], c->n_listen * sizeof c->listen[0]);
	c->n_listen++;
	struct config_listen *l = &c->listen[0];
	memset(l, 0, sizeof *l);
	snprintf(l->host, sizeof l->host, "%s", c->listen_address ? c->listen_address : "");
	snprintf(l->port, sizeof l->port, "%s", c->listen_port);
}

static void check_listen_duplicates(struct parser *p)
{
	const struct config *c = p->cfg;

	for (size_t i = 1; i < c->n_listen; i++)
		for (size_t j = 0; j < i; j++) {
			const struct config_listen *a = &c->listen[j], *b = &c->listen[i];
			if (strcasecmp(a->host, b->host) || strcmp(a->port, b->port))
				continue;
			if (a->line)
				perr(p, b->line, "listen", "duplicate of line %u", a->line);
			else
				perr(p, b->line, "listen", "duplicate of listen_address/listen_port");
			break;
		}
}

/* The auth policy endpoint's keys go together (policy_hash.c knows the
 * digests; its bit count bounds the truncation, as in Dovecot). */
static void check_policy(struct parser *p)
{
	const struct config *c = p->cfg;
	unsigned bits = policy_hash_mech_bits(c->policy_hash_mech);

	if (c->n_policy_listen && !c->policy_api_key)
		perr(p, c->policy_listen_line[0], "policy_listen",
		     "needs policy_api_key (the value of Dovecot's auth_policy_server_api_header)");
	if (c->policy_api_key) {
		const char *colon = strchr(c->policy_api_key, ':');
		const char *val = colon ? colon + 1 : c->policy_api_key;

		while (*val == ' ' || *val == '\t')
			val++;
		if (*val == '\0' || (colon && colon == c->policy_api_key))
			perr(p, seen(p, "policy_api_key"), "policy_api_key", "needs a value (\"Name: value\" or a bare value)");
		else if (strlen(val) < 16)
			perr(p, seen(p, "policy_api_key"), "policy_api_key",
			     "too short: use at least 16 characters (openssl rand -hex 16)");
	}
	if (bits == 0)
		perr(p, seen(p, "policy_hash_mech"), "policy_hash_mech",
		     "'%.32s' is not supported (md5, sha1, sha256, sha512)", c->policy_hash_mech);
	else if (c->policy_hash_truncate >= bits)
		perr(p, seen(p, "policy_hash_truncate"), "policy_hash_truncate",
		     "%u bits is not less than the %u bits of %s", c->policy_hash_truncate, bits, c->policy_hash_mech);
	if (c->policy_hash_nonce && c->policy_hash_nonce[0] == '\0')
		perr(p, seen(p, "policy_hash_nonce"), "policy_hash_nonce", "must not be empty");
}

/* guard_redis's URL, the key prefix and the node name (sent in every
 * event: a word without the separators of the event encoding). */
static void check_fleet(struct parser *p)
{
	const struct config *c = p->cfg;
	struct redis_url u;
	const char *why;

	if (c->guard_redis && redis_url_parse(c->guard_redis, &u, &why) == -1)
		perr(p, seen(p, "guard_redis"), "guard_redis", "%s (redis://[USER:PASSWORD@]HOST[:PORT][/DB] or unix:/PATH)",
		     why);
	if (c->guard_redis_node) {
		size_t n = strlen(c->guard_redis_node);

		if (n > 63 || strspn(c->guard_redis_node, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") != n)
			perr(p, seen(p, "guard_redis_node"), "guard_redis_node",
			     "letters, digits, '.', '-' and '_' only, at most 63");
	}
	if (strlen(c->guard_redis_prefix) > 64)
		perr(p, seen(p, "guard_redis_prefix"), "guard_redis_prefix", "at most 64 characters");
	if (!c->guard && c->guard_firewall == FIREWALL_NFTABLES)
		perr(p, seen(p, "guard_firewall"), "guard_firewall", "needs the guard (guard no is set)");
	if (!c->guard && c->guard_redis)
		perr(p, seen(p, "guard_redis"), "guard_redis", "needs the guard (guard no is set)");
	if (c->guard_firewall_setonly && c->guard_firewall == FIREWALL_NONE)
		perr(p, seen(p, "guard_firewall_setonly"), "guard_firewall_setonly", "needs guard_firewall nftables");
	if (c->n_guard_firewall_ports && c->guard_firewall == FIREWALL_NONE)
		perr(p, seen(p, "guard_firewall_ports"), "guard_firewall_ports", "needs guard_firewall nftables");
}

static void check_whole(struct parser *p)
{
	static const char *const trio[] = {"auth_sasl_plain_username", "auth_sasl_plain_password",
	                                   "auth_shared_secret"};
	const struct config *c = p->cfg;
	bool any = false;

	if (!given(p, "server_hostname"))
		perr(p, 0, "server_hostname", "missing required key");
	fold_listen(p);
	check_listen_duplicates(p);
	for (size_t i = 0; i < 3; i++)
		any |= given(p, trio[i]);
	for (size_t i = 0; any && i < 3; i++)
		if (!given(p, trio[i]))
			perr(p, 0, trio[i],
			     "missing (auth_sasl_plain_username, auth_sasl_plain_password and "
			     "auth_shared_secret go together)");
	if (c->force_tls && seen(p, "server_tls") && c->server_tls == TLS_MODE_NONE)
		perr(p, seen(p, "force_tls"), "force_tls", "contradicts server_tls none");
	check_policy(p);
	check_fleet(p);
}

void config_free(struct config **cfg)
{
	struct config *c = *cfg;

	if (!c)
		return;
	for (size_t i = 0; i < NKEYS; i++) {
		enum ktype t = keywords[i].type;
		if (t == T_STR || t == T_WORD || t == T_LADDR || t == T_PORT)
			str_free((char **)(void *)((char *)c + keywords[i].off));
	}
	for (size_t i = 0; i < c->n_policy_listen; i++)
		free(c->policy_listen[i]);
	free(c->path);
	explicit_bzero(c, sizeof *c);
	free(c);
	*cfg = NULL;
}

int config_parse(const char *name, const char *text, size_t len, struct config **out,
                 config_report_fn *report, void *ctx)
{
	struct parser *p = calloc(1, sizeof *p);
	unsigned line = 0;
	int rc = -1;

	if (!p || !(p->cfg = calloc(1, sizeof *p->cfg))) {
		if (report)
			report(ctx, "out of memory");
		free(p);
		return -1;
	}
	*p = (struct parser){.name = name, .report = report, .ctx = ctx, .cfg = p->cfg};
	for (size_t i = 0; i < NKEYS; i++) {
		char def[64];
		if (!keywords[i].def)
			continue;
		snprintf(def, sizeof def, "%s", keywords[i].def);
		if (set_value(p, &keywords[i], def, 0))
			abort(); /* a default in the table above is broken */
	}
	if (!(p->cfg->path = strdup(name)))
		perr(p, 0, NULL, "out of memory");

	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
		text += 3;
		len -= 3;
	}
	while (len > 0) {
		const char *nl = memchr(text, '\n', len);
		size_t n = nl ? (size_t)(nl - text) : len;
		parse_line(p, text, n, ++line);
		text += n + (nl != NULL);
		len -= n + (nl != NULL);
	}
	check_whole(p);

	if (p->nerr == 0) {
		*out = p->cfg;
		rc = 0;
	} else {
		config_free(&p->cfg);
	}
	explicit_bzero(p, sizeof *p);
	free(p);
	return rc;
}

int config_load(const char *path, struct config **out, config_report_fn *report, void *ctx)
{
	struct parser p = {.name = path, .report = report, .ctx = ctx};
	size_t len = 0;
	char *buf;
	int fd, rc;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		perr(&p, 0, NULL, "cannot open: %s", strerror(errno));
		return -1;
	}
	if (!(buf = malloc(CONFIG_MAX_FILE + 1))) {
		close(fd);
		perr(&p, 0, NULL, "out of memory");
		return -1;
	}
	for (;;) {
		ssize_t r = read(fd, buf + len, CONFIG_MAX_FILE + 1 - len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			perr(&p, 0, NULL, "cannot read: %s", strerror(errno));
			break;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > CONFIG_MAX_FILE) {
			perr(&p, 0, NULL, "file too large (max %d bytes)", CONFIG_MAX_FILE);
			break;
		}
	}
	close(fd);
	rc = p.nerr ? -1 : config_parse(path, buf, len, out, report, ctx);
	explicit_bzero(buf, len); /* it may hold the master password */
	free(buf);
	return rc;
}
