/*
 * pool — see pool.h.
 *
 * Ownership: an entry owns its backend socket from pool_adopt until it is
 * taken (the socket moves to the session) or closed. Entries are freed
 * only in pool_reap (before-sleep), never inside a callback: the loop may
 * still hold an event for them in the current batch.
 *
 * Lists: every live entry is on `all` (parked ones oldest first, so the
 * head is the first to evict); parked entries are also in a hash bucket by
 * user, newest first, so a login takes the warmest connection; cleaning
 * ones are in a second table of the same kind, where a login that just
 * missed its user's connection finds it (pool_wait).
 */
#include "pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "hash.h"
#include "log.h"
#include "server.h"
#include "stats.h"

#define POOL_BUCKETS 4096
#define POOL_OUT_MAX 64

enum pool_state { PC_CLEANING, PC_PARKED, PC_CLOSED };

struct pool_conn {
	struct pool_conn *prev, *next;   /* `all`, in parking order */
	struct pool_conn *bnext;         /* hash bucket: `buckets` if parked, `cleaning` if cleaning */
	struct pool_waiter *waiter;      /* the login this cleaning connection is promised to */
	enum pool_state state;
	struct conn conn;
	struct imap_track track;
	struct loop_timer timer;
	char *user;
	size_t user_len;
	uint8_t pwhash[CREDHASH_LEN];
	uint64_t login_ms, parked_ms, session_id;
	char ok_text[512];
	bool tls, unselect, deselect_sent, done_sent;
	bool ready;                      /* clean, offered to its waiter (pool_take_promised) */
	unsigned reuses;
	char out[POOL_OUT_MAX];          /* a command of ours not yet written */
	size_t out_len;
};

static struct pool_conn *all_head, *all_tail, *closed_list;
static struct pool_conn *buckets[POOL_BUCKETS], *cleaning[POOL_BUCKETS];
static unsigned n_live, n_parked;

bool pool_enabled(void)
{
	return srv.cfg->cache_size > 0 && srv.cfg->cache_expiration_time > 0;
}

unsigned pool_count(void)
{
	return n_live;
}

static uint32_t user_hash(const char *u, size_t n)
{
	return (uint32_t)(hash_keyed(u, n) % POOL_BUCKETS);
}

static void all_unlink(struct pool_conn *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		all_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		all_tail = e->prev;
	e->prev = e->next = NULL;
}

static void all_append(struct pool_conn *e)
{
	e->prev = all_tail;
	e->next = NULL;
	if (all_tail)
		all_tail->next = e;
	else
		all_head = e;
	all_tail = e;
}

static void bucket_unlink(struct pool_conn **table, struct pool_conn *e)
{
	for (struct pool_conn **pp = &table[user_hash(e->user, e->user_len)]; *pp; pp = &(*pp)->bnext)
		if (*pp == e) {
			*pp = e->bnext;
			e->bnext = NULL;
			return;
		}
}

static void bucket_push(struct pool_conn **table, struct pool_conn *e)
{
	uint32_t h = user_hash(e->user, e->user_len);

	e->bnext = table[h];
	table[h] = e;
}

/* The promise ends: the waiter is told (ready or gone) unless it left. */
static void waiter_release(struct pool_conn *e, bool ready)
{
	struct pool_waiter *w = e->waiter;

	if (w == NULL)
		return;
	e->waiter = NULL;
	e->ready = ready;
	w->done(w, ready);
	/* Not taken within done: nobody may take it through w later. */
	e->ready = false;
	w->entry = NULL;
}

static void log_user(const struct pool_conn *e, char *out, size_t outsz)
{
	log_sanitize(e->user, e->user_len, out, outsz);
}

/* Leave the pool: LOGOUT when the connection is at a command boundary
 * (best effort, not waited for), close, free later. */
