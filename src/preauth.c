/*
 * preauth — what imapgate answers itself before the client has logged in:
 * CAPABILITY, NOOP, LOGOUT, ID, LOGIN, AUTHENTICATE PLAIN/LOGIN (and the
 * XPROXY_* admin commands, through admin.c).
 *
 * Usernames and passwords are decoded from their IMAP form (atom, quoted,
 * literal, SASL base64) before they go anywhere. It never echoes an
 * invalid tag, never logs a password and never keeps one past the login's
 * outcome.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin.h"
#include "log.h"
#include "server.h"
#include "session.h"
#include "stats.h"
#include "version.h"

#define USER_MAX 1024
#define ID_PAIRS_MAX 30

enum { SASL_PLAIN = 1, SASL_LOGIN = 2 };

/* The backend's capabilities as this client may see them before login. */
void preauth_capability_line(const struct session *s, char *out, size_t outsz)
{
	const char *caps = srv.caps[0] ? srv.caps : "IMAP4rev1 LITERAL+ SASL-IR ID AUTH=PLAIN AUTH=LOGIN";
	size_t o = 0;

	out[0] = '\0';
	while (*caps) {
		const char *sp = strchr(caps, ' ');
		size_t n = sp ? (size_t)(sp - caps) : strlen(caps);
		bool keep = n > 0;

		if (n > 5 && strncasecmp(caps, "AUTH=", 5) == 0)
			/* Only the mechanisms imapgate itself speaks to clients. */
			keep = (n == 10 && strncasecmp(caps + 5, "PLAIN", 5) == 0) ||
			       (n == 10 && strncasecmp(caps + 5, "LOGIN", 5) == 0);
		else if ((n == 8 && strncasecmp(caps, "STARTTLS", 8) == 0) ||
		         (n == 13 && strncasecmp(caps, "LOGINDISABLED", 13) == 0) ||
		         (n == 10 && strncasecmp(caps, "XIMAPPROXY", 10) == 0))
			keep = false;
		if (keep && o + n + 2 < outsz) {
			if (o)
				out[o++] = ' ';
			memcpy(out + o, caps, n);
			o += n;
			out[o] = '\0';
		}
		caps += n;
		while (*caps == ' ')
			caps++;
	}
	/* imapgate's own: STARTTLS when it can, LOGINDISABLED while TLS is
	 * required and missing, XIMAPPROXY with the admin commands. */
	if (srv.tls_server && !s->client_tls && o + 10 < outsz) {
		memcpy(out + o, " STARTTLS", 10);
		o += 9;
	}
	if (srv.cfg->client_tls_required && !s->client_tls && o + 15 < outsz) {
		memcpy(out + o, " LOGINDISABLED", 15);
		o += 14;
	}
	/* Only to the clients the admin commands are answered to. */
	if (srv.cfg->enable_admin_commands && cidr_list_match(&srv.cfg->admin_allow, (const struct sockaddr *)&s->peer) &&
	    o + 12 < outsz)
		memcpy(out + o, " XIMAPPROXY", 12);
}

void preauth_greeting(struct session *s)
{
	char caps[2048];

	preauth_capability_line(s, caps, sizeof(caps));
	session_reply(s, "* OK [CAPABILITY %s] imapgate ready.", caps);
}

static bool is_string(const struct imap_arg *a)
{
	return a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_QUOTED || a->type == IMAP_ARG_LITERAL;
}

static char *dup_bytes(const char *p, size_t n)
{
	char *d = malloc(n + 1);

	if (d) {
		memcpy(d, p, n);
		d[n] = '\0';
	}
	return d;
}

static void free_credentials(struct session *s)
{
	session_forget_credentials(s);
	if (s->user) {
		explicit_bzero(s->user, s->user_len);
		free(s->user);
		s->user = NULL;
		s->user_len = 0;
	}
}

/* Constant-time comparison with auth_shared_secret, lengths included
 * (imapproxy compared only the client's length: "" matched). */
