/* Unit tests for imap_track. Most scenarios are scripts of client and
 * server chunks run the way session.c runs them (client bytes kept in a
 * model of bout, the held head never "sent", client reading stopped by an
 * intercepted LOGOUT) and run five ways: every chunk whole, one byte at a
 * time and in chunks of 2, 3 and 7 bytes. All five must end in the same
 * state; the expectations are then checked on it.
 *
 * Tests named test_BUG_* fail on purpose: each shows a defect of
 * src/imap_track.c that is described in its comment (and in the report
 * that came with this file). They pass once the defect is fixed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_track.h"

/* ---- a model of the session around the tracker ---- */

#define CMAX 16384

struct sess {
	struct imap_track t;
	char bout[CMAX];  /* client bytes the tracker looked at and the session kept */
	size_t blen;
	size_t sent;      /* bytes of bout released to the server (blen - hold) */
	size_t hold;      /* r.hold of the last client call */
	bool logout;      /* an intercepted LOGOUT: client reading stopped */
	size_t logout_at; /* where the LOGOUT line began in bout (the session's cut) */
	size_t logout_len;
	char logout_tag[TRACK_TAG_MAX + 1];
	unsigned logouts;
};

static void sess_init(struct sess *s)
{
	memset(s, 0, sizeof(*s));
	imap_track_init(&s->t);
}

/* The promises of one imap_track_client() call, as relay_from_client
 * relies on them. */
static void check_client_result(const struct sess *s, size_t n, const struct track_client_result *r,
                                size_t sent_before, bool unclean_before)
{
	assert_true(r->used <= n);
	assert_true(r->hold <= TRACK_HEAD_MAX);
	if (r->logout) {
		size_t start;

		assert_false(unclean_before);
		assert_int_equal(r->hold, 0);
		assert_true(r->logout_len >= 9 && r->logout_len <= TRACK_HEAD_MAX);
		assert_true(r->logout_len <= s->blen);
		start = s->blen - r->logout_len;
		/* no byte of the LOGOUT line ever went to the server, and what
		 * did ends with a whole line: nothing half-sent is left behind */
		assert_true(start >= sent_before);
		assert_true(start == 0 || s->bout[start - 1] == '\n');
		assert_true(strlen(r->logout_tag) >= 1 && strlen(r->logout_tag) <= TRACK_TAG_MAX);
		assert_memory_equal(s->bout + start, r->logout_tag, strlen(r->logout_tag));
		assert_true(s->bout[s->blen - 1] == '\n');
		assert_false(s->t.c_mid_line);
	} else {
		assert_int_equal(r->used, n);
		assert_true(r->hold <= s->blen);
		/* the held bytes are the line's head so far, with no LF */
		if (r->hold) {
			assert_true(s->t.c_in_head);
			assert_int_equal(r->hold, s->t.c_head_len);
			assert_memory_equal(s->bout + s->blen - r->hold, s->t.c_head, r->hold);
			assert_null(memchr(s->bout + s->blen - r->hold, '\n', r->hold));
		}
		/* what was released stays released */
		assert_true(s->blen - r->hold >= sent_before);
	}
}

/* Client bytes as relay_from_client feeds them; returns the result. */
static struct track_client_result sess_client(struct sess *s, const char *p, size_t n)
{
	struct track_client_result r;
	size_t sent_before = s->sent;
	bool unclean_before = s->t.unclean;

	assert_false(s->logout);
	assert_true(s->blen + n <= CMAX);
	memset(&r, 0x5a, sizeof(r)); /* the tracker must set every field */
	imap_track_client(&s->t, p, n, &r);
	assert_true(r.used <= n);
	memcpy(s->bout + s->blen, p, r.used);
	s->blen += r.used;
	check_client_result(s, n, &r, sent_before, unclean_before);
	if (r.logout) {
		s->logout = true;
		s->logouts++;
		s->logout_at = s->blen - r.logout_len;
		s->logout_len = r.logout_len;
		memcpy(s->logout_tag, r.logout_tag, sizeof(s->logout_tag));
		s->blen = s->logout_at; /* the session cuts the LOGOUT line off */
		s->sent = s->blen;
		s->hold = 0;
	} else {
		s->hold = r.hold;
		s->sent = s->blen - r.hold;
	}
	return r;
}

static void sess_server(struct sess *s, const char *p, size_t n)
{
	imap_track_server(&s->t, p, n);
}

static struct track_client_result cs(struct sess *s, const char *str)
{
	return sess_client(s, str, strlen(str));
}

static void ss(struct sess *s, const char *str)
{
	sess_server(s, str, strlen(str));
}

/* session_handoff_backend: the held head is never sent. */
static void sess_drop_held(struct sess *s)
{
	imap_track_drop_held(&s->t);
	s->blen = s->sent;
	s->hold = 0;
}

/* ---- scripts ---- */

/* 'C' client bytes, 'S' server bytes, 'O' imap_track_own_command(s),
 * 'D' drop_held, 'R' reset_session, 'P' the pool's DONE (only if IDLE runs). */
struct step {
	char dir;
	const char *s;
	size_t len; /* 0: strlen(s) */
};

#define STEPS(...) ((const struct step[]){__VA_ARGS__, {0, NULL, 0}})
#define CL(str) {'C', (str), 0}
#define CLN(str, n) {'C', (str), (n)}
#define SV(str) {'S', (str), 0}
#define SVN(str, n) {'S', (str), (n)}
#define OWN(tag) {'O', (tag), 0}
#define DROP() {'D', NULL, 0}
#define RESET() {'R', NULL, 0}
#define PDONE() {'P', NULL, 0}

static void sess_step(struct sess *s, const struct step *st, size_t chunk)
{
	size_t len = st->len ? st->len : (st->s ? strlen(st->s) : 0);

	switch (st->dir) {
	case 'C':
	case 'S':
		for (size_t at = 0; at < len;) {
			size_t k = chunk == 0 || chunk > len - at ? len - at : chunk;

			if (st->dir == 'S') {
				sess_server(s, st->s + at, k);
			} else {
				if (s->logout)
					return; /* the session reads no more from the client */
				sess_client(s, st->s + at, k);
			}
			at += k;
		}
		break;
	case 'O':
		imap_track_own_command(&s->t, st->s);
		break;
	case 'D':
		sess_drop_held(s);
		break;
	case 'R':
		imap_track_reset_session(&s->t);
		break;
	case 'P':
		sess_drop_held(s); /* the pool has the connection: the client is gone */
		if (s->t.idle == TRACK_IDLE_RUNNING) {
			bool gone = s->logout;
			struct track_client_result r;

			s->logout = false; /* the pool writes it, the same way */
			r = sess_client(s, "DONE\r\n", 6);
			assert_false(r.logout);
			assert_int_equal(r.hold, 0);
			s->logout = gone;
		}
		break;
	default:
		fail_msg("bad step %c", st->dir);
	}
}

static void sess_run(struct sess *s, const struct step *st, size_t chunk)
{
	sess_init(s);
	for (; st->dir; st++)
		sess_step(s, st, chunk);
}

static void same_state(const struct sess *a, const struct sess *b, size_t chunk)
{
	const struct imap_track *x = &a->t, *y = &b->t;

	if (x->in_flight != y->in_flight || x->idle != y->idle || x->selected != y->selected ||
	    x->unclean != y->unclean || x->lost != y->lost || x->bye != y->bye || x->unclean_why != y->unclean_why ||
	    x->tagged_seen != y->tagged_seen || strcmp(x->last_tag, y->last_tag) != 0 ||
	    strcmp(x->last_status, y->last_status) != 0 || strcmp(x->c_tag, y->c_tag) != 0 ||
	    x->c_literal != y->c_literal || x->c_mid_line != y->c_mid_line || x->c_in_head != y->c_in_head ||
	    x->c_await_plus != y->c_await_plus || x->s_literal != y->s_literal || x->s_mid_line != y->s_mid_line ||
	    imap_track_quiet(x) != imap_track_quiet(y) ||
	    imap_track_client_boundary(x) != imap_track_client_boundary(y))
		fail_msg("chunks of %zu: tracker state differs from whole chunks (in_flight %u/%u unclean %d/%d)", chunk,
		         x->in_flight, y->in_flight, x->unclean, y->unclean);
	if (a->blen != b->blen || memcmp(a->bout, b->bout, a->blen) != 0 || a->sent != b->sent ||
	    a->hold != b->hold || a->logout != b->logout || a->logouts != b->logouts)
		fail_msg("chunks of %zu: relayed bytes differ from whole chunks", chunk);
	if (a->logout && (a->logout_at != b->logout_at || a->logout_len != b->logout_len ||
	                  strcmp(a->logout_tag, b->logout_tag) != 0))
		fail_msg("chunks of %zu: LOGOUT found elsewhere", chunk);
}

/* Whole chunks, then split ones; all must agree. The whole run is kept. */
static struct sess R;

static const struct sess *run(const struct step *st)
{
	static const size_t chunks[] = {1, 2, 3, 7};
	static struct sess other;

	sess_run(&R, st, 0);
	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		sess_run(&other, st, chunks[i]);
		same_state(&R, &other, chunks[i]);
	}
	return &R;
}

#define RUN(...) run(STEPS(__VA_ARGS__))

static void assert_clean_quiet(const struct imap_track *t)
{
	assert_false(t->unclean);
	assert_int_equal(t->in_flight, 0);
	assert_true(imap_track_quiet(t));
	assert_true(imap_track_client_boundary(t));
}

static void assert_unclean(const struct imap_track *t, const char *why)
{
	assert_true(t->unclean);
	assert_non_null(t->unclean_why);
	assert_string_equal(t->unclean_why, why);
}

/* ---- basics ---- */

