/*
 * trace — the protocol trace file and who is traced (see trace.h).
 *
 * It never sees a password: callers hand it only relayed bytes after
 * login. It never follows a symlink to open its file, and a failed write
 * is logged and otherwise ignored (tracing must not break a session).
 */
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "file.h"
#include "log.h"

static int trace_fd = -1;
static char *trace_path;        /* path trace_fd was opened at */
static dev_t trace_dev;
static ino_t trace_ino;
static char *traced;            /* the user traced, NULL for nobody */
static size_t traced_len;
static bool write_error_logged; /* one log line per run of failed writes */
static char errmsg[600];

static const char *set_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *set_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errmsg, sizeof(errmsg), fmt, ap);
	va_end(ap);
	return errmsg;
}

/* The trace file: checked as file.c does, then private to imapgate's user. */
static int open_file(const char *path, uid_t uid, gid_t gid, struct stat *st, const char **error_r)
{
	int fd = file_open_checked(path, O_WRONLY | O_APPEND, 0600, uid, "", st, errmsg, sizeof(errmsg));

	if (fd == -1) {
		*error_r = errmsg;
		return -1;
	}
	/* It holds mail: nobody else may read it, whatever mode it had. */
	if ((st->st_mode & 077) && fchmod(fd, 0600) == -1) {
		*error_r = set_err("cannot chmod %s: %s", path, strerror(errno));
		goto fail;
	}
	if (geteuid() == 0 && (uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) == -1) {
		*error_r = set_err("cannot chown %s: %s", path, strerror(errno));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

int trace_open(const char *path, uid_t uid, gid_t gid, const char **error_r)
{
	struct stat st;
	char *copy;
	int fd;

	*error_r = NULL;
	if (path == NULL) {
		trace_close();
		return 0;
	}
	/* The same name: reopen only when another file is there now (rotation).
	 * Nothing there (moved away, or not visible from a chroot): keep it. */
	if (trace_fd != -1 && strcmp(path, trace_path) == 0 &&
	    (stat(path, &st) == -1 || (st.st_dev == trace_dev && st.st_ino == trace_ino)))
		return 0;
	copy = strdup(path);
	if (copy == NULL) {
		*error_r = set_err("out of memory");
		return -1;
	}
	fd = open_file(path, uid, gid, &st, error_r);
	if (fd == -1) {
		free(copy);
		return -1;
	}
	trace_close();
	trace_fd = fd;
	trace_path = copy;
	trace_dev = st.st_dev;
	trace_ino = st.st_ino;
	write_error_logged = false;
	return 0;
}

void trace_close(void)
{
	if (trace_fd != -1)
		close(trace_fd);
	trace_fd = -1;
	free(trace_path);
	trace_path = NULL;
}

bool trace_available(void)
{
	return trace_fd != -1;
}

const char *trace_file(void)
{
	return trace_fd != -1 ? trace_path : NULL;
}

const char *trace_user(size_t *len)
{
	*len = traced_len;
	return traced;
}

/* Write one record: the header "-----> C= <epoch> <user> <what>", the data
 * (cut at TRACE_RECORD_MAX), and a PROXY record noting a cut. */
static void trace_write(uint64_t session_id, const char *user, size_t user_len, const char *what, const void *p,
                        size_t n)
{
	char who[160], head[256], note[256];
	struct iovec iov[3];
	size_t take = n > TRACE_RECORD_MAX ? TRACE_RECORD_MAX : n, total;
	long long now = (long long)time(NULL);
	int cnt = 0, hl;
	ssize_t w;

	if (trace_fd == -1)
		return;
	/* The user name is peer text: it must not break the record's line. */
	log_sanitize(user ? user : "", user ? user_len : 0, who, sizeof(who));
	if (who[0] == '\0')
		snprintf(who, sizeof(who), "Null username"); /* imapproxy's words */
	hl = snprintf(head, sizeof(head), "\n\n-----> C= %lld %s %s\n", now, who, what);
	iov[cnt].iov_base = head;
	iov[cnt++].iov_len = (size_t)hl;
	total = (size_t)hl;
	if (take) {
		iov[cnt].iov_base = (void *)p;
		iov[cnt++].iov_len = take;
		total += take;
	}
	if (take < n) {
		int nl = snprintf(note, sizeof(note), "\n\n-----> C= %lld %s PROXY: %zu more bytes of this record not traced\n",
		                  now, who, n - take);

		iov[cnt].iov_base = note;
		iov[cnt++].iov_len = (size_t)nl;
		total += (size_t)nl;
	}
	w = writev(trace_fd, iov, cnt);
	if (w == (ssize_t)total) {
		write_error_logged = false;
		return;
	}
	if (!write_error_logged) {
		write_error_logged = true;
		log_warn("event=trace_error session=%llu file=%s error=\"%s\"", (unsigned long long)session_id,
		         trace_path, w == -1 ? strerror(errno) : "short write");
	}
}

/* One side's bytes: "CLIENT: sd [fd]" or "SERVER: sd [fd]". */
static void trace_side(uint64_t session_id, const char *user, size_t user_len, const char *side, int fd,
                       const void *p, size_t n)
{
	char what[48];

	if (n == 0 || trace_fd == -1)
		return;
	snprintf(what, sizeof(what), "%s: sd [%d]", side, fd);
	trace_write(session_id, user, user_len, what, p, n);
}

int trace_set(const char *user, size_t len)
{
	char *copy;

	if (traced)
		return len == traced_len && memcmp(user, traced, len) == 0 ? 0 : -1;
	if (len == 0 || len > TRACE_USER_MAX)
		return -1;
	copy = malloc(len + 1);
	if (copy == NULL)
		return -1;
	memcpy(copy, user, len);
	copy[len] = '\0';
	traced = copy;
	traced_len = len;
	trace_write(0, traced, traced_len, "PROXY: user tracing enabled.", NULL, 0);
	return 0;
}

void trace_clear(void)
{
	if (traced == NULL)
		return;
	trace_write(0, traced, traced_len, "PROXY: user tracing disabled. Expect further output until client logout.", NULL,
	            0);
	free(traced);
	traced = NULL;
	traced_len = 0;
}

int trace_newlog(void)
{
	if (trace_fd == -1) {
		errno = EBADF;
		return -1;
	}
	/* O_APPEND: the next write goes to the new end, no lseek needed. */
	return ftruncate(trace_fd, 0);
}

bool trace_enabled_for(const char *user, size_t len)
{
	return trace_fd != -1 && traced != NULL && user != NULL && len == traced_len &&
	       memcmp(user, traced, len) == 0;
}

void trace_client(uint64_t session_id, const char *user, size_t user_len, int fd, const void *p, size_t n)
{
	trace_side(session_id, user, user_len, "CLIENT", fd, p, n);
}

void trace_server(uint64_t session_id, const char *user, size_t user_len, int fd, const void *p, size_t n)
{
	trace_side(session_id, user, user_len, "SERVER", fd, p, n);
}