static void pool_close(struct pool_conn *e, const char *reason, bool logout)
{
	char user[128];

	if (e->state == PC_CLOSED)
		return;
	log_user(e, user, sizeof(user));
	log_info("event=pool_close user=%s session=%llu reason=%s parked_ms=%llu", user,
	         (unsigned long long)e->session_id, reason,
	         (unsigned long long)(e->state == PC_PARKED ? loop_now(srv.loop) - e->parked_ms : 0));
	if (logout && conn_is_open(&e->conn) && !e->track.lost && imap_track_client_boundary(&e->track))
		(void)conn_write(&e->conn, "IGZ LOGOUT\r\n", 12);
	conn_close(srv.loop, &e->conn);
	loop_timer_stop(srv.loop, &e->timer);
	if (e->state == PC_PARKED) {
		bucket_unlink(buckets, e);
		n_parked--;
		STATS_DEC(STAT_SERVER_CONNECTIONS_RETAINED_CURRENT);
	} else {
		bucket_unlink(cleaning, e);
	}
	all_unlink(e);
	n_live--;
	e->state = PC_CLOSED;
	e->next = closed_list;
	closed_list = e;
	/* Last: the waiter goes on to a backend login, which may evict. */
	waiter_release(e, false);
}

void pool_reap(void)
{
	while (closed_list) {
		struct pool_conn *e = closed_list;

		closed_list = e->next;
		explicit_bzero(e->pwhash, sizeof(e->pwhash));
		if (e->user) {
			explicit_bzero(e->user, e->user_len);
			free(e->user);
		}
		free(e);
	}
}

static int pool_want(struct pool_conn *e)
{
	unsigned want = LOOP_READ | conn_want(&e->conn);

	if (e->out_len)
		want |= LOOP_WRITE;
	return loop_io_set(srv.loop, &e->conn.io, want);
}

/* Queue bytes of ours; written as soon as the socket takes them. */
static void pool_send_raw(struct pool_conn *e, const char *text)
{
	size_t n = strlen(text);

	if (n <= sizeof(e->out) - e->out_len) {
		memcpy(e->out + e->out_len, text, n);
		e->out_len += n;
	}
}

/* A command of ours under tag, counted as in flight. */
static void pool_send(struct pool_conn *e, const char *tag, const char *text)
{
	char line[POOL_OUT_MAX];

	snprintf(line, sizeof(line), "%s %s\r\n", tag, text);
	pool_send_raw(e, line);
	imap_track_own_command(&e->track, tag);
}

static int pool_flush_out(struct pool_conn *e)
{
	while (e->out_len) {
		ssize_t w = conn_write(&e->conn, e->out, e->out_len);

		if (w == -1)
			return errno == EAGAIN ? 0 : -1;
		memmove(e->out, e->out + w, e->out_len - (size_t)w);
		e->out_len -= (size_t)w;
	}
	return 0;
}

/* The earlier of the idle expiry and the credential's maximum age. */
static uint64_t parked_deadline(const struct pool_conn *e)
{
	uint64_t idle = e->parked_ms + (uint64_t)srv.cfg->cache_expiration_time * 1000;
	uint64_t age = e->login_ms + (uint64_t)srv.cfg->cache_max_age * 1000;

	return srv.cfg->cache_max_age && age < idle ? age : idle;
}

/* Parked connections of this user (cache_max_per_user). */
static unsigned user_parked(const struct pool_conn *e, struct pool_conn **oldest)
{
	unsigned n = 0;

	*oldest = NULL;
	for (struct pool_conn *p = buckets[user_hash(e->user, e->user_len)]; p; p = p->bnext)
		if (p->user_len == e->user_len && memcmp(p->user, e->user, e->user_len) == 0) {
			n++;
			*oldest = p; /* the bucket is newest first */
		}
	return n;
}

static void pool_park(struct pool_conn *e)
{
	uint64_t now = loop_now(srv.loop), deadline;
	struct pool_conn *old;
	char user[128];

	if (srv.cfg->cache_max_age && now - e->login_ms >= (uint64_t)srv.cfg->cache_max_age * 1000) {
		pool_close(e, "max_age", true);
		return;
	}
	imap_track_reset_session(&e->track);
	/* Promised: straight to the waiting login, never parked. */
	waiter_release(e, true);
	if (e->state != PC_CLEANING)
		return;
	if (srv.cfg->cache_max_per_user && user_parked(e, &old) >= srv.cfg->cache_max_per_user)
		pool_close(old, "max_per_user", true);
	bucket_unlink(cleaning, e);
	e->state = PC_PARKED;
	e->parked_ms = now;
	all_unlink(e);
	all_append(e);
	bucket_push(buckets, e);
	n_parked++;
	STATS_INC(STAT_SERVER_CONNECTIONS_RETAINED_CURRENT);
	deadline = parked_deadline(e);
	loop_timer_start(srv.loop, &e->timer, deadline > now ? deadline - now : 0);
	log_user(e, user, sizeof(user));
	log_info("event=pool_park user=%s session=%llu backend_tls=%s reuses=%u", user,
	         (unsigned long long)e->session_id, e->tls ? "yes" : "no", e->reuses);
}

