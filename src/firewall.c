/*
 * firewall — see firewall.h.
 *
 * Three parts: the script builder (pure), the helper's side (validate the
 * daemon's requests, build, run nft), and the daemon's side (what should
 * be in the sets, batching, the socket to the helper on the loop). The
 * daemon's side must never block and never hold a privilege; the helper
 * must never run anything but nft on imapgate's own table, whatever the
 * daemon sends.
 */
#include "firewall.h"
#include "file.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guard.h"
#include "hash.h"
#include "listener.h"
#include "log.h"
#include "server.h"
#include "stats.h"

/* --- text ------------------------------------------------------------------ */

struct text {
	char *p;
	size_t len, cap;
	bool oom;
};

static void tx_add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tx_add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->oom)
		return;
	for (;;) {
		size_t room = t->cap - t->len;

		va_start(ap, fmt);
		n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? room : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->oom = true;
			return;
		}
		if (t->p && (size_t)n < room) {
			t->len += (size_t)n;
			return;
		}
		{
			size_t ncap = t->cap ? t->cap * 2 : 4096;
			char *np;

			while (ncap - t->len <= (size_t)n)
				ncap *= 2;
			np = realloc(t->p, ncap);
			if (np == NULL) {
				t->oom = true;
				return;
			}
			t->p = np;
			t->cap = ncap;
		}
	}
}

static char *tx_done(struct text *t, size_t *len)
{
	if (t->oom || t->p == NULL) {
		free(t->p);
		return NULL;
	}
	*len = t->len;
	return t->p;
}

static void tx_prefix(struct text *t, const struct cidr *c)
{
	char ip[INET6_ADDRSTRLEN];

	if (inet_ntop(c->family, c->addr, ip, sizeof(ip)) == NULL)
		snprintf(ip, sizeof(ip), "?");
	if (c->prefix == (c->family == AF_INET ? 32u : 128u))
		tx_add(t, "%s", ip);
	else
		tx_add(t, "%s/%u", ip, c->prefix);
}

/* --- the script builder ---------------------------------------------------- */

static int elem_cmp(const void *a, const void *b)
{
	const struct firewall_elem *x = a, *y = b;
	int d;

	if (x->key.family != y->key.family)
		return x->key.family == AF_INET ? -1 : 1;
	d = memcmp(x->key.addr, y->key.addr, 16);
	if (d)
		return d;
	return (x->key.prefix > y->key.prefix) - (x->key.prefix < y->key.prefix);
}

static int cidr_cmp(const void *a, const void *b)
{
	const struct firewall_elem x = { *(const struct cidr *)a, 0 }, y = { *(const struct cidr *)b, 0 };

	return elem_cmp(&x, &y);
}

/* Is inner inside outer (same family, outer's prefix no longer)? */
static bool cidr_inside(const struct cidr *outer, const struct cidr *inner)
{
	unsigned bits = outer->prefix, full = bits / 8, rest = bits % 8;

	if (outer->family != inner->family || inner->prefix < outer->prefix)
		return false;
	if (memcmp(outer->addr, inner->addr, full) != 0)
		return false;
	return rest == 0 || ((outer->addr[full] ^ inner->addr[full]) & (uint8_t)(0xff00u >> rest)) == 0;
}

size_t firewall_cover(struct firewall_elem *e, size_t n)
{
	size_t kept = 0;

	if (n == 0)
		return 0;
	qsort(e, n, sizeof(e[0]), elem_cmp);
	/* Sorted by address, then shorter prefix first: a container comes
	 * before what it holds, and prefixes nest or are disjoint, so the
	 * last kept element is the only one to compare with. */
	for (size_t i = 0; i < n; i++) {
		if (e[i].timeout == 0 || (kept && cidr_inside(&e[kept - 1].key, &e[i].key)))
			continue;
		e[kept++] = e[i];
	}
	return kept;
}

static const char *set_of(int family)
{
	return family == AF_INET ? "ban4" : "ban6";
}

/* "add|delete element inet imapgate banN { a timeout Ns, b ... }" for
 * every element of one family, FIREWALL_ELEMS_PER_LINE a statement. */
