/*
 * imap_track — see imap_track.h. The rule throughout: when in doubt, mark
 * the stream unclean; an unclean connection is logged out and closed
 * instead of parked, which costs one backend login and never a leak.
 */
#include "imap_track.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Commands that leave nothing behind on the connection once completed
 * (SELECT/EXAMINE are undone by a deselect before parking). */
static const char *const safe_commands[] = {
	"APPEND", "CAPABILITY", "CHECK", "CLOSE", "COPY", "CREATE", "DELETE", "DELETEACL", "ESEARCH", "EXAMINE",
	"EXPUNGE", "FETCH", "GETACL", "GETMETADATA", "GETQUOTA", "GETQUOTAROOT", "ID", "IDLE", "LIST",
	"LISTRIGHTS", "LSUB", "MOVE", "MYRIGHTS", "NAMESPACE", "NOOP", "RENAME", "SEARCH", "SELECT", "SETACL",
	"SETMETADATA", "SETQUOTA", "SORT", "STATUS", "STORE", "SUBSCRIBE", "THREAD", "UNSELECT", "UNSUBSCRIBE",
	"XLIST",
};

/* Commands that take no arguments: a literal after them is not theirs. */
static const char *const no_arg_commands[] = {
	"CAPABILITY", "CHECK", "CLOSE", "EXPUNGE", "IDLE", "LOGOUT", "NAMESPACE", "NOOP", "UNSELECT",
};

static const char *const safe_uid_commands[] = {
	"COPY", "EXPUNGE", "FETCH", "MOVE", "SEARCH", "SORT", "STORE", "THREAD",
};

static bool word_in(const char *w, size_t wl, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(list[i]) == wl && strncasecmp(list[i], w, wl) == 0)
			return true;
	return false;
}

static bool word_eq(const char *w, size_t wl, const char *s)
{
	return strlen(s) == wl && strncasecmp(s, w, wl) == 0;
}

void imap_track_set_unclean(struct imap_track *t, const char *why)
{
	if (!t->unclean)
		t->unclean_why = why;
	t->unclean = true;
}

void imap_track_init(struct imap_track *t)
{
	memset(t, 0, sizeof(*t));
}

void imap_track_reset_session(struct imap_track *t)
{
	t->selected = false;
	t->idle = TRACK_IDLE_NO;
	t->last_tag[0] = '\0';
	t->last_status[0] = '\0';
	t->c_tag[0] = '\0';
}

bool imap_track_client_boundary(const struct imap_track *t)
{
	return (!t->c_mid_line || t->c_in_head) && t->c_literal == 0 && !t->c_await_plus;
}

bool imap_track_quiet(const struct imap_track *t)
{
	return t->in_flight == 0 && !t->s_mid_line && t->s_literal == 0 && !t->c_mid_line && t->c_literal == 0 &&
	       !t->c_await_plus && t->idle == TRACK_IDLE_NO;
}

void imap_track_drop_held(struct imap_track *t)
{
	if (t->c_in_head) {
		t->c_in_head = false;
		t->c_mid_line = false;
		t->c_head_len = 0;
		t->c_tail_len = 0;
	}
}

void imap_track_own_command(struct imap_track *t, const char *tag)
{
	t->in_flight++;
	snprintf(t->c_tag, sizeof(t->c_tag), "%s", tag);
}

/* Keep the last bytes of a line (without its LF) to look for "{n}". */
static void tail_add(char *tail, unsigned *tl, size_t cap, const char *p, size_t n)
{
	if (n >= cap) {
		memcpy(tail, p + n - cap, cap);
		*tl = (unsigned)cap;
		return;
	}
	if (*tl + n > cap) {
		size_t drop = *tl + n - cap;

		memmove(tail, tail + drop, *tl - drop);
		*tl -= (unsigned)drop;
	}
	memcpy(tail + *tl, p, n);
	*tl += (unsigned)n;
}

/* Does the line (tail, the last cap bytes of it) end in a literal
 * announcement? 1: yes, *plus for "{n+}"; 0: no; -1: it may, but the size
 * cannot be read (the '{' fell off the tail, or it overflows). Like
 * Dovecot: any number of digits, "{}" is 0. */
static int tail_literal(const char *tail, unsigned tl, size_t cap, uint64_t *n, bool *plus)
{
	unsigned i = tl, end;
	uint64_t v = 0;

	*plus = false;
	if (i > 0 && tail[i - 1] == '\r')
		i--;
	if (i == 0 || tail[i - 1] != '}')
		return 0;
	i--;
	if (i > 0 && tail[i - 1] == '+') {
		*plus = true;
		i--;
	}
	end = i;
	while (i > 0 && tail[i - 1] >= '0' && tail[i - 1] <= '9')
		i--;
	if (i == 0)
		return tl == cap ? -1 : 0;
	if (tail[i - 1] != '{')
		return 0;
	for (; i < end; i++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(tail[i] - '0');
	}
	*n = v;
	return 1;
}

