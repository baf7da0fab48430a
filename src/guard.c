/*
 * guard — the brute-force policy. Failed logins are counted per address
 * prefix in a sliding window and ban the prefix at maxretry; bans escalate
 * while a prefix keeps coming back; failures per user across addresses slow
 * that user's logins down but never lock the account; a repeated stale
 * password counts once; an address that logged in as a user is trusted for
 * that user.
 *
 * This file must never do I/O, read a clock, draw random numbers or log:
 * time and randomness come from the caller, and everything worth telling
 * leaves as an event or a result. Memory is bounded by caps on the three
 * tables with least-recently-touched eviction, but an active ban is never
 * evicted: it lives in the expiry heap, outside the eviction order.
 */
#include "guard.h"
#include "hash.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define HITS_MAX 64    /* time slots per counter; exact while fewer distinct seconds */
#define NO_HEAP ((size_t)-1)

#define container_of(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))

/* ---- intrusive hash table with a least-recently-touched list ---------- */

struct gnode {
	struct gnode *hnext;       /* hash chain */
	struct gnode *prev, *next; /* LRU list; NULL when not on it */
	uint64_t hash;
	uint64_t touched;          /* s, last activity */
};

struct gtable {
	struct gnode **b;
	size_t nb; /* power of two */
	size_t n;
	struct gnode lru; /* sentinel: lru.next newest, lru.prev oldest */
};

typedef bool node_eq_fn(const struct gnode *n, const void *arg);

static int tab_init(struct gtable *t)
{
	t->nb = 64;
	t->b = calloc(t->nb, sizeof *t->b);
	t->n = 0;
	t->lru.next = t->lru.prev = &t->lru;
	return t->b ? 0 : -1;
}

static struct gnode *tab_find(const struct gtable *t, uint64_t h, node_eq_fn *eq, const void *arg)
{
	for (struct gnode *n = t->b[h & (t->nb - 1)]; n; n = n->hnext)
		if (n->hash == h && eq(n, arg))
			return n;
	return NULL;
}