/* Move a cleaning connection towards parked: end IDLE, wait for commands
 * in flight, deselect, check the reply. */
static void pool_step(struct pool_conn *e)
{
	struct imap_track *t = &e->track;

	if (t->bye) {
		pool_close(e, "server_bye", false);
		return;
	}
	if (t->unclean) {
		pool_close(e, t->unclean_why ? t->unclean_why : "unclean", true);
		return;
	}
	if (!imap_track_client_boundary(t)) {
		/* Half a command or literal was sent and its client is gone:
		 * nothing can complete it (filler would append garbage). */
		pool_close(e, "client_mid_command", false);
		return;
	}
	if (t->idle == TRACK_IDLE_RUNNING && !e->done_sent) {
		struct track_client_result r;

		imap_track_client(t, "DONE\r\n", 6, &r);
		pool_send_raw(e, "DONE\r\n");
		e->done_sent = true;
	}
	if (!imap_track_quiet(t))
		return;
	if (t->selected && !e->deselect_sent) {
		e->deselect_sent = true;
		/* Never CLOSE: it expunges. A failed EXAMINE deselects too. */
		pool_send(e, "IGU", e->unselect ? "UNSELECT" : "EXAMINE \"\"");
		return;
	}
	if (e->deselect_sent) {
		const char *st = t->last_status;
		bool ok = strcmp(t->last_tag, "IGU") == 0 &&
		          (e->unselect ? strcmp(st, "OK") == 0 || strcmp(st, "BAD") == 0 : strcmp(st, "NO") == 0);

		if (!ok) {
			pool_close(e, "deselect_failed", true);
			return;
		}
		t->selected = false;
	}
	pool_park(e);
}

/* Read and look at whatever the server sent; false when it is gone. */
static bool pool_read(struct pool_conn *e)
{
	char scratch[16384];

	for (;;) {
		ssize_t r = conn_read(&e->conn, scratch, sizeof(scratch));

		if (r > 0) {
			imap_track_server(&e->track, scratch, (size_t)r);
			continue;
		}
		if (r == -1 && errno == EAGAIN)
			return true;
		pool_close(e, r == 0 ? "server_closed" : "server_read_error", false);
		return false;
	}
}

static void pool_io(struct loop_io *io, unsigned ev)
{
	struct pool_conn *e = io->data;

	(void)ev;
	if (e->state == PC_CLOSED)
		return;
	if (pool_flush_out(e) == -1) {
		pool_close(e, "server_write_error", false);
		return;
	}
	if (!pool_read(e))
		return;
	if (e->state == PC_PARKED) {
		/* Parked: only untagged news (EXISTS, EXPUNGE) may come; a BYE
		 * or a tagged reply means it is no longer clean. (A line still
		 * arriving is checked again when the connection is taken.) */
		if (e->track.bye)
			pool_close(e, "server_bye", false);
		else if (e->track.unclean)
			pool_close(e, "server_unexpected", true);
	} else {
		pool_step(e);
	}
	if (e->state != PC_CLOSED) {
		if (pool_flush_out(e) == -1)
			pool_close(e, "server_write_error", false);
		else if (pool_want(e) == -1)
			pool_close(e, "epoll_error", false);
	}
}

static void pool_timeout(struct loop_timer *tm)
{
	struct pool_conn *e = tm->data;

	if (e->state == PC_CLEANING) {
		pool_close(e, "cleanup_timeout", false);
		return;
	}
	pool_close(e, loop_now(srv.loop) >= e->login_ms + (uint64_t)srv.cfg->cache_max_age * 1000 &&
	                      srv.cfg->cache_max_age ? "max_age" : "expired", true);
}

/* Does the "[CAPABILITY ...]" code of the LOGIN OK list UNSELECT? */
static bool caps_have_unselect(const char *text)
{
	const char *c = strcasestr(text, "[CAPABILITY ");
	const char *end;

	if (c == NULL)
		return false;
	c += 12;
	end = strchr(c, ']');
	return backend_caps_have(c, end ? (size_t)(end - c) : strlen(c), "UNSELECT");
}

