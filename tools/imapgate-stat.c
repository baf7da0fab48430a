/*
 * imapgate-stat — show the counters of a running imapgate, like
 * imapproxy's pimpstat: live in the terminal, refreshed every second, or
 * once as plain text with -c.
 *
 * It finds the stat file through the daemon's configuration (-f, or -s to
 * name the file directly), maps it read-only and never writes to it. It
 * must never leave the terminal in raw mode or on the alternate screen,
 * whatever way it exits (q, Ctrl-C, SIGTERM, Ctrl-Z, an error), and never
 * die of SIGBUS when the daemon recreates the file under it.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "stats.h"

#define SCREEN_MAX 65536

static const char *prog = "imapgate-stat";

static void usage(void)
{
	fprintf(stderr,
	        "usage: %s [-f CONFIG] [-c] [-s STATFILE]\n"
	        "  -f CONFIG    configuration naming stat_filename (default %s)\n"
	        "  -s STATFILE  read this stat file; the configuration is not read\n"
	        "  -c           print the counters once as text and exit\n"
	        "Without -c the counters are shown live, refreshed every second; q quits.\n",
	        prog, CONFIG_DEFAULT_PATH);
	exit(2);
}

static void report(void *ctx, const char *msg)
{
	(void)ctx;
	fprintf(stderr, "%s: %s\n", prog, msg);
}

/* The stat file named by the configuration, or NULL (message printed). */
static char *stat_path_from_config(const char *conf)
{
	struct config *cfg = NULL;
	char *path;

	if (config_load(conf, &cfg, report, NULL) == -1) {
		fprintf(stderr, "%s: cannot use the configuration %s to find the stat file (-s STATFILE names it)\n",
		        prog, conf);
		return NULL;
	}
	if (cfg->stat_filename == NULL || cfg->stat_filename[0] == '\0') {
		fprintf(stderr, "%s: %s sets no stat_filename: the daemon keeps no stat file\n", prog, conf);
		config_free(&cfg);
		return NULL;
	}
	path = strdup(cfg->stat_filename);
	config_free(&cfg);
	if (path == NULL)
		fprintf(stderr, "%s: out of memory\n", prog);
	return path;
}

/* ------------------------------------------------------------------ */
/* Reading the mapping safely                                           */

static sigjmp_buf bus_jmp;
static volatile sig_atomic_t bus_armed;

