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
#include "preauth_decode.h"
#include "server.h"
#include "session.h"
#include "stats.h"
#include "version.h"

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
	if (ulen == 0 || ulen > PREAUTH_USER_MAX) {
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

/* x-originating-ip/port from a trusted webmail host: the real client. */
static void id_take_origin(struct session *s, const struct preauth_id *id)
{
	if (id->origin_ip) {
		const struct imap_arg *v = id->origin_ip;
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
	}
	if (id->origin_port) {
		char *end;
		unsigned long port = strtoul(id->origin_port->data, &end, 10);

		if (*end == '\0' && port > 0 && port < 65536)
			s->origin_port = (unsigned)port;
	}
}

/* ID (RFC 2971): keep the client's fields for the backend, answer with ours. */
static void cmd_id(struct session *s, const struct imap_command *cmd)
{
	bool trusted = cidr_list_match(&srv.cfg->trusted_webmail, (struct sockaddr *)&s->peer);
	struct preauth_id id;
	const char *err = preauth_decode_id(cmd, trusted, srv.cfg->forward_client_address, &id);

	if (err) {
		session_reply(s, "%s BAD %s", cmd->tag, err);
		return;
	}
	id_take_origin(s, &id);
	if (id.ignored)
		log_info("event=id_ignored session=%llu client=%s:%u reason=untrusted_address_fields",
		         (unsigned long long)s->id, s->peer_ip, s->peer_port);
	free(s->id_fields);
	s->id_fields = id.fields;
	session_reply(s, "* ID (\"name\" \"imapgate\" \"version\" \"%s\")", IMAPGATE_VERSION);
	session_reply(s, "%s OK Completed", cmd->tag);
}

static void cmd_login(struct session *s, const struct imap_command *cmd)
{
	const struct imap_arg *user, *pass;

	if (!preauth_decode_login(cmd, &user, &pass)) {
		session_reply(s, "%s BAD Missing required argument to Login", cmd->tag);
		s->bad_commands++;
		return;
	}
	begin_login(s, cmd->tag, user->data, user->len, pass->data, pass->len);
}

/* One SASL response (IR or line) for the mechanism in progress. */
static void sasl_step(struct session *s, const char *data, size_t len)
{
	char dec[PREAUTH_SASL_MAX];
	long n;

	if ((n = preauth_sasl_response(data, len, dec, sizeof(dec))) < 0) {
		explicit_bzero(dec, sizeof(dec)); /* groups decoded before the bad one */
		s->state = SS_PREAUTH;
		session_reply(s, "%s BAD Invalid base64 data", s->tag);
		s->bad_commands++;
		free_credentials(s);
		return;
	}
	if (s->sasl_mech == SASL_PLAIN) {
		const char *user, *pass;
		size_t ulen, plen;
		enum preauth_plain r = preauth_sasl_plain(dec, (size_t)n, &user, &ulen, &pass, &plen);

		s->state = SS_PREAUTH;
		if (r == PREAUTH_PLAIN_MALFORMED) {
			session_reply(s, "%s BAD Invalid PLAIN response", s->tag);
			s->bad_commands++;
		} else if (r == PREAUTH_PLAIN_AUTHZID) {
			session_reply(s, "%s NO [AUTHENTICATIONFAILED] Authorization identity not supported", s->tag);
		} else {
			char tag[IMAP_TAG_MAX + 1];

			memcpy(tag, s->tag, sizeof(tag));
			begin_login(s, tag, user, ulen, pass, plen);
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
