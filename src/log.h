/*
 * log — one line per event, to syslog or (with -F) to stderr.
 *
 * Lines are "key=value" pairs; values that come from peers go through
 * log_sanitize first. Nothing here ever sees a password.
 */
#ifndef IMAPGATE_LOG_H
#define IMAPGATE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

/* Open the log. to_stderr: write "imapgate[PID]: line" to stderr instead of
 * syslog. facility and mask as in syslog(3) (mask = highest priority kept). */
void log_open(bool to_stderr, int facility, int max_priority);
/* Change facility/mask after a reload. */
void log_reconfigure(int facility, int max_priority);

void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Log at LOG_CRIT and exit(1): start-up failures and broken invariants. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * Copy peer text for a log line: printable ASCII other than '"', '\\' and
 * space kept, everything else as \xNN; cut at outsz-1 with "..." marking
 * the cut. Always NUL-terminates.
 */
void log_sanitize(const char *in, size_t len, char *out, size_t outsz);
/* Same, but keeps spaces and '=': for text inside a quoted value. */
void log_sanitize_text(const char *in, size_t len, char *out, size_t outsz);

#endif
