/*
 * config — the imapproxy.conf-compatible configuration of imapgate.
 *
 * One keyword per line, key and value separated by spaces or tabs, '#'
 * starts a comment. The whole file is parsed; every error is reported as
 * "FILE:LINE: KEY: message"; the result is all or nothing. No I/O other than
 * reading the file; no logging (errors go through the report callback).
 */
#ifndef IMAPGATE_CONFIG_H
#define IMAPGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "addr.h"

/* The file read without -f, by imapgate and its tools (make CONFFILE=...;
 * the Debian package's is /etc/imapgate/imapgate.conf). */
#ifndef CONFIG_DEFAULT_PATH
#define CONFIG_DEFAULT_PATH "/etc/imapgate.conf"
#endif
/* The state directory (make STATEDIR=...) and the default guard_db in it;
 * imapgate creates the directory at start when it is missing. */
#ifndef CONFIG_STATE_DIR
#define CONFIG_STATE_DIR "/var/lib/imapgate"
#endif
#define CONFIG_DEFAULT_GUARD_DB CONFIG_STATE_DIR "/guard.db"
#define CONFIG_MAX_LISTEN 16
#define CONFIG_MAX_POLICY_LISTEN 8

/* Options after "listen ADDRESS:PORT". */
#define LISTEN_OPT_TLS 0x1            /* implicit TLS (issue: TLS) */
#define LISTEN_OPT_PROXY_PROTOCOL 0x2 /* PROXY v1/v2 header first (issue: guard) */

struct config_listen {
	char host[64]; /* numeric address or host name, without [] ; "" = any */
	char port[16]; /* numeric port or service name */
	unsigned opts; /* LISTEN_OPT_* */
	unsigned line; /* config line it came from, 0 = from listen_address/listen_port */
};

enum config_tls_mode { TLS_MODE_AUTO = 0, TLS_MODE_NONE, TLS_MODE_STARTTLS, TLS_MODE_IMPLICIT };
enum config_firewall { FIREWALL_NONE = 0, FIREWALL_NFTABLES };
#define CONFIG_MAX_FIREWALL_PORTS 32

struct config {
	char *path; /* the file this came from */

	/* --- imapproxy's 35 keywords, same meaning ----------------------- */
	char *server_hostname; /* required */
	char *server_port;     /* default "143" */
	char *listen_address;  /* NULL = any (both families) */
	char *listen_port;     /* NULL when only "listen" lines are used */
	unsigned connect_retries; /* default 10 */
	unsigned connect_delay;   /* seconds, default 5 */
	unsigned cache_size;      /* default 3072 */
	unsigned cache_expiration_time; /* seconds, default 300 */
	char *proc_username;  /* NULL = do not change user */
	char *proc_groupname; /* NULL = primary group of proc_username */
	char *stat_filename;  /* NULL = no stat file */
	char *protocol_log_filename; /* NULL = no trace file */
	int syslog_facility;     /* LOG_MAIL etc. (numeric value from syslog.h) */
	int syslog_prioritymask; /* highest priority logged, LOG_DEBUG = all */
	bool send_tcp_keepalives;
	bool enable_select_cache;
	bool foreground_mode;
	bool force_tls;
	char *chroot_directory;
	bool enable_admin_commands;
	char *preauth_command; /* sent to the backend before LOGIN, NULL = none */
	char *tls_ca_file;
	char *tls_ca_path;
	char *tls_cert_file;
	char *tls_key_file;
	char *tls_ciphers;
	bool tls_verify_server;
	bool tls_no_tlsv1;
	bool tls_no_tlsv1_1;
	bool tls_no_tlsv1_2;
	char *auth_sasl_plain_username;
	char *auth_sasl_plain_password;
	char *auth_shared_secret;
	int ipversion_only; /* 0 = both, 4 or 6 */
	bool dns_rr;

	/* --- imapgate's own keys ----------------------------------------- */
	struct config_listen listen[CONFIG_MAX_LISTEN]; /* "listen" lines, plus
	                        listen_address/listen_port folded in as entry 0 */
	size_t n_listen;
	unsigned shutdown_timeout;    /* seconds, default 10 */
	unsigned max_line_length;     /* bytes, before login, default 8192 */
	unsigned preauth_max_literal; /* bytes, before login, default 8192 */
	unsigned max_bad_commands;    /* before login, default 3 */
	unsigned auth_timeout;        /* seconds to log in, default 60 */
	unsigned idle_timeout;        /* seconds after login, default 1860 */
	unsigned backend_timeout;     /* seconds for connect+login, default 15 */
	unsigned max_connections;     /* client connections, default 1000 */
	unsigned max_connections_per_ip; /* default 50; 0 = no limit */
	enum config_tls_mode server_tls; /* default auto */
	char *tls_server_name;           /* NULL = server_hostname */
	unsigned cache_max_age;          /* seconds, default 3600 */
	unsigned cache_max_per_user;     /* default 0 = no limit */
	struct cidr_list admin_allow;    /* default 127.0.0.0/8, ::1/128 */
	unsigned select_cache_ttl;       /* seconds, default 10 */
	char *metrics_listen;            /* "ADDRESS:PORT" for Prometheus text, NULL = off */

