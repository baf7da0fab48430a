/*
 * file — see file.h.
 */
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* What someone with write access to the directory could have prepared. */
static int check_stat(const struct stat *st, const char *path, uid_t uid, const char *what, char *err,
                      size_t errsz)
{
	if (!S_ISREG(st->st_mode))
		snprintf(err, errsz, "%s%s is not a regular file", what, path);
	else if (st->st_nlink != 1)
		snprintf(err, errsz, "%s%s has %lu hard links; remove it", what, path, (unsigned long)st->st_nlink);
	else if (st->st_uid != geteuid() && st->st_uid != uid)
		snprintf(err, errsz, "%s%s belongs to uid %lu, not to imapgate's user; remove it", what, path,
		         (unsigned long)st->st_uid);
	else
		return 0;
	return -1;
}

int file_open_checked(const char *path, int flags, mode_t mode, uid_t uid, const char *what, struct stat *st,
                      char *err, size_t errsz)
{
	int fd = open(path, flags | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, mode);

	if (fd == -1) {
		snprintf(err, errsz, "cannot open %s%s: %s", what, path,
		         errno == ELOOP ? "it is a symbolic link" : strerror(errno));
		return -1;
	}
	if (fstat(fd, st) == -1)
		snprintf(err, errsz, "cannot stat %s: %s", path, strerror(errno));
	else if (check_stat(st, path, uid, what, err, errsz) == 0)
		return fd;
	close(fd);
	return -1;
}

void file_dir_of(const char *path, char *dir, size_t dirsz)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		snprintf(dir, dirsz, ".");
	else if (slash == path)
		snprintf(dir, dirsz, "/");
	else
		snprintf(dir, dirsz, "%.*s", (int)(slash - path), path);
}

int file_check(const char *path, uid_t uid, const char *what, char *err, size_t errsz)
{
	char dir[4096];
	struct stat st;

	if (lstat(path, &st) == 0) {
		if (S_ISLNK(st.st_mode)) {
			snprintf(err, errsz, "cannot open %s%s: it is a symbolic link", what, path);
			return -1;
		}
		if (check_stat(&st, path, uid, what, err, errsz) == -1)
			return -1;
		if (access(path, R_OK | W_OK) == -1) {
			snprintf(err, errsz, "cannot open %s%s: %s", what, path, strerror(errno));
			return -1;
		}
		return 0;
	}
	if (errno != ENOENT) {
		snprintf(err, errsz, "cannot open %s%s: %s", what, path, strerror(errno));
		return -1;
	}
	/* Missing: it is created, in a directory that must let us. */
	file_dir_of(path, dir, sizeof(dir));
	if (access(dir, W_OK | X_OK) == -1) {
		snprintf(err, errsz, "cannot create %s%s: directory %s: %s", what, path, dir, strerror(errno));
		return -1;
	}
	return 0;
}

ssize_t file_child_text(pid_t pid, int fd, int *status, char *err, size_t errsz)
{
	size_t got = 0;
	ssize_t r;
	char sink[512];

	for (;;) {
		size_t room = got + 1 < errsz ? errsz - 1 - got : 0;

		r = room ? read(fd, err + got, room) : read(fd, sink, sizeof(sink));
		if (r > 0) {
			if (room)
				got += (size_t)r;
			continue;
		}
		if (r == -1 && errno == EINTR)
			continue;
		break;
	}
	if (errsz)
		err[got] = '\0';
	close(fd);
	while (waitpid(pid, status, 0) == -1)
		if (errno != EINTR) {
			snprintf(err, errsz, "waitpid: %s", strerror(errno));
			return -1;
		}
	return (ssize_t)got;
}
