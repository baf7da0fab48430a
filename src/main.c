/*
 * main — imapgate's start, signals, reload and shutdown.
 *
 * Order at start: parse the config (all or nothing), check what the start
 * needs (preflight.c, which also creates the state directory), open the
 * log, bind the listeners, write the pidfile, drop privileges, then run
 * the loop.
 * It must never keep running as root after the listeners are bound.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "backend.h"
#include "config.h"
#include "guard_service.h"
#include "guard_share.h"
#include "control.h"
#include "listener.h"
#include "log.h"
#include "banfilter.h"
#include "firewall.h"
#include "pool.h"
#include "preflight.h"
#include "metrics.h"
#include "policy_http.h"
#include "notify.h"
#include "stats.h"
#include "tls.h"
#include "trace.h"
#include "server.h"
#include "session.h"
#include "version.h"

static struct loop_io sig_io;
static struct loop_timer shutdown_timer, probe_timer, pending_timer;
static struct loop_timer watchdog_timer, status_timer;
static struct backend probe;
static unsigned probe_tries;
static bool probe_running, accepting, notified_ready;
static const char *pidfile;

static void report_stderr(void *ctx, const char *msg)
{
	(void)ctx;
	fprintf(stderr, "%s\n", msg);
}

static void report_log(void *ctx, const char *msg)
{
	char clean[1024];

	(*(unsigned *)ctx)++;
	log_sanitize_text(msg, strlen(msg), clean, sizeof(clean));
	log_err("event=config_error error=\"%s\"", clean);
}

static void report_preflight(void *ctx, enum preflight_level level, const char *msg)
{
	(void)ctx;
	fprintf(stderr, "%s%s\n", level == PREFLIGHT_WARNING ? "warning: " : "", msg);
}

static void usage(void)
{
	fprintf(stderr, "usage: imapgate [-F] [-t] [-V] [-f CONFIG] [-p PIDFILE]\n"
	                "  -f CONFIG   configuration file (default " CONFIG_DEFAULT_PATH ")\n"
	                "  -F          stay in the foreground and log to stderr\n"
	                "  -t          check the configuration and exit (0 = good)\n"
	                "  -p PIDFILE  write the process id to PIDFILE\n"
	                "  -V          print the version and exit\n");
	exit(2);
}

/* --- service manager notifications (notify.c) -------------------------- */

#define STATUS_INTERVAL_MS 5000

static void notify_status_text(char *buf, size_t sz)
{
	snprintf(buf, sz, "STATUS=sessions=%u parked=%u bans=%llu", srv.n_sessions, pool_count(),
	         (unsigned long long)stats_get(STAT_GUARD_BANS_ACTIVE));
}

/* READY=1 (start or end of a reload) with the current status line. */
static void notify_ready(void)
{
	char st[160];

	notify_status_text(st, sizeof(st));
	notify_send("READY=1\n%s", st);
	notified_ready = true;
}

/* Every few seconds, when the numbers changed. */
static void status_tick(struct loop_timer *t)
{
	static char last[160];
	char st[160];

	notify_status_text(st, sizeof(st));
	if (strcmp(st, last) != 0) {
		notify_send("%s", st);
		memcpy(last, st, sizeof(last));
	}
	loop_timer_start(srv.loop, t, STATUS_INTERVAL_MS);
}

/* From the loop, so that a wedged loop stops the keep-alives. */
static void watchdog_tick(struct loop_timer *t)
{
	notify_send("WATCHDOG=1");
	loop_timer_start(srv.loop, t, notify_watchdog_ms());
}

static void notify_start_timers(void)
{
	if (!notify_enabled())
		return;
	status_timer.fn = status_tick;
	loop_timer_start(srv.loop, &status_timer, STATUS_INTERVAL_MS);
	if (notify_watchdog_ms()) {
		watchdog_timer.fn = watchdog_tick;
		loop_timer_start(srv.loop, &watchdog_timer, notify_watchdog_ms());
	}
}

/* --- backend probe: capabilities at start, retried as imapproxy does --- */

static void probe_start(void);

static void probe_retry(struct loop_timer *t)
{
	(void)t;
	probe_start();
}