static void tx_elements(struct text *t, const char *verb, const struct firewall_elem *e, size_t n, int family,
                        int timeout_mode /* 0: none, 1: the element's, 2: 1 s */)
{
	size_t in_line = 0;

	for (size_t i = 0; i < n; i++) {
		if (e[i].key.family != family || (timeout_mode == 1 && e[i].timeout == 0))
			continue;
		if (in_line == 0)
			tx_add(t, "%s element %s %s { ", verb, FIREWALL_TABLE, set_of(family));
		else
			tx_add(t, ", ");
		tx_prefix(t, &e[i].key);
		if (timeout_mode)
			tx_add(t, " timeout %us", timeout_mode == 1 ? e[i].timeout : 1u);
		if (++in_line == FIREWALL_ELEMS_PER_LINE) {
			tx_add(t, " }\n");
			in_line = 0;
		}
	}
	if (in_line)
		tx_add(t, " }\n");
}

char *firewall_script_sync(const struct firewall_rules *r, struct firewall_elem *e, size_t n, size_t *len)
{
	struct text t = { 0 };
	static const char *chain_spec = "{ type filter hook input priority -10; policy accept; }";

	n = firewall_cover(e, n);
	tx_add(&t, "add table %s\n", FIREWALL_TABLE);
	tx_add(&t, "add set %s ban4 { type ipv4_addr; flags interval, timeout; }\n", FIREWALL_TABLE);
	tx_add(&t, "add set %s ban6 { type ipv6_addr; flags interval, timeout; }\n", FIREWALL_TABLE);
	/* add + flush (+ delete): works whether or not the chain is there. */
	tx_add(&t, "add chain %s %s %s\n", FIREWALL_TABLE, FIREWALL_CHAIN, chain_spec);
	tx_add(&t, "flush chain %s %s\n", FIREWALL_TABLE, FIREWALL_CHAIN);
	if (r->setonly || r->nports == 0) {
		tx_add(&t, "delete chain %s %s\n", FIREWALL_TABLE, FIREWALL_CHAIN);
	} else {
		for (int v6 = 0; v6 < 2; v6++) {
			tx_add(&t, "add rule %s %s tcp dport { ", FIREWALL_TABLE, FIREWALL_CHAIN);
			for (size_t i = 0; i < r->nports; i++)
				tx_add(&t, "%s%u", i ? ", " : "", r->ports[i]);
			tx_add(&t, " } %s saddr @%s drop\n", v6 ? "ip6" : "ip", v6 ? "ban6" : "ban4");
		}
	}
	tx_add(&t, "flush set %s ban4\nflush set %s ban6\n", FIREWALL_TABLE, FIREWALL_TABLE);
	tx_elements(&t, "add", e, n, AF_INET, 1);
	tx_elements(&t, "add", e, n, AF_INET6, 1);
	return tx_done(&t, len);
}

char *firewall_script_update(const struct firewall_elem *e, size_t n, size_t *len)
{
	struct text t = { 0 };

	for (int f = 0; f < 2; f++) {
		int family = f ? AF_INET6 : AF_INET;

		tx_elements(&t, "add", e, n, family, 2);
		tx_elements(&t, "delete", e, n, family, 0);
		tx_elements(&t, "add", e, n, family, 1);
	}
	if (t.p == NULL && !t.oom)
		tx_add(&t, "%s", "");
	return tx_done(&t, len);
}

/* --- running nft ----------------------------------------------------------- */

