/*
 * store_sqlite — the guard's memory on disk: bans (kept after they end, so
 * their ban count can escalate the next one) and recent failures, in one
 * SQLite file in WAL mode.
 *
 * The loop thread must never wait on the disk here: it only copies an
 * event into a queue under a mutex that the writer thread holds just long
 * enough to swap buffers. The writer commits each batch in one
 * transaction, so a kill -9 loses at most what was not yet committed. When
 * the queue overflows, failure records go (oldest first, counted); ban,
 * unban and forget records never do. This file must not log: errors are
 * handed back as text.
 */
#include "store_sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "file.h"

#define SCHEMA_VERSION 3 /* 2: failures.proto; 3: failures.node */
#define PRUNE_EVERY 60 /* s */
#define RETRY_AFTER 1  /* s after a failed transaction */

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS bans ("
	" prefix TEXT PRIMARY KEY,"     /* 192.0.2.0/24, 2001:db8::/64 */
	" started INTEGER NOT NULL,"    /* unix s */
	" expiry INTEGER NOT NULL,"     /* unix s; a lifted ban's is when it was lifted */
	" ban_count INTEGER NOT NULL,"  /* place in the recidive chain */
	" source TEXT NOT NULL,"        /* auto | manual */
	" reason TEXT NOT NULL);"
	"CREATE TABLE IF NOT EXISTS failures ("
	" id INTEGER PRIMARY KEY,"
	" prefix TEXT NOT NULL,"
	" user TEXT NOT NULL,"
	" time INTEGER NOT NULL,"
	" reason TEXT NOT NULL,"
	" status TEXT NOT NULL,"        /* counted | trusted */
	" proto TEXT NOT NULL DEFAULT 'imap'," /* the door: imap, pop3, smtp, ... */
	" node TEXT NOT NULL DEFAULT '');"    /* the instance that saw it, '' = this one */
	"CREATE INDEX IF NOT EXISTS failures_prefix ON failures(prefix, time);"
	"CREATE INDEX IF NOT EXISTS failures_time ON failures(time);";

enum { ST_INS_BAN, ST_END_BAN, ST_DEL_BAN, ST_DEL_FAIL, ST_INS_FAIL, ST_PRUNE_FAIL, ST_PRUNE_BAN, ST_N };

static const char *const stmt_sql[ST_N] = {
	[ST_INS_BAN] = "INSERT OR REPLACE INTO bans(prefix, started, expiry, ban_count, source, reason)"
	               " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[ST_END_BAN] = "UPDATE bans SET expiry = ?2 WHERE prefix = ?1 AND expiry > ?2",
	[ST_DEL_BAN] = "DELETE FROM bans WHERE prefix = ?1",
	[ST_DEL_FAIL] = "DELETE FROM failures WHERE prefix = ?1",
	[ST_INS_FAIL] = "INSERT INTO failures(prefix, user, time, reason, status, proto, node)"
	                " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[ST_PRUNE_FAIL] = "DELETE FROM failures WHERE time < ?1"
	                  " AND prefix NOT IN (SELECT prefix FROM bans WHERE expiry > ?2)",
	[ST_PRUNE_BAN] = "DELETE FROM bans WHERE expiry < ?1",
};

/* One queued event, copied out of the guard's transient pointers. */
struct sq_item {
	uint64_t seq;
	uint64_t time, started, expiry;
	unsigned ban_count;
	uint8_t type, status, source;
	char prefix[ADDR_STRLEN];
	char reason[GUARD_REASON_LEN];
	char proto[GUARD_PROTO_LEN];
	char node[GUARD_NODE_LEN];
	char user[GUARD_USER_MAX + 1];
};

struct sq_ring { /* failure records: fixed size, the oldest goes when full */
	struct sq_item *v;
	size_t cap, head, n;
};

struct sq_vec { /* ban records: grows, never drops */
	struct sq_item *v;
	size_t cap, n;
};

struct store_sqlite {
	char *path;
	sqlite3 *db; /* the writer thread's once it runs */
	sqlite3_stmt *st[ST_N];
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t wake, done;
	/* Under mu: the loop fills fails/bans; the writer swaps them with its
	 * *_work pair, which only it touches outside the lock. */
	struct sq_ring fails, fails_work;
	struct sq_vec bans, bans_work;
	uint64_t seq;      /* last one given out */
	uint64_t done_seq; /* everything up to it was attempted */
	bool stop;
	uint64_t keep_failures, keep_bans;
	unsigned busy_ms;
	struct store_sqlite_stats stats;
	char error[STORE_SQLITE_ERRLEN * 2]; /* path + message */
	bool error_new;
};

static void set_err(char *err, size_t errsz, const char *path, const char *msg)
{
	if (err && errsz)
		snprintf(err, errsz, "%s: %s", path, msg);
}

static uint64_t wall_now(void)
{
	return (uint64_t)time(NULL);
}

static int exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* An older file gets the columns it lacks, each step with its version in
 * one transaction, so a crash cannot leave a column without its version.
 * Schema 1 had no proto (its failures all came through IMAP), 2 no node. */
static int migrate(sqlite3 *db, int version)
{
	if (version == 1 && exec(db, "BEGIN; ALTER TABLE failures ADD COLUMN proto TEXT NOT NULL DEFAULT 'imap';"
	                             " PRAGMA user_version=2; COMMIT") == -1)
		return -1;
	if (version >= 1 && version <= 2 &&
	    exec(db, "BEGIN; ALTER TABLE failures ADD COLUMN node TEXT NOT NULL DEFAULT '';"
	             " PRAGMA user_version=3; COMMIT") == -1)
		return -1;
	return exec(db, "PRAGMA user_version=3");
}

/* ---- the writer ------------------------------------------------------- */

static int step(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
	sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

static void bind_u64(sqlite3_stmt *st, int i, uint64_t v)
{
	sqlite3_bind_int64(st, i, v > INT64_MAX ? INT64_MAX : (sqlite3_int64)v);
}

static int apply(struct store_sqlite *s, const struct sq_item *it)
{
	sqlite3_stmt *st;

	switch (it->type) {
	case GUARD_EV_FAILURE:
		st = s->st[ST_INS_FAIL];
		bind_text(st, 1, it->prefix);
		bind_text(st, 2, it->user);
		bind_u64(st, 3, it->time);
		bind_text(st, 4, it->reason);
		bind_text(st, 5, guard_status_name(it->status));
		bind_text(st, 6, it->proto);
		bind_text(st, 7, it->node);
		return step(st);
	case GUARD_EV_BAN:
		st = s->st[ST_INS_BAN];
		bind_text(st, 1, it->prefix);
		bind_u64(st, 2, it->started);
		bind_u64(st, 3, it->expiry);
		bind_u64(st, 4, it->ban_count);
		bind_text(st, 5, guard_source_name(it->source));
		bind_text(st, 6, it->reason);
		return step(st);
	case GUARD_EV_UNBAN:
		st = s->st[ST_END_BAN];
		bind_text(st, 1, it->prefix);
		bind_u64(st, 2, it->time);
		return step(st);
	case GUARD_EV_FORGET:
		bind_text(s->st[ST_DEL_BAN], 1, it->prefix);
		bind_text(s->st[ST_DEL_FAIL], 1, it->prefix);
		return step(s->st[ST_DEL_BAN]) == 0 && step(s->st[ST_DEL_FAIL]) == 0 ? 0 : -1;
	}
	return 0;
}

/* Both queues in one transaction, merged back into event order (a forget
 * must come after the failures it forgets). */
static int write_batch(struct store_sqlite *s, const struct sq_ring *f, const struct sq_vec *b,
                       char *msg, size_t msgsz)
{
	size_t i = 0, j = 0;

	if (exec(s->db, "BEGIN IMMEDIATE") == -1)
		goto fail;
	while (i < f->n || j < b->n) {
		const struct sq_item *fi = i < f->n ? &f->v[(f->head + i) % f->cap] : NULL;
		const struct sq_item *bj = j < b->n ? &b->v[j] : NULL;
		const struct sq_item *it;
		if (fi && (!bj || fi->seq < bj->seq)) {
			it = fi;
			i++;
		} else {
			it = bj;
			j++;
		}
		if (apply(s, it) == -1)
			goto fail;
	}
	if (exec(s->db, "COMMIT") == 0)
		return 0;
fail:
	/* Taken before ROLLBACK replaces it. */
	snprintf(msg, msgsz, "write: %s", sqlite3_errmsg(s->db));
	exec(s->db, "ROLLBACK");
	return -1;
}

static int prune(struct store_sqlite *s, uint64_t now, uint64_t keep_failures, uint64_t keep_bans,
                 char *msg, size_t msgsz)
{
	sqlite3_stmt *pf = s->st[ST_PRUNE_FAIL], *pb = s->st[ST_PRUNE_BAN];

	bind_u64(pf, 1, now > keep_failures ? now - keep_failures : 0);
	bind_u64(pf, 2, now);
	bind_u64(pb, 1, now > keep_bans ? now - keep_bans : 0);
	if (exec(s->db, "BEGIN IMMEDIATE") == 0 && step(pf) == 0 && step(pb) == 0 &&
	    exec(s->db, "COMMIT") == 0)
		return 0;
	snprintf(msg, msgsz, "prune: %s", sqlite3_errmsg(s->db));
	exec(s->db, "ROLLBACK");
	return -1;
}

static void mono_deadline(struct timespec *ts, time_t secs)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += secs;
}

static bool mono_passed(const struct timespec *ts)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > ts->tv_sec || (now.tv_sec == ts->tv_sec && now.tv_nsec >= ts->tv_nsec);
}

