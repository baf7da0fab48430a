/*
 * trace — imapproxy's protocol trace: the relayed bytes of one chosen user,
 * appended to protocol_log_filename for debugging.
 *
 * Who is traced lives in process memory (XPROXY_TRACE, "imapgate-ctl
 * trace"); a reload keeps it, a restart forgets it. Sessions decide once,
 * when their relay starts, whether they are traced (trace_enabled_for), so
 * tracing starts after login and a LOGIN line is never in the file.
 *
 * Records are imapproxy's: a header line
 *   "-----> C= <epoch> <user> CLIENT: sd [<fd>]"   (or SERVER, PROXY)
 * after a blank line, then the raw bytes. Writes are small synchronous
 * appends to a local file: acceptable for a debug feature, and only traced
 * sessions pay for them.
 */
#ifndef IMAPGATE_TRACE_H
#define IMAPGATE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Bytes of one record's data written at most; the rest is noted, not written. */
#define TRACE_RECORD_MAX (64 * 1024)
/* Longest user name that can be traced. */
#define TRACE_USER_MAX 1024

/*
 * Use the trace file at path: opened O_WRONLY|O_APPEND|O_CREAT|O_NOFOLLOW|
 * O_CLOEXEC, mode 0600 (an existing file is set to 0600), never through a
 * symlink, refused when not a regular file, with other hard links, or owned
 * by someone other than us or uid. Running as root it is given to uid:gid.
 * The same path again reopens only when another file is at path now
 * (rotation); none there keeps the open one. path NULL closes it. Returns 0, or -1 with *error_r set
 * (static until the next call) and the previous file still in use.
 * Blocks on the local file system: start-up and reload only.
 */
int trace_open(const char *path, uid_t uid, gid_t gid, const char **error_r);
void trace_close(void);
/* Is a trace file open? */
bool trace_available(void);
/* The path of the open trace file, NULL when none. */
const char *trace_file(void);

/* The traced user (NUL-terminated, *len its length) or NULL for nobody. */
const char *trace_user(size_t *len);
/* Trace user (len bytes, 1..TRACE_USER_MAX). Returns 0 (the same user again
 * too), or -1 with nothing changed: another user is traced already
 * (trace_user says who), len is out of range, or no memory. */
int trace_set(const char *user, size_t len);
/* Trace nobody; sessions already traced go on until they end, as in
 * imapproxy. */
void trace_clear(void);
/* Empty the trace file. Returns 0, or -1 with errno (no file: EBADF). */
int trace_newlog(void);

/* Should a session of this user, starting its relay now, be traced? */
bool trace_enabled_for(const char *user, size_t len);

/* One record of n bytes the client (fd) sent, or the server (fd) sent.
 * session_id only names the session in an error log line. */
void trace_client(uint64_t session_id, const char *user, size_t user_len, int fd, const void *p, size_t n);
void trace_server(uint64_t session_id, const char *user, size_t user_len, int fd, const void *p, size_t n);

/* Register the "trace" control command. */
void trace_register_control(void);

#endif