static void probe_done(struct backend *b, enum backend_result r, const char *text)
{
	(void)text;
	probe_running = false;
	if (r == BACKEND_OK) {
		conn_close(srv.loop, &b->conn);
		backend_release(b);
		log_info("event=backend_ready host=%s port=%s tls=%s", srv.cfg->server_hostname, srv.cfg->server_port,
		         b->tls ? "yes" : "no");
	} else {
		bool retry = ++probe_tries < srv.cfg->connect_retries;
		char why[200];

		log_sanitize_text(b->detail, strlen(b->detail), why, sizeof(why));
		log_warn("event=backend_unreachable host=%s port=%s reason=%s%s%s%s %s=%u", srv.cfg->server_hostname,
		         srv.cfg->server_port, b->reason, why[0] ? " error=\"" : "", why, why[0] ? "\"" : "",
		         retry ? "retry_in" : "retries_done", retry ? srv.cfg->connect_delay : probe_tries);
		if (retry) {
			probe_timer.fn = probe_retry;
			loop_timer_start(srv.loop, &probe_timer, (uint64_t)srv.cfg->connect_delay * 1000);
		}
	}
	/* Accept once the first answer (or failure) is known, so that the
	 * greeting carries the server's capabilities. */
	if (!accepting && !srv.shutting_down) {
		accepting = true;
		listener_enable(1);
		/* Ready means a client gets its greeting now. */
		if (!notified_ready)
			notify_ready();
	}
}

static void probe_start(void)
{
	if (probe_running || srv.shutting_down)
		return;
	memset(&probe, 0, sizeof(probe));
	probe_running = true;
	backend_start(&probe, probe_done, NULL);
}

/* --- signals ------------------------------------------------------------ */

static void shutdown_deadline(struct loop_timer *t)
{
	static int stage;

	if (stage++ == 0) {
		log_info("event=shutdown_timeout sessions=%u", srv.n_sessions);
		session_shutdown_force();
		/* Give the BYEs and LOGOUTs a moment, then stop regardless. */
		loop_timer_start(srv.loop, t, 3000);
	} else {
		loop_stop(srv.loop);
	}
}

static void begin_shutdown(void)
{
	if (srv.shutting_down)
		return;
	srv.shutting_down = true;
	notify_send("STOPPING=1");
	log_info("event=shutdown sessions=%u timeout=%u", srv.n_sessions, srv.cfg->shutdown_timeout);
	listener_close_all();
	policy_stop_accepting();
	banfilter_helper_stop();
	if (probe_running) {
		backend_abort(&probe);
		probe_running = false;
	}
	loop_timer_stop(srv.loop, &probe_timer);
	session_shutdown_begin();
	pool_shutdown();
	if (srv.n_sessions == 0) {
		loop_stop(srv.loop);
		return;
	}
	shutdown_timer.fn = shutdown_deadline;
	loop_timer_start(srv.loop, &shutdown_timer, (uint64_t)srv.cfg->shutdown_timeout * 1000);
}

static void pending_wake(struct loop_timer *t)
{
	(void)t; /* only here so that epoll_wait does not sleep */
}

/* TLS contexts from cfg. On error: returns -1 with the reason in err. */
static int make_tls(const struct config *cfg, struct tls_ctx **server, struct tls_ctx **client, char *err,
                    size_t errsz)
{
	char buf[512];
	const char *e = NULL;

	*server = tls_server_ctx_new(cfg, buf, sizeof(buf), &e);
	if (*server == NULL && e) {
		snprintf(err, errsz, "%s", e);
		return -1;
	}
	if (cfg->client_tls_required && *server == NULL) {
		snprintf(err, errsz, "%s: client_tls_required: needs client_tls_cert_file (nobody could log in)",
		         cfg->path);
		return -1;
	}
	for (size_t i = 0; i < cfg->n_listen; i++)
		if ((cfg->listen[i].opts & LISTEN_OPT_TLS) && *server == NULL) {
			snprintf(err, errsz, "%s:%u: listen: the tls option needs client_tls_cert_file", cfg->path,
			         cfg->listen[i].line);
			return -1;
		}
	*client = tls_client_ctx_new(cfg, buf, sizeof(buf), &e);
	if (*client == NULL) {
		snprintf(err, errsz, "%s", e ? e : "cannot make the backend TLS context");
		tls_ctx_unref(server);
		return -1;
	}
	return 0;
}