static void test_init_quiet(void **state)
{
	struct imap_track t;

	(void)state;
	memset(&t, 0x7f, sizeof(t));
	imap_track_init(&t);
	assert_clean_quiet(&t);
	assert_int_equal(t.idle, TRACK_IDLE_NO);
	assert_false(t.selected);
	assert_false(t.lost);
	assert_false(t.bye);
	assert_null(t.unclean_why);
	assert_string_equal(t.last_tag, "");
	assert_string_equal(t.last_status, "");
	assert_int_equal(t.tagged_seen, 0);
}

static void test_simple_command(void **state)
{
	struct sess s;
	struct track_client_result r;

	(void)state;
	sess_init(&s);
	r = cs(&s, "a NOOP\r\n");
	assert_false(r.logout);
	assert_int_equal(r.used, 8);
	assert_int_equal(r.hold, 0);
	assert_int_equal(s.t.in_flight, 1);
	assert_false(imap_track_quiet(&s.t));
	assert_true(imap_track_client_boundary(&s.t));
	assert_string_equal(s.t.c_tag, "a");
	ss(&s, "a OK NOOP completed.\r\n");
	assert_clean_quiet(&s.t);
	assert_string_equal(s.t.last_tag, "a");
	assert_string_equal(s.t.last_status, "OK");
	assert_int_equal(s.t.tagged_seen, 1);

	/* the same, split every way */
	assert_clean_quiet(&RUN(CL("a NOOP\r\n"), SV("a OK NOOP completed.\r\n"))->t);
	/* a server line half received is not quiet */
	assert_false(imap_track_quiet(&RUN(CL("a NOOP\r\n"), SV("a OK NOOP"))->t));
	assert_int_equal(R.t.in_flight, 1); /* a server line counts once its LF is in */
	assert_true(R.t.s_mid_line);
	assert_clean_quiet(&RUN(CL("a NOOP\r\n"), SV("a OK NOOP"), SV(" completed.\r\n"))->t);
	/* bare LF line ends, both ways */
	assert_clean_quiet(&RUN(CL("a NOOP\n"), SV("a OK done\n"))->t);
}

static void test_pipelined(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a NOOP\r\nb CAPABILITY\r\nc STATUS INBOX (MESSAGES)\r\n"));
	assert_int_equal(s->t.in_flight, 3);
	assert_string_equal(s->t.c_tag, "c");
	assert_int_equal(s->sent, s->blen);
	s = RUN(CL("a NOOP\r\nb CAPABILITY\r\nc STATUS INBOX (MESSAGES)\r\n"), SV("a OK\r\n* CAPABILITY IMAP4rev1\r\n"));
	assert_int_equal(s->t.in_flight, 2);
	s = RUN(CL("a NOOP\r\nb CAPABILITY\r\nc STATUS INBOX (MESSAGES)\r\n"),
	        SV("a OK\r\n* CAPABILITY IMAP4rev1\r\nb OK\r\n* STATUS INBOX (MESSAGES 2)\r\n"));
	assert_int_equal(s->t.in_flight, 1);
	assert_false(imap_track_quiet(&s->t));
	s = RUN(CL("a NOOP\r\nb CAPABILITY\r\nc STATUS INBOX (MESSAGES)\r\n"),
	        SV("a OK\r\n* CAPABILITY IMAP4rev1\r\nb OK\r\n* STATUS INBOX (MESSAGES 2)\r\nc OK\r\n"));
	assert_clean_quiet(&s->t);
	assert_int_equal(s->t.tagged_seen, 3);
	assert_string_equal(s->t.last_tag, "c");

	/* replies out of order, commands and replies interleaved */
	s = RUN(CL("a NOOP\r\n"), CL("b NOOP\r\n"), SV("b OK\r\n"), CL("c CHECK\r\n"), SV("c OK\r\n"),
	        SV("a OK\r\n"));
	assert_clean_quiet(&s->t);
	assert_string_equal(s->t.last_tag, "a");
}

static void test_untagged_and_stray_continuation(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a NOOP\r\n"), SV("* 3 EXISTS\r\n* 1 RECENT\r\n* OK [UIDNEXT 4] x\r\n"));
	assert_int_equal(s->t.in_flight, 1);
	assert_false(s->t.unclean);
	/* untagged news with nothing in flight: still quiet and clean */
	s = RUN(SV("* 4 EXISTS\r\n* 2 EXPUNGE\r\n"));
	assert_clean_quiet(&s->t);
	/* a "+" nobody waits for changes nothing */
	s = RUN(CL("a NOOP\r\n"), SV("+ what\r\n"), SV("a OK\r\n"));
	assert_clean_quiet(&s->t);
	assert_int_equal(s->t.idle, TRACK_IDLE_NO);
}

static void test_select_examine(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a SELECT INBOX\r\n"), SV("* 2 EXISTS\r\na OK [READ-WRITE] Select completed.\r\n"));
	assert_true(s->t.selected);
	assert_clean_quiet(&s->t);
	s = RUN(CL("a examine \"Sent Items\"\r\n"), SV("a OK [READ-ONLY] done\r\n"));
	assert_true(s->t.selected);
	assert_clean_quiet(&s->t);
	/* a failed SELECT may still have closed the old mailbox: stays selected */
	s = RUN(CL("a Select nothere\r\n"), SV("a NO [NONEXISTENT] Mailbox doesn't exist\r\n"));
	assert_true(s->t.selected);
	/* set as soon as the command is seen */
	s = RUN(CL("a SELECT INBOX\r\n"));
	assert_true(s->t.selected);
	/* not before its head is classified */
	s = RUN(CL("a SELECT INB"));
	assert_false(s->t.selected);
	/* STATUS, LIST, UNSELECT do not select */
	s = RUN(CL("a STATUS INBOX (UIDNEXT)\r\nb LIST \"\" *\r\nc UNSELECT\r\n"), SV("a OK\r\nb OK\r\nc BAD\r\n"));
	assert_false(s->t.selected);
	assert_clean_quiet(&s->t);
	/* a selected word elsewhere on the line does not count */
	s = RUN(CL("a LIST SELECT *\r\n"));
	assert_false(s->t.selected);
	/* reset_session clears it */
	s = RUN(CL("a SELECT INBOX\r\n"), SV("a OK\r\n"), RESET());
	assert_false(s->t.selected);
}

/* ---- LOGOUT ---- */

static void test_logout_crlf(void **state)
{
	struct sess s;
	struct track_client_result r;

	(void)state;
	sess_init(&s);
	r = cs(&s, "a LOGOUT\r\n");
	assert_true(r.logout);
	assert_int_equal(r.used, 10);
	assert_int_equal(r.logout_len, 10);
	assert_int_equal(r.hold, 0);
	assert_string_equal(r.logout_tag, "a");
	/* not counted, not sent */
	assert_int_equal(s.t.in_flight, 0);
	assert_clean_quiet(&s.t);
	assert_int_equal(s.blen, 0);

	assert_true(RUN(CL("a LOGOUT\r\n"))->logout);
	assert_int_equal(R.logout_at, 0);
	assert_int_equal(R.logout_len, 10);
	assert_clean_quiet(&R.t);
}

static void test_logout_lf_lowercase(void **state)
{
	struct sess s;
	struct track_client_result r;

	(void)state;
	sess_init(&s);
	r = cs(&s, "a logout\n");
	assert_true(r.logout);
	assert_int_equal(r.used, 9);
	assert_int_equal(r.logout_len, 9);
	assert_string_equal(r.logout_tag, "a");
	assert_int_equal(s.t.in_flight, 0);

	assert_true(RUN(CL("Z1.x LoGoUt\r\n"))->logout);
	assert_string_equal(R.logout_tag, "Z1.x");
	assert_int_equal(R.logout_len, 13);
}

static void test_logout_bytewise(void **state)
{
	static const char line[] = "tag7 LOGOUT\r\n";
	size_t n = sizeof(line) - 1;
	struct sess s;
	struct track_client_result r;

	(void)state;
	sess_init(&s);
	for (size_t i = 0; i + 1 < n; i++) {
		r = sess_client(&s, line + i, 1);
		assert_false(r.logout);
		assert_int_equal(r.used, 1);
		assert_int_equal(r.hold, i + 1); /* everything so far is held */
		assert_int_equal(s.sent, 0);
		assert_true(imap_track_client_boundary(&s.t));
		assert_false(imap_track_quiet(&s.t));
	}
	r = sess_client(&s, line + n - 1, 1);
	assert_true(r.logout);
	assert_int_equal(r.used, 1);
	assert_int_equal(r.logout_len, n);
	assert_int_equal(r.hold, 0);
	assert_string_equal(r.logout_tag, "tag7");
	assert_int_equal(s.logout_at, 0);
	assert_clean_quiet(&s.t);
}

/* relay_from_client's cut: bout.end = at + used - logout_len must land on
 * the start of the LOGOUT line when it began in an earlier chunk. */
static void test_logout_split_session_cut(void **state)
{
	struct sess s;
	struct track_client_result r;
	size_t at;

	(void)state;
	sess_init(&s);
	r = cs(&s, "a NOOP\r\nb LOG");
	assert_false(r.logout);
	assert_int_equal(r.hold, 5);
	assert_int_equal(s.sent, 8);
	assert_int_equal(s.t.in_flight, 1);
	at = s.blen;
	r = cs(&s, "OUT\r\nc NOOP\r\n");
	assert_true(r.logout);
	assert_int_equal(r.used, 5);
	assert_int_equal(r.logout_len, 10);
	assert_int_equal(at + r.used - r.logout_len, 8);
	assert_string_equal(r.logout_tag, "b");
	assert_int_equal(s.blen, 8);
	assert_memory_equal(s.bout, "a NOOP\r\n", 8);
	/* c NOOP was never looked at */
	assert_int_equal(s.t.in_flight, 1);
	ss(&s, "a OK\r\n");
	assert_clean_quiet(&s.t);
}