static bool shared_secret_ok(const char *pass, size_t plen)
{
	const char *secret = srv.cfg->auth_shared_secret;
	size_t sl = strlen(secret);
	unsigned char diff = plen != sl;

	for (size_t i = 0; i < sl; i++)
		diff |= (unsigned char)(secret[i] ^ (i < plen ? pass[i] : 0));
	return diff == 0 && sl > 0;
}

/* Keep the credentials and start the backend login for tag. */
static void begin_login(struct session *s, const char *tag, const char *user, size_t ulen,
                        const char *pass, size_t plen)
{
	free_credentials(s);
	if (ulen == 0 || ulen > USER_MAX) {
		session_reply(s, "%s NO [AUTHENTICATIONFAILED] Invalid username", tag);
		return;
	}
	s->user = dup_bytes(user, ulen);
	s->pass = dup_bytes(pass, plen);
	if (s->user == NULL || s->pass == NULL) {
		free_credentials(s);
		session_reply(s, "%s NO [UNAVAILABLE] Out of memory", tag);
		return;
	}
	s->user_len = ulen;
	s->pass_len = plen;
	snprintf(s->tag, sizeof(s->tag), "%s", tag);
	if (!session_guard_before_login(s)) {
		free_credentials(s);
		return;
	}
	if (srv.cfg->auth_shared_secret && !shared_secret_ok(pass, plen)) {
		/* Master-user mode: the client's password is the shared secret;
		 * a wrong one never reaches the backend and counts as a failure. */
		s->state = SS_LOGIN;
		preauth_login_done(s, BACKEND_REFUSED, "NO [AUTHENTICATIONFAILED] Authentication failed.");
		return;
	}
	session_start_login(s);
}

/* Append text to out as an IMAP quoted string; false if it cannot be one. */
static bool append_quoted(char *out, size_t outsz, size_t *o, const char *p, size_t n)
{
	if (*o + 2 * n + 3 >= outsz)
		return false;
	out[(*o)++] = '"';
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\0' || p[i] == '\r' || p[i] == '\n')
			return false;
		if (p[i] == '"' || p[i] == '\\')
			out[(*o)++] = '\\';
		out[(*o)++] = p[i];
	}
	out[(*o)++] = '"';
	out[*o] = '\0';
	return true;
}

/* Append ' "key" "value"' (or NIL for a NULL value) to a field list. */
static bool append_id_pair(char *out, size_t outsz, size_t *o, const struct imap_arg *k, const struct imap_arg *v)
{
	if (*o + 6 >= outsz)
		return false;
	if (*o)
		out[(*o)++] = ' ';
	if (!append_quoted(out, outsz - 5, o, k->data, k->len))
		return false;
	out[(*o)++] = ' ';
	if (v == NULL) {
		memcpy(out + *o, "NIL", 4);
		*o += 3;
		return true;
	}
	return append_quoted(out, outsz, o, v->data, v->len);
}

/* ID fields a backend (Dovecot) believes when they come from a trusted
 * network: from anyone but trusted_webmail they are dropped, never passed on. */
static bool id_key_is_address(const char *k, size_t n)
{
	static const char *const prefixes[] = { "x-originating-", "x-connected-", "x-forward-", "x-proxy-ttl",
		                                    "x-session-id", "x-session-ext-id" };

	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		size_t pl = strlen(prefixes[i]);

		if (n >= pl && strncasecmp(k, prefixes[i], pl) == 0)
			return true;
	}
	return false;
}

/* x-originating-ip/port from a trusted webmail host: the real client. */
static void id_take_origin(struct session *s, const struct imap_arg *k, const struct imap_arg *v)
{
	if (v->type == IMAP_ARG_ATOM && strcasecmp(v->data, "NIL") == 0)
		return;
	if (k->len == 16 && strncasecmp(k->data, "x-originating-ip", 16) == 0) {
		struct cidr c;
		const char *why;

		if (v->len < ADDR_STRLEN && strchr(v->data, '/') == NULL && cidr_parse(v->data, &c, &why) == 0) {
			session_set_origin(s, &c, s->origin_port);
		} else {
			char clean[64];

			log_sanitize(v->data, v->len, clean, sizeof(clean));
			log_info("event=id_ignored session=%llu client=%s:%u reason=bad_originating_ip value=%s",
			         (unsigned long long)s->id, s->peer_ip, s->peer_port, clean);
		}
	} else if (k->len == 18 && strncasecmp(k->data, "x-originating-port", 18) == 0) {
		char *end;
		unsigned long port = strtoul(v->data, &end, 10);

		if (*end == '\0' && port > 0 && port < 65536)
			s->origin_port = (unsigned)port;
	}
}