/* Split "word" off p (up to SP, CR or LF); returns its length. */
static size_t word_len(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && p[i] != ' ' && p[i] != '\r' && p[i] != '\n')
		i++;
	return i;
}

/* A tag imapgate may answer: ASTRING-CHARs but '+'. */
static bool tag_valid(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\+", c) != NULL)
			return false;
	}
	return true;
}

/* The head of a client line is complete (LF seen or head full): what is it? */
static void client_classify(struct imap_track *t, bool line_done, struct track_client_result *r)
{
	const char *h = t->c_head;
	size_t n = t->c_head_len, tl, cl, at;
	const char *cmd;

	t->c_in_head = false;
	t->c_args = false;
	if (t->idle != TRACK_IDLE_NO) {
		size_t l = word_len(h, n);

		if (line_done && word_eq(h, l, "DONE")) {
			/* IDLE's end: a continuation, not a command. */
			t->idle = TRACK_IDLE_NO;
			return;
		}
	}
	tl = word_len(h, n);
	if (tl == 0 || tl > TRACK_TAG_MAX || tl >= n || h[tl] != ' ') {
		imap_track_set_unclean(t, "malformed_command");
		t->in_flight++;
		return;
	}
	memcpy(t->c_tag, h, tl);
	t->c_tag[tl] = '\0';
	cmd = h + tl + 1;
	at = tl + 1;
	cl = word_len(cmd, n - at);
	t->c_args = !word_in(cmd, cl, no_arg_commands, sizeof(no_arg_commands) / sizeof(no_arg_commands[0]));
	if (at + cl >= n && !line_done) {
		/* The head filled up inside the command word. */
		imap_track_set_unclean(t, "command_too_long");
		t->in_flight++;
		return;
	}
	if (word_eq(cmd, cl, "LOGOUT") && !t->unclean && line_done && tag_valid(h, tl) &&
	    (n - at - cl == 1 || (n - at - cl == 2 && cmd[cl] == '\r'))) {
		r->logout = true;
		r->logout_len = n;
		memcpy(r->logout_tag, t->c_tag, tl + 1);
		return;
	}
	t->in_flight++;
	if (word_eq(cmd, cl, "SELECT") || word_eq(cmd, cl, "EXAMINE")) {
		t->selected = true;
	} else if (word_eq(cmd, cl, "IDLE")) {
		t->idle = TRACK_IDLE_SENT;
	} else if (word_eq(cmd, cl, "COMPRESS")) {
		/* Everything after the server's OK is deflate: stop reading. */
		imap_track_set_unclean(t, "compress");
		t->lost = true;
	} else if (word_eq(cmd, cl, "UID")) {
		const char *sub = cmd + cl + 1;
		size_t sl = at + cl + 1 <= n ? word_len(sub, n - at - cl - 1) : 0;

		if (!word_in(sub, sl, safe_uid_commands, sizeof(safe_uid_commands) / sizeof(safe_uid_commands[0])))
			imap_track_set_unclean(t, "uid_command");
	} else if (word_eq(cmd, cl, "ENABLE")) {
		imap_track_set_unclean(t, "enable");
	} else if (!word_in(cmd, cl, safe_commands, sizeof(safe_commands) / sizeof(safe_commands[0]))) {
		imap_track_set_unclean(t, "command");
	}
}

/* A client line ended (LF seen): a literal may follow, else the line is over. */
static void client_line_end(struct imap_track *t)
{
	uint64_t lit;
	bool plus;
	int k = tail_literal(t->c_tail, t->c_tail_len, sizeof(t->c_tail), &lit, &plus);

	if (k < 0)
		imap_track_set_unclean(t, "literal_size");
	if (k > 0 && plus) {
		/* A command without arguments never reads it: Dovecot skips
		 * the rest of the line and takes the literal for commands. */
		if (!t->c_args)
			imap_track_set_unclean(t, "nonsync_literal");
		t->c_nonsync = true;
	}
	if (k > 0) {
		t->c_literal = lit;
		t->c_await_plus = !plus;
		t->c_mid_line = true; /* the command goes on after the literal */
	} else {
		t->c_mid_line = false;
	}
	t->c_tail_len = 0;
}