static void test_logout_bytes_after(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a LOGOUT\r\nb SELECT INBOX\r\nc ENABLE X\r\n"));
	assert_true(s->logout);
	assert_int_equal(s->blen, 0);
	assert_int_equal(s->t.in_flight, 0);
	assert_false(s->t.selected);
	assert_false(s->t.unclean);
	/* later client chunks are not read by the session either */
	s = RUN(CL("a LOGOUT\r\n"), CL("b COMPRESS DEFLATE\r\n"));
	assert_false(s->t.lost);
	assert_int_equal(s->logouts, 1);

	{
		struct sess x;
		struct track_client_result r;

		sess_init(&x);
		r = cs(&x, "a LOGOUT\r\nb NOOP\r\n");
		assert_true(r.logout);
		assert_int_equal(r.used, 10);
	}
}

static void test_logout_after_commands(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a NOOP\r\nb SELECT INBOX\r\nc LOGOUT\r\n"));
	assert_true(s->logout);
	assert_int_equal(s->logout_at, 24);
	assert_int_equal(s->blen, 24);
	assert_int_equal(s->sent, 24);
	assert_string_equal(s->logout_tag, "c");
	assert_int_equal(s->t.in_flight, 2);
	assert_false(imap_track_quiet(&s->t));
	s = RUN(CL("a NOOP\r\nb SELECT INBOX\r\nc LOGOUT\r\n"), SV("a OK\r\n* 1 EXISTS\r\nb OK\r\n"));
	assert_clean_quiet(&s->t);
	assert_true(s->t.selected);
}

static void test_logout_lookalikes(void **state)
{
	static const char *const lines[] = {
	    "a LOGOUTX\r\n", "a LOGOUT extra\r\n", "a LOGOUT \r\n", "a LOGOUT\r\r\n", "a LOG OUT\r\n",
	    "a LOGOUT\rx\r\n", "a XLOGOUT\r\n",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		const struct sess *s = RUN(CL(lines[i]));

		if (s->logout)
			fail_msg("\"%s\" taken for a LOGOUT", lines[i]);
		/* passed on to the server as a command nobody can undo */
		assert_int_equal(s->t.in_flight, 1);
		assert_true(s->t.unclean);
		assert_int_equal(s->sent, strlen(lines[i]));
	}
}

static void test_logout_unclean_not_intercepted(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a ENABLE CONDSTORE\r\n"), SV("* ENABLED CONDSTORE\r\na OK\r\n"), CL("b LOGOUT\r\n"));
	assert_false(s->logout);
	assert_int_equal(s->t.in_flight, 1);
	assert_int_equal(s->sent, s->blen);
	assert_unclean(&s->t, "enable");
	/* set_unclean from outside (cache off, write error) does the same */
	{
		struct sess x;
		struct track_client_result r;

		sess_init(&x);
		imap_track_set_unclean(&x.t, "cache_off");
		r = cs(&x, "a LOGOUT\r\n");
		assert_false(r.logout);
		assert_int_equal(r.used, 10);
		assert_int_equal(x.t.in_flight, 1);
		assert_unclean(&x.t, "cache_off");
	}
}

static void test_logout_during_idle(void **state)
{
	const struct sess *s;

	(void)state;
	/* some clients LOGOUT without DONE: intercepted, IDLE left to the pool */
	s = RUN(CL("a IDLE\r\n"), SV("+ idling\r\n"), CL("b LOGOUT\r\n"));
	assert_true(s->logout);
	assert_string_equal(s->logout_tag, "b");
	assert_int_equal(s->t.idle, TRACK_IDLE_RUNNING);
	assert_int_equal(s->t.in_flight, 1);
	/* session_logout_check's condition for handing over */
	assert_true(s->t.idle != TRACK_IDLE_NO && s->t.in_flight == 1 && !s->t.s_mid_line);
	/* the pool ends it */
	s = RUN(CL("a IDLE\r\n"), SV("+ idling\r\n"), CL("b LOGOUT\r\n"), PDONE(),
	        SV("a OK Idle completed.\r\n"));
	assert_clean_quiet(&s->t);
}

static void test_logout_tag_max(void **state)
{
	char line[TRACK_TAG_MAX + 16], tag[TRACK_TAG_MAX + 2];
	const struct sess *s;

	(void)state;
	memset(tag, 'T', TRACK_TAG_MAX);
	tag[TRACK_TAG_MAX] = '\0';
	snprintf(line, sizeof(line), "%s LOGOUT\r\n", tag);
	s = RUN(CL(line));
	assert_true(s->logout);
	assert_string_equal(s->logout_tag, tag);
	assert_int_equal(s->logout_len, TRACK_TAG_MAX + 9);
	/* one more: malformed, passed on */
	memset(tag, 'T', TRACK_TAG_MAX + 1);
	tag[TRACK_TAG_MAX + 1] = '\0';
	snprintf(line, sizeof(line), "%s LOGOUT\r\n", tag);
	s = RUN(CL(line));
	assert_false(s->logout);
	assert_unclean(&s->t, "malformed_command");
}

/* ---- holding back a line's head ---- */

static void test_hold_head(void **state)
{
	struct sess s;
	struct track_client_result r;

	(void)state;
	sess_init(&s);
	r = cs(&s, "a NO");
	assert_int_equal(r.hold, 4);
	assert_true(s.t.c_in_head);
	assert_true(s.t.c_mid_line);
	assert_int_equal(s.t.in_flight, 0);
	assert_true(imap_track_client_boundary(&s.t)); /* nothing of it was sent */
	assert_false(imap_track_quiet(&s.t));
	r = cs(&s, "O");
	assert_int_equal(r.hold, 5);
	r = cs(&s, "P\r");
	assert_int_equal(r.hold, 7);
	r = cs(&s, "\n");
	assert_int_equal(r.hold, 0);
	assert_false(s.t.c_in_head);
	assert_int_equal(s.t.in_flight, 1);
	assert_int_equal(s.sent, 8);
	/* an empty chunk changes nothing and holds what is still held */
	r = cs(&s, "b ST");
	assert_int_equal(r.hold, 4);
	r = sess_client(&s, "", 0);
	assert_int_equal(r.used, 0);
	assert_int_equal(r.hold, 4);
}

static void test_hold_only_trailing_line(void **state)
{
	struct sess s;
	struct track_client_result r;

	(void)state;
	sess_init(&s);
	r = cs(&s, "a NOOP\r\nb CHECK\r\nc NO");
	assert_int_equal(r.used, 21);
	assert_int_equal(r.hold, 4);
	assert_int_equal(s.sent, 17);
	assert_int_equal(s.t.in_flight, 2);
	/* after a literal the rest of the line is not held: it is no head */
	sess_init(&s);
	r = cs(&s, "a APPEND INBOX {3+}\r\nabc (");
	assert_int_equal(r.hold, 0);
	assert_true(s.t.c_mid_line);
	assert_false(s.t.c_in_head);
	assert_false(imap_track_client_boundary(&s.t));
}

static void test_head_max(void **state)
{
	char line[400];
	struct sess s;
	struct track_client_result r;
	const struct sess *rs;

	(void)state;
	/* a SEARCH longer than the head: classified when the head is full */
	memset(line, 0, sizeof(line));
	strcpy(line, "a SEARCH TEXT ");
	memset(line + strlen(line), 'x', 200);
	strcat(line, "\r\n");
	sess_init(&s);
	r = sess_client(&s, line, TRACK_HEAD_MAX - 1);
	assert_int_equal(r.hold, TRACK_HEAD_MAX - 1);
	assert_int_equal(s.t.in_flight, 0);
	r = sess_client(&s, line + TRACK_HEAD_MAX - 1, 1);
	assert_int_equal(r.hold, 0); /* classified: all of it may go */
	assert_int_equal(s.sent, TRACK_HEAD_MAX);
	assert_int_equal(s.t.in_flight, 1);
	assert_true(s.t.c_mid_line);
	assert_false(imap_track_client_boundary(&s.t));
	r = sess_client(&s, line + TRACK_HEAD_MAX, strlen(line) - TRACK_HEAD_MAX);
	assert_int_equal(r.hold, 0);
	assert_false(s.t.c_mid_line);
	assert_true(imap_track_client_boundary(&s.t));

	rs = RUN(CL(line), SV("* SEARCH\r\na OK\r\n"));
	assert_clean_quiet(&rs->t);

	/* exactly TRACK_HEAD_MAX bytes with the LF the last of them */
	memset(line, 0, sizeof(line));
	strcpy(line, "a NOOP ");
	memset(line + 7, 'y', TRACK_HEAD_MAX - 9);
	strcat(line, "\r\n");
	assert_int_equal(strlen(line), TRACK_HEAD_MAX);
	rs = RUN(CL(line), SV("a OK\r\n"));
	assert_clean_quiet(&rs->t);
	/* and one more byte */
	memset(line, 0, sizeof(line));
	strcpy(line, "a NOOP ");
	memset(line + 7, 'y', TRACK_HEAD_MAX - 8);
	strcat(line, "\r\n");
	rs = RUN(CL(line), SV("a OK\r\n"));
	assert_clean_quiet(&rs->t);

	/* a literal announced past the head is still seen */
	memset(line, 0, sizeof(line));
	strcpy(line, "a APPEND INBOX (");
	memset(line + strlen(line), 'f', 150);
	strcat(line, ") {4}\r\n");
	rs = RUN(CL(line));
	assert_true(rs->t.c_await_plus);
	assert_int_equal(rs->t.c_literal, 4);
	rs = RUN(CL(line), SV("+ OK\r\n"), CL("x\r\ny\r\n"), SV("a OK\r\n"));
	assert_clean_quiet(&rs->t);
}