/* ID (RFC 2971): keep the client's fields for the backend, answer with ours. */
static void cmd_id(struct session *s, const struct imap_command *cmd)
{
	char list[8192];
	size_t o = 0, n = cmd->n_args;
	const struct imap_arg *a = cmd->args;
	bool trusted = cidr_list_match(&srv.cfg->trusted_webmail, (struct sockaddr *)&s->peer);
	bool ignored = false;

	if (n == 1 && a[0].type == IMAP_ARG_ATOM && strcasecmp(a[0].data, "NIL") == 0) {
		o = 0;
	} else {
		if (n < 2 || a[0].type != IMAP_ARG_LIST_START || a[n - 1].type != IMAP_ARG_LIST_END ||
		    (n - 2) % 2 != 0 || (n - 2) / 2 > ID_PAIRS_MAX) {
			session_reply(s, "%s BAD Invalid ID arguments", cmd->tag);
			return;
		}
		for (size_t i = 1; i + 1 < n; i += 2) {
			const struct imap_arg *k = &a[i], *v = &a[i + 1];
			bool vnil = v->type == IMAP_ARG_ATOM && strcasecmp(v->data, "NIL") == 0;

			if (!is_string(k) || !is_string(v) || k->len == 0 || k->len > 30 || v->len > 1024 ||
			    (k->type == IMAP_ARG_ATOM && strcasecmp(k->data, "NIL") == 0)) {
				session_reply(s, "%s BAD Invalid ID arguments", cmd->tag);
				return;
			}
			if (id_key_is_address(k->data, k->len)) {
				if (!trusted) {
					ignored = true;
					continue;
				}
				/* The origin travels in our own fields (forward_client_address)
				 * or, without it, as the webmail sent it. */
				id_take_origin(s, k, v);
				if (srv.cfg->forward_client_address && strncasecmp(k->data, "x-originating-", 14) == 0)
					continue;
			}
			if (!append_id_pair(list, sizeof(list), &o, k, vnil ? NULL : v)) {
				session_reply(s, "%s BAD Invalid ID arguments", cmd->tag);
				return;
			}
		}
	}
	if (ignored)
		log_info("event=id_ignored session=%llu client=%s:%u reason=untrusted_address_fields",
		         (unsigned long long)s->id, s->peer_ip, s->peer_port);
	free(s->id_fields);
	s->id_fields = o ? dup_bytes(list, o) : NULL;
	session_reply(s, "* ID (\"name\" \"imapgate\" \"version\" \"%s\")", IMAPGATE_VERSION);
	session_reply(s, "%s OK Completed", cmd->tag);
}

static void cmd_login(struct session *s, const struct imap_command *cmd)
{
	if (cmd->n_args != 2 || !is_string(&cmd->args[0]) || !is_string(&cmd->args[1])) {
		session_reply(s, "%s BAD Missing required argument to Login", cmd->tag);
		s->bad_commands++;
		return;
	}
	begin_login(s, cmd->tag, cmd->args[0].data, cmd->args[0].len, cmd->args[1].data, cmd->args[1].len);
}