static bool same_str(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* Keys imapproxy had that imapgate reads but does not act on. */
static void warn_unsupported(const struct config *c)
{
	if (c->enable_select_cache)
		log_warn("event=config_warning key=enable_select_cache "
		         "warning=\"the SELECT cache is not implemented: every SELECT goes to the server\"");
}

static void reload_config(void)
{
	struct config *ncfg = NULL;
	struct addrinfo *ai;
	unsigned errors = 0;

	if (config_load(srv.cfg->path, &ncfg, report_log, &errors) == -1) {
		log_err("event=reload status=failed errors=%u file=%s", errors, srv.cfg->path);
		return;
	}
	{
		struct tls_ctx *ts = NULL, *tc = NULL;
		char err[600], clean[600];

		/* A bad certificate keeps the old config, certificates included. */
		if (make_tls(ncfg, &ts, &tc, err, sizeof(err)) == -1) {
			log_sanitize_text(err, strlen(err), clean, sizeof(clean));
			log_err("event=config_error error=\"%s\"", clean);
			log_err("event=reload status=failed errors=1 file=%s", srv.cfg->path);
			config_free(&ncfg);
			return;
		}
		tls_ctx_unref(&srv.tls_server);
		tls_ctx_unref(&srv.tls_client);
		srv.tls_server = ts;
		srv.tls_client = tc;
	}
	if (listener_changed(ncfg))
		log_warn("event=reload warning=\"listen addresses change only on restart\"");
	if (!same_str(ncfg->guard_db, srv.cfg->guard_db) || ncfg->guard != srv.cfg->guard)
		log_warn("event=reload warning=\"guard and guard_db change only on restart\"");
	if (ncfg->guard_firewall != srv.cfg->guard_firewall)
		log_warn("event=reload warning=\"guard_firewall changes only on restart\"");
	if (!same_str(ncfg->control_socket, srv.cfg->control_socket))
		log_warn("event=reload warning=\"control_socket changes only on restart\"");
	if (!same_str(ncfg->proc_username, srv.cfg->proc_username) ||
	    !same_str(ncfg->proc_groupname, srv.cfg->proc_groupname) ||
	    !same_str(ncfg->chroot_directory, srv.cfg->chroot_directory))
		log_warn("event=reload warning=\"proc_username, proc_groupname and chroot_directory change only on restart\"");
	ai = server_resolve_backend(ncfg);
	{
		/* Parked connections belong to the backend they logged in to. */
		const struct config *o = srv.cfg;
		bool changed = !same_str(ncfg->server_hostname, o->server_hostname) ||
		               !same_str(ncfg->server_port, o->server_port) || ncfg->server_tls != o->server_tls ||
		               ncfg->force_tls != o->force_tls ||
		               !same_str(ncfg->auth_sasl_plain_username, o->auth_sasl_plain_username) ||
		               !same_str(ncfg->preauth_command, o->preauth_command);

		config_free(&srv.cfg);
		srv.cfg = ncfg;
		if (changed || !pool_enabled())
			pool_flush(changed ? "backend_changed" : "cache_off");
		pool_reconfigure();
	}
	if (srv.backend_ai)
		freeaddrinfo(srv.backend_ai);
	srv.backend_ai = ai;
	log_reconfigure(srv.cfg->syslog_facility, srv.cfg->syslog_prioritymask);
	{
		const char *err = NULL;

		if (stats_open(srv.cfg->stat_filename, geteuid(), getegid(), &err) == -1)
			log_warn("event=reload warning=\"stat_filename %s: %s\"", srv.cfg->stat_filename, err);
		if (metrics_open(srv.loop, srv.cfg->metrics_listen, &err) == -1)
			log_warn("event=reload warning=\"metrics_listen %s: %s\"", srv.cfg->metrics_listen, err);
		if (policy_reload(srv.cfg, &err) == -1)
			log_warn("event=reload warning=\"%s\"", err);
		if (trace_open(srv.cfg->protocol_log_filename, geteuid(), getegid(), &err) == -1)
			log_warn("event=reload warning=\"protocol_log_filename: %s\"", err);
	}
	guard_service_reload();
	firewall_reload();
	warn_unsupported(srv.cfg);
	log_info("event=reload status=ok file=%s", srv.cfg->path);
}

/* The manager is told of every reload (SIGHUP or the control command);
 * READY=1 follows whether or not the new config was taken. */
static void reload(void)
{
	struct timespec ts;
	bool tell = notified_ready && !srv.shutting_down;

	if (tell) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		notify_send("RELOADING=1\nMONOTONIC_USEC=%llu",
		            (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
	}
	reload_config();
	if (tell)
		notify_ready();
}

static void signal_io(struct loop_io *io, unsigned ev)
{
	struct signalfd_siginfo si;

	(void)ev;
	while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGHUP)
			reload();
		else
			begin_shutdown();
	}
}