static void on_sigbus(int sig)
{
	if (bus_armed)
		siglongjmp(bus_jmp, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Copy the values; false when the file shrank under the mapping. */
static bool snapshot(const struct stats_view *v, struct stats_snapshot *s)
{
	if (sigsetjmp(bus_jmp, 1)) {
		bus_armed = 0;
		return false;
	}
	bus_armed = 1;
	stats_view_snapshot(v, s);
	bus_armed = 0;
	return true;
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* ------------------------------------------------------------------ */
/* -c                                                                   */

static int print_once(const char *path)
{
	struct stats_view v;
	struct stats_snapshot s;
	struct buf b;
	const char *err;
	int rc = 0;

	if (stats_view_open(path, &v, &err) == -1) {
		fprintf(stderr, "%s: %s\n", prog, err);
		return 1;
	}
	if (!snapshot(&v, &s)) {
		fprintf(stderr, "%s: %s changed while being read; try again\n", prog, path);
		stats_view_close(&v);
		return 1;
	}
	stats_view_close(&v);
	buf_init(&b, SCREEN_MAX);
	if (stats_format_text_snapshot(&s, time(NULL), &b) == -1) {
		fprintf(stderr, "%s: out of memory\n", prog);
		rc = 1;
	} else {
		write_all(STDOUT_FILENO, buf_ptr(&b), buf_len(&b));
	}
	buf_free(&b);
	if (s.n_file > STAT_COUNT)
		fprintf(stderr, "%s: the file has %zu more counters than this imapgate-stat knows\n", prog,
		        s.n_file - STAT_COUNT);
	return rc;
}

/* ------------------------------------------------------------------ */
/* The live screen                                                      */

#define ENTER_SCREEN "\033[?1049h\033[?25l\033[H\033[2J"
#define LEAVE_SCREEN "\033[?25h\033[?1049l"

static struct termios saved_tio;
static bool have_tio;
static volatile sig_atomic_t screen_on;
static volatile sig_atomic_t quit_sig;
static volatile sig_atomic_t redraw;

/* Async-signal-safe: called from handlers too. */
static void screen_leave(void)
{
	if (!screen_on)
		return;
	if (have_tio)
		(void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
	write_all(STDOUT_FILENO, LEAVE_SCREEN, sizeof(LEAVE_SCREEN) - 1);
	screen_on = 0;
}

static void screen_enter(void)
{
	if (have_tio) {
		struct termios raw = saved_tio;

		/* Keys without Enter and without echo; ISIG stays so Ctrl-C
		 * and Ctrl-Z still send signals. */
		raw.c_lflag &= (tcflag_t) ~(ICANON | ECHO);
		raw.c_cc[VMIN] = 1;
		raw.c_cc[VTIME] = 0;
		(void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw);
	}
	write_all(STDOUT_FILENO, ENTER_SCREEN, sizeof(ENTER_SCREEN) - 1);
	screen_on = 1;
}

static void on_quit(int sig)
{
	quit_sig = sig;
}

static void on_winch(int sig)
{
	(void)sig;
	redraw = 1;
}

static void on_tstp(int sig)
{
	int saved_errno = errno;
	sigset_t set;

	/* Give the terminal back, stop for real, take it again on SIGCONT. */
	screen_leave();
	signal(sig, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(sig);
	/* Continued. */
	signal(sig, on_tstp);
	screen_enter();
	redraw = 1;
	errno = saved_errno;
}

static void handle(int sig, void (*fn)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: poll must return on a signal */
	sigaction(sig, &sa, NULL);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void fmt_time(uint64_t t, char *out, size_t outsz)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t == 0 || localtime_r(&tt, &tm) == NULL || strftime(out, outsz, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(out, outsz, "-");
}

static void fmt_span(uint64_t s, char *out, size_t outsz)
{
	snprintf(out, outsz, "%" PRIu64 "d %02u:%02u:%02u", s / 86400, (unsigned)(s % 86400 / 3600),
	         (unsigned)(s % 3600 / 60), (unsigned)(s % 60));
}

struct live {
	const char *path;
	struct stats_view v;
	bool open;
	char err[600];
	struct stats_snapshot prev;
	uint64_t prev_ms;
	bool have_prev;
};

/* Keep the view on the file now at path: the daemon may have recreated it. */
static void live_remap(struct live *L)
{
	struct stat st;
	const char *err;

	if (stat(L->path, &st) == -1) {
		snprintf(L->err, sizeof(L->err), "cannot stat %s: %s", L->path, strerror(errno));
		if (L->open)
			stats_view_close(&L->v);
		L->open = false;
		return;
	}
	if (L->open && st.st_dev == L->v.dev && st.st_ino == L->v.ino && (size_t)st.st_size == L->v.len)
		return;
	if (L->open)
		stats_view_close(&L->v);
	L->open = stats_view_open(L->path, &L->v, &err) == 0;
	L->have_prev = false;
	if (!L->open)
		snprintf(L->err, sizeof(L->err), "%s", err);
}

/* Append one screen line, cut to the width, unless the screen is full. */
static void line(struct buf *b, unsigned *row, unsigned rows, unsigned cols, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static void line(struct buf *b, unsigned *row, unsigned rows, unsigned cols, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	if (*row >= rows)
		return;
	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(tmp))
		n = sizeof(tmp) - 1;
	if ((unsigned)n > cols)
		n = (int)cols;
	/* No newline after the last row: it would scroll the screen. */
	if (*row > 0)
		buf_append(b, "\r\n", 2);
	buf_append(b, tmp, (size_t)n);
	buf_append(b, "\033[K", 3);
	(*row)++;
}

static void live_draw(struct live *L)
{
	struct winsize ws;
	unsigned rows = 24, cols = 80, row = 0;
	struct stats_snapshot s;
	char now_s[32], start_s[32], since_s[32], up_s[32], cnt_s[32];
	uint64_t now = (uint64_t)time(NULL), ms = mono_ms();
	struct buf b;

	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
		rows = ws.ws_row;
		cols = ws.ws_col;
	}
	buf_init(&b, SCREEN_MAX);
	buf_append(&b, "\033[H", 3);
	fmt_time(now, now_s, sizeof(now_s));
	live_remap(L);
	if (L->open && !snapshot(&L->v, &s)) {
		snprintf(L->err, sizeof(L->err), "%s changed while being read", L->path);
		stats_view_close(&L->v);
		L->open = false;
	}
	if (!L->open) {
		line(&b, &row, rows, cols, "imapgate-stat  %s  %s", L->path, now_s);
		line(&b, &row, rows, cols, "%s", "");
		line(&b, &row, rows, cols, "%s", L->err);
		line(&b, &row, rows, cols, "%s", "retrying every second; q quits");
		goto out;
	}
	fmt_time(s.start_time, start_s, sizeof(start_s));
	fmt_time(s.count_time, since_s, sizeof(since_s));
	fmt_span(now > s.start_time ? now - s.start_time : 0, up_s, sizeof(up_s));
	fmt_span(now > s.count_time ? now - s.count_time : 0, cnt_s, sizeof(cnt_s));
	line(&b, &row, rows, cols, "imapgate-stat  %s  pid %" PRIu32 "  %s   q quits", L->path, s.pid, now_s);
	line(&b, &row, rows, cols, "started %s (up %s)  counting since %s (%s)", start_s, up_s, since_s, cnt_s);
	line(&b, &row, rows, cols, "%-38s %16s %10s  %s", "", "value", "per sec", "");
	for (size_t i = 0; i < s.n; i++) {
		char rate[32] = "";

		if (stats_kind((enum stat_id)i) == STAT_KIND_COUNTER && L->have_prev && ms > L->prev_ms) {
			if (s.v[i] >= L->prev.v[i])
				snprintf(rate, sizeof(rate), "%.1f",
				         (double)(s.v[i] - L->prev.v[i]) * 1000.0 / (double)(ms - L->prev_ms));
			else
				snprintf(rate, sizeof(rate), "reset");
		}
		line(&b, &row, rows, cols, "%-38s %16" PRIu64 " %10s  %s", stats_name((enum stat_id)i), s.v[i], rate,
		     stats_help((enum stat_id)i));
	}
	if (s.n_file > STAT_COUNT)
		line(&b, &row, rows, cols, "(%zu more counters from a newer imapgate)", s.n_file - STAT_COUNT);
	L->prev = s;
	L->prev_ms = ms;
	L->have_prev = true;
out:
	buf_append(&b, "\033[J", 3);
	write_all(STDOUT_FILENO, buf_ptr(&b), buf_len(&b));
	buf_free(&b);
}

static int run_live(const char *path)
{
	struct live L;
	struct stats_view probe;
	const char *err;
	bool tty_in = isatty(STDIN_FILENO);

	/* Fail early and plainly when there is nothing to show yet. */
	if (stats_view_open(path, &probe, &err) == -1) {
		fprintf(stderr, "%s: %s\n", prog, err);
		return 1;
	}
	memset(&L, 0, sizeof(L));
	L.path = path;
	L.v = probe;
	L.open = true;

	if (tty_in && tcgetattr(STDIN_FILENO, &saved_tio) == 0)
		have_tio = true;
	handle(SIGINT, on_quit);
	handle(SIGTERM, on_quit);
	handle(SIGHUP, on_quit);
	handle(SIGWINCH, on_winch);
	handle(SIGTSTP, on_tstp);
	atexit(screen_leave);
	screen_enter();

	while (!quit_sig) {
		uint64_t next = mono_ms() + 1000;

		redraw = 0;
		live_draw(&L);
		while (!quit_sig && !redraw) {
			uint64_t now = mono_ms();
			struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
			int n;

			if (now >= next)
				break;
			n = poll(&pfd, tty_in ? 1 : 0, (int)(next - now));
			if (n > 0 && (pfd.revents & (POLLIN | POLLHUP))) {
				char c;
				ssize_t r = read(STDIN_FILENO, &c, 1);

				if (r == 1 && (c == 'q' || c == 'Q' || c == 3))
					quit_sig = SIGINT;
				else if (r == 0) /* the terminal went away */
					quit_sig = SIGHUP;
				else if (r == 1 && (c == 'r' || c == 12)) /* r, Ctrl-L */
					redraw = 1;
			}
		}
	}
	screen_leave();
	if (L.open)
		stats_view_close(&L.v);
	return 0;
}

int main(int argc, char **argv)
{
	const char *conf = CONFIG_DEFAULT_PATH, *statfile = NULL;
	char *path;
	bool once = false;
	int c, rc;

	while ((c = getopt(argc, argv, "f:s:ch")) != -1) {
		switch (c) {
		case 'f': conf = optarg; break;
		case 's': statfile = optarg; break;
		case 'c': once = true; break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	signal(SIGBUS, on_sigbus);
	path = statfile ? strdup(statfile) : stat_path_from_config(conf);
	if (path == NULL)
		return 1;
	rc = once ? print_once(path) : run_live(path);
	free(path);
	return rc;
}