	/* client-side TLS */
	char *client_tls_cert_file;      /* PEM, chain included; NULL = no TLS to clients */
	char *client_tls_key_file;       /* NULL = key in the cert file */
	char *client_tls_ciphers;        /* TLS <= 1.2 cipher list, NULL = OpenSSL default */
	unsigned client_tls_min_version; /* 0x0303 (TLS 1.2, default) or 0x0304 */
	bool client_tls_required;        /* plain listeners: LOGINDISABLED until STARTTLS */

	/* guard */
	bool guard;                      /* default yes */
	struct cidr_list trusted_proxies;  /* may send PROXY headers; default none */
	struct cidr_list trusted_webmail;  /* may send ID x-originating-ip; default none */
	bool forward_client_address;     /* ID x-originating-ip/port to the backend */
	unsigned proxy_header_timeout;   /* seconds, default 3 */
	unsigned guard_ipv4_prefix;      /* default 32 */
	unsigned guard_ipv6_prefix;      /* default 64 */
	unsigned guard_findtime;         /* seconds, default 600 */
	unsigned guard_maxretry;         /* default 5 */
	unsigned guard_bantime;          /* seconds, default 600 */
	unsigned guard_recidive_window;  /* seconds, default 86400 */
	unsigned guard_bantime_factor;   /* default 2 */
	unsigned guard_bantime_max;      /* seconds, default 604800 */
	unsigned guard_trust_time;       /* seconds, default 86400 */
	unsigned guard_user_maxretry;    /* failures per user in findtime before slowing, default 10 */
	unsigned guard_user_delay_max;   /* ms, cap of the per-user slow-down, default 15000 */
	unsigned guard_drop_after;       /* refusals before a banned address is dropped in the kernel, 0 = never; default 10 */
	unsigned guard_failure_delay;    /* ms, upper bound of the random delay on failure, default 500 */
	struct cidr_list guard_ignore;   /* never counted; default 127.0.0.1/32 ::1/128 */
	char *guard_db;                  /* SQLite path, "none" = memory only */
	char *control_socket;            /* unix socket for imapgate-ctl, NULL = none */

	/* Dovecot's auth policy endpoint (policy_http.c) */
	char *policy_listen[CONFIG_MAX_POLICY_LISTEN]; /* "ADDRESS:PORT", repeatable */
	unsigned policy_listen_line[CONFIG_MAX_POLICY_LISTEN];
	size_t n_policy_listen;
	char *policy_api_key;            /* Dovecot's auth_policy_server_api_header: "Name: value"
	                                  * or a bare value (X-API-Key); required with policy_listen */
	struct cidr_list policy_allow;   /* who may ask; default 127.0.0.0/8 ::1/128 */
	char *policy_hash_nonce;         /* Dovecot's auth_policy_hash_nonce; NULL = none */
	char *policy_hash_mech;          /* auth_policy_hash_mech, default sha256 */
	unsigned policy_hash_truncate;   /* auth_policy_hash_truncate, bits, default 12 */
	unsigned policy_max_connections; /* default 256 */
	unsigned policy_timeout;         /* s a connection may idle or take for a request, default 60 */

	/* The fleet: shared state through Redis, bans in the kernel firewall */
	char *guard_redis;               /* redis://[user:password@]host:port/db or unix:/path; NULL = off */
	char *guard_redis_prefix;        /* key and channel prefix, default "imapgate:" */
	char *guard_redis_node;          /* this instance's name; NULL = the host name */
	enum config_firewall guard_firewall; /* default none */
	uint16_t guard_firewall_ports[CONFIG_MAX_FIREWALL_PORTS]; /* TCP ports dropped for banned sources */
	size_t n_guard_firewall_ports;   /* 0 = imapgate's own listeners */
	bool guard_firewall_setonly;     /* maintain the sets only, no rule of ours */
};

/*
 * Error sink: called once per error with a full message
 * ("FILE:LINE: KEY: what is wrong"), NUL-terminated, no newline.
 */
typedef void config_report_fn(void *ctx, const char *msg);

/*
 * Parse the file at path. On success returns 0 and *out owns a new config
 * (free with config_free). On any error returns -1, reports every error
 * found and leaves *out untouched. Never logs, never exits.
 */
int config_load(const char *path, struct config **out, config_report_fn *report, void *ctx);

/* Same as config_load over an in-memory text; name is used in messages. */
int config_parse(const char *name, const char *text, size_t len, struct config **out,
                 config_report_fn *report, void *ctx);

/* Free a config and NULL the pointer; NULL is fine. */
void config_free(struct config **cfg);

#endif