static void before_sleep(void *data)
{
	(void)data;
	session_run_pending();
	session_reap();
	pool_reap();
	/* Sessions still holding decrypted TLS bytes must not wait for epoll. */
	if (srv.pending)
		loop_timer_start(srv.loop, &pending_timer, 0);
}

/* --- control commands -------------------------------------------------- */

static const char *ctl_status(int argc, char **argv, bool json, struct strbuf *out, char *errbuf, size_t errsz)
{
	(void)argc, (void)argv, (void)errbuf, (void)errsz;
	if (json) {
		sb_printf(out, "{\"version\":\"%s\",\"pid\":%ld,\"sessions\":%u,\"backend\":", IMAPGATE_VERSION,
		          (long)getpid(), srv.n_sessions);
		sb_json_str(out, srv.cfg->server_hostname);
		sb_printf(out, ",\"backend_port\":");
		sb_json_str(out, srv.cfg->server_port);
		sb_printf(out, ",\"guard\":");
		sb_json_str(out, guard_service_describe());
		sb_printf(out, ",\"policy_port\":%u,\"policy_connections\":%zu", policy_port(), policy_connections());
		guard_share_status(out, true);
		sb_printf(out, ",\"firewall\":\"%s\",\"firewall_bans\":%zu", firewall_state(), firewall_count());
		sb_printf(out, ",\"shutting_down\":%s}\n", srv.shutting_down ? "true" : "false");
		return NULL;
	}
	sb_printf(out, "version %s\npid %ld\nsessions %u\nbackend %s:%s\nguard %s\n", IMAPGATE_VERSION,
	          (long)getpid(), srv.n_sessions, srv.cfg->server_hostname, srv.cfg->server_port,
	          guard_service_describe());
	if (srv.cfg->n_policy_listen)
		sb_printf(out, "policy port %u, %zu connection(s)\n", policy_port(), policy_connections());
	guard_share_status(out, false);
	if (srv.cfg->guard_firewall == FIREWALL_NFTABLES)
		sb_printf(out, "firewall nftables %s, %zu ban(s) in the sets\n", firewall_state(), firewall_count());
	{
		struct buf b;

		buf_init(&b, STATS_PROMETHEUS_MAX);
		if (stats_format_text(&b) == 0)
			sb_printf(out, "%.*s", (int)buf_len(&b), buf_ptr(&b));
		buf_free(&b);
	}
	return NULL;
}

static void reload(void);

static const char *ctl_reload(int argc, char **argv, bool json, struct strbuf *out, char *errbuf, size_t errsz)
{
	const struct config *before = srv.cfg;

	(void)argc, (void)argv, (void)json, (void)out;
	reload();
	if (srv.cfg == before) {
		snprintf(errbuf, errsz, "configuration has errors, see the log; the old one stays in force");
		return errbuf;
	}
	return NULL;
}

/* --- process set-up ----------------------------------------------------- */

/* Started as proc_username already (a systemd User=): nothing to drop. */
static bool already_user(const struct config *cfg)
{
	const struct passwd *pw;

	if (cfg->proc_username == NULL || cfg->chroot_directory)
		return false;
	pw = getpwuid(geteuid());
	if (pw == NULL || strcmp(pw->pw_name, cfg->proc_username) != 0)
		return false;
	if (cfg->proc_groupname) {
		const struct group *gr = getgrgid(getegid());

		if (gr == NULL || strcmp(gr->gr_name, cfg->proc_groupname) != 0)
			return false;
	}
	return true;
}

