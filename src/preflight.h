/*
 * preflight — what the start would trip over, found before anything is
 * bound or detached: the user to run as, the chroot, the guard's database
 * as that user will see it, the stat and trace files. imapgate -t runs the
 * same checks and prints every problem; the start refuses on any error.
 *
 * The start also creates the default state directory here (as systemd's
 * StateDirectory does), while still root.
 */
#ifndef IMAPGATE_PREFLIGHT_H
#define IMAPGATE_PREFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"

enum preflight_level { PREFLIGHT_ERROR, PREFLIGHT_WARNING, PREFLIGHT_NOTE };

typedef void (*preflight_report_fn)(void *ctx, enum preflight_level level, const char *msg);

/*
 * Every check. starting: this is the start, so create what the start
 * creates (the state directory); otherwise (-t) create nothing. Sets
 * uid and gid to the identity to run as (when it is known). Returns the
 * number of errors reported.
 */
unsigned preflight_run(const struct config *cfg, bool starting, uid_t *uid, gid_t *gid,
                       preflight_report_fn report, void *ctx);

/*
 * Become uid/gid (only that group), inside cfg->chroot_directory when it
 * is set: what the daemon does after binding, and what the checks do in a
 * child. Only when root; otherwise nothing. Returns 0, or -1 with err set.
 */
int preflight_become(const struct config *cfg, uid_t uid, gid_t gid, char *err, size_t errsz);

/*
 * Create dir (mode 0750, owned by uid:gid) if it does not exist. One that
 * exists is left as it is: never chowned. Returns 1 when created, 0 when
 * it was there, -1 with err set.
 */
int preflight_state_dir_create(const char *dir, uid_t uid, gid_t gid, char *err, size_t errsz);

#endif