int firewall_run_nft(const char *script, size_t len, bool dry_run, char *err, size_t errsz)
{
	int in, ep[2], status;
	size_t got = 0;
	ssize_t r, n;
	pid_t pid;

	err[0] = '\0';
	/* The script goes in through a memory file, not a pipe: nft's error
	 * output and our writing can never wait on each other. */
	in = memfd_create("imapgate-nft", MFD_CLOEXEC);
	if (in == -1) {
		snprintf(err, errsz, "memfd_create: %s", strerror(errno));
		return -1;
	}
	for (size_t off = 0; off < len; off += (size_t)r) {
		r = write(in, script + off, len - off);
		if (r == -1 && errno == EINTR) {
			r = 0;
			continue;
		}
		if (r <= 0) {
			snprintf(err, errsz, "memfd write: %s", strerror(errno));
			close(in);
			return -1;
		}
	}
	if (lseek(in, 0, SEEK_SET) == -1 || pipe2(ep, O_CLOEXEC) == -1) {
		snprintf(err, errsz, "pipe: %s", strerror(errno));
		close(in);
		return -1;
	}
	pid = fork();
	if (pid == -1) {
		snprintf(err, errsz, "fork: %s", strerror(errno));
		close(in);
		close(ep[0]);
		close(ep[1]);
		return -1;
	}
	if (pid == 0) {
		char *argv[] = { FIREWALL_NFT, dry_run ? "-c" : "-f", dry_run ? "-f" : "-", dry_run ? "-" : NULL, NULL };
		char *envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL };
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL); /* the helper blocks every signal */
		if (dup2(in, 0) == -1 || dup2(ep[1], 1) == -1 || dup2(ep[1], 2) == -1)
			_exit(126);
		(void)close_range(3, ~0u, 0);
		execve(FIREWALL_NFT, argv, envp);
		_exit(127);
	}
	close(in);
	close(ep[1]);
	if ((n = file_child_text(pid, ep[0], &status, err, errsz)) == -1)
		return -1;
	got = (size_t)n;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (got == 0 || (WIFEXITED(status) && WEXITSTATUS(status) == 127))
		snprintf(err, errsz, "%s %s (status %d)", FIREWALL_NFT,
		         WIFEXITED(status) && WEXITSTATUS(status) == 127 ? "could not be run" : "failed",
		         WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	/* One line for the log: nft's text has newlines and carets. */
	for (char *q = err; *q; q++)
		if (*q == '\n')
			*q = ' ';
	while (got && err[got - 1] == ' ')
		err[--got] = '\0';
	return -1;
}

/* --- the wire between daemon and helper ------------------------------------ *
 *
 * SOCK_SEQPACKET messages, each at most WIRE_MAX bytes:
 *   'S' kind setonly nports ports[nports] (uint16)   begin a batch ('F' full, 'U' update)
 *   'E' pad pad pad wire_elem[...]                   its elements
 *   'G'                                              build and run it
 * The helper answers each 'G' with
 *   'r' ok pad pad uint32 nft_ms uint32 elements  error text...
 */

#define WIRE_MAX 32768

struct wire_elem {
	uint8_t family; /* 4 or 6 */
	uint8_t prefix;
	uint8_t pad[2];
	uint32_t timeout;
	uint8_t addr[16];
};

struct wire_reply {
	uint8_t type, ok, pad[2];
	uint32_t nft_ms;
	uint32_t elements;
};

#define WIRE_ELEMS_PER_MSG ((WIRE_MAX - 4) / sizeof(struct wire_elem))

static int sock_daemon = -1;

int firewall_prepare(void)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1)
		return -1;
	sock_daemon = sv[0];
	return sv[1];
}

void firewall_helper_close_daemon_end(void)
{
	if (sock_daemon != -1)
		close(sock_daemon);
	sock_daemon = -1;
}

/* The helper's batch being received. */
static struct {
	bool open, bad;
	char kind;
	struct firewall_rules rules;
	struct firewall_elem *e;
	size_t n, cap;
} hb;

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Only well-formed prefixes get into a script, whatever the daemon sent. */
static bool wire_to_elem(const struct wire_elem *w, struct firewall_elem *e)
{
	unsigned max = w->family == 4 ? 32 : 128;

	if ((w->family != 4 && w->family != 6) || w->prefix > max || w->prefix == 0 || w->timeout > FIREWALL_TIMEOUT_MAX)
		return false;
	memset(e, 0, sizeof(*e));
	e->key.family = w->family == 4 ? AF_INET : AF_INET6;
	e->key.prefix = w->prefix;
	memcpy(e->key.addr, w->addr, max / 8);
	/* host bits zeroed */
	for (unsigned b = w->prefix; b < max; b++)
		e->key.addr[b / 8] &= (uint8_t) ~(0x80u >> (b % 8));
	e->timeout = w->timeout;
	return true;
}

static void helper_reply(int fd, bool ok, uint32_t ms, uint32_t n, const char *text)
{
	uint8_t msg[sizeof(struct wire_reply) + 1024];
	struct wire_reply r = { 'r', ok, { 0, 0 }, ms, n };
	size_t tl = strlen(text);

	if (tl > 1024)
		tl = 1024;
	memcpy(msg, &r, sizeof(r));
	memcpy(msg + sizeof(r), text, tl);
	(void)send(fd, msg, sizeof(r) + tl, MSG_NOSIGNAL);
}

