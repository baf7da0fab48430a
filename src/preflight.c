/*
 * preflight — see preflight.h.
 *
 * The guard's database is checked in a child that drops privileges (and
 * chroots) exactly as the daemon will, so permissions, groups, ACLs and
 * the path inside the chroot are what the kernel says, not a guess.
 */
#include "preflight.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "file.h"
#include "firewall.h"
#include "store_sqlite.h"

struct pf {
	const struct config *cfg;
	preflight_report_fn report;
	void *ctx;
	unsigned errors;
};

static void say(struct pf *pf, enum preflight_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void say(struct pf *pf, enum preflight_level level, const char *fmt, ...)
{
	char msg[1200];
	int n;
	va_list ap;

	n = snprintf(msg, sizeof(msg), "%s: ", pf->cfg->path);
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	if (level == PREFLIGHT_ERROR)
		pf->errors++;
	pf->report(pf->ctx, level, msg);
}

/* The user and group to run as: proc_username/proc_groupname when root,
 * else ourselves. user gets a name for messages. */
static int identity(const struct config *cfg, uid_t *uid, gid_t *gid, char *user, size_t usersz, char *err,
                    size_t errsz)
{
	struct passwd *pw;

	*uid = geteuid();
	*gid = getegid();
	if (*uid != 0) {
		pw = getpwuid(*uid);
		if (pw)
			snprintf(user, usersz, "%s", pw->pw_name);
		else
			snprintf(user, usersz, "%lu", (unsigned long)*uid);
		return 0;
	}
	if (cfg->proc_username == NULL) {
		snprintf(err, errsz, "proc_username: started as root: set it to the user to run as");
		return -1;
	}
	pw = getpwnam(cfg->proc_username);
	if (pw == NULL) {
		snprintf(err, errsz, "proc_username: no user %s", cfg->proc_username);
		return -1;
	}
	if (pw->pw_uid == 0) {
		snprintf(err, errsz, "proc_username: must not be root");
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	snprintf(user, usersz, "%s", cfg->proc_username);
	if (cfg->proc_groupname) {
		struct group *gr = getgrnam(cfg->proc_groupname);

		if (gr == NULL) {
			snprintf(err, errsz, "proc_groupname: no group %s", cfg->proc_groupname);
			return -1;
		}
		*gid = gr->gr_gid;
	}
	return 0;
}

int preflight_become(const struct config *cfg, uid_t uid, gid_t gid, char *err, size_t errsz)
{
	if (geteuid() != 0)
		return 0;
	if (setgroups(1, &gid) == -1 || setgid(gid) == -1) {
		snprintf(err, errsz, "setgid: %s", strerror(errno));
		return -1;
	}
	if (cfg->chroot_directory && (chroot(cfg->chroot_directory) == -1 || chdir("/") == -1)) {
		snprintf(err, errsz, "chroot %s: %s", cfg->chroot_directory, strerror(errno));
		return -1;
	}
	if (setuid(uid) == -1) {
		snprintf(err, errsz, "setuid: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int preflight_state_dir_create(const char *dir, uid_t uid, gid_t gid, char *err, size_t errsz)
{
	char parent[4096];
	int fd;

	/* Missing parents (inside a chroot_directory, say) as root, 0755, as
	 * systemd's StateDirectory makes them. */
	snprintf(parent, sizeof(parent), "%s", dir);
	for (char *p = strchr(parent + 1, '/'); p; p = strchr(p + 1, '/')) {
		*p = '\0';
		if (mkdir(parent, 0755) == -1 && errno != EEXIST) {
			snprintf(err, errsz, "cannot create %s: %s", parent, strerror(errno));
			return -1;
		}
		*p = '/';
	}
	/* 0700 until it has its owner, then 0750 */
	if (mkdir(dir, 0700) == -1) {
		if (errno == EEXIST)
			return 0; /* the admin's: never chowned */
		snprintf(err, errsz, "cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1 || fchown(fd, uid, gid) == -1 || fchmod(fd, 0750) == -1) {
		snprintf(err, errsz, "cannot give %s to uid %lu: %s", dir, (unsigned long)uid, strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
	close(fd);
	return 1;
}

/* store_sqlite_check as the daemon will run: in a child that has become
 * uid/gid inside the chroot. */
static int check_db_as(const struct config *cfg, uid_t uid, gid_t gid, const char *user, char *err, size_t errsz)
{
	int p[2], status;
	ssize_t n;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) == -1) {
		snprintf(err, errsz, "pipe: %s", strerror(errno));
		return -1;
	}
	fflush(NULL);
	pid = fork();
	if (pid == -1) {
		snprintf(err, errsz, "fork: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		char msg[1000];
		int rc;

		close(p[0]);
		rc = preflight_become(cfg, uid, gid, msg, sizeof(msg));
		if (rc == 0)
			rc = store_sqlite_check(cfg->guard_db, user, msg, sizeof(msg));
		if (rc == -1 && write(p[1], msg, strlen(msg)) < 0)
			_exit(2);
		_exit(rc == 0 ? 0 : 1);
	}
	close(p[1]);
	if ((n = file_child_text(pid, p[0], &status, err, errsz)) == -1)
		return -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (n == 0)
		snprintf(err, errsz, "the check as %s failed", user);
	return -1;
}

/* Returns false when the database check must wait: -t, and the default
 * directory that the start would create is not there yet. */
static bool state_dir(struct pf *pf, bool starting, uid_t uid, gid_t gid, const char *user)
{
	const struct config *cfg = pf->cfg;
	char dir[4096], up[4096], err[600];
	struct stat st;

	if (strcmp(cfg->guard_db, CONFIG_DEFAULT_GUARD_DB) != 0 || geteuid() != 0)
		return true;
	snprintf(dir, sizeof(dir), "%s%s", cfg->chroot_directory ? cfg->chroot_directory : "", CONFIG_STATE_DIR);
	if (starting) {
		switch (preflight_state_dir_create(dir, uid, gid, err, sizeof(err))) {
		case -1:
			say(pf, PREFLIGHT_ERROR, "guard_db %s: %s (set guard_db none to keep bans in memory only)",
			    cfg->guard_db, err);
			return false;
		case 1:
			say(pf, PREFLIGHT_NOTE, "created %s for the guard's database (owner %s, mode 0750)", dir, user);
			break;
		}
		return true;
	}
	if (stat(dir, &st) == 0 || errno != ENOENT)
		return true;
	/* The start makes it and its missing parents: the nearest existing
	 * one must be a directory. */
	snprintf(up, sizeof(up), "%s", dir);
	do {
		file_dir_of(up, err, sizeof(err));
		snprintf(up, sizeof(up), "%s", err);
	} while (stat(up, &st) == -1 && errno == ENOENT && strcmp(up, "/") != 0);
	if (stat(up, &st) == -1 || !S_ISDIR(st.st_mode)) {
		say(pf, PREFLIGHT_ERROR, "guard_db %s: cannot create %s: %s is not a directory", cfg->guard_db, dir, up);
		return false;
	}
	say(pf, PREFLIGHT_NOTE, "%s will be created at start (owner %s, mode 0750)", dir, user);
	return false;
}

unsigned preflight_run(const struct config *cfg, bool starting, uid_t *uid, gid_t *gid,
                       preflight_report_fn report, void *ctx)
{
	struct pf pf = { cfg, report, ctx, 0 };
	char user[256], err[1000];
	struct stat st;
	bool who, in_chroot = cfg->chroot_directory && geteuid() == 0;

	who = identity(cfg, uid, gid, user, sizeof(user), err, sizeof(err)) == 0;
	if (!who)
		say(&pf, PREFLIGHT_ERROR, "%s", err);
	if (geteuid() == 0 && cfg->chroot_directory) {
		const char *why = stat(cfg->chroot_directory, &st) == -1 ? strerror(errno)
		                  : !S_ISDIR(st.st_mode)                 ? "not a directory"
		                                                         : NULL;
		if (why) {
			say(&pf, PREFLIGHT_ERROR, "chroot_directory %s: %s", cfg->chroot_directory, why);
			who = false;
		}
	}
	/* Asked for persistence (the default path too): it must work, or
	 * nothing starts. guard_db none is the way to ask for memory only. */
	if (who && cfg->guard && cfg->guard_db && strcmp(cfg->guard_db, "none") != 0 &&
	    state_dir(&pf, starting, *uid, *gid, user) &&
	    check_db_as(cfg, *uid, *gid, user, err, sizeof(err)) == -1)
		say(&pf, PREFLIGHT_ERROR, "guard_db %s: %s; or set guard_db none to keep bans in memory only%s%s%s",
		    cfg->guard_db, err, in_chroot ? " (paths inside chroot_directory " : "",
		    in_chroot ? cfg->chroot_directory : "", in_chroot ? ")" : "");
	if (firewall_check(cfg, err, sizeof(err)) == -1)
		say(&pf, PREFLIGHT_ERROR, "%s", err);
	/* Opened before the privileges go, by the user starting us. */
	if (cfg->stat_filename && file_check(cfg->stat_filename, *uid, "stat file ", err, sizeof(err)) == -1)
		say(&pf, PREFLIGHT_ERROR, "stat_filename: %s", err);
	/* The start only warns about it (a debugging aid), and does so itself. */
	if (!starting && cfg->protocol_log_filename &&
	    file_check(cfg->protocol_log_filename, *uid, "", err, sizeof(err)) == -1)
		say(&pf, PREFLIGHT_WARNING, "protocol_log_filename: %s (the start goes on without a trace)", err);
	return pf.errors;
}