static void drop_privileges(const struct config *cfg, uid_t uid, gid_t gid)
{
	if (geteuid() != 0) {
		if (already_user(cfg)) {
			log_info("event=privileges user=%s uid=%u gid=%u privileges=none_to_drop", cfg->proc_username,
			         (unsigned)geteuid(), (unsigned)getegid());
			return;
		}
		if (cfg->proc_username || cfg->chroot_directory)
			log_warn("event=privileges warning=\"not started as root: proc_username, proc_groupname "
			         "and chroot_directory are ignored\"");
		return;
	}
	{
		char err[300];

		if (preflight_become(cfg, uid, gid, err, sizeof(err)) == -1)
			fatal("event=privileges error=\"%s\"", err);
	}
	if (setuid(0) != -1)
		fatal("event=privileges error=\"could regain root after dropping it\"");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		log_warn("event=privileges warning=\"PR_SET_NO_NEW_PRIVS: %s\"", strerror(errno));
	log_info("event=privileges user=%s uid=%u gid=%u chroot=%s", cfg->proc_username, (unsigned)uid,
	         (unsigned)gid, cfg->chroot_directory ? cfg->chroot_directory : "-");
}

static void daemonize(void)
{
	pid_t pid = fork();
	int fd;

	if (pid == -1)
		fatal("event=start error=\"fork: %s\"", strerror(errno));
	if (pid > 0)
		_exit(0);
	setsid();
	pid = fork();
	if (pid == -1)
		fatal("event=start error=\"fork: %s\"", strerror(errno));
	if (pid > 0)
		_exit(0);
	if (chdir("/") == -1)
		fatal("event=start error=\"chdir /: %s\"", strerror(errno));
	fd = open("/dev/null", O_RDWR);
	if (fd != -1) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
}

static void write_pidfile(void)
{
	FILE *f;

	if (pidfile == NULL)
		return;
	f = fopen(pidfile, "w");
	if (f == NULL)
		fatal("event=start error=\"pidfile %s: %s\"", pidfile, strerror(errno));
	fprintf(f, "%ld\n", (long)getpid());
	fclose(f);
}