static void helper_run(int fd)
{
	char *script, err[1024];
	size_t len = 0;
	uint64_t t0;
	int rc;

	if (hb.bad) {
		helper_reply(fd, false, 0, 0, "malformed request from the daemon");
		return;
	}
	script = hb.kind == 'F' ? firewall_script_sync(&hb.rules, hb.e, hb.n, &len)
	                        : firewall_script_update(hb.e, hb.n, &len);
	if (script == NULL) {
		helper_reply(fd, false, 0, 0, "helper: out of memory");
		return;
	}
	t0 = mono_ms();
	rc = len ? firewall_run_nft(script, len, false, err, sizeof(err)) : 0;
	free(script);
	helper_reply(fd, rc == 0, (uint32_t)(mono_ms() - t0), (uint32_t)hb.n, rc == 0 ? "" : err);
}

int firewall_helper_serve(int fd)
{
	static uint8_t msg[WIRE_MAX];
	ssize_t r = recv(fd, msg, sizeof(msg), 0);

	if (r == -1 && errno == EINTR)
		return 0;
	if (r <= 0)
		return -1;
	switch (msg[0]) {
	case 'S':
		hb.open = true;
		hb.bad = r < 4 || (msg[1] != 'F' && msg[1] != 'U') || msg[3] > CONFIG_MAX_FIREWALL_PORTS ||
		         (size_t)r != 4 + 2u * msg[3];
		hb.kind = (char)msg[1];
		hb.n = 0;
		memset(&hb.rules, 0, sizeof(hb.rules));
		if (!hb.bad) {
			hb.rules.setonly = msg[2] != 0;
			hb.rules.nports = msg[3];
			memcpy(hb.rules.ports, msg + 4, 2u * msg[3]);
			for (size_t i = 0; i < hb.rules.nports; i++)
				hb.bad = hb.bad || hb.rules.ports[i] == 0;
		}
		break;
	case 'E': {
		size_t k = ((size_t)r - 4) / sizeof(struct wire_elem);

		if (!hb.open || r < 4 || ((size_t)r - 4) % sizeof(struct wire_elem) != 0) {
			hb.bad = true;
			break;
		}
		if (hb.n + k > hb.cap) {
			size_t ncap = hb.cap ? hb.cap : 1024;
			struct firewall_elem *ne;

			while (ncap < hb.n + k)
				ncap *= 2;
			ne = realloc(hb.e, ncap * sizeof(*ne));
			if (ne == NULL) {
				hb.bad = true;
				break;
			}
			hb.e = ne;
			hb.cap = ncap;
		}
		for (size_t i = 0; i < k; i++) {
			struct wire_elem w;

			memcpy(&w, msg + 4 + i * sizeof(w), sizeof(w));
			if (wire_to_elem(&w, &hb.e[hb.n]))
				hb.n++;
			else
				hb.bad = true;
		}
		break;
	}
	case 'G':
		if (!hb.open)
			hb.bad = true;
		helper_run(fd);
		hb.open = false;
		hb.bad = false;
		hb.n = 0;
		break;
	default:
		break;
	}
	return 0;
}

/* --- start checks ---------------------------------------------------------- */

int firewall_check(const struct config *cfg, char *err, size_t errsz)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	struct firewall_rules r = { .setonly = true };
	char *script;
	size_t len;
	int rc;

	if (cfg->guard_firewall != FIREWALL_NFTABLES || !cfg->guard)
		return 0;
	if (geteuid() != 0) {
		snprintf(err, errsz, "guard_firewall nftables: imapgate must be started as root (its firewall helper "
		                     "keeps CAP_NET_ADMIN, the daemon none)");
		return -1;
	}
	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &h, d) == -1 || !(d[0].effective & (1u << CAP_NET_ADMIN))) {
		snprintf(err, errsz, "guard_firewall nftables: no CAP_NET_ADMIN (a container or a service "
		                     "manager took it away)");
		return -1;
	}
	if (access(FIREWALL_NFT, X_OK) == -1) {
		snprintf(err, errsz, "guard_firewall nftables: %s: %s (install the nftables package)", FIREWALL_NFT,
		         strerror(errno));
		return -1;
	}
	/* The kernel's answer, without changing anything: nft -c. */
	script = firewall_script_sync(&r, NULL, 0, &len);
	if (script == NULL) {
		snprintf(err, errsz, "guard_firewall nftables: out of memory");
		return -1;
	}
	{
		char nerr[600];

		rc = firewall_run_nft(script, len, true, nerr, sizeof(nerr));
		if (rc == -1)
			snprintf(err, errsz, "guard_firewall nftables: %s -c refused the table: %s", FIREWALL_NFT, nerr);
	}
	free(script);
	return rc;
}