/* Called with mu held. */
static void record_error(struct store_sqlite *s, const char *msg)
{
	snprintf(s->error, sizeof s->error, "%s: %s", s->path, msg);
	s->error_new = true;
	s->stats.errors++;
}

/* After a failed batch (mu held): its ban records go back to the head of
 * the queue, ahead of anything pushed since. */
static void requeue_bans(struct store_sqlite *s)
{
	struct sq_vec *w = &s->bans_work, *q = &s->bans;
	size_t need = w->n + q->n;

	if (need > w->cap) {
		struct sq_item *v = realloc(w->v, need * sizeof *v);
		if (!v) {
			s->stats.dropped += w->n;
			w->n = 0;
			return;
		}
		w->v = v;
		w->cap = need;
	}
	if (q->n)
		memcpy(w->v + w->n, q->v, q->n * sizeof *q->v);
	w->n = need;
	struct sq_vec t = *q;
	*q = *w;
	*w = t;
	w->n = 0;
}

static void *writer_main(void *arg)
{
	struct store_sqlite *s = arg;
	struct timespec next_prune, retry_at = {0, 0};
	bool backoff = false;

	mono_deadline(&next_prune, 0);
	pthread_mutex_lock(&s->mu);
	for (;;) {
		/* Sleep until there is work (and any backoff is over), or pruning
		 * is due, or we are told to stop. */
		while (!s->stop) {
			bool work = s->fails.n || s->bans.n;
			if (work && !backoff)
				break;
			if (mono_passed(&next_prune) && !backoff)
				break;
			if (backoff && mono_passed(&retry_at)) {
				backoff = false;
				continue;
			}
			pthread_cond_timedwait(&s->wake, &s->mu, backoff ? &retry_at : &next_prune);
		}
		bool stopping = s->stop;
		struct sq_ring tf = s->fails;
		s->fails = s->fails_work;
		s->fails_work = tf;
		struct sq_vec tb = s->bans;
		s->bans = s->bans_work;
		s->bans_work = tb;
		uint64_t upto = s->seq;
		uint64_t keep_f = s->keep_failures, keep_b = s->keep_bans;
		size_t n = s->fails_work.n + s->bans_work.n;
		pthread_mutex_unlock(&s->mu);

		char msg[STORE_SQLITE_ERRLEN], pmsg[STORE_SQLITE_ERRLEN];
		int rc = n ? write_batch(s, &s->fails_work, &s->bans_work, msg, sizeof msg) : 0;
		int prc = 0;
		if (rc == 0 && mono_passed(&next_prune)) {
			prc = prune(s, wall_now(), keep_f, keep_b, pmsg, sizeof pmsg);
			mono_deadline(&next_prune, PRUNE_EVERY);
		}

		pthread_mutex_lock(&s->mu);
		if (rc == 0) {
			s->stats.written += n;
			s->bans_work.n = 0;
		} else {
			record_error(s, msg);
			s->stats.dropped += s->fails_work.n;
			if (stopping) {
				s->stats.dropped += s->bans_work.n;
				s->bans_work.n = 0;
			} else {
				requeue_bans(s);
				backoff = true;
				mono_deadline(&retry_at, RETRY_AFTER);
			}
		}
		if (prc == -1)
			record_error(s, pmsg);
		s->fails_work.n = s->fails_work.head = 0;
		s->done_seq = upto;
		pthread_cond_broadcast(&s->done);
		if (stopping && !s->fails.n && !s->bans.n)
			break;
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ---- the loop's side ---------------------------------------------------- */

void store_sqlite_push(struct store_sqlite *s, const struct guard_event *ev)
{
	struct sq_item it;

	if ((ev->type == GUARD_EV_UNBAN && ev->expired) ||
	    (ev->type == GUARD_EV_FAILURE && ev->status != GUARD_COUNTED &&
	     ev->status != GUARD_TRUSTED))
		return;
	memset(&it, 0, sizeof it);
	it.type = (uint8_t)ev->type;
	it.time = ev->time;
	guard_cidr_format(&ev->key, it.prefix, sizeof it.prefix);
	if (ev->type == GUARD_EV_FAILURE) {
		it.status = (uint8_t)ev->status;
		snprintf(it.user, sizeof it.user, "%s", ev->user ? ev->user : "");
		snprintf(it.reason, sizeof it.reason, "%s", ev->reason ? ev->reason : "");
		snprintf(it.proto, sizeof it.proto, "%s", ev->proto ? ev->proto : "imap");
		snprintf(it.node, sizeof it.node, "%s", ev->node ? ev->node : "");
	} else if (ev->type == GUARD_EV_BAN) {
		it.started = ev->ban.started;
		it.expiry = ev->ban.expiry;
		it.ban_count = ev->ban.ban_count;
		it.source = (uint8_t)ev->ban.source;
		snprintf(it.reason, sizeof it.reason, "%s", ev->ban.reason ? ev->ban.reason : "");
	}

	pthread_mutex_lock(&s->mu);
	it.seq = ++s->seq;
	if (ev->type == GUARD_EV_FAILURE) {
		struct sq_ring *r = &s->fails;
		if (r->n < r->cap) {
			r->v[(r->head + r->n++) % r->cap] = it;
		} else {
			r->v[r->head] = it;
			r->head = (r->head + 1) % r->cap;
			s->stats.dropped++;
		}
	} else {
		struct sq_vec *b = &s->bans;
		if (b->n == b->cap) {
			size_t cap = b->cap ? b->cap * 2 : 64;
			struct sq_item *v = realloc(b->v, cap * sizeof *v);
			if (v) {
				b->v = v;
				b->cap = cap;
			}
		}
		if (b->n < b->cap)
			b->v[b->n++] = it;
		else
			s->stats.dropped++; /* out of memory: nothing else to do */
	}
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->mu);
}

void store_sqlite_event(void *ctx, const struct guard_event *ev)
{
	store_sqlite_push(ctx, ev);
}

void store_sqlite_set_retention(struct store_sqlite *s, uint64_t keep_failures, uint64_t keep_bans)
{
	pthread_mutex_lock(&s->mu);
	if (keep_failures)
		s->keep_failures = keep_failures;
	if (keep_bans)
		s->keep_bans = keep_bans;
	pthread_mutex_unlock(&s->mu);
}

int store_sqlite_sync(struct store_sqlite *s)
{
	pthread_mutex_lock(&s->mu);
	uint64_t target = s->seq, errors = s->stats.errors;
	pthread_cond_signal(&s->wake);
	while (s->done_seq < target)
		pthread_cond_wait(&s->done, &s->mu);
	int rc = s->stats.errors == errors ? 0 : -1;
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void store_sqlite_get_stats(struct store_sqlite *s, struct store_sqlite_stats *st)
{
	pthread_mutex_lock(&s->mu);
	*st = s->stats;
	st->queued = s->fails.n + s->bans.n;
	pthread_mutex_unlock(&s->mu);
}

int store_sqlite_take_error(struct store_sqlite *s, char *buf, size_t bufsz)
{
	int had;

	pthread_mutex_lock(&s->mu);
	had = s->error_new;
	if (had && bufsz)
		snprintf(buf, bufsz, "%s", s->error);
	s->error_new = false;
	pthread_mutex_unlock(&s->mu);
	return had;
}

/* ---- open, load, close ---------------------------------------------------- */

static void store_free(struct store_sqlite *s)
{
	for (int i = 0; i < ST_N; i++)
		sqlite3_finalize(s->st[i]);
	sqlite3_close(s->db);
	pthread_cond_destroy(&s->done);
	pthread_cond_destroy(&s->wake);
	pthread_mutex_destroy(&s->mu);
	free(s->fails.v);
	free(s->fails_work.v);
	free(s->bans.v);
	free(s->bans_work.v);
	free(s->path);
	free(s);
}

static int open_db(struct store_sqlite *s, char *err, size_t errsz)
{
	int fd, version = -1;
	sqlite3_stmt *st;

	/* Created here first so it gets 0600 (the -wal and -shm files follow
	 * the database's mode): failures name users. Also gives a plain errno
	 * message for a bad directory. */
	fd = open(s->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1) {
		set_err(err, errsz, s->path, strerror(errno));
		return -1;
	}
	close(fd);
	if (sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		set_err(err, errsz, s->path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
		return -1;
	}
	sqlite3_busy_timeout(s->db, (int)s->busy_ms);
	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (version > SCHEMA_VERSION) {
		set_err(err, errsz, s->path, "made by a newer imapgate (schema version)");
		return -1;
	}
	/* WAL: readers (load, a ctl tool) never block the writer; NORMAL sync
	 * in WAL keeps every commit across a process crash. */
	if (version == -1 || exec(s->db, "PRAGMA journal_mode=WAL") == -1 ||
	    exec(s->db, "PRAGMA synchronous=NORMAL") == -1 || exec(s->db, schema) == -1 ||
	    migrate(s->db, version) == -1) {
		set_err(err, errsz, s->path, sqlite3_errmsg(s->db));
		return -1;
	}
	for (int i = 0; i < ST_N; i++) {
		if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
		                       NULL) != SQLITE_OK) {
			set_err(err, errsz, s->path, sqlite3_errmsg(s->db));
			return -1;
		}
	}
	return 0;
}

int store_sqlite_open(const char *path, const struct store_sqlite_opts *o, struct store_sqlite **out,
                      char *err, size_t errsz)
{
	struct store_sqlite *s = calloc(1, sizeof *s);
	pthread_condattr_t ca;
	size_t qmax = o && o->queue_max ? o->queue_max : STORE_SQLITE_DEFAULT_QUEUE;

	if (!s) {
		set_err(err, errsz, path, "out of memory");
		return -1;
	}
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->wake, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&s->done, NULL);
	s->keep_failures = o && o->keep_failures ? o->keep_failures : 86400;
	s->keep_bans = o && o->keep_bans ? o->keep_bans : 86400;
	s->busy_ms = o && o->busy_timeout_ms ? o->busy_timeout_ms : 5000;
	s->path = strdup(path);
	s->fails.v = calloc(qmax, sizeof *s->fails.v);
	s->fails_work.v = calloc(qmax, sizeof *s->fails_work.v);
	s->fails.cap = s->fails_work.cap = qmax;
	if (!s->path || !s->fails.v || !s->fails_work.v) {
		set_err(err, errsz, path, "out of memory");
		store_free(s);
		return -1;
	}
	if (open_db(s, err, errsz) == -1) {
		store_free(s);
		return -1;
	}
	int rc = pthread_create(&s->thread, NULL, writer_main, s);
	if (rc != 0) {
		set_err(err, errsz, path, strerror(rc));
		store_free(s);
		return -1;
	}
	s->started = true;
	*out = s;
	return 0;
}

