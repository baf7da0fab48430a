/*
 * banfilter — see banfilter.h.
 *
 * The program runs on the listening socket for every incoming SYN (Linux
 * runs a TCP listener's socket filter before it creates a request), with
 * the packet's network header reachable at SKF_NET_OFF. Accepted sockets
 * inherit the filter; listener.c detaches it from each one, so established
 * sessions never pay for it.
 */
#include "banfilter.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "firewall.h"
#include "hash.h"
#include "listener.h"
#include "log.h"

#define NET(off) ((uint32_t)(SKF_NET_OFF + (off)))

void banfilter_key(const struct sockaddr *sa, struct banfilter_key *k)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	memset(k, 0, sizeof(*k));
	if (sa->sa_family == AF_INET) {
		k->family = 4;
		memcpy(k->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;

		if (memcmp(a, mapped, 12) == 0) {
			k->family = 4;
			memcpy(k->addr, a + 12, 4);
		} else {
			k->family = 6;
			memcpy(k->addr, a, 8);
		}
	}
}

static uint32_t word(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

size_t banfilter_build(const struct banfilter_key *keys, size_t n, struct sock_filter *out)
{
	size_t i = 0, n4 = 0;

	if (n > BANFILTER_MAX)
		n = BANFILTER_MAX;
	for (size_t k = 0; k < n; k++)
		n4 += keys[k].family == 4;
	/* A = IP version; IPv4 checks follow, IPv6 ones after them. */
	out[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS, NET(0));
	out[i++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4);
	/* jt: IPv4 (next), jf: jump over the IPv4 block (its ld, two per key, ret). */
	out[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 4, 0, (uint8_t)0);
	{
		size_t jump_at = i - 1, v4_len = 1 + 2 * n4 + 1;

		out[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NET(12));
		for (size_t k = 0; k < n; k++) {
			if (keys[k].family != 4)
				continue;
			out[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, word(keys[k].addr), 0, 1);
			out[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0);
		}
		out[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0xffffffffu);
		/* Jump offsets are 8 bits: a long IPv4 block is reached by a
		 * short hop to a BPF_JA (which has a 32-bit offset). */
		if (v4_len <= 255) {
			out[jump_at].jf = (uint8_t)v4_len;
		} else {
			memmove(&out[jump_at + 2], &out[jump_at + 1], (i - jump_at - 1) * sizeof(out[0]));
			i++;
			out[jump_at].jf = 0;
			out[jump_at].jt = 1;
			out[jump_at + 1] = (struct sock_filter)BPF_STMT(BPF_JMP | BPF_JA, (uint32_t)v4_len);
		}
	}
	/* IPv6: source address at bytes 8..15, the /64 is its first 8 bytes. */
	for (size_t k = 0; k < n; k++) {
		if (keys[k].family != 6)
			continue;
		out[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NET(8));
		out[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, word(keys[k].addr), 0, 3);
		out[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NET(12));
		out[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, word(keys[k].addr + 4), 0, 1);
		out[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0);
	}
	out[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0xffffffffu);
	return i;
}

/* --- the daemon's set ---------------------------------------------------- */

struct refusal {
	struct refusal *next;
	struct banfilter_key key;
	unsigned n;
	bool dropped;
};

#define REFUSAL_BUCKETS 1024
#define REFUSAL_MAX 100000 /* distinct banned addresses counted at once */

static struct refusal *table[REFUSAL_BUCKETS];
static size_t n_entries, n_dropped;
static struct banfilter_key dropped[BANFILTER_MAX];

static uint32_t key_hash(const struct banfilter_key *k)
{
	return (uint32_t)(hash_keyed(k, sizeof(*k)) % REFUSAL_BUCKETS);
}

/* --- the attach helper ---------------------------------------------------- *
 *
 * Some kernels want CAP_NET_ADMIN to attach a socket filter, which imapgate
 * no longer has once it runs as proc_username. A child forked before the
 * privileges are dropped keeps the listening sockets and CAP_NET_ADMIN only
 * (no other capability, no new privileges), and does one thing: it reads a
 * list of keys and attaches the program built from it. A filter belongs to
 * the socket, so attaching through the child's descriptors filters the
 * daemon's listeners.
 */

static int helper_fd = -1;
static pid_t helper_pid = -1;

static void attach_all(const int *fds, size_t nfds, const struct banfilter_key *keys, size_t n)
{
	static struct sock_filter prog[BANFILTER_INSNS];
	struct sock_fprog fp;
	int zero = 0;

	fp.len = (unsigned short)banfilter_build(keys, n, prog);
	fp.filter = prog;
	for (size_t i = 0; i < nfds; i++) {
		if (n == 0)
			(void)setsockopt(fds[i], SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof(zero));
		else if (setsockopt(fds[i], SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof(fp)) == -1)
			log_warn("event=ban_filter_error error=\"%s\"", strerror(errno));
	}
}

/* Keep CAP_NET_ADMIN alone, in every set. */
static int keep_net_admin_only(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	for (int c = 0; c <= 63; c++)
		if (c != CAP_NET_ADMIN)
			(void)prctl(PR_CAPBSET_DROP, c, 0, 0, 0);
	memset(d, 0, sizeof(d));
	d[0].effective = d[0].permitted = 1u << CAP_NET_ADMIN;
	if (syscall(SYS_capset, &h, d) == -1)
		return -1;
	return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

static void helper_main(int fd, int fw_fd)
{
	int lfds[64];
	size_t nl = listener_filter_fds(lfds, 64);
	static struct banfilter_key keys[BANFILTER_MAX + 1];
	sigset_t all;

	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	/* Nothing but the listeners and the request socket stays open: close
	 * the ranges between them (kept descriptors in ascending order). */
	{
		int keep[66];
		size_t nk = 0;
		unsigned from = 3;

		for (size_t i = 0; i < nl; i++)
			keep[nk++] = lfds[i];
		keep[nk++] = fd;
		if (fw_fd != -1)
			keep[nk++] = fw_fd;
		for (size_t i = 1; i < nk; i++)
			for (size_t j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
				int t = keep[j];

				keep[j] = keep[j - 1];
				keep[j - 1] = t;
			}
		for (size_t i = 0; i < nk; i++) {
			if ((unsigned)keep[i] > from)
				(void)close_range(from, (unsigned)keep[i] - 1, 0);
			from = (unsigned)keep[i] + 1;
		}
		(void)close_range(from, ~0u, 0);
	}
	if (keep_net_admin_only() == -1)
		_exit(1);
	for (;;) {
		/* One request: a byte (never 0 bytes: that is EOF), then the keys. */
		static uint8_t msg[1 + sizeof(keys)];
		struct pollfd pf[2] = { { fd, POLLIN, 0 }, { fw_fd, POLLIN, 0 } };
		ssize_t r;
		size_t n;
		bool ok = true;

		/* The firewall's requests come on a socket of their own, so a
		 * long rebuild never fills the filter's. */
		if (poll(pf, fw_fd == -1 ? 1 : 2, -1) == -1)
			continue;
		if (fw_fd != -1 && pf[1].revents) {
			if (firewall_helper_serve(fw_fd) == -1)
				_exit(0);
			continue;
		}
		if (!pf[0].revents)
			continue;
		r = recv(fd, msg, sizeof(msg), 0);
		if (r <= 0 && !(r == -1 && errno == EINTR))
			_exit(0);
		if (r < 1 || (size_t)(r - 1) % sizeof(keys[0]) != 0 || (size_t)(r - 1) > BANFILTER_MAX * sizeof(keys[0]))
			continue;
		n = (size_t)(r - 1) / sizeof(keys[0]);
		memcpy(keys, msg + 1, n * sizeof(keys[0]));
		for (size_t i = 0; i < n; i++)
			ok = ok && (keys[i].family == 4 || keys[i].family == 6);
		if (ok)
			attach_all(lfds, nl, keys, n);
	}
}

int banfilter_helper_start(int fw_fd)
{
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1)
		goto fail;
	pid = fork();
	if (pid == -1) {
		close(sv[0]);
		close(sv[1]);
		goto fail;
	}
	if (pid == 0) {
		close(sv[0]);
		firewall_helper_close_daemon_end();
		helper_main(sv[1], fw_fd);
		_exit(0);
	}
	close(sv[1]);
	if (fw_fd != -1)
		close(fw_fd);
	helper_fd = sv[0];
	helper_pid = pid;
	/* Any exit, fatal() too, waits for the helper: once imapgate has
	 * exited, no copy of its listeners holds the ports. */
	atexit(banfilter_helper_stop);
	return 0;
fail:
	if (fw_fd != -1)
		close(fw_fd); /* the firewall sees the helper gone */
	return -1;
}

void banfilter_helper_stop(void)
{
	if (helper_fd != -1) {
		close(helper_fd); /* the helper exits, and its listener copies close */
		helper_fd = -1;
	}
	if (helper_pid > 0) {
		/* It reads EOF and exits at once; nothing else reaps children. */
		while (waitpid(helper_pid, NULL, 0) == -1 && errno == EINTR)
			;
		helper_pid = -1;
	}
}

static void apply(void)
{
	if (helper_fd != -1) {
		static uint8_t msg[1 + sizeof(dropped)];

		msg[0] = 'K';
		memcpy(msg + 1, dropped, n_dropped * sizeof(dropped[0]));
		if (send(helper_fd, msg, 1 + n_dropped * sizeof(dropped[0]), MSG_DONTWAIT | MSG_NOSIGNAL) == -1)
			log_warn("event=ban_filter_error error=\"helper: %s\"", strerror(errno));
		listener_note_filter(n_dropped > 0);
		return;
	}
	{
		int lfds[64];
		size_t nl = listener_filter_fds(lfds, 64);

		attach_all(lfds, nl, dropped, n_dropped);
		listener_note_filter(n_dropped > 0);
	}
}

bool banfilter_refused(const struct sockaddr *sa, unsigned drop_after)
{
	struct banfilter_key k;
	struct refusal **pp, *e;

	if (drop_after == 0)
		return false;
	banfilter_key(sa, &k);
	if (k.family == 0)
		return false;
	for (pp = &table[key_hash(&k)]; *pp; pp = &(*pp)->next)
		if (memcmp(&(*pp)->key, &k, sizeof(k)) == 0)
			break;
	e = *pp;
	if (e == NULL) {
		if (n_entries >= REFUSAL_MAX || (e = calloc(1, sizeof(*e))) == NULL)
			return false;
		e->key = k;
		*pp = e;
		n_entries++;
	}
	if (e->dropped || ++e->n < drop_after || n_dropped >= BANFILTER_MAX)
		return false;
	e->dropped = true;
	dropped[n_dropped++] = k;
	apply();
	return true;
}

void banfilter_clear(void)
{
	for (size_t b = 0; b < REFUSAL_BUCKETS; b++)
		while (table[b]) {
			struct refusal *e = table[b];

			table[b] = e->next;
			free(e);
		}
	n_entries = 0;
	if (n_dropped) {
		n_dropped = 0;
		apply();
	}
}

size_t banfilter_count(void)
{
	return n_dropped;
}