static void test_head_command_too_long(void **state)
{
	char line[300];
	const struct sess *s;

	(void)state;
	strcpy(line, "a ");
	memset(line + 2, 'X', 200);
	line[202] = '\0';
	s = RUN(CL(line));
	assert_unclean(&s->t, "command_too_long");
	assert_int_equal(s->t.in_flight, 1);
	assert_int_equal(s->hold, 0);
	assert_int_equal(s->sent, 202);
	/* a tag filling the head */
	memset(line, 'T', 200);
	line[200] = '\0';
	s = RUN(CL(line));
	assert_unclean(&s->t, "malformed_command");
	assert_int_equal(s->hold, 0);
}

static void test_malformed_command(void **state)
{
	static const char *const lines[] = {
	    "\r\n", "\n", " NOOP\r\n", "a\r\n", "a\n", "NOOP\r\n", "\r\n\r\n",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		const struct sess *s = RUN(CL(lines[i]));

		assert_unclean(&s->t, "malformed_command");
		assert_true(s->t.in_flight >= 1); /* the server will answer something */
		assert_false(s->logout);
	}
	/* "a " with no command: an unknown command */
	assert_unclean(&RUN(CL("a \r\n"))->t, "command");
	/* unclean is for good, the first reason stays */
	assert_unclean(&RUN(CL("\r\n"), SV("* BAD x\r\n"), CL("b ENABLE X\r\n"))->t, "malformed_command");
}

/* ---- client literals ---- */

static void test_sync_literal(void **state)
{
	struct sess s;
	const struct sess *rs;

	(void)state;
	sess_init(&s);
	cs(&s, "a APPEND INBOX {5}\r\n");
	assert_true(s.t.c_await_plus);
	assert_int_equal(s.t.c_literal, 5);
	assert_true(s.t.c_mid_line);
	assert_int_equal(s.t.in_flight, 1);
	assert_false(imap_track_client_boundary(&s.t));
	assert_false(imap_track_quiet(&s.t));
	ss(&s, "+ OK\r\n");
	assert_false(s.t.c_await_plus);
	assert_int_equal(s.t.c_literal, 5);
	cs(&s, "hel");
	assert_int_equal(s.t.c_literal, 2);
	cs(&s, "lo");
	assert_int_equal(s.t.c_literal, 0);
	assert_true(s.t.c_mid_line); /* the command goes on after it */
	assert_false(imap_track_client_boundary(&s.t));
	cs(&s, "\r\n");
	assert_false(s.t.c_mid_line);
	assert_true(imap_track_client_boundary(&s.t));
	assert_int_equal(s.t.in_flight, 1);
	ss(&s, "a OK [APPENDUID 1 2] Append completed.\r\n");
	assert_clean_quiet(&s.t);

	rs = RUN(CL("a APPEND INBOX (\\Seen) {5}\r\n"), SV("+ OK\r\n"), CL("hello\r\n"),
	         SV("a OK Append completed.\r\n"));
	assert_clean_quiet(&rs->t);
	assert_int_equal(rs->sent, rs->blen);
	/* literal8 */
	rs = RUN(CL("a APPEND INBOX ~{5}\r\n"), SV("+ OK\r\n"), CLN("he\0lo\r\n", 7), SV("a OK\r\n"));
	assert_clean_quiet(&rs->t);
	/* a bare LF after the size */
	rs = RUN(CL("a APPEND INBOX {2}\n"), SV("+ OK\n"), CL("hi\n"), SV("a OK\n"));
	assert_clean_quiet(&rs->t);
}

static void test_sync_literal_two(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a RENAME {3}\r\n"), SV("+ OK\r\n"), CL("old {3}\r\n"));
	assert_true(s->t.c_await_plus);
	assert_int_equal(s->t.c_literal, 3);
	assert_int_equal(s->t.in_flight, 1);
	s = RUN(CL("a RENAME {3}\r\n"), SV("+ OK\r\n"), CL("old {3}\r\n"), SV("+ OK\r\n"), CL("new\r\n"),
	        SV("a OK Rename completed.\r\n"));
	assert_clean_quiet(&s->t);
	assert_int_equal(s->t.tagged_seen, 1);
}

static void test_sync_literal_refused(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a APPEND INBOX {99999}\r\n"), SV("a NO [TOOBIG] Message too large.\r\n"));
	assert_false(s->t.c_await_plus);
	assert_int_equal(s->t.c_literal, 0);
	assert_false(s->t.c_mid_line);
	assert_clean_quiet(&s->t);
	assert_string_equal(s->t.last_status, "NO");
	/* the next line is a command again */
	s = RUN(CL("a APPEND INBOX {99999}\r\n"), SV("a NO [TOOBIG] Message too large.\r\n"),
	        CL("b SELECT INBOX\r\n"));
	assert_int_equal(s->t.in_flight, 1);
	assert_true(s->t.selected);
	assert_string_equal(s->t.c_tag, "b");
	s = RUN(CL("a APPEND INBOX {99999}\r\n"), SV("a NO [TOOBIG] Message too large.\r\n"),
	        CL("b LOGOUT\r\n"));
	assert_true(s->logout);
	/* BAD as well */
	s = RUN(CL("a APPEND {5}\r\n"), SV("a BAD Missing mailbox\r\n"), CL("b NOOP\r\n"), SV("b OK\r\n"));
	assert_clean_quiet(&s->t);
	/* the second literal of a command refused */
	s = RUN(CL("a RENAME {3}\r\n"), SV("+ OK\r\n"), CL("old {300000}\r\n"), SV("a NO too big\r\n"));
	assert_clean_quiet(&s->t);
	/* the refusal of another tag cancels nothing */
	s = RUN(CL("a NOOP\r\nb APPEND INBOX {5}\r\n"), SV("a OK\r\n"));
	assert_true(s->t.c_await_plus);
	assert_int_equal(s->t.c_literal, 5);
	assert_int_equal(s->t.in_flight, 1);
	s = RUN(CL("a NOOP\r\nb APPEND INBOX {5}\r\n"), SV("a OK\r\n+ OK\r\n"), CL("b NOO\r\n"),
	        SV("b OK\r\n"));
	assert_clean_quiet(&s->t);
}

static void test_nonsync_literal(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a APPEND INBOX {5+}\r\n"));
	assert_false(s->t.c_await_plus);
	assert_int_equal(s->t.c_literal, 5);
	assert_int_equal(s->t.in_flight, 1);
	assert_false(imap_track_client_boundary(&s->t));
	s = RUN(CL("a APPEND INBOX {5+}\r\nhello\r\nb NOOP\r\n"));
	assert_int_equal(s->t.in_flight, 2);
	assert_true(imap_track_client_boundary(&s->t));
	assert_int_equal(s->sent, s->blen);
	s = RUN(CL("a APPEND INBOX {5+}\r\nhello\r\nb NOOP\r\n"), SV("a OK\r\nb OK\r\n"));
	assert_clean_quiet(&s->t);
	/* the server's refusal does not end a non-synchronising literal */
	s = RUN(CL("a APPEND INBOX {5+}\r\n"), SV("a NO x\r\n"));
	assert_int_equal(s->t.c_literal, 5);
	assert_false(imap_track_quiet(&s->t));
	/* several on one command (MULTIAPPEND) */
	s = RUN(CL("a APPEND INBOX {1+}\r\nx {1+}\r\ny\r\n"), SV("a OK\r\n"));
	assert_clean_quiet(&s->t);
	/* empty literals */
	s = RUN(CL("a APPEND INBOX {0+}\r\n\r\n"), SV("a OK\r\n"));
	assert_clean_quiet(&s->t);
	s = RUN(CL("a APPEND INBOX {0}\r\n"), SV("+ OK\r\n"), CL("\r\n"), SV("a OK\r\n"));
	assert_clean_quiet(&s->t);
	/* the largest size read: 19 digits */
	s = RUN(CL("a APPEND INBOX {9999999999999999999+}\r\nabc"));
	assert_int_equal(s->t.c_literal, 9999999999999999999ULL - 3);
	assert_false(imap_track_client_boundary(&s->t));
}

/* Literal bytes are skipped by count: nothing in them is a line. */
static void test_literal_contents_not_counted(void **state)
{
	static const char lit[] = "b LOGOUT\r\nc SELECT INBOX\r\nd ENABLE X\r\n\r\nDONE\r\n{5}\r\n";
	char cmd[64];
	const struct sess *s;

	(void)state;
	snprintf(cmd, sizeof(cmd), "a APPEND INBOX {%zu}\r\n", sizeof(lit) - 1);
	s = RUN(CL(cmd), SV("+ OK\r\n"), CL(lit), CL("\r\n"));
	assert_false(s->logout);
	assert_false(s->t.selected);
	assert_false(s->t.unclean);
	assert_int_equal(s->t.in_flight, 1);
	assert_false(s->t.c_await_plus);
	assert_true(imap_track_client_boundary(&s->t));
	s = RUN(CL(cmd), SV("+ OK\r\n"), CL(lit), CL("\r\n"), SV("a OK\r\n"));
	assert_clean_quiet(&s->t);

	snprintf(cmd, sizeof(cmd), "a APPEND INBOX {%zu+}\r\n", sizeof(lit) - 1);
	s = RUN(CL(cmd), CL(lit), CL("\r\ne LOGOUT\r\n"));
	assert_true(s->logout);
	assert_string_equal(s->logout_tag, "e");
	assert_int_equal(s->t.in_flight, 1);
	assert_false(s->t.selected);
	assert_false(s->t.unclean);
	assert_int_equal(s->logout_at, strlen(cmd) + sizeof(lit) - 1 + 2);
	/* one chunk, the whole of it */
	{
		char all[256];

		snprintf(all, sizeof(all), "%s%s\r\ne LOGOUT\r\n", cmd, lit);
		s = RUN(CL(all));
		assert_true(s->logout);
		assert_int_equal(s->t.in_flight, 1);
		assert_false(s->t.unclean);
	}
}