/* Strict base64 (RFC 4648, padding required). Returns length or -1. */
static long b64_decode(const char *in, size_t n, char *out, size_t outsz)
{
	static const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	if (n % 4 != 0)
		return -1;
	for (size_t i = 0; i < n; i += 4) {
		unsigned v = 0, pad = 0;

		for (size_t j = 0; j < 4; j++) {
			const char *c = in[i + j] ? strchr(alpha, in[i + j]) : NULL;

			if (in[i + j] == '=' && i + 4 == n && j >= 2) {
				pad++;
				v <<= 6;
				continue;
			}
			if (c == NULL || pad)
				return -1;
			v = (v << 6) | (unsigned)(c - alpha);
		}
		if (o + 3 - pad > outsz)
			return -1;
		out[o++] = (char)(v >> 16);
		if (pad < 2)
			out[o++] = (char)(v >> 8);
		if (pad < 1)
			out[o++] = (char)v;
	}
	return (long)o;
}

/* One SASL response (IR or line) for the mechanism in progress. */
static void sasl_step(struct session *s, const char *data, size_t len)
{
	char dec[8192];
	long n;

	if (len == 1 && data[0] == '=')
		n = 0; /* empty initial response */
	else if ((n = b64_decode(data, len, dec, sizeof(dec))) < 0) {
		explicit_bzero(dec, sizeof(dec)); /* groups decoded before the bad one */
		s->state = SS_PREAUTH;
		session_reply(s, "%s BAD Invalid base64 data", s->tag);
		s->bad_commands++;
		free_credentials(s);
		return;
	}
	if (s->sasl_mech == SASL_PLAIN) {
		/* authzid NUL authcid NUL passwd */
		char *z1 = memchr(dec, '\0', (size_t)n);
		char *z2 = z1 ? memchr(z1 + 1, '\0', (size_t)(dec + n - z1 - 1)) : NULL;

		s->state = SS_PREAUTH;
		if (z2 == NULL) {
			session_reply(s, "%s BAD Invalid PLAIN response", s->tag);
			s->bad_commands++;
		} else if (z1 != dec && ((size_t)(z1 - dec) != (size_t)(z2 - z1 - 1) ||
		                         memcmp(dec, z1 + 1, (size_t)(z1 - dec)) != 0)) {
			session_reply(s, "%s NO [AUTHENTICATIONFAILED] Authorization identity not supported", s->tag);
		} else {
			char tag[IMAP_TAG_MAX + 1];

			memcpy(tag, s->tag, sizeof(tag));
			begin_login(s, tag, z1 + 1, (size_t)(z2 - z1 - 1), z2 + 1, (size_t)(dec + n - z2 - 1));
		}
	} else if (s->sasl_step == 0) {
		free_credentials(s);
		s->user = dup_bytes(dec, (size_t)n);
		s->user_len = s->user ? (size_t)n : 0;
		s->sasl_step = 1;
		session_reply(s, "+ UGFzc3dvcmQ6");
		imap_parser_expect_line(s->parser);
	} else {
		char tag[IMAP_TAG_MAX + 1];
		char *user = s->user;
		size_t ulen = s->user_len;

		s->user = NULL;
		s->user_len = 0;
		s->state = SS_PREAUTH;
		memcpy(tag, s->tag, sizeof(tag));
		begin_login(s, tag, user ? user : "", user ? ulen : 0, dec, (size_t)n);
		if (user) {
			explicit_bzero(user, ulen);
			free(user);
		}
	}
	explicit_bzero(dec, sizeof(dec));
}

static void cmd_authenticate(struct session *s, const struct imap_command *cmd)
{
	const struct imap_arg *a = cmd->args;

	if (cmd->n_args < 1 || cmd->n_args > 2 || a[0].type != IMAP_ARG_ATOM ||
	    (cmd->n_args == 2 && a[1].type != IMAP_ARG_ATOM)) {
		session_reply(s, "%s BAD Invalid AUTHENTICATE arguments", cmd->tag);
		s->bad_commands++;
		return;
	}
	if (strcasecmp(a[0].data, "PLAIN") == 0)
		s->sasl_mech = SASL_PLAIN;
	else if (strcasecmp(a[0].data, "LOGIN") == 0)
		s->sasl_mech = SASL_LOGIN;
	else {
		session_reply(s, "%s NO Unsupported authentication mechanism", cmd->tag);
		return;
	}
	snprintf(s->tag, sizeof(s->tag), "%s", cmd->tag);
	s->sasl_step = 0;
	s->state = SS_SASL;
	if (cmd->n_args == 2) {
		sasl_step(s, a[1].data, a[1].len);
		return;
	}
	session_reply(s, s->sasl_mech == SASL_PLAIN ? "+ " : "+ VXNlcm5hbWU6");
	imap_parser_expect_line(s->parser);
}