/* --- the daemon's side ------------------------------------------------------ *
 *
 * `want` holds every active ban the firewall was told about, nested ones
 * too; the kernel holds its cover (firewall_cover). A change that touches
 * nesting (a prefix inside another, or holding others) rebuilds the whole
 * table; any other change is an element update, batched.
 */

struct want {
	struct want *next;
	struct cidr key;
	uint64_t expiry;
	bool dirty;
};

struct outq {
	uint8_t *p;
	size_t len, cap, off; /* framed: uint32 length, then the message */
};

static struct {
	bool on, dead;
	struct want **buckets;
	size_t nbuckets, n;
	size_t len_count[2][129];  /* wanted prefixes by family and length */
	struct cidr *dirty;        /* changed since the last batch */
	size_t ndirty, dirty_cap;
	bool need_full;
	struct firewall_rules rules;
	bool in_flight, in_flight_full;
	uint64_t sent_at, last_send;  /* ms, loop clock */
	size_t in_flight_n;
	bool failed_full;             /* back off after a failed rebuild */
	struct outq q;
	struct loop_io io;
	struct loop_timer timer;
	const char *state;
} fw = { .state = "off" };

static uint64_t wall_s(void)
{
	return (uint64_t)time(NULL);
}

static int fam(const struct cidr *c)
{
	return c->family == AF_INET6;
}

static size_t want_hash(const struct cidr *c)
{
	uint8_t b[18];

	b[0] = (uint8_t)fam(c);
	b[1] = (uint8_t)c->prefix;
	memcpy(b + 2, c->addr, 16);
	return (size_t)(hash_keyed(b, sizeof(b)) & (fw.nbuckets - 1));
}

static struct want **want_find(const struct cidr *c)
{
	struct want **pp;

	for (pp = &fw.buckets[want_hash(c)]; *pp; pp = &(*pp)->next)
		if ((*pp)->key.family == c->family && (*pp)->key.prefix == c->prefix &&
		    memcmp((*pp)->key.addr, c->addr, 16) == 0)
			break;
	return pp;
}

static void want_grow(void)
{
	size_t nb = fw.nbuckets ? fw.nbuckets * 2 : 1024;
	struct want **b = calloc(nb, sizeof(*b)), **old = fw.buckets;
	size_t onb = fw.nbuckets;

	if (b == NULL)
		return; /* longer chains, still correct */
	fw.buckets = b;
	fw.nbuckets = nb;
	for (size_t i = 0; i < onb; i++)
		while (old[i]) {
			struct want *w = old[i], **pp;

			old[i] = w->next;
			pp = &fw.buckets[want_hash(&w->key)];
			w->next = *pp;
			*pp = w;
		}
	free(old);
}

/* c truncated to bits */
static struct cidr cidr_trunc(const struct cidr *c, unsigned bits)
{
	struct cidr t = *c;
	unsigned max = c->family == AF_INET ? 32 : 128;

	for (unsigned b = bits; b < max; b++)
		t.addr[b / 8] &= (uint8_t) ~(0x80u >> (b % 8));
	t.prefix = bits;
	return t;
}

/* Does a wanted prefix other than c contain c, or lie inside it? */
static bool nested(const struct cidr *c)
{
	const size_t *lc = fw.len_count[fam(c)];
	unsigned max = c->family == AF_INET ? 32 : 128;
	bool longer = false;

	for (unsigned l = 0; l < c->prefix; l++)
		if (lc[l]) {
			struct cidr t = cidr_trunc(c, l);

			if (*want_find(&t))
				return true;
		}
	for (unsigned l = c->prefix + 1; l <= max; l++)
		longer = longer || lc[l] != 0;
	if (!longer)
		return false;
	for (size_t i = 0; i < fw.nbuckets; i++)
		for (struct want *w = fw.buckets[i]; w; w = w->next)
			if (w->key.prefix > c->prefix && cidr_inside(c, &w->key))
				return true;
	return false;
}