/* ---- server replies and literals ---- */

static void test_server_literal(void **state)
{
	static const char multi[] = "* 1 FETCH (UID 1 BODY[HEADER] {3}\r\nx\r\n BODY[TEXT] {0}\r\n BINARY[] ~{2}\r\n\0\n)\r\n";
	const struct sess *s;

	(void)state;
	s = RUN(CL("a FETCH 1 BODY[]\r\n"), SV("* 1 FETCH (BODY[] {5}\r\nab\r\nc)\r\n"));
	assert_int_equal(s->t.in_flight, 1);
	assert_false(s->t.s_mid_line);
	assert_int_equal(s->t.s_literal, 0);
	s = RUN(CL("a FETCH 1 BODY[]\r\n"), SV("* 1 FETCH (BODY[] {5}\r\nab\r\nc)\r\na OK Fetch completed.\r\n"));
	assert_clean_quiet(&s->t);
	/* tagged-looking lines in a body are not replies */
	s = RUN(CL("a FETCH 1 BODY[]\r\n"), SV("* 1 FETCH (BODY[] {28}\r\n"), SV("a OK fake\r\n* BYE fake\r\n+ x\r\n"));
	assert_int_equal(s->t.in_flight, 1);
	assert_int_equal(s->t.s_literal, 0);
	assert_true(s->t.s_mid_line);
	assert_false(s->t.bye);
	assert_int_equal(s->t.tagged_seen, 0);
	s = RUN(CL("a FETCH 1 BODY[]\r\n"), SV("* 1 FETCH (BODY[] {28}\r\n"), SV("a OK fake\r\n* BYE fake\r\n+ x\r\n"),
	        SV(" UID 7)\r\na OK\r\n"));
	assert_clean_quiet(&s->t);
	assert_int_equal(s->t.tagged_seen, 1);
	/* a half-received body is not quiet */
	s = RUN(CL("a FETCH 1 BODY[]\r\n"), SV("* 1 FETCH (BODY[] {500}\r\nabc"));
	assert_int_equal(s->t.s_literal, 497);
	assert_false(imap_track_quiet(&s->t));
	/* several literals in one response, an empty one, literal8 */
	s = RUN(CL("a UID FETCH 1:2 (BODY[HEADER] BODY[TEXT] BINARY[])\r\n"),
	        SVN(multi, sizeof(multi) - 1),
	        SV("* 2 FETCH (UID 2 BODY[HEADER] NIL)\r\na OK\r\n"));
	assert_clean_quiet(&s->t);
	/* the tracker's unused wait for "+" is not touched by a body */
	s = RUN(CL("a APPEND INBOX {3}\r\n"), SV("* 1 FETCH (BODY[] {8}\r\n+ OK\r\nab)\r\n"));
	assert_true(s->t.c_await_plus);
}

static void test_server_literal_large(void **state)
{
	static char body[70000];
	struct sess s;

	(void)state;
	memset(body, 'a', sizeof(body));
	for (size_t i = 0; i + 12 < sizeof(body); i += 997)
		memcpy(body + i, "\r\nz OK x\r\n", 10);
	sess_init(&s);
	cs(&s, "z FETCH 1 BODY[]\r\n");
	ss(&s, "* 1 FETCH (BODY[] {70000}\r\n");
	sess_server(&s, body, 40000);
	assert_int_equal(s.t.s_literal, 30000);
	sess_server(&s, body + 40000, 30000);
	assert_int_equal(s.t.s_literal, 0);
	ss(&s, ")\r\nz OK done\r\n");
	assert_clean_quiet(&s.t);
	assert_int_equal(s.t.tagged_seen, 1);
}

static void test_bye(void **state)
{
	const struct sess *s;

	(void)state;
	assert_true(RUN(SV("* BYE Server shutting down.\r\n"))->t.bye);
	assert_true(RUN(SV("* bye\r\n"))->t.bye);
	assert_true(RUN(CL("a NOOP\r\n"), SV("* BYE [UNAVAILABLE] x\r\na OK\r\n"))->t.bye);
	assert_false(RUN(SV("* BYEBYE x\r\n"))->t.bye);
	assert_false(RUN(SV("* OK BYE\r\n"))->t.bye);
	assert_false(RUN(SV("a BYE\r\n"))->t.bye);
	/* in a body it is no BYE */
	s = RUN(CL("a FETCH 1 BODY[]\r\n"), SV("* 1 FETCH (BODY[] {9}\r\n* BYE x\r\n)\r\n"));
	assert_false(s->t.bye);
	/* sticky */
	assert_true(RUN(SV("* BYE x\r\n"), SV("* OK\r\n"), RESET())->t.bye);
}

static void test_unexpected_tagged_reply(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(SV("x OK what\r\n"));
	assert_unclean(&s->t, "unexpected_reply");
	assert_int_equal(s->t.in_flight, 0);
	assert_string_equal(s->t.last_tag, "x");
	assert_int_equal(s->t.tagged_seen, 1);
	/* one reply too many */
	s = RUN(CL("a NOOP\r\n"), SV("a OK\r\na OK\r\n"));
	assert_unclean(&s->t, "unexpected_reply");
	assert_int_equal(s->t.in_flight, 0);
	/* a reply while the command's head is still held (never sent) */
	s = RUN(CL("a NOO"), SV("a OK\r\n"));
	assert_unclean(&s->t, "unexpected_reply");
}

static void test_malformed_reply(void **state)
{
	char line[200];
	const struct sess *s;

	(void)state;
	s = RUN(CL("a NOOP\r\n"), SV("\r\n"));
	assert_unclean(&s->t, "malformed_reply");
	assert_int_equal(s->t.in_flight, 1);
	s = RUN(CL("a NOOP\r\n"), SV(" OK\r\n"));
	assert_unclean(&s->t, "malformed_reply");
	/* a tag too long for the tracker */
	memset(line, 't', TRACK_TAG_MAX + 1);
	strcpy(line + TRACK_TAG_MAX + 1, " OK\r\n");
	s = RUN(CL("a NOOP\r\n"), SV(line));
	assert_unclean(&s->t, "malformed_reply");
	assert_int_equal(s->t.in_flight, 1);
	/* the longest tag is fine */
	memset(line, 't', TRACK_TAG_MAX);
	strcpy(line + TRACK_TAG_MAX, " OK\r\n");
	s = RUN(CL("a NOOP\r\n"), SV(line));
	assert_false(s->t.unclean);
	assert_int_equal(strlen(s->t.last_tag), TRACK_TAG_MAX);
	/* a server line longer than the head */
	memset(line, 'u', sizeof(line));
	memcpy(line, "* OK ", 5);
	strcpy(line + 150, "\r\n");
	s = RUN(CL("a NOOP\r\n"), SV(line), SV("a OK\r\n"));
	assert_clean_quiet(&s->t);
}

static void test_last_status(void **state)
{
	const struct sess *s;

	(void)state;
	assert_string_equal(RUN(CL("a NOOP\r\n"), SV("a NO x\r\n"))->t.last_status, "NO");
	assert_string_equal(RUN(CL("a NOOP\r\n"), SV("a BAD x\r\n"))->t.last_status, "BAD");
	assert_string_equal(RUN(CL("a NOOP\r\n"), SV("a OK\r\n"))->t.last_status, "OK");
	assert_string_equal(RUN(CL("a NOOP\r\n"), SV("a OK\n"))->t.last_status, "OK");
	assert_string_equal(RUN(CL("a NOOP\r\n"), SV("a OKAY fine\r\n"))->t.last_status, "OKA");
	assert_string_equal(RUN(CL("a NOOP\r\n"), SV("a  OK\r\n"))->t.last_status, "");
	s = RUN(CL("a NOOP\r\nb NOOP\r\n"), SV("b NO\r\na OK\r\n"));
	assert_string_equal(s->t.last_tag, "a");
	assert_string_equal(s->t.last_status, "OK");
}

/* ---- IDLE ---- */

static void test_idle(void **state)
{
	struct sess s;
	const struct sess *rs;

	(void)state;
	sess_init(&s);
	cs(&s, "a IDLE\r\n");
	assert_int_equal(s.t.idle, TRACK_IDLE_SENT);
	assert_int_equal(s.t.in_flight, 1);
	ss(&s, "+ idling\r\n");
	assert_int_equal(s.t.idle, TRACK_IDLE_RUNNING);
	ss(&s, "* 5 EXISTS\r\n");
	assert_int_equal(s.t.idle, TRACK_IDLE_RUNNING);
	assert_false(imap_track_quiet(&s.t));
	cs(&s, "DO");
	assert_int_equal(s.hold, 2);
	cs(&s, "NE\r\n");
	assert_int_equal(s.t.idle, TRACK_IDLE_NO);
	assert_int_equal(s.t.in_flight, 1); /* DONE is no command */
	assert_string_equal(s.t.c_tag, "a");
	assert_false(imap_track_quiet(&s.t));
	ss(&s, "a OK Idle completed.\r\n");
	assert_clean_quiet(&s.t);

	rs = RUN(CL("a IDLE\r\n"), SV("+ idling\r\n"), CL("done\n"), SV("a OK\r\n"));
	assert_clean_quiet(&rs->t);
	/* a second IDLE in the same session */
	rs = RUN(CL("a IDLE\r\n"), SV("+ idling\r\n"), CL("DONE\r\n"), SV("a OK\r\n"), CL("b IDLE\r\n"),
	         SV("+ idling\r\n"), CL("DONE\r\n"), SV("b OK\r\n"));
	assert_clean_quiet(&rs->t);
	/* the server ends IDLE itself */
	rs = RUN(CL("a IDLE\r\n"), SV("+ idling\r\n* BYE timeout\r\na OK\r\n"));
	assert_int_equal(rs->t.idle, TRACK_IDLE_NO);
	assert_true(rs->t.bye);
	assert_int_equal(rs->t.in_flight, 0);
	/* DONE outside IDLE is a malformed command */
	rs = RUN(CL("DONE\r\n"));
	assert_unclean(&rs->t, "malformed_command");
}