/* STARTTLS: answer in plaintext, then TLS; nothing the client sent before
 * the handshake is kept (the STARTTLS command-injection class of bug). */
static void cmd_starttls(struct session *s, const struct imap_command *cmd)
{
	size_t dropped;

	if (cmd->n_args != 0) {
		session_reply(s, "%s BAD STARTTLS takes no arguments", cmd->tag);
		s->bad_commands++;
		return;
	}
	if (srv.tls_server == NULL) {
		session_reply(s, "%s NO STARTTLS is not available", cmd->tag);
		return;
	}
	if (s->client_tls) {
		session_reply(s, "%s BAD TLS is already active", cmd->tag);
		s->bad_commands++;
		return;
	}
	session_reply(s, "%s OK Begin TLS negotiation now", cmd->tag);
	dropped = session_discard_input(s);
	if (dropped)
		log_warn("event=starttls_injection session=%llu client=%s:%u discarded=%zu", (unsigned long long)s->id,
		         s->peer_ip, s->peer_port, dropped);
	s->starttls_pending = true;
}

void preauth_sasl_line(struct session *s, const char *line, size_t len)
{
	if (s->state != SS_SASL)
		return;
	if (len == 1 && line[0] == '*') {
		s->state = SS_PREAUTH;
		free_credentials(s);
		session_reply(s, "%s BAD Authentication canceled", s->tag);
		return;
	}
	sasl_step(s, line, len);
}

void preauth_command(struct session *s, const struct imap_command *cmd)
{
	const char *name = cmd->name;

	if (strcasecmp(name, "CAPABILITY") == 0) {
		char caps[2048];

		preauth_capability_line(s, caps, sizeof(caps));
		session_reply(s, "* CAPABILITY %s", caps);
		session_reply(s, "%s OK Completed", cmd->tag);
	} else if (strcasecmp(name, "NOOP") == 0) {
		session_reply(s, "%s OK Completed", cmd->tag);
	} else if (strcasecmp(name, "LOGOUT") == 0) {
		session_reply(s, "* BYE LOGOUT received");
		session_reply(s, "%s OK Completed", cmd->tag);
		session_flush_close(s, "client_logout");
	} else if (strcasecmp(name, "ID") == 0) {
		cmd_id(s, cmd);
	} else if ((strcasecmp(name, "LOGIN") == 0 || strcasecmp(name, "AUTHENTICATE") == 0) &&
	           srv.cfg->client_tls_required && !s->client_tls) {
		session_reply(s, "%s NO [PRIVACYREQUIRED] TLS is required: use STARTTLS first", cmd->tag);
	} else if (strcasecmp(name, "LOGIN") == 0) {
		cmd_login(s, cmd);
	} else if (strcasecmp(name, "AUTHENTICATE") == 0) {
		cmd_authenticate(s, cmd);
	} else if (strcasecmp(name, "STARTTLS") == 0) {
		cmd_starttls(s, cmd);
	} else if (admin_is_command(name)) {
		admin_command(s, cmd);
	} else {
		session_reply(s, "%s BAD Please login first", cmd->tag);
		s->bad_commands++;
	}
	if (s->bad_commands >= srv.cfg->max_bad_commands && s->state != SS_CLOSED && !s->flush_then_close) {
		log_info("event=protocol_error session=%llu client=%s:%u reason=too_many_bad_commands",
		         (unsigned long long)s->id, s->peer_ip, s->peer_port);
		session_bye(s, "Too many invalid commands", "too_many_bad_commands");
	}
}

