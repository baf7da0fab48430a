/*
 * file — open a file imapgate writes (stat file, trace file) without
 * following a symbolic link, and refuse anything someone with write access
 * to the directory could have prepared: not a regular file, hard-linked,
 * or owned by another user.
 */
#ifndef IMAPGATE_FILE_H
#define IMAPGATE_FILE_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/*
 * open(path, flags | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY |
 * O_NONBLOCK, mode), then the checks; the file may belong to the effective
 * user or to uid. what prefixes the path in messages ("stat file " or "").
 * Returns the descriptor with *st filled, or -1 with a message in err.
 */
int file_open_checked(const char *path, int flags, mode_t mode, uid_t uid, const char *what, struct stat *st,
                      char *err, size_t errsz);

/* The directory path is in: what precedes its last '/', else ".". */
void file_dir_of(const char *path, char *dir, size_t dirsz);

/*
 * What file_open_checked would refuse, without creating or opening
 * anything, for the process as it is now: a symbolic link, a file that
 * fails its checks or that we may not write, or a missing file in a
 * directory we may not create it in. Returns 0, or -1 with err set.
 */
int file_check(const char *path, uid_t uid, const char *what, char *err, size_t errsz);

/*
 * A child's say: read what it writes on fd until it closes it (into err,
 * NUL-terminated; more than errsz-1 bytes is read and dropped, so the
 * child never blocks on a full pipe), close fd, and reap pid into
 * *status. Returns the bytes kept, or -1 with err "waitpid: ...".
 */
ssize_t file_child_text(pid_t pid, int fd, int *status, char *err, size_t errsz);

#endif
