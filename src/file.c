/*
 * file — see file.h.
 */
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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
	else if (!S_ISREG(st->st_mode))
		snprintf(err, errsz, "%s%s is not a regular file", what, path);
	else if (st->st_nlink != 1)
		snprintf(err, errsz, "%s%s has %lu hard links; remove it", what, path, (unsigned long)st->st_nlink);
	else if (st->st_uid != geteuid() && st->st_uid != uid)
		snprintf(err, errsz, "%s%s belongs to uid %lu, not to imapgate's user; remove it", what, path,
		         (unsigned long)st->st_uid);
	else
		return fd;
	close(fd);
	return -1;
}
