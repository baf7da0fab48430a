/*
 * admin — imapproxy's XPROXY_* commands (see admin.h) and the "trace"
 * control command.
 *
 * Replies keep imapproxy's words. Peer text echoed in a reply or written to
 * the log (a user name) is sanitised first. It must never answer an admin
 * command to a client outside admin_allow, nor after login (the relay
 * passes those to the server).
 */
#include "admin.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "control.h"
#include "log.h"
#include "pool.h"
#include "server.h"
#include "session.h"
#include "stats.h"
#include "trace.h"
#include "version.h"

#define USER_SHOWN 128 /* room for a sanitised user name in replies and logs */
/* DUMPICC stops listing while this much of the client's buffer is left,
 * so its own last lines always fit. */
#define DUMP_RESERVE 8192

typedef void admin_fn(struct session *s, const struct imap_command *cmd, const char *name);

static void log_admin(const struct session *s, const char *name, const char *extra)
{
	log_info("event=admin session=%llu client=%s:%u command=%s%s", (unsigned long long)s->id, s->peer_ip,
	         s->peer_port, name, extra);
}

static bool no_args(struct session *s, const struct imap_command *cmd, const char *name)
{
	if (cmd->n_args == 0)
		return true;
	session_reply(s, "%s BAD %s takes no arguments", cmd->tag, name);
	s->bad_commands++;
	return false;
}

/* --- XPROXY_DUMPICC ------------------------------------------------------- */

struct dump {
	struct session *s;
	unsigned shown, left_out;
};

static void dump_line(void *arg, int fd, const char *user, const char *what)
{
	struct dump *d = arg;

	if (buf_space(&d->s->cout) < DUMP_RESERVE) {
		d->left_out++;
		return;
	}
	session_reply(d->s, "* XPROXY_DUMPICC %d %s %s", fd, user[0] ? user : "-", what);
	d->shown++;
}

/* Every backend connection: held by a logged-in session (Active), or in
 * the pool (Cached, or Cleaning while it is made ready to park). */
static void cmd_dumpicc(struct session *s, const struct imap_command *cmd, const char *name)
{
	struct dump d = { s, 0, 0 };
	char extra[64];

	if (!no_args(s, cmd, name))
		return;
	for (const struct session *o = srv.sessions; o; o = o->next) {
		char user[USER_SHOWN];

		if (o->state != SS_RELAY || !conn_is_open(&o->be.conn))
			continue;
		log_sanitize(o->user ? o->user : "", o->user ? o->user_len : 0, user, sizeof(user));
		dump_line(&d, o->be.conn.io.fd, user, "Active");
	}
	pool_dump(dump_line, &d);
	if (d.left_out)
		session_reply(s, "* OK XPROXY_DUMPICC listing cut: %u more (imapgate-ctl pool lists all)", d.left_out);
	session_reply(s, "%s OK Completed", cmd->tag);
	snprintf(extra, sizeof(extra), " listed=%u", d.shown + d.left_out);
	log_admin(s, name, extra);
}

/* Is there a trace file to write to? If not, say so (NO). */
static bool trace_file_ready(struct session *s, const struct imap_command *cmd, const char *name)
{
	if (trace_available())
		return true;
	if (srv.cfg->protocol_log_filename == NULL)
		session_reply(s, "%s NO No protocol_log_filename configured", cmd->tag);
	else
		session_reply(s, "%s NO protocol_log_filename could not be opened (see the log)", cmd->tag);
	log_admin(s, name, " result=no_trace_file");
	return false;
}

/* --- XPROXY_TRACE [user] ---------------------------------------------------- */

static void cmd_trace(struct session *s, const struct imap_command *cmd, const char *name)
{
	const struct imap_arg *a = &cmd->args[0];
	char user[USER_SHOWN], extra[USER_SHOWN + 32];
	const char *cur;
	size_t cur_len;

	if (cmd->n_args == 0) {
		/* imapproxy's: sessions being traced go on until they end. */
		cur = trace_user(&cur_len);
		log_sanitize(cur ? cur : "", cur ? cur_len : 0, user, sizeof(user));
		trace_clear();
		session_reply(s, "%s OK Tracing disabled", cmd->tag);
		snprintf(extra, sizeof(extra), " result=disabled was=%s", cur ? user : "-");
		log_admin(s, name, extra);
		return;
	}
	if (cmd->n_args != 1 ||
	    (a->type != IMAP_ARG_ATOM && a->type != IMAP_ARG_QUOTED && a->type != IMAP_ARG_LITERAL) || a->len == 0 ||
	    a->len > TRACE_USER_MAX) {
		session_reply(s, "%s BAD Invalid arguments to %s", cmd->tag, name);
		s->bad_commands++;
		return;
	}
	log_sanitize(a->data, a->len, user, sizeof(user));
	if (!trace_file_ready(s, cmd, name))
		return;
	if (trace_set(a->data, a->len) == -1) {
		char now[USER_SHOWN];

		cur = trace_user(&cur_len);
		if (cur == NULL) {
			session_reply(s, "%s NO Out of memory", cmd->tag);
			return;
		}
		log_sanitize(cur, cur_len, now, sizeof(now));
		session_reply(s, "%s BAD Tracing already enabled for user %s", cmd->tag, now);
		snprintf(extra, sizeof(extra), " result=busy user=%s", user);
		log_admin(s, name, extra);
		return;
	}
	session_reply(s, "%s OK Tracing enabled for user %s.", cmd->tag, user);
	snprintf(extra, sizeof(extra), " result=enabled user=%s", user);
	log_admin(s, name, extra);
}