/* An existing file the writer must be able to rewrite (the database, its
 * -wal and -shm); it must exist (st from stat). */
static int check_writable(const char *file, const struct stat *st, const char *user, char *err, size_t errsz)
{
	if (!S_ISREG(st->st_mode)) {
		snprintf(err, errsz, "%s is not a regular file", file);
		return -1;
	}
	if (access(file, R_OK | W_OK) == -1) {
		snprintf(err, errsz, "%s is not writable by %s: %s (fix: chown %s %s)", file, user, strerror(errno),
		         user, file);
		return -1;
	}
	return 0;
}

int store_sqlite_check(const char *path, const char *user, char *err, size_t errsz)
{
	static const char magic[16] = "SQLite format 3";
	unsigned char head[100];
	char dir[PATH_MAX], side[PATH_MAX + 8];
	struct stat st;
	ssize_t n;
	int fd;

	file_dir_of(path, dir, sizeof dir);
	if (stat(dir, &st) == -1) {
		snprintf(err, errsz, "directory %s: %s", dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errsz, "%s is not a directory", dir);
		return -1;
	}
	/* The writer creates and removes the -wal and -shm files beside it. */
	if (access(dir, W_OK | X_OK) == -1) {
		snprintf(err, errsz, "directory %s is not writable by %s: %s (fix: chown %s %s)", dir, user,
		         strerror(errno), user, dir);
		return -1;
	}
	if (stat(path, &st) == -1) {
		if (errno == ENOENT)
			return 0; /* created at start, in a directory we may write */
		snprintf(err, errsz, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (check_writable(path, &st, user, err, errsz) == -1)
		return -1;
	for (int i = 0; i < 2; i++) {
		snprintf(side, sizeof side, "%s%s", path, i ? "-shm" : "-wal");
		if (stat(side, &st) == 0 && check_writable(side, &st, user, err, errsz) == -1)
			return -1;
	}
	/* The header alone tells a database (or an empty file, which SQLite
	 * makes one) from anything else; reading it changes nothing. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd == -1) {
		snprintf(err, errsz, "%s: %s", path, strerror(errno));
		return -1;
	}
	n = read(fd, head, sizeof head);
	close(fd);
	if (n == 0)
		return 0;
	if (n < (ssize_t)sizeof head || memcmp(head, magic, sizeof magic) != 0) {
		snprintf(err, errsz, "%s is not an SQLite database (move it away, or set guard_db to another file)",
		         path);
		return -1;
	}
	/* user_version: bytes 60-63, big-endian */
	if (((uint32_t)head[60] << 24 | (uint32_t)head[61] << 16 | (uint32_t)head[62] << 8 | head[63]) >
	    SCHEMA_VERSION) {
		snprintf(err, errsz, "%s: made by a newer imapgate (schema version)", path);
		return -1;
	}
	return 0;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t ? (const char *)t : "";
}

static uint64_t col_u64(sqlite3_stmt *st, int i)
{
	sqlite3_int64 v = sqlite3_column_int64(st, i);
	return v < 0 ? 0 : (uint64_t)v;
}

int store_sqlite_load(struct store_sqlite *s, struct guard *g, uint64_t now, char *err, size_t errsz)
{
	static const char bans_sql[] =
		"SELECT prefix, started, expiry, ban_count, source, reason FROM bans"
		" WHERE expiry > ?1 OR (ban_count > 0 AND expiry > ?2)";
	/* Counted failures still in the window, and the last GUARD_RECENT of
	 * each banned prefix; oldest first, as the guard wants them. */
	static const char fails_sql[] =
		"SELECT prefix, user, time, reason, status, proto, node FROM ("
		" SELECT *, row_number() OVER (PARTITION BY prefix ORDER BY time DESC, id DESC) AS rn"
		" FROM failures WHERE time > ?1"
		" OR prefix IN (SELECT prefix FROM bans WHERE expiry > ?2))"
		" WHERE rn <= ?3 ORDER BY time, id";
	struct guard_params p;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	const char *what = NULL;
	int rc;

	guard_get_params(g, &p);
	if (sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		goto sqlerr;
	sqlite3_busy_timeout(db, (int)s->busy_ms);

	if (sqlite3_prepare_v2(db, bans_sql, -1, &st, NULL) != SQLITE_OK)
		goto sqlerr;
	bind_u64(st, 1, now);
	bind_u64(st, 2, now > p.recidive_window ? now - p.recidive_window : 0);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct guard_ban_info b = {0};
		const char *why;
		if (cidr_parse(col_text(st, 0), &b.key, &why) == -1)
			continue; /* not ours; nothing to restore */
		b.started = col_u64(st, 1);
		b.expiry = col_u64(st, 2);
		b.ban_count = (unsigned)col_u64(st, 3);
		b.source = strcmp(col_text(st, 4), "manual") == 0 ? GUARD_SRC_MANUAL : GUARD_SRC_AUTO;
		b.reason = col_text(st, 5);
		if (guard_restore_ban(g, &b, now) == -1) {
			what = "out of memory";
			goto fail;
		}
	}
	if (rc != SQLITE_DONE)
		goto sqlerr;
	sqlite3_finalize(st);

	if (sqlite3_prepare_v2(db, fails_sql, -1, &st, NULL) != SQLITE_OK)
		goto sqlerr;
	bind_u64(st, 1, now > p.findtime ? now - p.findtime : 0);
	bind_u64(st, 2, now);
	sqlite3_bind_int(st, 3, GUARD_RECENT);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct cidr key;
		const char *why;
		if (cidr_parse(col_text(st, 0), &key, &why) == -1)
			continue;
		enum guard_status status =
			strcmp(col_text(st, 4), "trusted") == 0 ? GUARD_TRUSTED : GUARD_COUNTED;
		if (guard_restore_failure(g, &key, col_text(st, 1), col_u64(st, 2), col_text(st, 3),
		                          col_text(st, 5), status, now) == -1) {
			what = "out of memory";
			goto fail;
		}
		guard_restore_failure_node(g, &key, col_text(st, 6));
	}
	if (rc != SQLITE_DONE)
		goto sqlerr;
	sqlite3_finalize(st);
	sqlite3_close(db);
	return 0;

sqlerr:
	what = db ? sqlite3_errmsg(db) : "out of memory";
fail:
	set_err(err, errsz, s->path, what);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return -1;
}

int store_sqlite_close(struct store_sqlite **sp, char *err, size_t errsz)
{
	struct store_sqlite *s = sp ? *sp : NULL;
	int rc = 0;

	if (!s)
		return 0;
	if (s->started) {
		pthread_mutex_lock(&s->mu);
		uint64_t errors = s->stats.errors;
		s->stop = true;
		pthread_cond_signal(&s->wake);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->thread, NULL);
		if (s->stats.errors != errors) {
			if (err && errsz)
				snprintf(err, errsz, "%s", s->error);
			rc = -1;
		}
	}
	store_free(s);
	*sp = NULL;
	return rc;
}
