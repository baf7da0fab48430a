/*
 * log — event lines to syslog or stderr (in the journal's form when stderr
 * is systemd's journal stream).
 *
 * Callers build "key=value" lines; this module only routes them and keeps
 * them on one line. It must never be handed a password, and it never
 * blocks on anything but the write to stderr or the syslog socket.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

static bool log_stderr = true;
static bool log_journal; /* stderr is systemd's journal stream */
static int log_maxprio = LOG_DEBUG;

/*
 * systemd sets JOURNAL_STREAM to "dev:ino" of the stream it gave as stderr.
 * Only when fd 2 still is that stream (not redirected by a wrapper) do the
 * lines go in the journal's own form.
 */
static bool stderr_is_journal(void)
{
	const char *v = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char end;

	if (v == NULL || sscanf(v, "%llu:%llu%c", &dev, &ino, &end) != 2 || fstat(2, &st) == -1)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_open(bool to_stderr, int facility, int max_priority)
{
	log_stderr = to_stderr;
	log_journal = to_stderr && stderr_is_journal();
	log_maxprio = max_priority;
	if (!to_stderr) {
		openlog("imapgate", LOG_PID | LOG_NDELAY, facility);
		setlogmask(LOG_UPTO(max_priority));
	}
}

void log_reconfigure(int facility, int max_priority)
{
	log_maxprio = max_priority;
	if (!log_stderr) {
		closelog();
		openlog("imapgate", LOG_PID | LOG_NDELAY, facility);
		setlogmask(LOG_UPTO(max_priority));
	}
}

static void log_vmsg(int prio, const char *fmt, va_list ap)
{
	char line[2048];

	if (prio > log_maxprio)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	/* One event, one line, whatever the caller formatted. */
	for (char *p = line; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	if (log_journal) {
		/* "<prio>" keeps the priority; the journal adds time, name and pid. */
		fprintf(stderr, "<%d>%s\n", prio, line);
	} else if (log_stderr) {
		/* A timestamp as syslog would add: fail2ban and people read these. */
		char ts[40];
		time_t now = time(NULL);
		struct tm tm;

		localtime_r(&now, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S%z", &tm);
		fprintf(stderr, "%s imapgate[%ld]: %s\n", ts, (long)getpid(), line);
	}
	else
		syslog(prio, "%s", line);
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(prio, fmt, ap);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_CRIT, fmt, ap);
	va_end(ap);
	exit(1);
}

static void sanitize(const char *in, size_t len, char *out, size_t outsz, bool spaces)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (outsz == 0)
		return;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		bool plain = (c > 0x20 || (spaces && c == ' ')) && c < 0x7f && c != '"' && c != '\\' &&
		             (spaces || c != '=');
		size_t need = plain ? 1 : 4;

		if (o + need + 4 > outsz) {
			if (o + 4 <= outsz) {
				memcpy(out + o, "...", 3);
				o += 3;
			}
			break;
		}
		if (plain) {
			out[o++] = (char)c;
		} else {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
}

void log_sanitize(const char *in, size_t len, char *out, size_t outsz)
{
	sanitize(in, len, out, outsz, false);
}

void log_sanitize_text(const char *in, size_t len, char *out, size_t outsz)
{
	sanitize(in, len, out, outsz, true);
}