static void mark_dirty(const struct cidr *c)
{
	if (fw.ndirty == fw.dirty_cap) {
		size_t ncap = fw.dirty_cap ? fw.dirty_cap * 2 : 256;
		struct cidr *nd = realloc(fw.dirty, ncap * sizeof(*nd));

		if (nd == NULL) {
			fw.need_full = true; /* the rebuild needs no list */
			return;
		}
		fw.dirty = nd;
		fw.dirty_cap = ncap;
	}
	fw.dirty[fw.ndirty++] = *c;
}

static void current_rules(struct firewall_rules *r)
{
	const struct config *cfg = srv.cfg;

	memset(r, 0, sizeof(*r));
	r->setonly = cfg->guard_firewall_setonly;
	if (cfg->n_guard_firewall_ports) {
		r->nports = cfg->n_guard_firewall_ports;
		memcpy(r->ports, cfg->guard_firewall_ports, r->nports * sizeof(r->ports[0]));
	} else {
		r->nports = listener_ports(r->ports, CONFIG_MAX_FIREWALL_PORTS);
	}
}

/* --- sending --- */

static void fw_io(struct loop_io *io, unsigned events);
static void schedule(void);

static int q_push(const void *hdr, size_t hl, const void *body, size_t bl)
{
	uint32_t l = (uint32_t)(hl + bl);

	if (fw.q.len + 4 + l > fw.q.cap) {
		size_t ncap = fw.q.cap ? fw.q.cap : 65536;
		uint8_t *np;

		while (ncap < fw.q.len + 4 + l)
			ncap *= 2;
		np = realloc(fw.q.p, ncap);
		if (np == NULL)
			return -1;
		fw.q.p = np;
		fw.q.cap = ncap;
	}
	memcpy(fw.q.p + fw.q.len, &l, 4);
	memcpy(fw.q.p + fw.q.len + 4, hdr, hl);
	if (bl)
		memcpy(fw.q.p + fw.q.len + 4 + hl, body, bl);
	fw.q.len += 4 + l;
	return 0;
}

static void fw_fail(const char *what)
{
	char clean[1200];

	log_sanitize_text(what, strlen(what), clean, sizeof(clean));
	log_err("event=firewall_error error=\"%s\"", clean);
	STATS_INC(STAT_FIREWALL_ERRORS_TOTAL);
	fw.state = "error";
}

static void helper_gone(const char *why)
{
	char msg[200];

	snprintf(msg, sizeof(msg), "helper: %s; the firewall is no longer updated", why);
	fw_fail(msg);
	fw.dead = true;
	fw.state = "helper gone";
	loop_io_del(srv.loop, &fw.io);
	loop_timer_stop(srv.loop, &fw.timer);
}

static void flush_out(void)
{
	while (fw.q.off < fw.q.len) {
		uint32_t l;
		ssize_t r;

		memcpy(&l, fw.q.p + fw.q.off, 4);
		r = send(sock_daemon, fw.q.p + fw.q.off + 4, l, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r == -1) {
			if (errno == EAGAIN || errno == EINTR || errno == ENOBUFS)
				break;
			helper_gone(strerror(errno));
			return;
		}
		fw.q.off += 4 + l;
	}
	if (fw.q.off == fw.q.len)
		fw.q.off = fw.q.len = 0;
	(void)loop_io_set(srv.loop, &fw.io, LOOP_READ | (fw.q.len ? LOOP_WRITE : 0));
}

static void send_elem(const struct cidr *c, uint32_t timeout, uint8_t *buf, size_t *nb)
{
	struct wire_elem w;

	memset(&w, 0, sizeof(w));
	w.family = c->family == AF_INET ? 4 : 6;
	w.prefix = (uint8_t)c->prefix;
	w.timeout = timeout;
	memcpy(w.addr, c->addr, 16);
	memcpy(buf + 4 + *nb * sizeof(w), &w, sizeof(w));
	if (++*nb == WIRE_ELEMS_PER_MSG) {
		buf[0] = 'E';
		(void)q_push(buf, 4 + *nb * sizeof(w), NULL, 0);
		*nb = 0;
	}
}