static void test_idle_refused(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a IDLE\r\n"), SV("a BAD IDLE not now\r\n"));
	assert_int_equal(s->t.idle, TRACK_IDLE_NO);
	assert_clean_quiet(&s->t);
	assert_string_equal(s->t.last_status, "BAD");
	s = RUN(CL("a IDLE\r\n"), SV("a NO\r\n"), CL("b NOOP\r\n"), SV("b OK\r\n"));
	assert_clean_quiet(&s->t);
	/* a command pipelined behind IDLE: c_tag is b's, so a's refusal does
	 * not end IDLE (not quiet: safe) ... */
	s = RUN(CL("a IDLE\r\nb NOOP\r\n"), SV("a BAD\r\n"));
	assert_int_equal(s->t.in_flight, 1);
	assert_int_equal(s->t.idle, TRACK_IDLE_SENT);
	assert_false(imap_track_quiet(&s->t));
	/* ... b's reply does */
	s = RUN(CL("a IDLE\r\nb NOOP\r\n"), SV("a BAD\r\nb OK\r\n"));
	assert_int_equal(s->t.idle, TRACK_IDLE_NO);
	assert_clean_quiet(&s->t);
}

/* pool_step ends a running IDLE with a DONE of its own. */
static void test_idle_pool_done(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a IDLE\r\n"), SV("+ idling\r\n"), CL("DON"), PDONE());
	assert_int_equal(s->t.idle, TRACK_IDLE_NO);
	assert_int_equal(s->t.in_flight, 1);
	assert_false(s->t.unclean);
	/* the client's "DON" was never sent, the pool's DONE was */
	assert_int_equal(s->blen, 14);
	assert_memory_equal(s->bout, "a IDLE\r\nDONE\r\n", 14);
	s = RUN(CL("a IDLE\r\n"), SV("+ idling\r\n"), CL("DON"), PDONE(), SV("a OK\r\n"));
	assert_clean_quiet(&s->t);
	/* IDLE not yet running: no DONE (the pool waits for "+") */
	s = RUN(CL("a IDLE\r\n"), PDONE());
	assert_int_equal(s->t.idle, TRACK_IDLE_SENT);
	s = RUN(CL("a IDLE\r\n"), PDONE(), SV("+ idling\r\n"), PDONE(), SV("a OK\r\n"));
	assert_clean_quiet(&s->t);
}

/* ---- what makes a connection unclean ---- */

static void test_compress(void **state)
{
	struct sess s;
	struct track_client_result r;
	const struct sess *rs;

	(void)state;
	sess_init(&s);
	r = cs(&s, "a COMPRESS DEFLATE\r\nb NOOP\r\nc LOGOUT\r\n");
	assert_false(r.logout);
	assert_int_equal(r.used, 38);
	assert_int_equal(r.hold, 0);
	assert_true(s.t.lost);
	assert_unclean(&s.t, "compress");
	assert_int_equal(s.t.in_flight, 1);
	/* nothing is read any more, either way */
	ss(&s, "a OK DEFLATE active\r\n");
	assert_int_equal(s.t.in_flight, 1);
	cs(&s, "\x78\x9c\x01\x02\n");
	assert_int_equal(s.t.in_flight, 1);
	rs = RUN(CL("a compress deflate\r\n"), SV("a OK\r\n"), CL("x LOGOUT\r\n"));
	assert_true(rs->t.lost);
	assert_false(rs->logout);
	assert_int_equal(rs->t.tagged_seen, 0);
}

static void test_enable(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a ENABLE QRESYNC\r\n"), SV("* ENABLED QRESYNC\r\na OK\r\n"));
	assert_unclean(&s->t, "enable");
	assert_int_equal(s->t.in_flight, 0);
	assert_false(s->t.lost);
	assert_unclean(&RUN(CL("a enable UTF8=ACCEPT\r\n"))->t, "enable");
}

static void test_unknown_commands(void **state)
{
	static const char *const lines[] = {
	    "a LOGIN u p\r\n", "a AUTHENTICATE PLAIN\r\n", "a STARTTLS\r\n", "a NOTIFY SET NONE\r\n",
	    "a XFOO\r\n", "a X-STATE\r\n", "a UNAUTHENTICATE\r\n", "a LOGOUT x\r\n", "a GENURLAUTH x\r\n",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		const struct sess *s = RUN(CL(lines[i]));

		assert_unclean(&s->t, "command");
		assert_int_equal(s->t.in_flight, 1);
	}
}

static void test_safe_commands(void **state)
{
	static const char *const cmds[] = {
	    "APPEND", "CAPABILITY", "CHECK", "CLOSE", "COPY", "CREATE", "DELETE", "DELETEACL", "ESEARCH", "EXAMINE",
	    "EXPUNGE", "FETCH", "GETACL", "GETMETADATA", "GETQUOTA", "GETQUOTAROOT", "ID", "IDLE", "LIST",
	    "LISTRIGHTS", "LSUB", "MOVE", "MYRIGHTS", "NAMESPACE", "NOOP", "RENAME", "SEARCH", "SELECT", "SETACL",
	    "SETMETADATA", "SETQUOTA", "SORT", "STATUS", "STORE", "SUBSCRIBE", "THREAD", "UNSELECT", "UNSUBSCRIBE",
	    "XLIST",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		char line[64], lower[32];
		const struct sess *s;

		snprintf(line, sizeof(line), "t%zu %s x\r\n", i, cmds[i]);
		s = RUN(CL(line));
		if (s->t.unclean)
			fail_msg("%s made the stream unclean", cmds[i]);
		assert_int_equal(s->t.in_flight, 1);
		for (size_t j = 0; cmds[i][j]; j++)
			lower[j] = (char)(cmds[i][j] | 0x20), lower[j + 1] = '\0';
		snprintf(line, sizeof(line), "t%zu %s\r\n", i, lower);
		s = RUN(CL(line));
		if (s->t.unclean)
			fail_msg("%s made the stream unclean", lower);
	}
}

static void test_uid(void **state)
{
	static const char *const safe[] = {
	    "a UID FETCH 1:* (FLAGS)\r\n", "a UID STORE 5 +FLAGS (\\Seen)\r\n", "a UID MOVE 1 Trash\r\n",
	    "a uid copy 1 x\r\n", "a UID SEARCH ALL\r\n", "a UID EXPUNGE 4\r\n", "a UID SORT (DATE) UTF-8 ALL\r\n",
	    "a UID THREAD REFS UTF-8 ALL\r\n", "a UID fetch\r\n",
	};
	static const char *const unsafe[] = {
	    "a UID XFOO 1\r\n", "a UID\r\n", "a UID\n", "a UID \r\n", "a UID LOGOUT\r\n", "a UID SELECT x\r\n",
	    "a UID  FETCH 1 FLAGS\r\n",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(safe) / sizeof(safe[0]); i++) {
		const struct sess *s = RUN(CL(safe[i]), SV("a OK\r\n"));

		if (s->t.unclean)
			fail_msg("\"%s\" made the stream unclean", safe[i]);
		assert_clean_quiet(&s->t);
	}
	for (size_t i = 0; i < sizeof(unsafe) / sizeof(unsafe[0]); i++) {
		const struct sess *s = RUN(CL(unsafe[i]));

		if (!s->t.unclean)
			fail_msg("\"%s\" left the stream clean", unsafe[i]);
		assert_string_equal(s->t.unclean_why, "uid_command");
		assert_int_equal(s->t.in_flight, 1);
	}
}

/* ---- the API around the tracker ---- */

static void test_own_command(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a SELECT INBOX\r\n"), SV("a OK\r\n"), OWN("IGU"));
	assert_int_equal(s->t.in_flight, 1);
	assert_string_equal(s->t.c_tag, "IGU");
	assert_false(imap_track_quiet(&s->t));
	assert_true(imap_track_client_boundary(&s->t));
	s = RUN(CL("a SELECT INBOX\r\n"), SV("a OK\r\n"), OWN("IGU"), SV("* OK [CLOSED] x\r\nIGU OK done\r\n"));
	assert_clean_quiet(&s->t);
	assert_string_equal(s->t.last_tag, "IGU");
	assert_string_equal(s->t.last_status, "OK");
	/* EXAMINE "" fails as it should */
	s = RUN(OWN("IGU"), SV("IGU NO Mailbox doesn't exist\r\n"));
	assert_string_equal(s->t.last_tag, "IGU");
	assert_string_equal(s->t.last_status, "NO");
	assert_clean_quiet(&s->t);
	/* UNSELECT with nothing selected */
	s = RUN(OWN("IGU"), SV("IGU BAD No mailbox selected\r\n"));
	assert_string_equal(s->t.last_status, "BAD");
	assert_clean_quiet(&s->t);
	/* a long tag is cut to TRACK_TAG_MAX */
	{
		char tag[TRACK_TAG_MAX + 20];
		struct imap_track t;

		memset(tag, 'g', sizeof(tag) - 1);
		tag[sizeof(tag) - 1] = '\0';
		imap_track_init(&t);
		imap_track_own_command(&t, tag);
		assert_int_equal(strlen(t.c_tag), TRACK_TAG_MAX);
		assert_int_equal(t.in_flight, 1);
	}
}