void pool_adopt(struct conn *c, const struct imap_track *t, const struct pool_handoff *h)
{
	struct pool_conn *e = calloc(1, sizeof(*e));

	if (e == NULL || (e->user = malloc(h->user_len ? h->user_len : 1)) == NULL) {
		free(e);
		if (!t->lost && imap_track_client_boundary(t))
			(void)conn_write(c, "IGZ LOGOUT\r\n", 12);
		conn_close(srv.loop, c);
		log_err("event=pool_close reason=out_of_memory");
		return;
	}
	memcpy(e->user, h->user, h->user_len);
	e->user_len = h->user_len;
	memcpy(e->pwhash, h->pwhash, CREDHASH_LEN);
	e->login_ms = h->login_ms;
	e->session_id = h->session_id;
	e->tls = h->tls;
	e->reuses = h->reuses;
	snprintf(e->ok_text, sizeof(e->ok_text), "%s", h->ok_text ? h->ok_text : "OK Logged in");
	e->unselect = caps_have_unselect(e->ok_text);
	e->track = *t;
	e->timer.fn = pool_timeout;
	e->timer.data = e;
	/* The socket moves: its loop registration points at the old owner. */
	loop_io_del(srv.loop, &c->io);
	e->conn = *c;
	e->conn.io.fn = pool_io;
	e->conn.io.data = e;
	c->io.fd = -1;
	c->impl = NULL;
	e->state = PC_CLEANING;
	all_append(e);
	bucket_push(cleaning, e);
	n_live++;
	loop_timer_start(srv.loop, &e->timer, (uint64_t)srv.cfg->backend_timeout * 1000);
	if (!pool_enabled() || srv.shutting_down) {
		pool_close(e, "cache_off", true);
		return;
	}
	/* Bytes may already wait (TLS holds decrypted ones): look now. */
	pool_io(&e->conn.io, LOOP_READ);
}

/* The socket and its tracker move to a session; the entry is freed later. */
static void hand_over(struct pool_conn *e, struct conn *c, struct imap_track *t,
                      void (*fn)(struct loop_io *, unsigned), void *data, struct pool_taken *out)
{
	loop_timer_stop(srv.loop, &e->timer);
	loop_io_del(srv.loop, &e->conn.io);
	*c = e->conn;
	c->io.fn = fn;
	c->io.data = data;
	*t = e->track;
	out->login_ms = e->login_ms;
	out->tls = e->tls;
	out->reuses = e->reuses + 1;
	memcpy(out->ok_text, e->ok_text, sizeof(out->ok_text));
	e->conn.io.fd = -1;
	e->conn.impl = NULL;
	all_unlink(e);
	n_live--;
	e->state = PC_CLOSED;
	e->next = closed_list;
	closed_list = e;
}

bool pool_take(const char *user, size_t ulen, const uint8_t *pwhash, struct conn *c, struct imap_track *t,
               void (*fn)(struct loop_io *, unsigned), void *data, struct pool_taken *out)
{
	struct pool_conn **pp = &buckets[user_hash(user, ulen)];

	while (*pp) {
		struct pool_conn *e = *pp;

		if (e->user_len != ulen || memcmp(e->user, user, ulen) != 0 || !credhash_equal(e->pwhash, pwhash)) {
			/* Another user, or this user with another password: left alone. */
			pp = &e->bnext;
			continue;
		}
		/* Too old (limits lowered by a reload), or news since the last
		 * event: what the server sent, checked once more. */
		if (parked_deadline(e) <= loop_now(srv.loop)) {
			pool_close(e, "expired", true);
			pp = &buckets[user_hash(user, ulen)];
			continue;
		}
		if (!pool_read(e) || e->track.bye || e->track.unclean || e->track.s_mid_line) {
			if (e->state != PC_CLOSED)
				pool_close(e, e->track.bye ? "server_bye" : "server_unexpected", false);
			pp = &buckets[user_hash(user, ulen)];
			continue;
		}
		*pp = e->bnext;
		e->bnext = NULL;
		n_parked--;
		STATS_DEC(STAT_SERVER_CONNECTIONS_RETAINED_CURRENT);
		hand_over(e, c, t, fn, data, out);
		return true;
	}
	return false;
}