static void tab_grow(struct gtable *t)
{
	size_t nb = t->nb * 2;
	struct gnode **b = calloc(nb, sizeof *b);

	if (!b)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < t->nb; i++) {
		struct gnode *n = t->b[i], *next;
		for (; n; n = next) {
			next = n->hnext;
			n->hnext = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(t->b);
	t->b = b;
	t->nb = nb;
}

static void tab_insert(struct gtable *t, struct gnode *n)
{
	if (t->n >= t->nb)
		tab_grow(t);
	n->hnext = t->b[n->hash & (t->nb - 1)];
	t->b[n->hash & (t->nb - 1)] = n;
	t->n++;
}

static void lru_unlink(struct gnode *n)
{
	if (!n->next)
		return;
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = NULL;
}

static void lru_touch(struct gtable *t, struct gnode *n, uint64_t now)
{
	lru_unlink(n);
	n->next = t->lru.next;
	n->prev = &t->lru;
	t->lru.next->prev = n;
	t->lru.next = n;
	if (now > n->touched)
		n->touched = now;
}

static struct gnode *lru_oldest(const struct gtable *t)
{
	return t->lru.prev == &t->lru ? NULL : t->lru.prev;
}

static void tab_remove(struct gtable *t, struct gnode *n)
{
	struct gnode **pp = &t->b[n->hash & (t->nb - 1)];

	while (*pp != n)
		pp = &(*pp)->hnext;
	*pp = n->hnext;
	lru_unlink(n);
	t->n--;
}

/* ---- time-slotted counter: a sliding window over failure times -------- */

struct hit {
	uint64_t t; /* s: latest failure in the slot */
	uint32_t n;
};

struct hits {
	struct hit *v;
	uint32_t n, cap;
	uint32_t total;
};

static uint64_t since(uint64_t now, uint64_t t)
{
	return now > t ? now - t : 0;
}

static void hits_prune(struct hits *h, uint64_t now, uint64_t window)
{
	uint32_t k = 0;

	while (k < h->n && since(now, h->v[k].t) >= window)
		h->total -= h->v[k++].n;
	if (k) {
		h->n -= k;
		memmove(h->v, h->v + k, h->n * sizeof *h->v);
	}
}

static unsigned hits_count(const struct hits *h, uint64_t now, uint64_t window)
{
	unsigned c = 0;

	for (uint32_t i = 0; i < h->n; i++)
		if (since(now, h->v[i].t) < window)
			c += h->v[i].n;
	return c;
}

static void hits_clear(struct hits *h)
{
	free(h->v);
	memset(h, 0, sizeof *h);
}

static int hits_add(struct hits *h, uint64_t t)
{
	if (h->n && h->v[h->n - 1].t >= t) {
		/* Same second (or a clock step back): one slot. */
		h->v[h->n - 1].n++;
		h->total++;
		return 0;
	}
	if (h->n == h->cap && h->cap < HITS_MAX) {
		uint32_t cap = h->cap ? h->cap * 2 : 4;
		struct hit *v = realloc(h->v, cap * sizeof *v);
		if (!v)
			return -1;
		h->v = v;
		h->cap = cap;
	}
	if (h->n == h->cap) {
		/* Full: fold the two oldest slots under the newer time. The merged
		 * failures then leave the window late, never early: counting errs
		 * towards banning, and only past HITS_MAX distinct seconds. */
		h->v[1].n += h->v[0].n;
		memmove(h->v, h->v + 1, (h->n - 1) * sizeof *h->v);
		h->n--;
	}
	h->v[h->n].t = t;
	h->v[h->n].n = 1;
	h->n++;
	h->total++;
	return 0;
}

/* ---- the guard's entries ---------------------------------------------- */

struct grec {
	uint64_t t;
	uint64_t uhash;
	uint64_t pw;
	uint32_t repeats;
	uint8_t status;
	bool has_pw;
	char user[GUARD_USER_LEN];
	char reason[GUARD_REASON_LEN];
	char proto[GUARD_PROTO_LEN];
	char node[GUARD_NODE_LEN];
};

struct gprefix {
	struct gnode node;
	struct cidr key;
	struct hits hits;
	struct grec *rec; /* ring, oldest at rhead; grows to GUARD_RECENT */
	uint16_t nrec, caprec, rhead;
	size_t heap_idx;  /* in the expiry heap while banned, else NO_HEAP */
	/* The latest ban, active or ended (ban_expiry is when it ended). */
	uint64_t ban_start, ban_expiry;
	unsigned ban_count;
	enum guard_source source;
	char reason[GUARD_REASON_LEN];
};

struct guser {
	struct gnode node;
	struct hits hits;
	size_t len;
	char name[];
};

struct gtrust {
	struct gnode node;
	struct cidr key;
	uint64_t uhash;
};

struct guard {
	struct guard_params p;
	uint8_t seed[GUARD_SEED_LEN];
	struct gtable prefixes, users, trust;
	struct gprefix **heap; /* min-heap on ban_expiry */
	size_t nheap, capheap;
	/* Banned prefix lengths per family, so a check probes only those. */
	unsigned lencount[2][129];
	uint64_t lenmask[2][3];
	guard_event_fn *sink;
	void *sink_ctx;
	struct guard_stats st;
};

static void copy_trunc(char *dst, size_t sz, const char *src)
{
	size_t n = src ? strnlen(src, sz - 1) : 0;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

static void emit(struct guard *g, const struct guard_event *ev)
{
	if (g->sink)
		g->sink(g->sink_ctx, ev);
}

/* ---- keys ---------------------------------------------------------------- */

static void mask_bits(uint8_t *a, unsigned bits, size_t len)
{
	size_t i = bits / 8;
	if (i < len && bits % 8)
		a[i++] &= (uint8_t)(0xff << (8 - bits % 8));
	for (; i < len; i++)
		a[i] = 0;
}

/* Raw address into (family, 16 bytes) with v4-mapped IPv6 made IPv4. */
static bool raw_bytes(int family, const uint8_t *in, int *fam, uint8_t a[16])
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memset(a, 0, 16);
	if (family == AF_INET6 && memcmp(in, mapped, 12) == 0) {
		in += 12;
		family = AF_INET;
	}
	if (family != AF_INET && family != AF_INET6)
		return false;
	memcpy(a, in, family == AF_INET ? 4 : 16);
	*fam = family;
	return true;
}

static bool sockaddr_bytes(const struct sockaddr *sa, int *family, uint8_t a[16])
{
	if (sa->sa_family == AF_INET)
		return raw_bytes(AF_INET,
		                 (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr,
		                 family, a);
	if (sa->sa_family == AF_INET6)
		return raw_bytes(AF_INET6,
		                 ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr,
		                 family, a);
	return false;
}

static void make_key(int family, const uint8_t *a, unsigned bits, struct cidr *k)
{
	memset(k, 0, sizeof *k);
	k->family = family;
	k->prefix = bits;
	memcpy(k->addr, a, family == AF_INET ? 4 : 16);
	mask_bits(k->addr, bits, family == AF_INET ? 4 : 16);
}

static unsigned key_bits(const struct guard *g, int family)
{
	return family == AF_INET ? g->p.ipv4_prefix : g->p.ipv6_prefix;
}

int guard_key_from_raw(const struct guard *g, int family, const uint8_t *bytes, struct cidr *key)
{
	uint8_t a[16];

	if (!raw_bytes(family, bytes, &family, a))
		return -1;
	make_key(family, a, key_bits(g, family), key);
	return 0;
}

int guard_key_from_sockaddr(const struct guard *g, const struct sockaddr *sa, struct cidr *key)
{
	uint8_t a[16];
	int family;

	if (!sockaddr_bytes(sa, &family, a))
		return -1;
	make_key(family, a, key_bits(g, family), key);
	return 0;
}

int guard_cidr_from_sockaddr(const struct sockaddr *sa, struct cidr *out)
{
	uint8_t a[16];
	int family;

	if (!sockaddr_bytes(sa, &family, a))
		return -1;
	make_key(family, a, family == AF_INET ? 32 : 128, out);
	return 0;
}

void guard_cidr_format(const struct cidr *c, char *buf, size_t bufsz)
{
	char ip[INET6_ADDRSTRLEN];

	if (!inet_ntop(c->family, c->addr, ip, sizeof ip))
		strcpy(ip, "?");
	snprintf(buf, bufsz, "%s/%u", ip, c->prefix);
}

static uint64_t key_hash(const struct guard *g, const struct cidr *k)
{
	uint8_t b[18];

	b[0] = (uint8_t)(k->family == AF_INET6);
	b[1] = (uint8_t)k->prefix;
	memcpy(b + 2, k->addr, 16);
	return siphash24(g->seed, b, sizeof b);
}

static bool key_equal(const struct cidr *a, const struct cidr *b)
{
	return a->family == b->family && a->prefix == b->prefix &&
	       memcmp(a->addr, b->addr, 16) == 0;
}

/* Equal on the shorter of the two prefixes: one contains the other. */
static bool key_overlap(const struct cidr *a, const struct cidr *b)
{
	unsigned bits = a->prefix < b->prefix ? a->prefix : b->prefix;
	uint8_t x[16], y[16];

	if (a->family != b->family)
		return false;
	memcpy(x, a->addr, 16);
	memcpy(y, b->addr, 16);
	mask_bits(x, bits, 16);
	mask_bits(y, bits, 16);
	return memcmp(x, y, 16) == 0;
}

static size_t user_len(const char *user)
{
	return user ? strnlen(user, GUARD_USER_MAX) : 0;
}

static uint64_t user_hash(const struct guard *g, const char *user)
{
	return siphash24(g->seed, user ? user : "", user_len(user));
}

/* ---- prefixes -------------------------------------------------------------- */

static bool prefix_eq(const struct gnode *n, const void *arg)
{
	return key_equal(&container_of(n, struct gprefix, node)->key, arg);
}

static struct gprefix *prefix_find(const struct guard *g, const struct cidr *k)
{
	struct gnode *n = tab_find(&g->prefixes, key_hash(g, k), prefix_eq, k);
	return n ? container_of(n, struct gprefix, node) : NULL;
}

static bool is_banned(const struct gprefix *p)
{
	return p->heap_idx != NO_HEAP;
}

static void prefix_destroy(struct guard *g, struct gprefix *p)
{
	tab_remove(&g->prefixes, &p->node);
	hits_clear(&p->hits);
	free(p->rec);
	free(p);
}

static void evict_oldest(struct guard *g, struct gtable *t);

static struct gprefix *prefix_get(struct guard *g, const struct cidr *k, uint64_t now)
{
	struct gprefix *p = prefix_find(g, k);

	if (p)
		return p;
	if (g->prefixes.n >= g->p.max_prefixes)
		evict_oldest(g, &g->prefixes);
	p = calloc(1, sizeof *p);
	if (!p)
		return NULL;
	p->key = *k;
	p->heap_idx = NO_HEAP;
	p->node.hash = key_hash(g, k);
	p->node.touched = now;
	tab_insert(&g->prefixes, &p->node);
	lru_touch(&g->prefixes, &p->node, now);
	return p;
}

static void prefix_touch(struct guard *g, struct gprefix *p, uint64_t now)
{
	if (is_banned(p)) {
		if (now > p->node.touched)
			p->node.touched = now;
	} else {
		lru_touch(&g->prefixes, &p->node, now);
	}
}

static struct grec *rec_at(const struct gprefix *p, unsigned i)
{
	return &p->rec[(p->rhead + i) % p->caprec];
}

static struct grec *rec_add(struct gprefix *p)
{
	if (p->nrec == p->caprec && p->caprec < GUARD_RECENT) {
		/* Only grown while not yet wrapped, so rhead is still 0. */
		uint16_t cap = p->caprec ? (uint16_t)(p->caprec * 2) : 4;
		struct grec *r = realloc(p->rec, cap * sizeof *r);
		if (!r)
			return NULL;
		p->rec = r;
		p->caprec = cap;
	}
	if (p->nrec < p->caprec)
		return &p->rec[p->nrec++];
	struct grec *r = &p->rec[p->rhead];
	p->rhead = (uint16_t)((p->rhead + 1) % p->caprec);
	return r;
}

static uint64_t rec_newest(const struct gprefix *p)
{
	uint64_t t = 0;
	for (unsigned i = 0; i < p->nrec; i++)
		if (rec_at(p, i)->t > t)
			t = rec_at(p, i)->t;
	return t;
}

/* The latest ban's escalation still counts at now. */
static bool recidive_open(const struct guard *g, const struct gprefix *p, uint64_t now)
{
	return p->ban_count > 0 && g->p.recidive_window > 0 &&
	       since(now, p->ban_expiry) < g->p.recidive_window;
}

/* Nothing left worth keeping: no ban, no count, nothing to de-duplicate
 * against, no escalation memory. */
static bool prefix_idle(const struct guard *g, struct gprefix *p, uint64_t now)
{
	if (is_banned(p))
		return false;
	hits_prune(&p->hits, now, g->p.findtime);
	return p->hits.total == 0 && since(now, rec_newest(p)) >= g->p.findtime &&
	       !recidive_open(g, p, now);
}

/* ---- bans: expiry heap and per-length index ----------------------------- */

static void heap_set(struct guard *g, size_t i, struct gprefix *p)
{
	g->heap[i] = p;
	p->heap_idx = i;
}

static void heap_up(struct guard *g, size_t i)
{
	struct gprefix *p = g->heap[i];
	while (i > 0) {
		size_t up = (i - 1) / 2;
		if (g->heap[up]->ban_expiry <= p->ban_expiry)
			break;
		heap_set(g, i, g->heap[up]);
		i = up;
	}
	heap_set(g, i, p);
}

static void heap_down(struct guard *g, size_t i)
{
	struct gprefix *p = g->heap[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= g->nheap)
			break;
		if (c + 1 < g->nheap && g->heap[c + 1]->ban_expiry < g->heap[c]->ban_expiry)
			c++;
		if (p->ban_expiry <= g->heap[c]->ban_expiry)
			break;
		heap_set(g, i, g->heap[c]);
		i = c;
	}
	heap_set(g, i, p);
}

static int heap_push(struct guard *g, struct gprefix *p)
{
	if (g->nheap == g->capheap) {
		size_t cap = g->capheap ? g->capheap * 2 : 64;
		struct gprefix **h = realloc(g->heap, cap * sizeof *h);
		if (!h)
			return -1;
		g->heap = h;
		g->capheap = cap;
	}
	heap_set(g, g->nheap++, p);
	heap_up(g, g->nheap - 1);
	return 0;
}

static void heap_remove(struct guard *g, struct gprefix *p)
{
	size_t i = p->heap_idx;
	struct gprefix *last = g->heap[--g->nheap];

	p->heap_idx = NO_HEAP;
	if (last == p)
		return;
	heap_set(g, i, last);
	heap_up(g, i);
	heap_down(g, last->heap_idx);
}

static void len_index(struct guard *g, const struct cidr *k, int delta)
{
	int f = k->family == AF_INET6;
	unsigned len = k->prefix;

	g->lencount[f][len] = (unsigned)((int)g->lencount[f][len] + delta);
	if (g->lencount[f][len])
		g->lenmask[f][len / 64] |= 1ULL << (len % 64);
	else
		g->lenmask[f][len / 64] &= ~(1ULL << (len % 64));
}

static void ban_info(const struct gprefix *p, struct guard_ban_info *b)
{
	b->key = p->key;
	b->started = p->ban_start;
	b->expiry = p->ban_expiry;
	b->ban_count = p->ban_count;
	b->source = p->source;
	b->reason = p->reason;
}

/* Set or replace p's ban. Returns 0, or -1 when out of memory. */
static int ban_set(struct guard *g, struct gprefix *p, uint64_t start, uint64_t expiry,
                   enum guard_source src, const char *reason)
{
	if (!is_banned(p)) {
		p->ban_expiry = expiry;
		if (heap_push(g, p) == -1)
			return -1;
		lru_unlink(&p->node);
		len_index(g, &p->key, +1);
	} else {
		p->ban_expiry = expiry;
		heap_up(g, p->heap_idx);
		heap_down(g, p->heap_idx);
	}
	p->ban_start = start;
	p->source = src;
	copy_trunc(p->reason, sizeof p->reason, reason);
	/* A ban settles the count that caused it. */
	hits_clear(&p->hits);
	return 0;
}

static void ban_end(struct guard *g, struct gprefix *p, uint64_t now, bool expired)
{
	struct guard_event ev = {.type = GUARD_EV_UNBAN, .key = p->key, .time = now};

	heap_remove(g, p);
	len_index(g, &p->key, -1);
	if (p->ban_expiry > now)
		p->ban_expiry = now;
	lru_touch(&g->prefixes, &p->node, now);
	ev.expired = expired;
	ban_info(p, &ev.ban);
	emit(g, &ev);
}

static uint64_t ban_length(const struct guard *g, unsigned previous)
{
	uint64_t d = g->p.bantime, max = g->p.bantime_max;
	unsigned f = g->p.bantime_factor;

	for (unsigned i = 0; i < previous && f > 1 && d < max; i++)
		d = d > max / f ? max : d * f;
	return d < max ? d : max;
}

static bool ignored(const struct guard *g, const struct sockaddr *sa)
{
	return cidr_list_match(&g->p.ignore, sa);
}

/* The active ban covering address a that ends last, or NULL. */
static const struct gprefix *find_ban(const struct guard *g, int family, const uint8_t *a,
                                      uint64_t now)
{
	const struct gprefix *best = NULL;
	int f = family == AF_INET6;
	unsigned max = f ? 128 : 32;

	for (unsigned w = 0; w < 3; w++) {
		for (uint64_t m = g->lenmask[f][w]; m; m &= m - 1) {
			unsigned len = w * 64 + (unsigned)__builtin_ctzll(m);
			struct cidr k;
			if (len > max)
				continue;
			make_key(family, a, len, &k);
			const struct gprefix *p = prefix_find(g, &k);
			if (p && is_banned(p) && p->ban_expiry > now &&
			    (!best || p->ban_expiry > best->ban_expiry))
				best = p;
		}
	}
	return best;
}

bool guard_check_connect(const struct guard *g, const struct sockaddr *sa, uint64_t now,
                         uint64_t *expiry)
{
	const struct gprefix *p;
	uint8_t a[16];
	int family;

	if (g->nheap == 0 || !sockaddr_bytes(sa, &family, a))
		return false;
	p = find_ban(g, family, a, now);
	/* The ignore list is only consulted on a hit: the common path stays a
	 * lookup, and a manual ban can never shut out an ignored address. */
	if (!p || ignored(g, sa))
		return false;
	if (expiry)
		*expiry = p->ban_expiry;
	return true;
}

/* ---- users and trust ------------------------------------------------------ */

struct user_arg {
	const char *name;
	size_t len;
};

static bool user_eq(const struct gnode *n, const void *arg)
{
	const struct guser *u = container_of(n, struct guser, node);
	const struct user_arg *a = arg;
	return u->len == a->len && memcmp(u->name, a->name, a->len) == 0;
}

static struct guser *user_find(const struct guard *g, const char *user, uint64_t h)
{
	struct user_arg a = {user ? user : "", user_len(user)};
	struct gnode *n = tab_find(&g->users, h, user_eq, &a);
	return n ? container_of(n, struct guser, node) : NULL;
}

static struct guser *user_get(struct guard *g, const char *user, uint64_t h, uint64_t now)
{
	struct guser *u = user_find(g, user, h);
	size_t len = user_len(user);

	if (u)
		return u;
	if (g->users.n >= g->p.max_users)
		evict_oldest(g, &g->users);
	u = calloc(1, sizeof *u + len + 1);
	if (!u)
		return NULL;
	if (len)
		memcpy(u->name, user, len);
	u->len = len;
	u->node.hash = h;
	tab_insert(&g->users, &u->node);
	lru_touch(&g->users, &u->node, now);
	return u;
}

static void user_destroy(struct guard *g, struct guser *u)
{
	tab_remove(&g->users, &u->node);
	hits_clear(&u->hits);
	free(u);
}

/* 1 s once the user reaches user_maxretry, doubling with each further
 * counted failure, capped. */
static uint32_t user_delay(const struct guard *g, unsigned failures)
{
	uint64_t d = 1000;

	if (g->p.user_delay_max == 0 || failures < g->p.user_maxretry)
		return 0;
	for (unsigned i = g->p.user_maxretry; i < failures && d < g->p.user_delay_max; i++)
		d *= 2;
	return d < g->p.user_delay_max ? (uint32_t)d : g->p.user_delay_max;
}

struct trust_arg {
	const struct cidr *key;
	uint64_t uhash;
};

static uint64_t trust_hash(const struct guard *g, const struct cidr *k, uint64_t uhash)
{
	uint8_t b[26];

	b[0] = (uint8_t)(k->family == AF_INET6);
	b[1] = (uint8_t)k->prefix;
	memcpy(b + 2, k->addr, 16);
	memcpy(b + 18, &uhash, 8);
	return siphash24(g->seed, b, sizeof b);
}

static bool trust_eq(const struct gnode *n, const void *arg)
{
	const struct gtrust *t = container_of(n, struct gtrust, node);
	const struct trust_arg *a = arg;
	return t->uhash == a->uhash && key_equal(&t->key, a->key);
}

static struct gtrust *trust_find(const struct guard *g, const struct cidr *k, uint64_t uhash)
{
	struct trust_arg a = {k, uhash};
	struct gnode *n = tab_find(&g->trust, trust_hash(g, k, uhash), trust_eq, &a);
	return n ? container_of(n, struct gtrust, node) : NULL;
}

static bool trusted(const struct guard *g, const struct cidr *k, uint64_t uhash, uint64_t now)
{
	const struct gtrust *t = trust_find(g, k, uhash);
	return t && since(now, t->node.touched) < g->p.trust_time;
}

/* ---- eviction ------------------------------------------------------------- */

static void evict_oldest(struct guard *g, struct gtable *t)
{
	struct gnode *n = lru_oldest(t);

	if (!n)
		return; /* only active bans left: they are never evicted */
	g->st.evictions++;
	if (t == &g->prefixes) {
		prefix_destroy(g, container_of(n, struct gprefix, node));
	} else if (t == &g->users) {
		user_destroy(g, container_of(n, struct guser, node));
	} else {
		tab_remove(t, n);
		free(container_of(n, struct gtrust, node));
	}
}

/* ---- life cycle ------------------------------------------------------------ */

static void params_fix(struct guard_params *p)
{
	if (!p->max_prefixes)
		p->max_prefixes = GUARD_DEFAULT_MAX_PREFIXES;
	if (!p->max_users)
		p->max_users = GUARD_DEFAULT_MAX_USERS;
	if (!p->max_trust)
		p->max_trust = GUARD_DEFAULT_MAX_TRUST;
	if (p->ipv4_prefix < 1 || p->ipv4_prefix > 32)
		p->ipv4_prefix = 32;
	if (p->ipv6_prefix < 1 || p->ipv6_prefix > 128)
		p->ipv6_prefix = 64;
	if (p->maxretry < 1)
		p->maxretry = 1;
	if (p->bantime_factor < 1)
		p->bantime_factor = 1;
}

void guard_params_from_config(struct guard_params *p, const struct config *cfg)
{
	memset(p, 0, sizeof *p);
	p->ipv4_prefix = cfg->guard_ipv4_prefix;
	p->ipv6_prefix = cfg->guard_ipv6_prefix;
	p->findtime = cfg->guard_findtime;
	p->maxretry = cfg->guard_maxretry;
	p->bantime = cfg->guard_bantime;
	p->recidive_window = cfg->guard_recidive_window;
	p->bantime_factor = cfg->guard_bantime_factor;
	p->bantime_max = cfg->guard_bantime_max;
	p->trust_time = cfg->guard_trust_time;
	p->user_maxretry = cfg->guard_user_maxretry;
	p->user_delay_max = cfg->guard_user_delay_max;
	p->failure_delay = cfg->guard_failure_delay;
	p->ignore = cfg->guard_ignore;
}

struct guard *guard_create(const struct guard_params *p, const uint8_t seed[GUARD_SEED_LEN])
{
	struct guard *g = calloc(1, sizeof *g);

	if (!g)
		return NULL;
	g->p = *p;
	params_fix(&g->p);
	memcpy(g->seed, seed, GUARD_SEED_LEN);
	if (tab_init(&g->prefixes) == -1 || tab_init(&g->users) == -1 || tab_init(&g->trust) == -1) {
		guard_free(&g);
		return NULL;
	}
	return g;
}

static void tab_free_all(struct guard *g, struct gtable *t)
{
	if (!t->b)
		return;
	for (size_t i = 0; i < t->nb; i++) {
		struct gnode *n = t->b[i], *next;
		for (; n; n = next) {
			next = n->hnext;
			if (t == &g->prefixes) {
				struct gprefix *p = container_of(n, struct gprefix, node);
				hits_clear(&p->hits);
				free(p->rec);
				free(p);
			} else if (t == &g->users) {
				struct guser *u = container_of(n, struct guser, node);
				hits_clear(&u->hits);
				free(u);
			} else {
				free(container_of(n, struct gtrust, node));
			}
		}
	}
	free(t->b);
}

void guard_free(struct guard **gp)
{
	struct guard *g = gp ? *gp : NULL;

	if (!g)
		return;
	tab_free_all(g, &g->prefixes);
	tab_free_all(g, &g->users);
	tab_free_all(g, &g->trust);
	free(g->heap);
	explicit_bzero(g->seed, sizeof g->seed);
	free(g);
	*gp = NULL;
}

void guard_set_sink(struct guard *g, guard_event_fn *fn, void *ctx)
{
	g->sink = fn;
	g->sink_ctx = ctx;
}

void guard_set_params(struct guard *g, const struct guard_params *p)
{
	g->p = *p;
	params_fix(&g->p);
}

void guard_get_params(const struct guard *g, struct guard_params *p)
{
	*p = g->p;
}

/* ---- the decisions ---------------------------------------------------------- */

void guard_check_login(const struct guard *g, const struct sockaddr *sa, const char *user,
                       uint64_t now, struct guard_verdict *v)
{
	uint8_t a[16];
	int family;
	struct cidr k;

	memset(v, 0, sizeof *v);
	if (!sockaddr_bytes(sa, &family, a) || ignored(g, sa))
		return;
	if (g->nheap) {
		const struct gprefix *p = find_ban(g, family, a, now);
		if (p) {
			v->banned = true;
			v->ban_expiry = p->ban_expiry;
			return;
		}
	}
	uint64_t uh = user_hash(g, user);
	const struct guser *u = user_find(g, user, uh);
	if (!u)
		return;
	make_key(family, a, key_bits(g, family), &k);
	/* The account's owner, back from where they logged in before, is not
	 * slowed down by someone else guessing their password. */
	if (trusted(g, &k, uh, now))
		return;
	v->delay_ms = user_delay(g, hits_count(&u->hits, now, g->p.findtime));
}

int guard_record_failure(struct guard *g, const struct sockaddr *sa, const char *user,
                         const uint8_t *pwhash, const char *reason, const char *proto,
                         uint64_t now, struct guard_failure_result *r)
{
	return guard_record_failure_node(g, sa, user, pwhash, reason, proto, NULL, now, r);
}

int guard_record_failure_node(struct guard *g, const struct sockaddr *sa, const char *user,
                              const uint8_t *pwhash, const char *reason, const char *proto,
                              const char *node, uint64_t now, struct guard_failure_result *r)
{
	struct guard_event ev = {.type = GUARD_EV_FAILURE, .time = now, .user = user ? user : "",
	                         .reason = reason ? reason : "", .proto = proto ? proto : "imap",
	                         .node = node ? node : "", .pwhash = pwhash};
	struct gprefix *p;
	struct grec *rec = NULL;
	uint64_t uh, pw = 0;
	uint8_t a[16];
	int family;

	memset(r, 0, sizeof *r);
	if (!sockaddr_bytes(sa, &family, a))
		return -1;
	if (ignored(g, sa)) {
		r->status = GUARD_IGNORED;
		return 0;
	}
	make_key(family, a, key_bits(g, family), &r->key);
	p = prefix_get(g, &r->key, now);
	if (!p)
		return -1;
	if (is_banned(p) && p->ban_expiry <= now)
		ban_end(g, p, now, true); /* ran out before guard_expire came by */
	prefix_touch(g, p, now);
	hits_prune(&p->hits, now, g->p.findtime);
	uh = user_hash(g, user);
	if (pwhash)
		memcpy(&pw, pwhash, sizeof pw);

	for (unsigned i = 0; pwhash && i < p->nrec; i++) {
		struct grec *x = rec_at(p, i);
		if (x->has_pw && x->pw == pw && x->uhash == uh &&
		    since(now, x->t) < g->p.findtime) {
			rec = x;
			break;
		}
	}
	if (rec) {
		/* Refreshed, so a client retrying a stale password forever keeps
		 * counting once. */
		rec->t = now;
		rec->repeats++;
		r->status = GUARD_DUPLICATE;
	} else {
		r->status = trusted(g, &r->key, uh, now) ? GUARD_TRUSTED : GUARD_COUNTED;
		rec = rec_add(p);
		if (rec) {
			memset(rec, 0, sizeof *rec);
			rec->t = now;
			rec->uhash = uh;
			rec->pw = pw;
			rec->has_pw = pwhash != NULL;
			rec->status = (uint8_t)r->status;
			copy_trunc(rec->user, sizeof rec->user, user);
			copy_trunc(rec->reason, sizeof rec->reason, reason);
			copy_trunc(rec->proto, sizeof rec->proto, ev.proto);
			copy_trunc(rec->node, sizeof rec->node, ev.node);
		}
	}
	g->st.failures_total++;

	struct guser *u = NULL;
	if (r->status == GUARD_COUNTED) {
		g->st.failures_counted++;
		u = user_get(g, user, uh, now);
		if (u) {
			lru_touch(&g->users, &u->node, now);
			hits_prune(&u->hits, now, g->p.findtime);
			hits_add(&u->hits, now);
		}
		/* A failure from a login that began before the ban adds nothing. */
		if (!is_banned(p) && hits_add(&p->hits, now) == 0 &&
		    p->hits.total >= g->p.maxretry) {
			unsigned previous = recidive_open(g, p, now) ? p->ban_count : 0;
			uint64_t len = ban_length(g, previous);
			if (ban_set(g, p, now, now + len, GUARD_SRC_AUTO, reason) == 0) {
				p->ban_count = previous + 1;
				g->st.bans_total++;
				r->banned = true;
				r->ban_seconds = len;
				r->ban_count = p->ban_count;
			}
		}
	} else {
		u = user_find(g, user, uh);
	}
	if (u)
		r->user_failures = hits_count(&u->hits, now, g->p.findtime);
	r->user_delay_ms = user_delay(g, r->user_failures);
	r->failures = p->hits.total;
	if (is_banned(p))
		r->ban_expiry = p->ban_expiry;

	ev.key = p->key;
	ev.status = r->status;
	emit(g, &ev);
	if (r->banned) {
		struct guard_event bev = {.type = GUARD_EV_BAN, .key = p->key, .time = now};
		ban_info(p, &bev.ban);
		emit(g, &bev);
	}
	return 0;
}

int guard_record_user_failure(struct guard *g, const char *user, uint64_t now,
                              struct guard_failure_result *r)
{
	uint64_t uh = user_hash(g, user);
	struct guser *u;

	memset(r, 0, sizeof *r);
	r->status = GUARD_USER_ONLY;
	u = user_get(g, user, uh, now);
	if (!u)
		return -1;
	lru_touch(&g->users, &u->node, now);
	hits_prune(&u->hits, now, g->p.findtime);
	hits_add(&u->hits, now);
	g->st.failures_total++;
	g->st.failures_counted++;
	r->user_failures = hits_count(&u->hits, now, g->p.findtime);
	r->user_delay_ms = user_delay(g, r->user_failures);
	return 0;
}

int guard_record_success(struct guard *g, const struct sockaddr *sa, const char *user,
                         uint64_t now)
{
	struct cidr k;
	uint64_t uh;
	struct gtrust *t;

	if (guard_key_from_sockaddr(g, sa, &k) == -1)
		return -1;
	if (ignored(g, sa) || g->p.trust_time == 0)
		return 0;
	uh = user_hash(g, user);
	t = trust_find(g, &k, uh);
	if (!t) {
		if (g->trust.n >= g->p.max_trust)
			evict_oldest(g, &g->trust);
		t = calloc(1, sizeof *t);
		if (!t)
			return -1;
		t->key = k;
		t->uhash = uh;
		t->node.hash = trust_hash(g, &k, uh);
		tab_insert(&g->trust, &t->node);
	}
	lru_touch(&g->trust, &t->node, now);
	return 0;
}

/* ---- admin --------------------------------------------------------------------- */

static bool inside_ignore(const struct guard *g, const struct cidr *c)
{
	for (size_t i = 0; i < g->p.ignore.n; i++) {
		const struct cidr *x = &g->p.ignore.items[i];
		if (x->prefix <= c->prefix && key_overlap(x, c))
			return true;
	}
	return false;
}

int guard_ban(struct guard *g, const struct cidr *c, uint64_t seconds, const char *reason,
              uint64_t now, struct guard_ban_info *out, const char **why)
{
	struct cidr k;
	struct gprefix *p;
	unsigned max = c->family == AF_INET6 ? 128 : 32;

	if ((c->family != AF_INET && c->family != AF_INET6) || c->prefix > max) {
		*why = "not an address prefix";
		return -1;
	}
	make_key(c->family, c->addr, c->prefix, &k);
	if (inside_ignore(g, &k)) {
		*why = "inside guard_ignore";
		return -1;
	}
	p = prefix_get(g, &k, now);
	if (!p || ban_set(g, p, now, now + (seconds ? seconds : g->p.bantime), GUARD_SRC_MANUAL,
	                  reason) == -1) {
		*why = "out of memory";
		return -1;
	}
	g->st.bans_total++;

	struct guard_event ev = {.type = GUARD_EV_BAN, .key = p->key, .time = now};
	ban_info(p, &ev.ban);
	emit(g, &ev);
	if (out)
		*out = ev.ban;
	return 0;
}

/* Every tracked prefix overlapping c, collected first so callers may
 * remove entries while going through them. */
static size_t collect_overlap(const struct guard *g, const struct cidr *c, struct gprefix ***out)
{
	struct gprefix **v = NULL;
	size_t n = 0, cap = 0;

	for (size_t i = 0; i < g->prefixes.nb; i++) {
		for (struct gnode *x = g->prefixes.b[i]; x; x = x->hnext) {
			struct gprefix *p = container_of(x, struct gprefix, node);
			if (!key_overlap(&p->key, c))
				continue;
			if (n == cap) {
				size_t ncap = cap ? cap * 2 : 16;
				struct gprefix **nv = realloc(v, ncap * sizeof *nv);
				if (!nv)
					goto out;
				v = nv;
				cap = ncap;
			}
			v[n++] = p;
		}
	}
out:
	*out = v;
	return n;
}

size_t guard_unban(struct guard *g, const struct cidr *c, bool forget, uint64_t now,
                   size_t *forgotten)
{
	struct gprefix **v;
	size_t n = collect_overlap(g, c, &v), lifted = 0, dropped = 0;

	for (size_t i = 0; i < n; i++) {
		struct gprefix *p = v[i];
		if (is_banned(p)) {
			ban_end(g, p, now, false);
			lifted++;
		}
		if (forget) {
			struct guard_event ev = {.type = GUARD_EV_FORGET, .key = p->key, .time = now};
			emit(g, &ev);
			prefix_destroy(g, p);
			dropped++;
		}
	}
	free(v);
	if (forgotten)
		*forgotten = dropped;
	return lifted;
}

void guard_bans_foreach(const struct guard *g, uint64_t now, guard_ban_fn *fn, void *ctx)
{
	for (size_t i = 0; i < g->nheap; i++) {
		struct guard_ban_info b;
		if (g->heap[i]->ban_expiry <= now)
			continue;
		ban_info(g->heap[i], &b);
		fn(ctx, &b);
	}
}

size_t guard_why(const struct guard *g, const struct cidr *c, uint64_t now, guard_prefix_fn *fn,
                 void *ctx)
{
	struct gprefix **v;
	size_t n = collect_overlap(g, c, &v);

	for (size_t i = 0; i < n; i++) {
		const struct gprefix *p = v[i];
		struct guard_failure_info f[GUARD_RECENT];
		struct guard_prefix_info info = {.key = p->key, .recent = f, .nrecent = p->nrec};

		info.banned = is_banned(p) && p->ban_expiry > now;
		ban_info(p, &info.ban);
		info.failures = hits_count(&p->hits, now, g->p.findtime);
		for (unsigned j = 0; j < p->nrec; j++) {
			const struct grec *r = rec_at(p, j);
			f[j] = (struct guard_failure_info){r->t, r->repeats, (enum guard_status)r->status,
			                                   r->user, r->reason, r->proto, r->node};
		}
		fn(ctx, &info);
	}
	free(v);
	return n;
}

void guard_expire(struct guard *g, uint64_t now)
{
	struct gnode *n, *prev;

	while (g->nheap && g->heap[0]->ban_expiry <= now)
		ban_end(g, g->heap[0], now, true);

	for (n = g->prefixes.lru.prev; n != &g->prefixes.lru; n = prev) {
		prev = n->prev;
		struct gprefix *p = container_of(n, struct gprefix, node);
		if (prefix_idle(g, p, now))
			prefix_destroy(g, p);
	}
	for (n = g->users.lru.prev; n != &g->users.lru; n = prev) {
		prev = n->prev;
		struct guser *u = container_of(n, struct guser, node);
		hits_prune(&u->hits, now, g->p.findtime);
		if (u->hits.total == 0)
			user_destroy(g, u);
	}
	for (n = g->trust.lru.prev; n != &g->trust.lru; n = prev) {
		prev = n->prev;
		if (since(now, n->touched) >= g->p.trust_time) {
			tab_remove(&g->trust, n);
			free(container_of(n, struct gtrust, node));
		}
	}
	while (g->prefixes.n > g->p.max_prefixes && lru_oldest(&g->prefixes))
		evict_oldest(g, &g->prefixes);
	while (g->users.n > g->p.max_users)
		evict_oldest(g, &g->users);
	while (g->trust.n > g->p.max_trust)
		evict_oldest(g, &g->trust);
}

/* ---- restore ---------------------------------------------------------------------- */

int guard_restore_ban(struct guard *g, const struct guard_ban_info *b, uint64_t now)
{
	struct gprefix *p;
	struct cidr k;
	unsigned max = b->key.family == AF_INET6 ? 128 : 32;

	if ((b->key.family != AF_INET && b->key.family != AF_INET6) || b->key.prefix > max)
		return 0;
	make_key(b->key.family, b->key.addr, b->key.prefix, &k);
	p = prefix_find(g, &k);
	if (b->expiry <= now) {
		/* Worth a slot only while it still escalates the next ban. */
		bool open = b->ban_count > 0 && g->p.recidive_window > 0 &&
		            since(now, b->expiry) < g->p.recidive_window;
		if (!open || (p && p->ban_expiry >= b->expiry))
			return 0;
		p = p ? p : prefix_get(g, &k, now);
		if (!p)
			return -1;
		if (!is_banned(p)) {
			p->ban_start = b->started;
			p->ban_expiry = b->expiry;
			p->source = b->source;
			copy_trunc(p->reason, sizeof p->reason, b->reason);
		}
		p->ban_count = b->ban_count;
		return 0;
	}
	p = p ? p : prefix_get(g, &k, now);
	if (!p || ban_set(g, p, b->started, b->expiry, b->source, b->reason) == -1)
		return -1;
	p->ban_count = b->ban_count;
	return 0;
}

int guard_restore_failure(struct guard *g, const struct cidr *key, const char *user, uint64_t time,
                          const char *reason, const char *proto, enum guard_status status,
                          uint64_t now)
{
	struct gprefix *p;
	struct grec *rec;
	struct cidr k;
	unsigned max = key->family == AF_INET6 ? 128 : 32;
	uint64_t uh;

	if ((key->family != AF_INET && key->family != AF_INET6) || key->prefix > max)
		return 0;
	make_key(key->family, key->addr, key->prefix, &k);
	p = prefix_get(g, &k, now);
	if (!p)
		return -1;
	prefix_touch(g, p, time);
	rec = rec_add(p);
	if (!rec)
		return -1;
	uh = user_hash(g, user);
	memset(rec, 0, sizeof *rec);
	rec->t = time;
	rec->uhash = uh;
	rec->status = (uint8_t)status;
	copy_trunc(rec->user, sizeof rec->user, user);
	copy_trunc(rec->reason, sizeof rec->reason, reason);
	copy_trunc(rec->proto, sizeof rec->proto, proto && *proto ? proto : "imap");
	if (status != GUARD_COUNTED || since(now, time) >= g->p.findtime)
		return 0;
	/* Failures before the latest ban were settled by it. */
	if (!is_banned(p) && time > p->ban_start && hits_add(&p->hits, time) == -1)
		return -1;
	struct guser *u = user_get(g, user, uh, now);
	if (!u || hits_add(&u->hits, time) == -1)
		return -1;
	lru_touch(&g->users, &u->node, time);
	return 0;
}

void guard_restore_failure_node(struct guard *g, const struct cidr *key, const char *node)
{
	struct cidr k;
	struct gprefix *p;

	if (!node || !*node || (key->family != AF_INET && key->family != AF_INET6))
		return;
	make_key(key->family, key->addr, key->prefix, &k);
	p = prefix_find(g, &k);
	if (p && p->nrec > 0)
		copy_trunc(rec_at(p, p->nrec - 1u)->node, GUARD_NODE_LEN, node);
}

int guard_apply_ban(struct guard *g, const struct guard_ban_info *b, uint64_t now)
{
	struct gprefix *p;
	struct cidr k;
	unsigned max = b->key.family == AF_INET6 ? 128 : 32;

	if ((b->key.family != AF_INET && b->key.family != AF_INET6) || b->key.prefix > max ||
	    b->expiry <= now || b->started > b->expiry)
		return 0;
	make_key(b->key.family, b->key.addr, b->key.prefix, &k);
	if (inside_ignore(g, &k))
		return 0;
	p = prefix_find(g, &k);
	if (p && is_banned(p) && p->ban_expiry >= b->expiry)
		return 0;
	p = p ? p : prefix_get(g, &k, now);
	if (!p || ban_set(g, p, b->started, b->expiry, b->source, b->reason) == -1)
		return -1;
	if (b->ban_count > p->ban_count)
		p->ban_count = b->ban_count;
	g->st.bans_total++;

	struct guard_event ev = {.type = GUARD_EV_BAN, .key = p->key, .time = now};
	ban_info(p, &ev.ban);
	emit(g, &ev);
	return 1;
}

/* ---- small things --------------------------------------------------------------- */

void guard_get_stats(const struct guard *g, struct guard_stats *st)
{
	*st = g->st;
	st->prefixes = g->prefixes.n;
	st->users = g->users.n;
	st->trusted = g->trust.n;
	st->bans_active = g->nheap;
}

uint32_t guard_failure_delay(const struct guard *g, uint32_t rnd)
{
	uint32_t max = g->p.failure_delay, lo = max / 2;
	return lo + rnd % (max - lo + 1);
}

const char *guard_status_name(enum guard_status s)
{
	switch (s) {
	case GUARD_COUNTED:
		return "counted";
	case GUARD_DUPLICATE:
		return "duplicate";
	case GUARD_TRUSTED:
		return "trusted";
	case GUARD_IGNORED:
		return "ignored";
	case GUARD_USER_ONLY:
		return "user_only";
	}
	return "?";
}

const char *guard_source_name(enum guard_source s)
{
	return s == GUARD_SRC_MANUAL ? "manual" : "auto";
}