/* --- XPROXY_NEWLOG, XPROXY_RESETCOUNTERS, XPROXY_VERSION ------------------- */

static void cmd_newlog(struct session *s, const struct imap_command *cmd, const char *name)
{
	if (!no_args(s, cmd, name))
		return;
	if (!trace_file_ready(s, cmd, name))
		return;
	if (trace_newlog() == -1) {
		log_err("event=trace_error session=%llu file=%s error=\"truncate: %s\"", (unsigned long long)s->id,
		        trace_file(), strerror(errno));
		session_reply(s, "%s NO internal server error", cmd->tag);
		return;
	}
	session_reply(s, "%s OK Logfile cleared", cmd->tag);
	log_admin(s, name, "");
}

static void cmd_resetcounters(struct session *s, const struct imap_command *cmd, const char *name)
{
	if (!no_args(s, cmd, name))
		return;
	stats_reset();
	session_reply(s, "%s OK Counters reset", cmd->tag);
	log_admin(s, name, "");
}

static void cmd_version(struct session *s, const struct imap_command *cmd, const char *name)
{
	if (!no_args(s, cmd, name))
		return;
	session_reply(s, "* XPROXY_VERSION imapgate %s", IMAPGATE_VERSION);
	session_reply(s, "%s OK Completed", cmd->tag);
	log_admin(s, name, "");
}

/* --- dispatch ---------------------------------------------------------------- */

static const struct {
	const char *name;
	admin_fn *fn;
} commands[] = {
	{ "XPROXY_DUMPICC", cmd_dumpicc },
	{ "XPROXY_NEWLOG", cmd_newlog },
	{ "XPROXY_RESETCOUNTERS", cmd_resetcounters },
	{ "XPROXY_TRACE", cmd_trace },
	{ "XPROXY_VERSION", cmd_version },
};

static int find_command(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcasecmp(name, commands[i].name) == 0)
			return (int)i;
	return -1;
}

bool admin_is_command(const char *name)
{
	return find_command(name) != -1;
}

void admin_command(struct session *s, const struct imap_command *cmd)
{
	int i = find_command(cmd->name);
	bool on = srv.cfg->enable_admin_commands;

	if (i == -1) {
		session_reply(s, "%s BAD Please login first", cmd->tag);
		s->bad_commands++;
		return;
	}
	/* The socket's peer (after PROXY), never an address from IMAP ID. */
	if (!on || !cidr_list_match(&srv.cfg->admin_allow, (const struct sockaddr *)&s->peer)) {
		/* Someone outside admin_allow trying them is worth a warning. */
		log_msg(on ? LOG_WARNING : LOG_INFO, "event=admin_refused session=%llu client=%s:%u command=%s reason=%s",
		        (unsigned long long)s->id, s->peer_ip, s->peer_port, commands[i].name,
		        on ? "not_allowed" : "disabled");
		session_reply(s, "%s BAD Unrecognized command", cmd->tag);
		s->bad_commands++;
		return;
	}
	commands[i].fn(s, cmd, commands[i].name);
}

/* --- control: trace ----------------------------------------------------------- */

/* "trace" shows who is traced; "trace USER" starts; "trace --clear" stops. */
static const char *ctl_trace(int argc, char **argv, bool json, struct strbuf *out, char *errbuf, size_t errsz)
{
	char user[USER_SHOWN];
	const char *cur;
	size_t cur_len;

	if (argc > 2)
		return "usage: trace [USER | --clear]";
	cur = trace_user(&cur_len);
	if (argc == 2 && strcmp(argv[1], "--clear") == 0) {
		if (cur) {
			log_sanitize(cur, cur_len, user, sizeof(user));
			log_info("event=trace action=disabled user=%s via=control", user);
		}
		trace_clear();
	} else if (argc == 2) {
		size_t n = strlen(argv[1]);

		if (!trace_available())
			return srv.cfg->protocol_log_filename ? "protocol_log_filename could not be opened (see the log)"
			                                       : "no protocol_log_filename configured";
		if (n > TRACE_USER_MAX)
			return "user name too long";
		if (trace_set(argv[1], n) == -1) {
			if (cur == NULL)
				return "out of memory";
			log_sanitize(cur, cur_len, user, sizeof(user));
			snprintf(errbuf, errsz, "tracing already enabled for user %s (trace --clear first)", user);
			return errbuf;
		}
		log_sanitize(argv[1], n, user, sizeof(user));
		log_info("event=trace action=enabled user=%s via=control", user);
	}
	cur = trace_user(&cur_len);
	if (cur)
		log_sanitize(cur, cur_len, user, sizeof(user));
	if (json) {
		sb_printf(out, "{\"user\":");
		if (cur)
			sb_json_str(out, user);
		else
			sb_printf(out, "null");
		sb_printf(out, ",\"file\":");
		if (trace_available())
			sb_json_str(out, trace_file());
		else
			sb_printf(out, "null");
		sb_printf(out, "}\n");
	} else if (cur == NULL) {
		sb_printf(out, "tracing nobody\n");
	} else if (trace_available()) {
		sb_printf(out, "tracing %s to %s\n", user, trace_file());
	} else {
		sb_printf(out, "tracing %s, but no trace file is open\n", user);
	}
	return NULL;
}

void admin_register_control(void)
{
	control_register("trace", ctl_trace, "protocol trace: who is traced; trace USER | trace --clear");
}