/* The one login_failed line: every failure kind, the same stable keys. */
static void log_login_failed(const struct session *s, const char *user, int prio, const char *reason,
                             const char *extra)
{
	log_msg(prio, "event=login_failed session=%llu user=%s client=%s:%u rip=%s reason=%s%s",
	        (unsigned long long)s->id, user, s->peer_ip, s->peer_port, s->has_origin ? s->origin_ip : s->peer_ip,
	        reason, extra);
}

void preauth_login_done(struct session *s, enum backend_result r, const char *text)
{
	char user[160];

	log_sanitize(s->user ? s->user : "", s->user_len, user, sizeof(user));
	session_forget_credentials(s);
	if (r == BACKEND_OK) {
		session_guard_success(s);
		STATS_INC(STAT_CLIENT_LOGINS_TOTAL);
		STATS_INC(s->reused ? STAT_SERVER_CONNECTIONS_REUSED_TOTAL : STAT_SERVER_CONNECTIONS_CREATED_TOTAL);
		log_info("event=login session=%llu user=%s client=%s:%u rip=%s backend=%s login_ms=%llu",
		         (unsigned long long)s->id, user, s->peer_ip, s->peer_port, s->has_origin ? s->origin_ip : s->peer_ip,
		         s->reused ? "reused" : "new", (unsigned long long)(loop_now(srv.loop) - s->login_start_ms));
		if (s->reused)
			session_reply(s, "* OK [XPROXYREUSE] IMAP connection reused by imapgate");
		session_reply(s, "%s %s", s->tag, text);
		if (s->state != SS_CLOSED)
			session_enter_relay(s);
		return;
	}
	s->state = SS_PREAUTH;
	STATS_INC(STAT_CLIENT_LOGIN_FAILURES_TOTAL);
	if (r == BACKEND_UNAVAILABLE && strcmp(s->be.reason, "shutdown") != 0)
		STATS_INC(STAT_BACKEND_FAILURES_TOTAL);
	switch (r) {
	case BACKEND_REFUSED: {
		char note[96];
		bool close_after;
		uint32_t delay = session_guard_failure(s, "auth_failed", &close_after, note, sizeof(note));

		log_login_failed(s, user, LOG_INFO, "auth_failed", note);
		session_guard_log_held();
		/* The server's own words ("NO [AUTHENTICATIONFAILED] ..."), after
		 * the guard's random delay. */
		if (strncasecmp(text, "NO", 2) == 0)
			snprintf(s->deferred, sizeof(s->deferred), "%s %s", s->tag, text);
		else
			snprintf(s->deferred, sizeof(s->deferred), "%s NO [AUTHENTICATIONFAILED] Authentication failed.",
			         s->tag);
		free_credentials(s);
		session_defer_reply(s, delay, close_after);
		return;
	}
	case BACKEND_ID_REFUSED:
		log_login_failed(s, user, LOG_INFO, "id_refused", "");
		session_reply(s, "%s NO [UNAVAILABLE] The server refused the ID command", s->tag);
		break;
	case BACKEND_PREAUTH_REFUSED:
		log_login_failed(s, user, LOG_WARNING, "preauth_command_failed", "");
		session_reply(s, "%s NO [UNAVAILABLE] The server refused preauth_command", s->tag);
		break;
	default: {
		char detail[200], extra[220] = "";

		log_sanitize_text(s->be.detail, strlen(s->be.detail), detail, sizeof(detail));
		if (detail[0])
			snprintf(extra, sizeof(extra), " error=\"%s\"", detail);
		log_login_failed(s, user, LOG_WARNING, s->be.reason[0] ? s->be.reason : "backend_unavailable", extra);
		if (strcmp(s->be.reason, "cache_full") == 0)
			session_reply(s, "%s NO [UNAVAILABLE] Too many backend connections (cache_size), try again later",
			              s->tag);
		else if (strcmp(s->be.reason, "shutdown") == 0)
			session_reply(s, "%s NO [UNAVAILABLE] Server shutting down", s->tag);
		else
			session_reply(s, "%s NO [UNAVAILABLE] Backend server unavailable", s->tag);
		break;
	}
	}
	free_credentials(s);
}