bool pool_wait(const char *user, size_t ulen, const uint8_t *pwhash, struct pool_waiter *w)
{
	for (struct pool_conn *e = cleaning[user_hash(user, ulen)]; e; e = e->bnext) {
		/* The same test as pool_take's: another password never waits. */
		if (e->waiter || e->user_len != ulen || memcmp(e->user, user, ulen) != 0 ||
		    !credhash_equal(e->pwhash, pwhash))
			continue;
		e->waiter = w;
		w->entry = e;
		w->cleaning_session = e->session_id;
		return true;
	}
	return false;
}

void pool_wait_cancel(struct pool_waiter *w)
{
	if (w->entry && w->entry->waiter == w)
		w->entry->waiter = NULL;
	w->entry = NULL;
}

bool pool_take_promised(struct pool_waiter *w, struct conn *c, struct imap_track *t,
                        void (*fn)(struct loop_io *, unsigned), void *data, struct pool_taken *out)
{
	struct pool_conn *e = w->entry;

	/* As pool_take: half a server line after the deselect's reply is not clean. */
	if (e == NULL || !e->ready || e->state != PC_CLEANING || e->track.s_mid_line)
		return false;
	bucket_unlink(cleaning, e);
	hand_over(e, c, t, fn, data, out);
	return true;
}

bool pool_make_room(unsigned in_use)
{
	while (in_use + n_live >= srv.cfg->cache_size) {
		struct pool_conn *e = all_head;

		while (e && e->state != PC_PARKED)
			e = e->next;
		if (e == NULL)
			return false;
		pool_close(e, "evicted", true);
	}
	return true;
}

void pool_flush(const char *reason)
{
	for (struct pool_conn *e = all_head, *n; e; e = n) {
		n = e->next;
		if (e->state == PC_PARKED)
			pool_close(e, reason, true);
	}
	/* Cleaning ones would park for the old backend (or with the cache
	 * off). Their waiters go on to a backend login, which may close other
	 * entries: hence the walk from the head, after the parked ones are
	 * gone so that no waiter takes one of those. */
	while (all_head)
		pool_close(all_head, reason, true);
}

void pool_reconfigure(void)
{
	uint64_t now = loop_now(srv.loop);

	for (struct pool_conn *e = all_head; e; e = e->next)
		if (e->state == PC_PARKED) {
			uint64_t d = parked_deadline(e);

			loop_timer_start(srv.loop, &e->timer, d > now ? d - now : 0);
		}
}

void pool_shutdown(void)
{
	while (all_head)
		pool_close(all_head, "shutdown", true);
}

unsigned pool_list(struct strbuf *out, bool json, bool comma)
{
	uint64_t now = loop_now(srv.loop);
	unsigned n = 0;

	for (struct pool_conn *e = all_head; e; e = e->next) {
		char user[128];
		const char *st = e->state == PC_PARKED ? "parked" : "cleaning";
		uint64_t since = e->state == PC_PARKED ? now - e->parked_ms : 0;
		uint64_t left = e->state == PC_PARKED && parked_deadline(e) > now ? parked_deadline(e) - now : 0;

		log_user(e, user, sizeof(user));
		if (json) {
			sb_printf(out, "%s{\"session\":%llu,\"user\":", comma || n ? "," : "", (unsigned long long)e->session_id);
			sb_json_str(out, user);
			sb_printf(out, ",\"state\":\"%s\",\"tls\":%s,\"idle_ms\":%llu,\"expires_in_ms\":%llu,\"reuses\":%u}",
			          st, e->tls ? "true" : "false", (unsigned long long)since, (unsigned long long)left,
			          e->reuses);
		} else {
			sb_printf(out, "session=%llu user=%s state=%s backend_tls=%s idle_ms=%llu expires_in_ms=%llu reuses=%u\n",
			          (unsigned long long)e->session_id, user, st, e->tls ? "yes" : "no",
			          (unsigned long long)since, (unsigned long long)left, e->reuses);
		}
		n++;
	}
	return n;
}

void pool_dump(void (*emit)(void *arg, int fd, const char *user, const char *what), void *arg)
{
	for (struct pool_conn *e = all_head; e; e = e->next) {
		char user[128];

		log_user(e, user, sizeof(user));
		emit(arg, e->conn.io.fd, user, e->state == PC_PARKED ? "Cached" : "Cleaning");
	}
}