void imap_track_client(struct imap_track *t, const char *p, size_t n, struct track_client_result *r)
{
	size_t i = 0;

	memset(r, 0, sizeof(*r));
	while (i < n && !t->lost) {
		const char *seg = p + i, *lf;
		size_t sl;

		if (t->c_await_plus) {
			/* Sent without waiting for "+": the server may refuse the
			 * command after these bytes were counted as its literal. */
			imap_track_set_unclean(t, "literal_before_plus");
			t->c_await_plus = false;
		}
		if (t->c_literal) {
			size_t take = (uint64_t)(n - i) < t->c_literal ? n - i : (size_t)t->c_literal;

			t->c_literal -= take;
			i += take;
			continue;
		}
		if (!t->c_mid_line) {
			t->c_mid_line = true;
			t->c_in_head = true;
			t->c_head_len = 0;
			t->c_tail_len = 0;
		}
		lf = memchr(seg, '\n', n - i);
		sl = lf ? (size_t)(lf - seg) + 1 : n - i;
		if (t->c_in_head) {
			size_t room = TRACK_HEAD_MAX - t->c_head_len, take = sl < room ? sl : room;

			memcpy(t->c_head + t->c_head_len, seg, take);
			t->c_head_len += (unsigned)take;
			if (lf && take == sl)
				client_classify(t, true, r);
			else if (t->c_head_len == TRACK_HEAD_MAX)
				client_classify(t, false, r);
		}
		tail_add(t->c_tail, &t->c_tail_len, sizeof(t->c_tail), seg, lf ? sl - 1 : sl);
		i += sl;
		if (lf)
			client_line_end(t);
		if (r->logout) {
			/* The LOGOUT line is not the server's: it ends here. */
			t->c_mid_line = false;
			r->used = i;
			return;
		}
	}
	r->used = n;
	r->hold = t->c_in_head ? t->c_head_len : 0;
}

/* The head of a server line is known: continuation, untagged or tagged. */
static void server_classify(struct imap_track *t)
{
	const char *h = t->s_head;
	size_t n = t->s_head_len, tl, sl;

	t->s_head_done = true;
	if (n > 0 && h[0] == '+') {
		if (t->c_await_plus)
			t->c_await_plus = false;
		else if (t->idle == TRACK_IDLE_SENT)
			t->idle = TRACK_IDLE_RUNNING;
		return;
	}
	if (n >= 2 && h[0] == '*' && h[1] == ' ') {
		size_t wl = word_len(h + 2, n - 2);

		if (word_eq(h + 2, wl, "BYE"))
			t->bye = true;
		t->s_data = !word_eq(h + 2, wl, "OK") && !word_eq(h + 2, wl, "NO") && !word_eq(h + 2, wl, "BAD") &&
		            !word_eq(h + 2, wl, "BYE") && !word_eq(h + 2, wl, "PREAUTH");
		return;
	}
	tl = word_len(h, n);
	if (tl == 0 || tl > TRACK_TAG_MAX || tl >= n || h[tl] != ' ') {
		imap_track_set_unclean(t, "malformed_reply");
		return;
	}
	if (t->in_flight == 0) {
		imap_track_set_unclean(t, "unexpected_reply");
	} else {
		t->in_flight--;
	}
	memcpy(t->last_tag, h, tl);
	t->last_tag[tl] = '\0';
	sl = word_len(h + tl + 1, n - tl - 1);
	snprintf(t->last_status, sizeof(t->last_status), "%.*s", (int)(sl < 3 ? sl : 3), h + tl + 1);
	t->tagged_seen++;
	if (t->c_nonsync && strcmp(t->last_status, "BAD") == 0)
		imap_track_set_unclean(t, "bad_literal");
	if (t->in_flight == 0 && imap_track_client_boundary(t))
		t->c_nonsync = false;
	if (strcmp(t->last_tag, t->c_tag) == 0) {
		if (t->c_await_plus) {
			/* The server refused the command instead of asking for its
			 * literal: the client will not send it. */
			t->c_await_plus = false;
			t->c_literal = 0;
			t->c_mid_line = false;
		}
		t->idle = TRACK_IDLE_NO;
	}
}

void imap_track_server(struct imap_track *t, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && !t->lost) {
		const char *seg = p + i, *lf;
		size_t sl;

		if (t->s_literal) {
			size_t take = (uint64_t)(n - i) < t->s_literal ? n - i : (size_t)t->s_literal;

			t->s_literal -= take;
			i += take;
			continue;
		}
		if (!t->s_mid_line) {
			t->s_mid_line = true;
			t->s_head_done = false;
			t->s_data = false;
			t->s_head_len = 0;
			t->s_tail_len = 0;
		}
		lf = memchr(seg, '\n', n - i);
		sl = lf ? (size_t)(lf - seg) + 1 : n - i;
		if (!t->s_head_done) {
			size_t room = sizeof(t->s_head) - t->s_head_len, take = sl < room ? sl : room;

			memcpy(t->s_head + t->s_head_len, seg, take);
			t->s_head_len += (unsigned)take;
			if ((lf && take == sl) || t->s_head_len == sizeof(t->s_head))
				server_classify(t);
		}
		tail_add(t->s_tail, &t->s_tail_len, sizeof(t->s_tail), seg, lf ? sl - 1 : sl);
		i += sl;
		if (lf) {
			uint64_t lit;
			bool plus;

			int k = t->s_data ? tail_literal(t->s_tail, t->s_tail_len, sizeof(t->s_tail), &lit, &plus) : 0;

			if (k < 0)
				imap_track_set_unclean(t, "literal_size");
			if (k > 0)
				t->s_literal = lit; /* the response goes on after it */
			else
				t->s_mid_line = false;
			t->s_tail_len = 0;
		}
	}
}