static void test_client_boundary(void **state)
{
	(void)state;
	assert_true(imap_track_client_boundary(&RUN(CL("a NOOP\r\n"))->t));
	assert_true(imap_track_client_boundary(&RUN(CL("a NO"))->t)); /* held */
	assert_false(imap_track_client_boundary(&RUN(CL("a APPEND x {3}\r\n"))->t));
	assert_false(imap_track_client_boundary(&RUN(CL("a APPEND x {3}\r\n"), SV("+ OK\r\n"))->t));
	assert_false(imap_track_client_boundary(&RUN(CL("a APPEND x {3}\r\n"), SV("+ OK\r\n"), CL("abc"))->t));
	assert_true(imap_track_client_boundary(&RUN(CL("a APPEND x {3}\r\n"), SV("+ OK\r\n"), CL("abc\r\n"))->t));
	assert_true(imap_track_client_boundary(&RUN(CL("a APPEND x {3}\r\n"), SV("a NO\r\n"))->t));
	/* server side plays no part */
	assert_true(imap_track_client_boundary(&RUN(CL("a FETCH 1 BODY[]\r\n"), SV("* 1 FETCH (BODY[] {9}\r\n"))->t));
}

static void test_quiet_conditions(void **state)
{
	(void)state;
	assert_true(imap_track_quiet(&RUN(CL("a NOOP\r\n"), SV("a OK\r\n"))->t));
	assert_false(imap_track_quiet(&RUN(CL("a NOOP\r\n"))->t));                        /* in flight */
	assert_false(imap_track_quiet(&RUN(CL("a NOOP\r\n"), SV("a OK"))->t));         /* server mid-line */
	assert_false(imap_track_quiet(&RUN(SV("* 1 FETCH (BODY[] {3}\r\nab"))->t));        /* server literal */
	assert_false(imap_track_quiet(&RUN(SV("* 1 FETCH (BODY[] {3}\r\nabc"))->t));       /* rest of line */
	assert_false(imap_track_quiet(&RUN(CL("a NO"))->t));                              /* client mid-line */
	assert_false(imap_track_quiet(&RUN(CL("a APPEND x {3+}\r\n"), SV("a OK\r\n"))->t)); /* literal */
	assert_false(imap_track_quiet(&RUN(CL("a IDLE\r\n"), SV("+ idling\r\n"))->t)); /* idle */
	/* unclean does not make it un-quiet: the pool checks unclean itself */
	assert_true(imap_track_quiet(&RUN(CL("a ENABLE X\r\n"), SV("a OK\r\n"))->t));
	/* a pending '+' wait on its own (the tag was reused by the server) */
	{
		struct imap_track t;

		imap_track_init(&t);
		t.c_await_plus = true;
		assert_false(imap_track_quiet(&t));
		assert_false(imap_track_client_boundary(&t));
	}
}

static void test_drop_held(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a NOOP\r\nb SEL"), DROP());
	assert_false(s->t.c_in_head);
	assert_false(s->t.c_mid_line);
	assert_true(imap_track_client_boundary(&s->t));
	assert_int_equal(s->t.in_flight, 1);
	assert_int_equal(s->blen, 8);
	assert_false(s->t.selected);
	s = RUN(CL("a NOOP\r\nb SEL"), DROP(), SV("a OK\r\n"));
	assert_clean_quiet(&s->t);
	/* a fresh line afterwards */
	s = RUN(CL("b SEL"), DROP(), CL("c EXAMINE x\r\n"));
	assert_string_equal(s->t.c_tag, "c");
	assert_true(s->t.selected);
	assert_int_equal(s->t.in_flight, 1);
	/* nothing held: no change; a line already classified stays mid-line */
	s = RUN(CL("a APPEND x {3+}\r\nab"), DROP());
	assert_true(s->t.c_mid_line);
	assert_int_equal(s->t.c_literal, 1);
	assert_false(imap_track_client_boundary(&s->t));
	s = RUN(CL("a NOOP\r\n"), DROP(), DROP());
	assert_int_equal(s->t.in_flight, 1);
	assert_true(imap_track_client_boundary(&s->t));
}

static void test_reset_session(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a SELECT INBOX\r\n"), SV("a OK\r\n"), RESET());
	assert_false(s->t.selected);
	assert_string_equal(s->t.last_tag, "");
	assert_string_equal(s->t.last_status, "");
	assert_string_equal(s->t.c_tag, "");
	assert_clean_quiet(&s->t);
	assert_int_equal(s->t.tagged_seen, 1); /* connection-level: kept */
	/* unclean and bye are the connection's, not the session's */
	s = RUN(CL("a ENABLE X\r\n"), SV("a OK\r\n"), RESET());
	assert_unclean(&s->t, "enable");
	/* a new session after it works as before */
	s = RUN(CL("a SELECT INBOX\r\n"), SV("a OK\r\n"), RESET(), CL("a NOOP\r\n"), SV("a OK\r\n"),
	        CL("b LOGOUT\r\n"));
	assert_clean_quiet(&s->t);
	assert_false(s->t.selected);
	assert_true(s->logout);
	/* the same tag again after a reset */
	s = RUN(CL("a IDLE\r\n"), SV("+ idling\r\n"), CL("DONE\r\n"), SV("a OK\r\n"), RESET(),
	        CL("a NOOP\r\n"), SV("a OK\r\n"));
	assert_clean_quiet(&s->t);
}

static void test_set_unclean(void **state)
{
	struct imap_track t;

	(void)state;
	imap_track_init(&t);
	imap_track_set_unclean(&t, "first");
	imap_track_set_unclean(&t, "second");
	assert_true(t.unclean);
	assert_string_equal(t.unclean_why, "first");
	assert_false(t.lost);
	assert_true(imap_track_quiet(&t));
}

/* ---- random streams: every split agrees ---- */

static uint32_t rng = 0x2545f491;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

static void test_random_streams(void **state)
{
	static const char *const cl[] = {
	    "a NOOP\r\n", "b SELECT INBOX\r\n", "c EXAMINE x\r\n", "d IDLE\r\n", "DONE\r\n", "e LOGOUT\r\n",
	    "f APPEND INBOX {5}\r\n", "g APPEND INBOX {4+}\r\n", "hello", "\r\n", "h UID FETCH 1 FLAGS\r\n",
	    "i ENABLE X\r\n", "j COMPRESS DEFLATE\r\n", "k FETCH 1 BODY[]\r\n", "a NO", "OP\r\n", "x", "{3}\r\n",
	    "LOGOUT\r\n", "a LOGOUTX\r\n", "\n",
	};
	static const char *const sv[] = {
	    "+ OK\r\n", "+ idling\r\n", "a OK\r\n", "b OK\r\n", "d OK\r\n", "f NO\r\n", "f OK\r\n", "g OK\r\n",
	    "* 1 EXISTS\r\n", "* 1 FETCH (BODY[] {5}\r\n", "ab\r\nc", ")\r\n", "* BYE\r\n", "k OK\r\n", "IGU OK\r\n",
	    "x OK\r\n", "* ", "OK\r\n",
	};
	struct step steps[40];

	(void)state;
	for (int iter = 0; iter < 3000; iter++) {
		size_t n = 1 + rnd() % 38;

		for (size_t i = 0; i < n; i++) {
			uint32_t k = rnd() % 20;

			steps[i].len = 0;
			if (k < 10) {
				steps[i].dir = 'C';
				steps[i].s = cl[rnd() % (sizeof(cl) / sizeof(cl[0]))];
			} else if (k < 18) {
				steps[i].dir = 'S';
				steps[i].s = sv[rnd() % (sizeof(sv) / sizeof(sv[0]))];
			} else {
				steps[i].dir = "ODRP"[rnd() % 4];
				steps[i].s = "IGU";
			}
		}
		steps[n].dir = 0;
		run(steps);
		if (imap_track_quiet(&R.t))
			assert_true(imap_track_client_boundary(&R.t));
		if (R.t.lost)
			assert_true(R.t.unclean);
	}
}

/* ---- known defects: these fail until src/imap_track.c is fixed ---- */

/* BUG 1: server_classify() takes any line without a SP after its first
 * word for a tagged reply ("garbage\r\n", "*\r\n", the tail of a line when
 * a literal was misjudged): in_flight is decremented and last_tag set.
 * The client side requires the SP (h[tl] != ' ' -> malformed_command).
 * Fix: in server_classify, `if (tl == 0 || tl > TRACK_TAG_MAX || tl >= n ||
 * h[tl] != ' ')` -> malformed_reply. */
static void test_BUG_server_reply_without_space(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a NOOP\r\n"), SV("garbage\r\n"));
	assert_int_equal(s->t.in_flight, 1);
	assert_unclean(&s->t, "malformed_reply");
	s = RUN(CL("a NOOP\r\n"), SV("*\r\n"));
	assert_int_equal(s->t.in_flight, 1);
	assert_true(s->t.unclean);
}

/* BUG 2: "* BYE" ending in a bare LF is not seen: the head always ends in
 * its LF when classified, so the `n == 5` case never happens and only
 * ' ' or '\r' are accepted after BYE. The client side accepts bare LF
 * everywhere. Fix: accept h[5] == '\n' too (and drop the dead n == 5). */
static void test_BUG_bye_bare_lf(void **state)
{
	(void)state;
	assert_true(RUN(SV("* BYE\n"))->t.bye);
}

/* BUG 3: literal sizes Dovecot reads but the tracker does not. Dovecot's
 * imap-parser accepts any run of digits that does not wrap (leading zeros
 * included) and an empty size "{}" (0). The tracker stops after 19 digits
 * (and keeps only 24 bytes of tail), so "{00000000000000000005+}" is no
 * literal to it: the 5 literal bytes are then read as a command line
 * (or, with "{}" on a command that reads arguments, the next line the
 * server takes as arguments is counted as a command). Either way the
 * tracker's count is off; with BUG 4 that hides a command.
 * Fix: in tail_literal, skip leading zeros and read the digits up to the
 * '{'; when a line ends in "}" / "+}" after digits or "{" but the size
 * cannot be read (too many digits, '{' not in the tail, "{}"), call
 * imap_track_set_unclean(t, "literal_size") (or treat "{}" as 0). */