static uint32_t left(uint64_t expiry, uint64_t now)
{
	return expiry > now ? (uint32_t)(expiry - now > FIREWALL_TIMEOUT_MAX ? FIREWALL_TIMEOUT_MAX : expiry - now) : 0;
}

/* One batch to the helper: everything (full) or the dirty prefixes. */
static void send_batch(void)
{
	static uint8_t buf[WIRE_MAX];
	uint8_t hdr[4 + 2 * CONFIG_MAX_FIREWALL_PORTS];
	size_t nb = 0, count = 0;
	uint64_t now = wall_s();
	bool full = fw.need_full;

	hdr[0] = 'S';
	hdr[1] = full ? 'F' : 'U';
	hdr[2] = fw.rules.setonly;
	hdr[3] = full ? (uint8_t)fw.rules.nports : 0;
	if (full)
		memcpy(hdr + 4, fw.rules.ports, fw.rules.nports * 2);
	if (q_push(hdr, 4 + (size_t)hdr[3] * 2, NULL, 0) == -1) {
		fw_fail("out of memory");
		return;
	}
	memset(buf, 0, 4);
	if (full) {
		for (size_t i = 0; i < fw.nbuckets; i++)
			for (struct want *w = fw.buckets[i]; w; w = w->next) {
				w->dirty = false;
				if (left(w->expiry, now)) {
					send_elem(&w->key, left(w->expiry, now), buf, &nb);
					count++;
				}
			}
	} else {
		if (fw.ndirty)
			qsort(fw.dirty, fw.ndirty, sizeof(fw.dirty[0]), cidr_cmp);
		for (size_t i = 0; i < fw.ndirty; i++) {
			if (i && cidr_cmp(&fw.dirty[i - 1], &fw.dirty[i]) == 0)
				continue; /* one element once a statement */

			struct want *w = *want_find(&fw.dirty[i]);

			if (w)
				w->dirty = false;
			send_elem(&fw.dirty[i], w ? left(w->expiry, now) : 0, buf, &nb);
			count++;
		}
	}
	if (nb) {
		buf[0] = 'E';
		(void)q_push(buf, 4 + nb * sizeof(struct wire_elem), NULL, 0);
	}
	if (q_push("G", 1, NULL, 0) == -1) {
		fw_fail("out of memory");
		return;
	}
	fw.ndirty = 0;
	fw.need_full = false;
	fw.in_flight = true;
	fw.in_flight_full = full;
	fw.in_flight_n = count;
	fw.sent_at = mono_ms();
	fw.last_send = loop_now(srv.loop);
	flush_out();
}

static void timer_fire(struct loop_timer *t)
{
	(void)t;
	if (fw.dead || fw.in_flight)
		return; /* the reply schedules the next */
	if (fw.need_full || fw.ndirty)
		send_batch();
}

static void schedule(void)
{
	uint64_t now, due;

	if (!fw.on || fw.dead || fw.in_flight || loop_timer_armed(&fw.timer) || !(fw.need_full || fw.ndirty))
		return;
	now = loop_now(srv.loop);
	due = fw.last_send + (fw.failed_full ? 10000 : FIREWALL_BATCH_MS);
	loop_timer_start(srv.loop, &fw.timer, due > now ? due - now : 0);
}