static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	const char *path = CONFIG_DEFAULT_PATH;
	bool foreground = false, check = false;
	sigset_t sigs;
	uid_t run_uid;
	gid_t run_gid;
	int opt, sfd;

	while ((opt = getopt(argc, argv, "f:Fp:tVh")) != -1) {
		switch (opt) {
		case 'f': path = optarg; break;
		case 'F': foreground = true; break;
		case 'p': pidfile = optarg; break;
		case 't': check = true; break;
		case 'V': printf("imapgate %s\n", IMAPGATE_VERSION); return 0;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	if (config_load(path, &srv.cfg, report_stderr, NULL) == -1) {
		fprintf(stderr, "%s: configuration not loaded\n", path);
		return 1;
	}
	{
		char err[600];
		unsigned errors = 0;

		if (make_tls(srv.cfg, &srv.tls_server, &srv.tls_client, err, sizeof(err)) == -1) {
			fprintf(stderr, "%s\n", err);
			errors++;
		}
		/* Before anything is bound or detached: a refusal here is an
		 * exit status the caller sees. */
		errors += preflight_run(srv.cfg, !check, &run_uid, &run_gid, report_preflight, NULL);
		if (errors) {
			fprintf(stderr, "%s: %u error%s, %s\n", path, errors, errors == 1 ? "" : "s",
			        check ? "imapgate would not start" : "imapgate not started");
			tls_ctx_unref(&srv.tls_server);
			tls_ctx_unref(&srv.tls_client);
			config_free(&srv.cfg);
			return 1;
		}
	}
	if (check) {
		printf("%s: configuration OK\n", path);
		tls_ctx_unref(&srv.tls_server);
		tls_ctx_unref(&srv.tls_client);
		config_free(&srv.cfg);
		return 0;
	}
	log_open(foreground, srv.cfg->syslog_facility, srv.cfg->syslog_prioritymask);
	{
		char err[300];

		/* Not fatal: the service manager notices the missing READY=1. */
		if (notify_init(err, sizeof(err)) == -1)
			log_warn("event=notify_error error=\"%s\"", err);
	}
	signal(SIGPIPE, SIG_IGN);
	/* Blocked before any thread exists (the SQLite writer), so that only
	 * the loop's signalfd ever sees them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	raise_fd_limit();
	srv.loop = loop_new();
	if (srv.loop == NULL)
		fatal("event=start error=\"epoll: %s\"", strerror(errno));
	if (listener_open_all(srv.cfg) == -1)
		fatal("event=start error=\"cannot listen on every configured address\"");
	srv.backend_ai = server_resolve_backend(srv.cfg);
	if (!foreground && !srv.cfg->foreground_mode)
		daemonize();
	write_pidfile();
	if (srv.cfg->control_socket) {
		char err[256];

		if (control_open(srv.cfg->control_socket, run_uid, run_gid, err, sizeof(err)) == -1)
			fatal("event=start error=\"control socket %s\"", err);
	}
	{
		const char *err = NULL;

		if (stats_open(srv.cfg->stat_filename, run_uid, run_gid, &err) == -1)
			fatal("event=start error=\"stat_filename %s: %s\"", srv.cfg->stat_filename, err);
		if (srv.cfg->metrics_listen && metrics_open(srv.loop, srv.cfg->metrics_listen, &err) == -1)
			fatal("event=start error=\"metrics_listen %s: %s\"", srv.cfg->metrics_listen, err);
		if (policy_open(srv.loop, srv.cfg, &err) == -1)
			fatal("event=start error=\"%s\"", err);
		/* Opened as root, kept after the drop; a debug aid, so not fatal. */
		if (trace_open(srv.cfg->protocol_log_filename, run_uid, run_gid, &err) == -1)
			log_warn("event=start warning=\"protocol_log_filename: %s\"", err);
	}
	/* The kernel drop of banned addresses may need CAP_NET_ADMIN to
	 * attach its filter, and the nftables sets need it: a small child
	 * keeps that one (banfilter.c, firewall.c). */
	if (geteuid() == 0 && run_uid != 0 && srv.cfg->guard &&
	    (srv.cfg->guard_drop_after > 0 || srv.cfg->guard_firewall == FIREWALL_NFTABLES)) {
		int fw_fd = srv.cfg->guard_firewall == FIREWALL_NFTABLES ? firewall_prepare() : -1;

		if (banfilter_helper_start(fw_fd) == -1)
			log_warn("event=ban_filter_error error=\"cannot start the helper: %s\"", strerror(errno));
	}
	drop_privileges(srv.cfg, run_uid, run_gid);
	if (guard_service_init() == -1)
		fatal("event=start error=\"cannot create the guard\"");

	sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd == -1)
		fatal("event=start error=\"signalfd: %s\"", strerror(errno));
	sig_io.fd = sfd;
	sig_io.fn = signal_io;
	loop_io_set(srv.loop, &sig_io, LOOP_READ);
	loop_set_before_sleep(srv.loop, before_sleep, NULL);
	pending_timer.fn = pending_wake;

	log_info("event=start version=%s config=%s backend=%s:%s", IMAPGATE_VERSION, srv.cfg->path,
	         srv.cfg->server_hostname, srv.cfg->server_port);
	warn_unsupported(srv.cfg);
	control_register("status", ctl_status, "counters, sessions and backend state");
	control_register("reload", ctl_reload, "re-read the configuration (as SIGHUP)");
	session_register_control();
	admin_register_control();
	control_start();
	notify_start_timers();
	probe_start();
	if (loop_run(srv.loop) == -1)
		fatal("event=loop_failed error=\"%s\"", strerror(errno));
	control_close();
	metrics_close();
	policy_close();
	session_reap();
	pool_shutdown();
	pool_reap();
	guard_service_shutdown();
	trace_close();
	if (probe_running)
		backend_abort(&probe);
	log_info("event=stop");
	notify_close();
	if (pidfile)
		(void)unlink(pidfile);
	if (srv.backend_ai)
		freeaddrinfo(srv.backend_ai);
	tls_ctx_unref(&srv.tls_server);
	tls_ctx_unref(&srv.tls_client);
	config_free(&srv.cfg);
	loop_free(&srv.loop);
	return 0;
}