static void test_BUG_literal_size_forms(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a APPEND INBOX {00000000000000000005+}\r\n"));
	assert_true(s->t.c_literal == 5 || s->t.unclean);
	s = RUN(CL("a APPEND INBOX {000000000000000000000000000000005}\r\n"));
	assert_true((s->t.c_literal == 5 && s->t.c_await_plus) || s->t.unclean);
	s = RUN(CL("a SEARCH {}\r\n"));
	assert_true((s->t.c_mid_line && s->t.c_literal == 0) || s->t.unclean);
}

/* BUG 4: a non-synchronising literal the server never reads. Dovecot
 * skips the rest of a line after a command that takes no arguments
 * (NOOP, CAPABILITY, CHECK, CLOSE, EXPUNGE, IDLE, NAMESPACE, UNSELECT: it
 * sets input_skip_line as soon as the command name is read) and after a
 * command it refuses with BAD. A "{n+}" at the end of such a line is no
 * literal to the server, so the next n bytes - a whole command - are
 * executed, while the tracker skips them as literal data. Here the client
 * hides "b ENABLE QRESYNC" and logs out; after "a OK" the tracker is quiet
 * and clean, session_logout_check hands the connection to the pool while
 * ENABLE is still in flight (its "b OK" then reaches a parked connection
 * or the next session of this user).
 * Fix (any of): remember the tag of a line that announced "{n+}" and mark
 * unclean when that tag gets a BAD; mark unclean when a "{n+}" follows a
 * command that takes no arguments; or, bluntest, mark unclean on any
 * non-synchronising literal outside APPEND. (A synchronising literal is
 * safe: without "+", the tagged reply cancels it.) */
static void test_BUG_nonsync_literal_not_read_by_server(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a NOOP {16+}\r\nb ENABLE QRESYNC\r\nz LOGOUT\r\n"), SV("a OK NOOP completed.\r\n"));
	/* the server is running ENABLE: the tracker must not call this clean
	 * (whether the LOGOUT was intercepted depends on the fix) */
	assert_false(imap_track_quiet(&s->t) && !s->t.unclean);
}

/* BUG 3 + BUG 4 together: an exact hidden command. "{}" makes the tracker
 * count one command the server never runs ("d NOOP" is read as SEARCH's
 * arguments), "{16+}" after NOOP makes it skip one the server runs. The
 * counts balance, every reply is expected, and the connection is parked
 * with QRESYNC enabled (a hidden SELECT or COMPRESS works the same). */
static void test_BUG_hidden_command(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("c SEARCH {}\r\n"), SV("+ OK\r\n"), CL("d NOOP\r\n"),
	        CL("a NOOP {16+}\r\nb ENABLE QRESYNC\r\n"),
	        SV("c BAD Error in IMAP command SEARCH: Unknown argument D\r\n"), SV("a OK NOOP completed.\r\n"),
	        SV("* ENABLED QRESYNC\r\nb OK Enabled.\r\n"), CL("z LOGOUT\r\n"));
	assert_true(s->t.unclean);
}

/* BUG 6: a synchronising literal sent without waiting for "+" leaves
 * c_await_plus set after its line ended (c_mid_line false, then a new
 * head with c_await_plus still set). When the server then refuses the
 * command (tagged NO/BAD with that tag, e.g. a syntax error before the
 * "{0}"), the cancel in server_classify clears c_mid_line under the new
 * held head: the next client call starts a "new" line, the held bytes are
 * released (hold shrinks) and a LOGOUT right after is intercepted with
 * half a line left on the backend. Checked against Dovecot 2.3.19 through
 * imapgate: "a APPEND ) {0}\r\n\r\nx ENABLE QRESYNC " then "z LOGOUT"
 * parks the connection; the next session of the user sends "b NOOP", the
 * backend runs "x ENABLE QRESYNC b NOOP" (QRESYNC on, "x OK" to a tag the
 * new client never sent, its "b" never answered).
 * Fix: a client byte while c_await_plus is a protocol violation: at the
 * top of imap_track_client's loop, `if (t->c_await_plus) {
 * imap_track_set_unclean(t, "literal_before_plus"); t->c_await_plus =
 * false; }` (unclean also stops the LOGOUT interception). */
static void test_BUG_literal_before_plus(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a APPEND INBOX {3}\r\nabc\r\n"));
	assert_true(!s->t.c_await_plus || s->t.c_mid_line);
	s = RUN(CL("a APPEND ) {0}\r\n\r\nx ENABLE QRESYNC "),
	        SV("a BAD Error in IMAP command APPEND: Unexpected ')'\r\n* BAD Error in IMAP tag: Invalid tag\r\n"),
	        CL("z LOGOUT\r\n"));
	assert_true(s->t.unclean);
}

/* BUG 7 (low): the tag of an intercepted LOGOUT is not checked. A NUL in
 * it cuts logout_tag (the client is answered "a OK Logout completed." for
 * the tag "a\0b"), and "*" or "+" as a tag makes imapgate answer with an
 * untagged OK or a continuation. The pre-login parser (imap_parser)
 * refuses such tags; the server would answer BAD.
 * Fix: in client_classify, intercept LOGOUT only when every byte of the
 * tag is an ASTRING-CHAR other than '+' (> 0x20, < 0x7f, none of
 * (){%*"\ and '+'); otherwise pass the line on like any other. */
static void test_BUG_logout_invalid_tag(void **state)
{
	(void)state;
	assert_false(RUN(CLN("a\0b LOGOUT\r\n", 12))->logout);
	assert_false(RUN(CL("* LOGOUT\r\n"))->logout);
	assert_false(RUN(CL("+ LOGOUT\r\n"))->logout);
}

/* BUG 5: server literals are looked for at the end of every server line,
 * but only untagged data can carry one: a tagged reply, a "+" line and
 * "* OK/NO/BAD/BYE" carry text, which may end in "{5}" (e.g. a mailbox
 * name quoted back in an error text). The tracker then skips the next 5
 * bytes of replies and is not quiet, or reads a reply from its middle.
 * Low severity with stock Dovecot (it ends tagged texts in its timing
 * "(0.001 + 0.000 secs).").
 * Fix: in imap_track_server, only take a literal when server_classify saw
 * an untagged line whose first word is not OK/NO/BAD/BYE/PREAUTH. */
static void test_BUG_server_text_ending_in_braces(void **state)
{
	const struct sess *s;

	(void)state;
	s = RUN(CL("a SELECT \"x{5}\"\r\n"), SV("a NO [NONEXISTENT] Mailbox doesn't exist: x{5}\r\n"));
	assert_clean_quiet(&s->t);
	s = RUN(CL("a NOOP\r\n"), SV("* OK [ALERT] see {3}\r\na OK\r\n"));
	assert_clean_quiet(&s->t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_init_quiet),
	    cmocka_unit_test(test_simple_command),
	    cmocka_unit_test(test_pipelined),
	    cmocka_unit_test(test_untagged_and_stray_continuation),
	    cmocka_unit_test(test_select_examine),
	    cmocka_unit_test(test_logout_crlf),
	    cmocka_unit_test(test_logout_lf_lowercase),
	    cmocka_unit_test(test_logout_bytewise),
	    cmocka_unit_test(test_logout_split_session_cut),
	    cmocka_unit_test(test_logout_bytes_after),
	    cmocka_unit_test(test_logout_after_commands),
	    cmocka_unit_test(test_logout_lookalikes),
	    cmocka_unit_test(test_logout_unclean_not_intercepted),
	    cmocka_unit_test(test_logout_during_idle),
	    cmocka_unit_test(test_logout_tag_max),
	    cmocka_unit_test(test_hold_head),
	    cmocka_unit_test(test_hold_only_trailing_line),
	    cmocka_unit_test(test_head_max),
	    cmocka_unit_test(test_head_command_too_long),
	    cmocka_unit_test(test_malformed_command),
	    cmocka_unit_test(test_sync_literal),
	    cmocka_unit_test(test_sync_literal_two),
	    cmocka_unit_test(test_sync_literal_refused),
	    cmocka_unit_test(test_nonsync_literal),
	    cmocka_unit_test(test_literal_contents_not_counted),
	    cmocka_unit_test(test_server_literal),
	    cmocka_unit_test(test_server_literal_large),
	    cmocka_unit_test(test_bye),
	    cmocka_unit_test(test_unexpected_tagged_reply),
	    cmocka_unit_test(test_malformed_reply),
	    cmocka_unit_test(test_last_status),
	    cmocka_unit_test(test_idle),
	    cmocka_unit_test(test_idle_refused),
	    cmocka_unit_test(test_idle_pool_done),
	    cmocka_unit_test(test_compress),
	    cmocka_unit_test(test_enable),
	    cmocka_unit_test(test_unknown_commands),
	    cmocka_unit_test(test_safe_commands),
	    cmocka_unit_test(test_uid),
	    cmocka_unit_test(test_own_command),
	    cmocka_unit_test(test_client_boundary),
	    cmocka_unit_test(test_quiet_conditions),
	    cmocka_unit_test(test_drop_held),
	    cmocka_unit_test(test_reset_session),
	    cmocka_unit_test(test_set_unclean),
	    cmocka_unit_test(test_random_streams),
	    /* known defects: fail until fixed (see the comments above them) */
	    cmocka_unit_test(test_BUG_server_reply_without_space),
	    cmocka_unit_test(test_BUG_bye_bare_lf),
	    cmocka_unit_test(test_BUG_literal_size_forms),
	    cmocka_unit_test(test_BUG_nonsync_literal_not_read_by_server),
	    cmocka_unit_test(test_BUG_hidden_command),
	    cmocka_unit_test(test_BUG_server_text_ending_in_braces),
	    cmocka_unit_test(test_BUG_literal_before_plus),
	    cmocka_unit_test(test_BUG_logout_invalid_tag),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