static void got_reply(const uint8_t *msg, size_t len)
{
	struct wire_reply r;
	char text[1100];
	size_t tl;

	if (len < sizeof(r) || msg[0] != 'r')
		return;
	memcpy(&r, msg, sizeof(r));
	tl = len - sizeof(r) < sizeof(text) - 1 ? len - sizeof(r) : sizeof(text) - 1;
	memcpy(text, msg + sizeof(r), tl);
	text[tl] = '\0';
	fw.in_flight = false;
	if (r.ok) {
		STATS_INC(STAT_FIREWALL_UPDATES_TOTAL);
		fw.state = "ok";
		if (fw.in_flight_full) {
			fw.failed_full = false;
			log_info("event=firewall_sync elements=%zu ms=%llu nft_ms=%u", fw.in_flight_n,
			         (unsigned long long)(mono_ms() - fw.sent_at), r.nft_ms);
		} else {
			log_debug("event=firewall_update elements=%zu ms=%llu", fw.in_flight_n,
			          (unsigned long long)(mono_ms() - fw.sent_at));
		}
	} else {
		char msgtxt[1200];

		snprintf(msgtxt, sizeof(msgtxt), "%s%s", fw.in_flight_full ? "rebuild: " : "update: ", text);
		fw_fail(msgtxt);
		/* The kernel's sets are not what we think: rebuild them, and
		 * after a failed rebuild, wait before the next. */
		fw.failed_full = fw.in_flight_full;
		fw.need_full = true;
	}
	schedule();
}

static void fw_io(struct loop_io *io, unsigned events)
{
	(void)io;
	if (events & LOOP_READ) {
		for (;;) {
			uint8_t msg[sizeof(struct wire_reply) + 1100];
			ssize_t r = recv(sock_daemon, msg, sizeof(msg), MSG_DONTWAIT);

			if (r > 0) {
				got_reply(msg, (size_t)r);
				continue;
			}
			if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				helper_gone(r == 0 ? "exited" : strerror(errno));
				return;
			}
			break;
		}
	}
	if (!fw.dead && (events & LOOP_WRITE))
		flush_out();
}

/* c is wanted until expiry (replacing what was). */
static void want_set(const struct cidr *c, uint64_t expiry)
{
	struct want **pp, *w;

	if (fw.n >= fw.nbuckets)
		want_grow();
	pp = want_find(c);
	if (*pp == NULL) {
		w = calloc(1, sizeof(*w));
		if (w == NULL) {
			fw_fail("out of memory");
			return;
		}
		w->key = *c;
		*pp = w;
		fw.n++;
		fw.len_count[fam(c)][c->prefix]++;
	}
	(*pp)->expiry = expiry;
}

static void take_ban(void *ctx, const struct guard_ban_info *b)
{
	(void)ctx;
	want_set(&b->key, b->expiry);
}

void firewall_sync(const struct guard *g)
{
	if (srv.cfg->guard_firewall != FIREWALL_NFTABLES || !srv.cfg->guard)
		return;
	if (sock_daemon == -1) {
		fw_fail("no helper (imapgate was not started as root)");
		return;
	}
	fw.on = true;
	fw.state = "starting";
	fw.io.fd = sock_daemon;
	fw.io.fn = fw_io;
	fw.timer.fn = timer_fire;
	want_grow();
	guard_bans_foreach(g, wall_s(), take_ban, NULL);
	current_rules(&fw.rules);
	fw.need_full = true;
	send_batch();
}

void firewall_ban(const struct cidr *c, uint64_t expiry)
{
	struct want **pp;

	if (!fw.on || fw.dead)
		return;
	want_set(c, expiry);
	pp = want_find(c);
	if (*pp == NULL)
		return;
	if (nested(c)) {
		fw.need_full = true;
	} else if (!(*pp)->dirty) {
		(*pp)->dirty = true;
		mark_dirty(c);
	}
	schedule();
}

void firewall_unban(const struct cidr *c)
{
	struct want **pp, *w;

	if (!fw.on || fw.dead)
		return;
	pp = want_find(c);
	if ((w = *pp) == NULL)
		return;
	*pp = w->next;
	free(w);
	fw.n--;
	fw.len_count[fam(c)][c->prefix]--;
	/* What it held (or what holds it) must show again: rebuild. */
	if (nested(c))
		fw.need_full = true;
	else
		mark_dirty(c);
	schedule();
}

void firewall_reload(void)
{
	struct firewall_rules r;

	if (!fw.on || fw.dead)
		return;
	current_rules(&r);
	if (r.setonly == fw.rules.setonly && r.nports == fw.rules.nports &&
	    memcmp(r.ports, fw.rules.ports, r.nports * sizeof(r.ports[0])) == 0)
		return;
	fw.rules = r;
	fw.need_full = true;
	fw.failed_full = false;
	schedule();
}

size_t firewall_count(void)
{
	return fw.n;
}

const char *firewall_state(void)
{
	return fw.state;
}
