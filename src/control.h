/*
 * control — the unix control socket that imapgate-ctl talks to.
 *
 * One request per connection: the client sends one line
 * "COMMAND [ARG ...] [--json]\n"; imapgate answers "OK\n" or "ERR reason\n",
 * then the body, then closes. Handlers run in the event loop and must not
 * block.
 */
#ifndef IMAPGATE_CONTROL_H
#define IMAPGATE_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* A growing text buffer for replies (capped). */
struct strbuf {
	char *p;
	size_t len, cap;
	bool overflow;
};
void sb_printf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as a JSON string literal (quotes and escapes included). */
void sb_json_str(struct strbuf *sb, const char *s);
void sb_free(struct strbuf *sb);

/*
 * A handler gets the arguments (argv[0] is the command), json set when
 * --json was given, and fills out. Returns NULL on success, or a short
 * error text (static or in errbuf) sent as "ERR text".
 */
typedef const char *control_fn(int argc, char **argv, bool json, struct strbuf *out, char *errbuf,
                               size_t errsz);

void control_register(const char *name, control_fn *fn, const char *help);

/* Create the socket at path (mode 0600, owned by uid/gid when root).
 * Returns 0, or -1 with *err set. */
int control_open(const char *path, uid_t uid, gid_t gid, char *err, size_t errsz);
/* Start accepting (after the loop exists). */
void control_start(void);
void control_close(void);

#endif
