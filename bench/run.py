#!/usr/bin/python3
"""
run.py — imapgate against direct Dovecot and Debian's imapproxy (issue 6).

    make bench                                       (builds, then runs this)
    /usr/bin/python3 bench/run.py --build build      the full run, ~12 minutes
    /usr/bin/python3 bench/run.py --build build --quick                 ~2 min
    /usr/bin/python3 bench/run.py --build build --quick --setups reuse --workloads webmail
    /usr/bin/python3 bench/run.py --build build --workloads policy       the policy server, ~2.5 min
    /usr/bin/python3 bench/run.py --build build --workloads fleet        Redis shared guard, ~1.5 min

Starts, in a temp dir and on loopback only: a Dovecot with 1000 users
(user0000..user0999, 50 small messages each) and 4 bulk users (5 messages of
5 MB), imapgate in front of it, and imapproxy (/usr/sbin/imapproxyd, in the
foreground, never the system service) in front of it too. Then, for each
Dovecot setup (stock: a new imap process per login; reuse: service_count 0),
runs every workload against the three targets in turn, several rounds, with
bench/loadgen (C, epoll). Prints one table, each figure with its ratio to
direct Dovecot from the same round, and the issue's targets with pass/miss;
a full run writes the same to bench/RESULTS.md. Everything it started is
stopped and removed at exit, Ctrl-C included. See bench/README.md.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import harness  # noqa: E402
import tls_util  # noqa: E402
from harness import Dovecot, HarnessError, Imapgate, Redis, kill_group, wait_listening  # noqa: E402

WORKLOADS = ("webmail", "bulk", "idle", "flood", "burst", "tls", "policy", "fleet")
TARGETS = ("direct", "imapgate", "imapproxy")
SETUPS = ("stock", "reuse", "tuned")
IMAPPROXYD = "/usr/sbin/imapproxyd"

USER_FMT, PASS_FMT = "user%04d", "pw%04d-bench"
BULK_FMT, BULK_PASS_FMT = "bulk%d", "bulkpw%d"
BULK_USERS, BULK_MESSAGES, BULK_SIZE = 4, 5, 5 * 1000 * 1000
MESSAGES_PER_USER = 50
FLOOD_NET = "127.0.0.16/28"  # banned for the flood; the legit client is 127.0.0.1
FLOOD_SRCS = ["127.0.0.%d" % i for i in range(17, 31)]
FLOOD_PROCS, FLOOD_CONNS = 2, 32
# A burst's connection is stalled when its greeting comes after STALL_MS (a
# dropped SYN is sent again after 1 s), lost without one in BURST_TIMEOUT_MS.
BURST_CONNS, STALL_MS, BURST_TIMEOUT_MS = 64, 1000, 3000
# Every step of a cycle (connect and greeting, each command) has this long.
STEP_TIMEOUT_MS = 5000

NPROC = len(os.sched_getaffinity(0))

# Every setup: limits far above what the bench opens (the sum of all process
# limits stays below RLIMIT_NPROC, which Dovecot raises to it), the anvil
# auth penalty off (harness), IDLE checks at Dovecot's default interval.
DOVECOT_COMMON = """
# --- bench/run.py
default_client_limit = 20000
default_vsz_limit = 1G
mailbox_idle_check_interval = 30 secs
protocol imap {
  mail_max_userip_connections = 100000
}
"""

# Logins as Dovecot ships them: imap-login in its default high-security
# mode, a new login process per connection (the baseline figures,
# ~110-130 cycles/s direct at 1 connection, were measured so).
LOGIN_DEFAULT = """
service imap-login {
  service_count = 1
  client_limit = 1
  process_min_avail = 0
  process_limit = 2000
}
"""

# Dovecot's documented high-performance login mode: login processes serve
# many connections, some always ready.
LOGIN_FAST = f"""
service imap-login {{
  service_count = 0
  client_limit = 10000
  process_min_avail = {NPROC}
  process_limit = 16
}}
"""

# imap processes that serve many sessions, some always ready.
IMAP_REUSE = f"""
service imap {{
  service_count = 0
  client_limit = 100
  process_min_avail = {NPROC}
  process_limit = 256
}}
"""

DOVECOT_SETUPS = {
    # Dovecot's defaults: a new login process per connection, a new imap
    # process per login.
    "stock": LOGIN_DEFAULT + """
service imap {
  service_count = 1
  client_limit = 1
  process_limit = 10000
}
""",
    # The "process reuse": service imap { service_count = 0 }, logins
    # as shipped.
    "reuse": LOGIN_DEFAULT + IMAP_REUSE,
    # Beyond the issue: process reuse and high-performance logins, the
    # fastest Dovecot setup there is (webmail only).
    "tuned": LOGIN_FAST + IMAP_REUSE,
}

# Workloads each setup runs (of those asked for). "tls" runs once, in a
# Dovecot of its own (the reuse setup with TLS on): see run_tls.
SETUP_WORKLOADS = {"stock": ("webmail", "bulk", "idle", "flood", "burst"),
                   "reuse": ("webmail", "bulk", "idle", "flood", "burst"),
                   "tuned": ("webmail",)}
# The TLS relay cases: (case, what the loadgen connects to, loadgen --tls).
# "direct" over plain TCP and over implicit TLS (Dovecot's imaps port) are
# the references: plain for the plain relay, TLS for both TLS cases.
TLS_TARGETS = (("direct-plain", "dovecot", False), ("plain", "gate-plain", False),
               ("direct-tls", "dovecot-tls", True), ("tls-backend", "gate-tls", False),
               ("tls-both", "gate-tls-client", True))
TLS_REFERENCE = {"plain": "direct-plain", "tls-backend": "direct-tls", "tls-both": "direct-tls"}

# The auth policy server (issue 11): Dovecot's logins with and without
# auth_policy_server_url pointing at imapgate's policy_listen, and a storm of
# policy requests at that endpoint alone.
POLICY_KEY = "bench-policy-api-key-0123456789"  # auth_policy_server_api_header = policy_api_key
POLICY_NONCE = "bench-policy-nonce"
POLICY_CONNS = 16
POLICY_SIDES = ("off", "on")
# (figure, what it measures): each at POLICY_CONNS connections, policy off and on.
POLICY_FIGURES = (("imap-login", "IMAP LOGIN + LOGOUT straight to Dovecot"),
                  ("webmail", "the webmail workload through imapgate, connection reuse off"),
                  ("smtp-auth", "SMTP EHLO + AUTH PLAIN + QUIT through Postfix (Dovecot SASL)"))
POLICY_GOAL = 0.95

# The fleet (issue 12): imapgates sharing their guard through a private Redis.
# A ban made on A (its control socket) against the time until B greets a new
# connection from that address with BYE, each sample from an address of its
# own (127.2.0.0/16); and the webmail workload through an imapgate with
# guard_redis against one without, the order alternating per round.
FLEET_SIDES = ("off", "on")
FLEET_NET = "127.2.%d.%d"
FLEET_PROBE_LIMIT_S = 2.0  # a sample whose BYE has not come by then is a miss
FLEET_LATENCY_GOAL_MS = 100
FLEET_RATE_GOAL = 0.97


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# mail data


def make_small_message(i):
    """The i-th of the 50 messages every user has: realistic headers, 1-6 KB."""
    names = ["Ada Lovelace", "Grace Hopper", "Ken Thompson", "Barbara Liskov", "Dennis Ritchie"]
    who = names[i % len(names)]
    addr = who.lower().replace(" ", ".") + "@example.org"
    lines = [
        "Return-Path: <%s>" % addr,
        "From: \"%s\" <%s>" % (who, addr),
        "To: \"Bench User\" <user@example.org>",
        "Cc: team-%d@example.org, \"List\" <list@example.net>" % (i % 7),
        "Subject: =?utf-8?q?Re=3A_status_report_%d_=E2=80=94_w=C3=A9ek?=" % i if i % 5 == 0
        else "Subject: Re: status report %d (\"weekly\")" % i,
        "Date: Mon, %d Jan 2024 %02d:%02d:00 +0000" % (1 + i % 28, i % 24, i % 60),
        "Message-ID: <bench.%d@example.org>" % i,
        "In-Reply-To: <bench.%d@example.org>" % max(0, i - 1),
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
    ]
    body = ["Line %d of a message that looks like mail, nothing more to it." % k for k in range(15 + (i * 7) % 80)]
    return ("\r\n".join(lines + body) + "\r\n").encode()


def make_bulk_message(n):
    head = ("From: bulk@example.org\r\nTo: bulk@example.org\r\nSubject: bulk %d\r\n"
            "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <bulk.%d@example.org>\r\n\r\n" % (n, n)).encode()
    line = b"%s\r\n" % (b"0123456789abcdef" * 4)
    return head + line * ((BULK_SIZE - len(head)) // len(line))


def chown(d, path):
    if harness.IS_ROOT:
        os.chown(path, d.uid, d.gid)


def populate(d, users, bulk_users):
    """Write every user's Maildir directly: the 50 small messages are written once and
    hard-linked into each INBOX (read-only workloads; Dovecot renames, never rewrites)."""
    pool = d.dir / "msgpool"
    pool.mkdir(exist_ok=True)
    t = int(time.time())
    small = []
    for i in range(MESSAGES_PER_USER):
        data = make_small_message(i)
        p = pool / ("m%d" % i)
        p.write_bytes(data)
        os.chmod(p, 0o600)
        chown(d, p)
        flags = "S" if i % 3 else ""
        small.append((p, "%d.M%dP1Q%d.bench,S=%d:2,%s" % (t - 100000 + i, i, i, len(data), flags)))
    for u in users:
        cur = d.maildir(u) / "cur"
        for p, name in small:
            os.link(p, cur / name)
    for b in bulk_users:
        cur = d.maildir(b) / "cur"
        for n in range(BULK_MESSAGES):
            data = make_bulk_message(n)
            p = cur / ("%d.M%dP2Q%d.bench,S=%d:2,S" % (t - 1000 + n, n, n, len(data)))
            p.write_bytes(data)
            os.chmod(p, 0o600)
            chown(d, p)


# --------------------------------------------------------------------------
# imapproxy


class Imapproxy:
    """Debian's imapproxyd in the foreground (foreground_mode yes) against 127.0.0.1:<port>.
    Needs root (it drops to nobody itself); logs to syslog only (none here)."""

    def __init__(self, dirpath, backend_port, cache_size=2000):
        self.dir = Path(dirpath)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.port = harness.free_port()
        self.conf = self.dir / "imapproxy.conf"
        self.proc = None
        # imapproxy's parser wants spaces, not tabs.
        self.conf.write_text(
            "server_hostname 127.0.0.1\n"
            "server_port %d\n"
            "listen_address 127.0.0.1\n"
            "listen_port %d\n"
            "connect_retries 1\n"
            "connect_delay 1\n"
            "cache_size %d\n"
            "cache_expiration_time 300\n"
            "proc_username nobody\n"
            "proc_groupname nogroup\n"
            "stat_filename %s/pimpstats\n"
            "protocol_log_filename %s/protocol.log\n"
            "syslog_facility LOG_MAIL\n"
            "foreground_mode yes\n" % (backend_port, self.port, cache_size, self.dir, self.dir))

    def start(self):
        out = open(self.dir / "imapproxy.out", "ab")
        try:
            self.proc = subprocess.Popen([IMAPPROXYD, "-f", str(self.conf), "-p", str(self.dir / "pid")],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=str(self.dir))
        finally:
            out.close()
        wait_listening(self.port, "4", timeout=20, proc=self.proc)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            kill_group(self.proc.pid)
            self.proc.wait(timeout=5)


def imapproxy_usable():
    if not os.access(IMAPPROXYD, os.X_OK):
        return "not installed (apt-get install imapproxy)"
    if os.geteuid() != 0:
        return "needs root (it drops privileges itself)"
    return None


# --------------------------------------------------------------------------
# processes and memory


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_cpu_s(pid):
    """CPU seconds (user + system) a process has used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_s(sid, prefix):
    """CPU seconds of the processes of a session whose name starts with prefix (Dovecot's
    auth processes); a process that is gone meanwhile counts as 0."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != sid or not Path("/proc/%s/comm" % entry).read_text().startswith(prefix):
                continue
            total += proc_cpu_s(int(entry))
        except (OSError, ProcessLookupError):
            continue
    return total


def group_pss_kib(sid):
    """Sum of PSS over every process of a session (Dovecot's master and children)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != sid:
                continue
            with open("/proc/%s/smaps_rollup" % entry) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ProcessLookupError):
            continue
    return total


class CpuWatch:
    """CPU time the rest of the machine used while the bench ran: all CPU time in user
    and system mode (/proc/stat) minus our own and our children's (every server is
    reaped by the end). Time in interrupts is left out on both sides."""

    def __init__(self):
        self.busy0, self.ours0, self.t0 = self.busy(), self.ours(), time.monotonic()
        try:
            self.load = Path("/proc/loadavg").read_text().split()[0]
        except OSError:
            self.load = "?"

    @staticmethod
    def busy():
        try:
            f = Path("/proc/stat").read_text().splitlines()[0].split()
        except OSError:
            return None
        return (int(f[1]) + int(f[2]) + int(f[3])) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def ours():
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def other_share(self):
        """Share (0..1) of the machine's CPU capacity used by others during the run."""
        busy = self.busy()
        if busy is None or self.busy0 is None:
            return None
        wall = time.monotonic() - self.t0
        other = (busy - self.busy0) - (self.ours() - self.ours0)
        return max(0.0, other / (wall * NPROC)) if wall > 0 else None


def raise_fd_limit(want=262144):
    """RLIMIT_NOFILE as high as allowed, for us and every process we start (imapproxy
    sets its own, 2 * cache_size + 10). Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    except OSError:
        nr_open = want
    for new_hard in (max(hard, min(want, nr_open)), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, new_hard), new_hard))
            break
        except (ValueError, OSError):
            continue  # no CAP_SYS_RESOURCE (a container): the hard limit it is
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------
# the load generator


class Loadgen:
    def __init__(self, path, timeout_ms=10000):
        self.path = str(path)
        self.timeout_ms = timeout_ms

    def argv(self, port, mode, conns, seconds, **kw):
        a = [self.path, "--port", str(port), "--mode", mode, "--conns", str(conns), "--seconds", "%g" % seconds,
             "--timeout-ms", str(kw.pop("timeout_ms", self.timeout_ms))]
        for k, v in kw.items():
            flag = "--" + k.replace("_", "-")
            if v is True:
                a.append(flag)
            elif v is not None and v is not False:
                a += [flag, str(v)]
        return a

    def run(self, port, mode, conns, seconds, **kw):
        hold = float(kw.get("hold", 0) or 0)
        limit = seconds + hold + 2 * kw.get("timeout_ms", self.timeout_ms) / 1000 + 30
        p = subprocess.run(self.argv(port, mode, conns, seconds, **kw), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=limit)
        return self.parse(p.stdout, p.stderr, p.returncode)

    def spawn(self, port, mode, conns, seconds, **kw):
        return subprocess.Popen(self.argv(port, mode, conns, seconds, **kw), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    @staticmethod
    def parse(out, err, rc):
        lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
        if rc != 0 or not lines:
            raise HarnessError("loadgen failed (exit %s): %s" % (rc, err.decode(errors="replace")[-500:]))
        return json.loads(lines[-1])


def ensure_loadgen(build):
    """build/loadgen, made (by the Makefile rule) when missing or older than its source."""
    exe = Path(build) / "loadgen"
    src = REPO / "bench" / "loadgen.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["make", "-s", "-C", str(REPO), "BUILD=%s" % build, str(exe)], check=True)
    return exe


# --------------------------------------------------------------------------
# the bench


class Bench:
    def __init__(self, args):
        self.a = args
        self.build = Path(args.build).resolve()
        self.lg = Loadgen(ensure_loadgen(self.build), STEP_TIMEOUT_MS)
        self.ctl = self.build / "imapgate-ctl"
        self.dir = Path(tempfile.mkdtemp(prefix="imapgate-bench-"))
        os.chmod(self.dir, 0o755)
        self.users = {USER_FMT % i: PASS_FMT % i for i in range(args.users)}
        self.bulk = {BULK_FMT % i: BULK_PASS_FMT % i for i in range(BULK_USERS)}
        self.dovecot = self.gate = self.proxy = self.gate_tls = None
        self.setup = None
        self.dport = harness.free_port()
        self.results = []  # dicts: setup, round, workload, conns, target, r (loadgen JSON) or extra fields
        self.notes = []
        self.policy_procs = []  # the policy workload's Dovecots, imapgates and Postfixes, in start order
        self.fleet_procs = []  # the fleet workload's Dovecot, Redis and imapgates, in start order
        self.proxy_missing = imapproxy_usable() if "imapproxy" in args.targets else None
        self.targets = [t for t in args.targets if not (t == "imapproxy" and self.proxy_missing)]
        if self.proxy_missing:
            self.notes.append("imapproxy not measured: %s." % self.proxy_missing)
        self.postfix_missing = harness.postfix_unavailable() if "policy" in args.workloads else None

    # -- processes
    def start_setup(self, setup):
        conf = DOVECOT_COMMON + DOVECOT_SETUPS[setup]
        all_users = dict(self.users, **self.bulk)
        (self.dir / "dovecot").mkdir(exist_ok=True)
        self.dovecot = Dovecot(users=all_users, tmpdir=self.dir / "dovecot", port=self.dport, extra_conf=conf)
        if not (self.dir / "dovecot" / "populated").exists():
            t = time.monotonic()
            populate(self.dovecot, self.users, self.bulk)
            (self.dir / "dovecot" / "populated").touch()
            log("  mail: %d users x %d messages, %d bulk users x %d x 5 MB, written in %.1fs"
                % (len(self.users), MESSAGES_PER_USER, len(self.bulk), BULK_MESSAGES, time.monotonic() - t))
        self.dovecot.start(timeout=60)
        self.gate = self.new_gate("gate-" + setup)
        self.proxy = None
        if "imapproxy" in self.targets:
            self.proxy = Imapproxy(self.dir / ("imapproxy-" + setup), self.dport).start()

    def new_gate(self, name, cache_size=2000, tls_listener=False, backend_port=None, **extra):
        """A started imapgate: no guard store, no connection limits for the load client
        (127.0.0.1 is in guard_ignore by default), room to park a connection per user
        (cache_size bounds busy and parked backend connections together). extra: more
        config; tls_listener: an implicit-TLS listener too (g.tls_port)."""
        gdir = self.dir / name
        gdir.mkdir()
        cfg = dict(guard_db="none", max_connections=200000, max_connections_per_ip=0, cache_size=cache_size,
                   cache_expiration_time=300, control_socket=str(gdir / "ctl.sock"))
        cfg.update(extra)
        g = Imapgate(backend_port=backend_port or self.dport, build=self.build, ipv6=False, tmpdir=gdir, **cfg)
        g.tls_port = g.add_listener("tls") if tls_listener else None
        g.start(timeout=20)
        if g.tls_port:
            wait_listening(g.tls_port, "4", timeout=20, proc=g.proc)
        return g

    def stop_setup(self):
        if self.proxy is not None:
            self.proxy.stop()
        if getattr(self, "gate_tls", None) is not None:
            try:
                self.gate_tls.stop()
            except TimeoutError:
                self.gate_tls.kill()
            self.gate_tls = None
        if self.gate is not None:
            try:
                self.gate.stop()
            except TimeoutError:
                self.gate.kill()
                self.notes.append("imapgate (%s) did not stop within 15 s of SIGTERM" % self.setup)
        if self.dovecot is not None:
            self.note_dovecot_warnings(self.dovecot, self.setup)
            self.dovecot.stop()
            # The next setup's Dovecot starts with empty logs.
            for path in (self.dovecot.log_path, self.dovecot.info_log_path):
                if path.exists():
                    path.rename(path.with_name("%s.%s" % (path.name, self.setup)))
        self.proxy = self.gate = self.dovecot = None

    def note_dovecot_warnings(self, d, label):
        warn = [ln for ln in d.log_text().splitlines()
                if any(w in ln for w in (": Warning: ", ": Error: ", ": Fatal: ", ": Panic: "))
                and "anvil-auth-penalty" not in ln and "Killed with signal" not in ln]
        if warn:
            self.notes.append("Dovecot (%s) logged %d warnings/errors, e.g.: %s" % (label, len(warn), warn[0][-200:]))

    def cleanup(self):
        try:
            self.stop_setup()
            self.stop_policy()
            self.stop_fleet()
        finally:
            if not self.a.keep:
                harness.remove_tree(self.dir)
            else:
                log("kept %s" % self.dir)

    def port(self, target):
        return {"direct": self.dport, "imapgate": self.gate.port,
                "imapproxy": self.proxy.port if self.proxy else None}[target]

    # -- workloads
    def webmail(self, target, conns, seconds, **kw):
        return self.lg.run(self.port(target), "webmail", conns, seconds, users=len(self.users),
                           user_fmt=USER_FMT, password_fmt=PASS_FMT, **kw)

    def warmup(self):
        """Every user logs in once per target: Dovecot's indexes exist, and the proxies hold
        a parked connection per user, as on a webmail server that has been up a while."""
        for target in self.targets:
            t = time.monotonic()
            r = self.webmail(target, 64, 300, sequential=True, max_cycles=len(self.users))
            log("  warm-up %-9s %d logins in %.1fs, %d failed" % (target, r["cycles"], time.monotonic() - t,
                                                                  r["failed"]))

    def record(self, rnd, workload, conns, target, r, **extra):
        self.results.append(dict(setup=self.setup, round=rnd, workload=workload, conns=conns, target=target,
                                 r=r, **extra))

    def order(self, rnd):
        """Targets in turn, the first one rotating from round to round."""
        k = rnd % len(self.targets)
        return self.targets[k:] + self.targets[:k]

    def run_webmail(self, rnd):
        for conns in self.a.conns:
            for target in self.order(rnd):
                r = self.webmail(target, conns, self.a.seconds)
                self.record(rnd, "webmail", conns, target, r)
                log("  webmail  c=%-3d %-9s %8.1f cycles/s  login p50 %7.2f ms  reused %d/%d  failed %d"
                    % (conns, target, r["cycles_per_s"], r["login_p50_us"] / 1000, r["reused"], r["logins"],
                       r["failed"]))

    def run_bulk(self, rnd):
        for conns in (1, 4):
            for target in self.order(rnd):
                r = self.lg.run(self.port(target), "bulk", conns, self.a.seconds, users=len(self.bulk),
                                user_fmt=BULK_FMT, password_fmt=BULK_PASS_FMT, timeout_ms=30000)
                self.record(rnd, "bulk", conns, target, r)
                log("  bulk     c=%-3d %-9s %8.1f MB/s  failed %d" % (conns, target, r["mb_per_s"], r["failed"]))

    def run_burst(self, rnd):
        for target in self.order(rnd):
            r = self.lg.run(self.port(target), "burst", BURST_CONNS, 60, bursts=self.a.bursts, stall_ms=STALL_MS,
                            timeout_ms=BURST_TIMEOUT_MS)
            self.record(rnd, "burst", BURST_CONNS, target, r)
            log("  burst    c=%-3d %-9s %d connects: %d lost, %d stalled (>%d ms), greeting p99 %.1f ms"
                % (BURST_CONNS, target, r["cycles"] + r["lost"], r["lost"], r["stalled"], STALL_MS,
                   r["greet_p99_us"] / 1000))

    def ban_flooders(self):
        p = subprocess.run([str(self.ctl), "-s", str(self.gate.dir / "ctl.sock"), "ban", FLOOD_NET, "86400"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=15)
        if p.returncode != 0:
            raise HarnessError("imapgate-ctl ban failed: %s" % p.stdout.decode(errors="replace"))

    def run_flood(self, rnd):
        if not harness.can_bind(FLOOD_SRCS[0]):
            self.notes.append("flood not run: cannot bind %s" % FLOOD_SRCS[0])
            return
        self.ban_flooders()
        s = self.a.seconds
        pid = self.gate.pid()
        t, c = time.monotonic(), proc_cpu_s(pid)
        quiet = self.webmail("imapgate", 16, s)
        cpu_quiet = (proc_cpu_s(pid) - c) / (time.monotonic() - t)
        per = len(FLOOD_SRCS) // FLOOD_PROCS
        flooders = [self.lg.spawn(self.gate.port, "flood", FLOOD_CONNS, s + 1.0, timeout_ms=5000,
                                  src=",".join(FLOOD_SRCS[i * per:(i + 1) * per]))
                    for i in range(FLOOD_PROCS)]
        try:
            time.sleep(0.3)  # the flood is at full speed before the legit run starts
            t, c = time.monotonic(), proc_cpu_s(pid)
            loud = self.webmail("imapgate", 16, s)
            cpu_loud = (proc_cpu_s(pid) - c) / (time.monotonic() - t)
        finally:
            fl = []
            for p in flooders:
                out, err = p.communicate(timeout=s + 60)
                fl.append(Loadgen.parse(out, err, p.returncode))
        # The legit rate without flood is measured before and after the
        # flooded run and averaged, so that drift between runs (a few per
        # cent on this machine) does not pass for the flood's effect.
        after = self.webmail("imapgate", 16, s)
        if quiet.get("cycles_per_s") is not None and after.get("cycles_per_s") is not None:
            quiet = dict(quiet, cycles_per_s=(quiet["cycles_per_s"] + after["cycles_per_s"]) / 2)
        refused_s = sum(f["refused_per_s"] for f in fl)
        refused_n = sum(f["refused"] for f in fl)
        not_refused = sum(f["error_kinds"]["not_refused"] for f in fl)
        # Connection attempts that got no answer: dropped in the kernel once
        # an address kept coming (guard_drop_after).
        dropped = sum(f["error_kinds"]["connect"] for f in fl)
        flood_err = sum(f["failed"] for f in fl) - dropped
        self.record(rnd, "flood", 16, "imapgate", loud, quiet=quiet, flood=fl, refused_per_s=refused_s,
                    not_refused=not_refused, flood_errors=flood_err, dropped=dropped, refused_n=refused_n, cpu_quiet=cpu_quiet,
                    cpu_loud=cpu_loud)
        log("  flood    c=16  imapgate  legit %.1f cycles/s without flood, %.1f with (x%.2f); %d refused with BYE, "
            "%d attempts dropped in the kernel, %d not refused, %d other flood errors; imapgate CPU %.0f%% -> %.0f%% "
            "of a core"
            % (quiet["cycles_per_s"], loud["cycles_per_s"], ratio(loud["cycles_per_s"], quiet["cycles_per_s"]) or 0,
               refused_n, dropped, not_refused, flood_err, 100 * cpu_quiet, 100 * cpu_loud))

    def run_idle(self):
        n = self.a.idle_sessions
        for target in [t for t in ("imapgate", "direct") if t in self.targets]:
            if target == "imapgate":
                # A fresh imapgate: no parked connection whose memory "before" already holds.
                self.gate.stop()
                self.gate = self.new_gate("gate-idle-" + self.setup, cache_size=max(2000, n + 1000))
                pid = self.gate.pid()
                measure = lambda: vm_rss_kib(pid)  # noqa: E731
                what = "imapgate VmRSS"
            else:
                sid = self.dovecot.proc.pid
                measure = lambda: group_pss_kib(sid)  # noqa: E731
                what = "Dovecot PSS, all processes"
            time.sleep(0.5)
            before = measure()
            p = self.lg.spawn(self.port(target), "idle", n, max(60, n / 50), users=len(self.users),
                              user_fmt=USER_FMT, password_fmt=PASS_FMT, hold=3, ramp=64, timeout_ms=30000)
            ready = json.loads(p.stdout.readline() or "{}")
            time.sleep(1.0)
            after = measure()
            out, err = p.communicate(timeout=180)
            r = Loadgen.parse(out, err, p.returncode)
            idle = ready.get("idle", 0)
            per = (after - before) / idle if idle else None
            self.record(0, "idle", n, target, r, idle=idle, before_kib=before, after_kib=after, per_session=per,
                        what=what, setup_s=ready.get("setup_s"), complete=(idle == n))
            log("  idle     %-9s %d/%d sessions idle (set up in %.1fs); %s %d -> %d KiB = %s KiB/session"
                % (target, idle, n, ready.get("setup_s") or 0, what, before, after,
                   "%.1f" % per if per is not None else "-"))

    # -- the TLS relay (issue 10): bulk through imapgate with TLS on neither,
    # the backend, or both sides, against direct Dovecot over the same kind
    # of connection, with imapgate's CPU time per byte relayed.
    def start_tls_setup(self):
        certs = tls_util.Certs(self.dir / "certs")
        imaps = harness.free_port()
        conf = DOVECOT_COMMON + DOVECOT_SETUPS["reuse"] + tls_util.dovecot_tls_conf(certs.server, imaps)
        (self.dir / "dovecot").mkdir(exist_ok=True)
        self.dovecot = Dovecot(users=dict(self.users, **self.bulk), tmpdir=self.dir / "dovecot", port=self.dport,
                               extra_conf=conf)
        if not (self.dir / "dovecot" / "populated").exists():
            populate(self.dovecot, self.users, self.bulk)
            (self.dir / "dovecot" / "populated").touch()
        self.dovecot.start(timeout=60)
        wait_listening(imaps, "4", timeout=20)
        # gate: the plain relay (Dovecot offers STARTTLS now: say none).
        self.gate = self.new_gate("gate-tls-plain", server_tls="none")
        # gate_tls: STARTTLS to Dovecot, verified, and an implicit-TLS listener.
        self.gate_tls = self.new_gate("gate-tls", tls_listener=True, server_tls="starttls", tls_verify_server=True,
                                      tls_ca_file=certs.ca, tls_server_name="localhost",
                                      client_tls_cert_file=certs.server.cert, client_tls_key_file=certs.server.key)
        self.tls_ports = {"dovecot": (self.dport, None), "dovecot-tls": (imaps, None),
                          "gate-plain": (self.gate.port, self.gate),
                          "gate-tls": (self.gate_tls.port, self.gate_tls),
                          "gate-tls-client": (self.gate_tls.tls_port, self.gate_tls)}

    def tls_bulk(self, where, tls, conns, seconds):
        """One bulk run; with imapgate's CPU seconds (user + system) over it."""
        port, gate = self.tls_ports[where]
        pid = gate.pid() if gate else None
        c0 = proc_cpu_s(pid) if pid else None
        r = self.lg.run(port, "bulk", conns, seconds, users=len(self.bulk), user_fmt=BULK_FMT,
                        password_fmt=BULK_PASS_FMT, timeout_ms=30000, tls=tls)
        cpu = proc_cpu_s(pid) - c0 if pid else None
        return r, cpu

    def run_tls(self):
        self.setup = "tls"
        log("== TLS relay: Dovecot (reuse setup) with STARTTLS and an imaps port")
        self.start_tls_setup()
        try:
            # Warm-up: every bulk user logs in and reads once through each path.
            for case, where, tls in TLS_TARGETS:
                self.tls_bulk(where, tls, len(self.bulk), 0.5)
            for rnd in range(self.a.rounds):
                log(" round %d/%d" % (rnd + 1, self.a.rounds))
                k = rnd % len(TLS_TARGETS)
                order = TLS_TARGETS[k:] + TLS_TARGETS[:k]
                for conns in self.a.tls_conns:
                    for case, where, tls in order:
                        r, cpu = self.tls_bulk(where, tls, conns, self.a.seconds)
                        per_gb = cpu / (r["bytes"] / 1e9) if cpu is not None and r["bytes"] else None
                        self.record(rnd, "tls", conns, case, r, cpu_s=cpu, cpu_s_per_gb=per_gb)
                        log("  tls      c=%-3d %-12s %8.1f MB/s  imapgate CPU %s s/GB  failed %d"
                            % (conns, case, r["mb_per_s"], fmt(per_gb, 2), r["failed"]))
        finally:
            self.stop_setup()
            self.gate_tls = None

    # -- the auth policy server (issue 11): Dovecot's logins with and without
    # the policy server, then the policy endpoint alone under a storm.
    def start_policy_side(self, side):
        """Dovecot in the policy setup with a SASL socket, imapgate in front of it (connection
        reuse off, so every webmail LOGIN reaches Dovecot's auth; guard on, in memory) with a
        policy endpoint, and a Postfix doing SMTP AUTH through Dovecot. On side "on" Dovecot
        asks that endpoint before and after every authentication and reports each result;
        on "off" the endpoint is there but Dovecot does not know it."""
        pport = harness.free_port()
        ddir = self.dir / ("dovecot-policy-" + side)
        ddir.mkdir()
        d = Dovecot(users=self.users, tmpdir=ddir, extra_conf=DOVECOT_COMMON + DOVECOT_SETUPS[self.a.policy_setup],
                    sasl_socket=True, policy_url="http://127.0.0.1:%d/" % pport if side == "on" else None,
                    policy_api_header=POLICY_KEY, policy_nonce=POLICY_NONCE,
                    policy_check_after_auth=self.a.policy_after_auth == "yes")
        self.policy_procs.append(("dovecot " + side, d))
        populate(d, self.users, {})
        d.start(timeout=60)
        g = self.new_gate("gate-policy-" + side, backend_port=d.port, cache_expiration_time=0,
                          policy_listen="127.0.0.1:%d" % pport, policy_api_key=POLICY_KEY,
                          policy_hash_nonce=POLICY_NONCE)
        self.policy_procs.append(("imapgate " + side, g))
        wait_listening(pport, "4", timeout=20, proc=g.proc)
        g.pport = pport
        pf = None
        if self.postfix_missing is None:
            (self.dir / ("postfix-" + side)).mkdir()
            pf = harness.Postfix(d.sasl_path, tmpdir=self.dir / ("postfix-" + side))
            self.policy_procs.append(("postfix " + side, pf))
            pf.start(timeout=30)
        return {"dovecot": d, "gate": g, "postfix": pf}

    def stop_policy(self):
        while self.policy_procs:
            name, p = self.policy_procs.pop()
            try:
                if isinstance(p, Dovecot):
                    self.note_dovecot_warnings(p, "policy %s" % name.split()[-1])
                p.stop()
            except TimeoutError:
                if hasattr(p, "kill"):
                    p.kill()
                self.notes.append("%s did not stop in time" % name)

    def policy_figure(self, figure, side):
        """One login-rate run at POLICY_CONNS connections with valid passwords; with the CPU
        time per login of Dovecot's auth process and of this side's imapgate (the policy
        server on side "on"; for webmail also the IMAP proxy, on both sides)."""
        port, mode = {"imap-login": (side["dovecot"].port, "login"), "webmail": (side["gate"].port, "webmail"),
                      "smtp-auth": (side["postfix"].port if side["postfix"] else None, "smtp")}[figure]
        sid, pid = side["dovecot"].proc.pid, side["gate"].pid()
        a0, g0 = group_cpu_s(sid, "auth"), proc_cpu_s(pid)
        r = self.lg.run(port, mode, POLICY_CONNS, self.a.seconds, users=len(self.users), user_fmt=USER_FMT,
                        password_fmt=PASS_FMT)
        a1, g1 = group_cpu_s(sid, "auth"), proc_cpu_s(pid)
        n = r["cycles"]
        return r, (1000 * (a1 - a0) / n if n else None), (1000 * (g1 - g0) / n if n else None)

    def policy_storm(self, rnd, gate):
        """Allow and report requests at the endpoint alone; imapgate's CPU time over the run.
        Its own user names: the storm's failures must not slow down the bench's users. Each
        round's attackers start at addresses of their own (not banned by an earlier round)."""
        pid = gate.pid()
        c0, t0 = proc_cpu_s(pid), time.monotonic()
        r = self.lg.run(gate.pport, "policy", POLICY_CONNS, self.a.seconds, api_key=POLICY_KEY,
                        users=len(self.users), user_fmt="storm%04d", fail_base=(rnd * 16384) % 65536)
        cpu, wall = proc_cpu_s(pid) - c0, time.monotonic() - t0
        per1000 = 1000 * cpu / r["cycles"] if r["cycles"] else None
        self.record(rnd, "policy-storm", POLICY_CONNS, "imapgate", r, cpu_s=cpu, cpu_per_1000=per1000,
                    cpu_share=cpu / wall if wall > 0 else None)
        log("  storm    c=%-3d %8.0f requests/s  p50 %.2f ms  p99 %.2f ms  imapgate CPU %s ms per 1000 "
            "(%d allows: %d refused, %d delayed; %d reports, %d failures)  failed %d"
            % (POLICY_CONNS, r["cycles_per_s"], r["cycle_p50_us"] / 1000, r["cycle_p99_us"] / 1000,
               fmt(1000 * per1000 if per1000 is not None else None, 1), r["allows"], r["policy_refused"],
               r["policy_delayed"], r["reports"], r["reports_failed"], r["failed"]))

    def run_policy(self):
        self.setup = "policy"
        log("== auth policy server: Dovecot (%s setup) without and with imapgate as its policy server"
            % self.a.policy_setup)
        if self.postfix_missing:
            self.notes.append("SMTP AUTH through Postfix not measured: %s." % self.postfix_missing)
        try:
            sides = {name: self.start_policy_side(name) for name in POLICY_SIDES}
            for name in POLICY_SIDES:
                t = time.monotonic()
                # Indexes, login and auth processes ready; smtpd processes forked.
                w = self.lg.run(sides[name]["dovecot"].port, "webmail", 64, 300, sequential=True,
                                max_cycles=len(self.users), users=len(self.users), user_fmt=USER_FMT,
                                password_fmt=PASS_FMT)
                if sides[name]["postfix"]:
                    self.lg.run(sides[name]["postfix"].port, "smtp", POLICY_CONNS, 0.5, users=len(self.users),
                                user_fmt=USER_FMT, password_fmt=PASS_FMT)
                log("  warm-up policy %-3s %d logins in %.1fs, %d failed" % (name, w["cycles"],
                                                                            time.monotonic() - t, w["failed"]))
            for rnd in range(self.a.rounds):
                log(" round %d/%d" % (rnd + 1, self.a.rounds))
                order = POLICY_SIDES if rnd % 2 == 0 else POLICY_SIDES[::-1]
                for figure, _ in POLICY_FIGURES:
                    if figure == "smtp-auth" and self.postfix_missing:
                        continue
                    for name in order:
                        r, auth_ms, gate_ms = self.policy_figure(figure, sides[name])
                        self.record(rnd, "policy-" + figure, POLICY_CONNS, name, r, auth_ms=auth_ms, gate_ms=gate_ms)
                        log("  %-10s c=%-3d policy %-3s %8.1f logins/s  login p50 %6.2f ms  p99 %6.2f ms  CPU ms/login: "
                            "Dovecot auth %s, imapgate %s  failed %d"
                            % (figure, POLICY_CONNS, name, r["cycles_per_s"], r["login_p50_us"] / 1000,
                               r["login_p99_us"] / 1000, fmt(auth_ms, 3), fmt(gate_ms, 3), r["failed"]))
            # The storm last, so the logins above met a guard without its bans.
            for rnd in range(self.a.rounds):
                self.policy_storm(rnd, sides["on"]["gate"])
        finally:
            self.stop_policy()

    # -- the fleet (issue 12): the guard shared through Redis. Propagation of a
    # ban from A to B, and the webmail rate with Redis on against off.
    def start_fleet(self):
        """A Dovecot (users only) in the fleet setup, a private Redis (ACL user), imapgate
        "off" without guard_redis, and imapgates A ("on", measured) and B (only refuses the
        probes of the latency samples) sharing the Redis. All three with the bench's usual
        config (guard on, in memory, connection reuse)."""
        ddir = self.dir / "dovecot-fleet"
        ddir.mkdir()
        d = Dovecot(users=self.users, tmpdir=ddir, extra_conf=DOVECOT_COMMON + DOVECOT_SETUPS[self.a.fleet_setup])
        self.fleet_procs.append(("dovecot fleet", d))
        populate(d, self.users, {})
        d.start(timeout=60)
        (self.dir / "redis").mkdir()
        r = Redis(password="bench-" + secrets.token_hex(8), tmpdir=self.dir / "redis")
        self.fleet_procs.append(("redis", r))
        r.start(timeout=20)
        # The load comes from 127.0.0.1: out of guard_ignore here, so its
        # logins are what a real client's are (counted, trusted, shared).
        fleet_ignore = "192.0.2.255/32"
        gates = {"off": self.new_gate("gate-fleet-off", backend_port=d.port, guard_ignore=fleet_ignore)}
        self.fleet_procs.append(("imapgate off", gates["off"]))
        for name, node in (("on", "a"), ("b", "b")):
            gates[name] = self.new_gate("gate-fleet-" + node, backend_port=d.port, guard_redis=r.url(),
                                        guard_redis_node=node, guard_ignore=fleet_ignore)
            self.fleet_procs.append(("imapgate " + node, gates[name]))
        for name in ("on", "b"):
            deadline = time.monotonic() + 20
            while not (self.redis_status(gates[name]) or {}).get("up"):
                if time.monotonic() > deadline:
                    raise HarnessError("imapgate %s did not connect to Redis within 20 s" % name)
                time.sleep(0.05)
        return d, r, gates

    def ctl_line(self, gate, line):
        """One control-socket command (imapgate-ctl's protocol: a line; OK or ERR, then the
        body until close); returns the body. Straight over the socket, no process spawned,
        so the time a ban is in force is known to within the reply's read."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(gate.dir / "ctl.sock"))
            s.sendall(line.encode() + b"\n")
            data = b""
            while b"\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, rest = data.partition(b"\n")
            if head != b"OK":
                raise HarnessError("control %r: %s" % (line, data.decode(errors="replace")))
            if line.startswith("status"):
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
            return rest.decode(errors="replace")

    def redis_status(self, gate):
        return json.loads(self.ctl_line(gate, "status --json")).get("redis")

    @staticmethod
    def greeting_from(port, src):
        """A new connection from src: its greeting's first line (b"" when closed without
        one). Closed with a RST, so thousands of probes leave no TIME_WAIT behind."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(5)
            s.bind((src, 0))
            s.connect(("127.0.0.1", port))
            data = b""
            while b"\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data

    def fleet_latency(self, a, b, n):
        """n samples, each from an address of its own: B greets it with OK, the ban is made
        on A, and from the moment A's control socket answers OK, connects from it to B one
        after the other until B greets with BYE. Latency: OK read → that BYE read (an upper
        bound: the ban reached B at most one probe earlier; the probe's own duration is
        reported as the resolution)."""
        lat, probes, probe_us, misses = [], [], [], 0
        for i in range(n):
            src = FLEET_NET % (i // 250, i % 250 + 1)
            first = self.greeting_from(b.port, src)
            if not first.startswith(b"* OK"):
                raise HarnessError("fleet: B greeted %s with %r before the ban" % (src, first[:80]))
            self.ctl_line(a, "ban %s 600" % src)
            t0 = time.monotonic()
            k = 0
            while True:
                t = time.monotonic()
                g = self.greeting_from(b.port, src)
                t1 = time.monotonic()
                k += 1
                probe_us.append(1e6 * (t1 - t))
                if g.startswith(b"* BYE"):
                    lat.append(1000 * (t1 - t0))
                    break
                if not g.startswith(b"* OK"):
                    raise HarnessError("fleet: B greeted %s with %r" % (src, g[:80]))
                if t1 - t0 > FLEET_PROBE_LIMIT_S:
                    misses += 1
                    break
            probes.append(k)
        return lat, probes, probe_us, misses

    def run_fleet(self):
        self.setup = "fleet"
        log("== fleet: imapgates sharing their guard through Redis (Dovecot %s setup)" % self.a.fleet_setup)
        if not harness.can_bind(FLEET_NET % (0, 1)):
            self.notes.append("fleet not run: cannot bind %s" % (FLEET_NET % (0, 1)))
            return
        try:
            d, r, gates = self.start_fleet()
            for name in FLEET_SIDES:
                t = time.monotonic()
                w = self.lg.run(gates[name].port, "webmail", 64, 300, sequential=True, max_cycles=len(self.users),
                                users=len(self.users), user_fmt=USER_FMT, password_fmt=PASS_FMT)
                log("  warm-up redis %-3s %d logins in %.1fs, %d failed" % (name, w["cycles"], time.monotonic() - t,
                                                                           w["failed"]))
            for rnd in range(self.a.rounds):
                log(" round %d/%d" % (rnd + 1, self.a.rounds))
                order = FLEET_SIDES if rnd % 2 == 0 else FLEET_SIDES[::-1]
                for conns in self.a.fleet_conns:
                    for name in order:
                        g = gates[name]
                        e0 = (self.redis_status(g) or {}).get("events_out") if name == "on" else None
                        # CPU: this side's imapgate; on "on" also Redis and B (its subscriber).
                        others = [r.proc.pid, gates["b"].pid()] if name == "on" else []
                        c0 = [proc_cpu_s(pid) for pid in [g.pid()] + others]
                        res = self.lg.run(g.port, "webmail", conns, self.a.seconds, users=len(self.users),
                                          user_fmt=USER_FMT, password_fmt=PASS_FMT)
                        c1 = [proc_cpu_s(pid) for pid in [g.pid()] + others]
                        n = res["cycles"] or None
                        per = [1000 * (b - a) / n if n else None for a, b in zip(c0, c1)]
                        st = self.redis_status(g) if name == "on" else None
                        out = st["events_out"] - e0 if st else None
                        self.record(rnd, "fleet-webmail", conns, name, res, events_out=out,
                                    dropped=st["dropped"] if st else None, gate_ms=per[0],
                                    redis_ms=per[1] if others else None, b_ms=per[2] if others else None)
                        log("  webmail  c=%-3d redis %-3s %8.1f cycles/s  login p50 %6.2f ms  p99 %6.2f ms  "
                            "events published %s  CPU ms/cycle: imapgate %s, Redis %s, B %s  failed %d"
                            % (conns, name, res["cycles_per_s"], res["login_p50_us"] / 1000,
                               res["login_p99_us"] / 1000, "–" if out is None else out, fmt(per[0], 3),
                               fmt(per[1] if others else None, 3), fmt(per[2] if others else None, 3),
                               res["failed"]))
            t = time.monotonic()
            lat, probes, probe_us, misses = self.fleet_latency(gates["on"], gates["b"], self.a.fleet_samples)
            sb = self.redis_status(gates["b"])
            self.results.append(dict(setup="fleet", round=0, workload="fleet-latency", conns=1, target="a->b",
                                     r={"failed": misses}, latency_ms=lat, probes=probes, probe_us=probe_us,
                                     misses=misses, b_events_in=sb["events_in"], b_bad_in=sb["bad_in"]))
            q = quantiles(lat)
            log("  ban A→B  %d samples in %.1fs: p50 %s ms  p99 %s ms  max %s ms  (%d missed; %s probes per sample, "
                "probe p50 %s µs)" % (len(lat), time.monotonic() - t, fmt(q[0], 2), fmt(q[1], 2), fmt(q[2], 2),
                                      misses, fmt(med(probes), 0), fmt(med(probe_us), 0)))
        finally:
            self.stop_fleet()

    def stop_fleet(self):
        while self.fleet_procs:
            name, p = self.fleet_procs.pop()
            try:
                if isinstance(p, Dovecot):
                    self.note_dovecot_warnings(p, "fleet")
                if isinstance(p, Redis):
                    p.cleanup()
                else:
                    p.stop()
            except TimeoutError:
                if hasattr(p, "kill"):
                    p.kill()
                self.notes.append("%s did not stop in time" % name)

    def run(self):
        for setup in self.a.setups:
            wl = [w for w in self.a.workloads if w in SETUP_WORKLOADS.get(setup, self.a.workloads)]
            if not wl:
                continue
            self.setup = setup
            log("== Dovecot setup: %s" % setup)
            self.start_setup(setup)
            try:
                self.warmup()
                for rnd in range(self.a.rounds):
                    log(" round %d/%d" % (rnd + 1, self.a.rounds))
                    if "webmail" in wl:
                        self.run_webmail(rnd)
                    if "flood" in wl and "imapgate" in self.targets:
                        self.run_flood(rnd)
                    if "bulk" in wl:
                        self.run_bulk(rnd)
                    if "burst" in wl:
                        self.run_burst(rnd)
                if "idle" in wl and setup in self.a.idle_setups:
                    self.run_idle()
            finally:
                self.stop_setup()
        if "tls" in self.a.workloads:
            self.run_tls()
        if "policy" in self.a.workloads:
            self.run_policy()
        if "fleet" in self.a.workloads:
            self.run_fleet()


# --------------------------------------------------------------------------
# report


def ratio(a, b):
    return a / b if a is not None and b else None


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, nd=1):
    if v is None:
        return "–"
    return "%.*f" % (nd, v)


def pct(share):
    return None if share is None else 100 * share


def ms(us):
    return None if us is None or us < 0 else us / 1000.0


def pick(results, **kw):
    return [x for x in results if all(x.get(k) == v for k, v in kw.items())]


def main_figure(x):
    w = x["workload"]
    if w == "webmail" or w == "flood":
        return x["r"]["cycles_per_s"]
    if w == "bulk":
        return x["r"]["mb_per_s"]
    return None


def summarize(results, setups, targets):
    """Rows of the one table, and a dict of figures the targets section needs."""
    rows, fig = [], {}
    header = ["setup", "workload", "conns", "target", "result (median)", "rounds", "× direct (min–max)",
              "cycle p50 / p99 ms", "LOGIN p50 / p99 ms", "reused LOGINs", "failed"]
    for setup in setups:
        for workload, unit in (("webmail", "cycles/s"), ("bulk", "MB/s")):
            for conns in sorted({x["conns"] for x in pick(results, setup=setup, workload=workload)}):
                for target in targets:
                    xs = pick(results, setup=setup, workload=workload, conns=conns, target=target)
                    if not xs:
                        continue
                    vals = [main_figure(x) for x in xs]
                    ratios = []
                    for x in xs:
                        d = pick(results, setup=setup, workload=workload, conns=conns, target="direct",
                                 round=x["round"])
                        if d:
                            ratios.append(ratio(main_figure(x), main_figure(d[0])))
                    rs = [r for r in ratios if r is not None]
                    m = med(vals)
                    mr = med(rs)
                    fig[(setup, workload, conns, target)] = m
                    fig[(setup, workload, conns, target, "ratio")] = mr
                    if target == "imapgate":
                        vs = []
                        for x in xs:
                            o = pick(results, setup=setup, workload=workload, conns=conns, target="imapproxy",
                                     round=x["round"])
                            if o:
                                vs.append(ratio(main_figure(x), main_figure(o[0])))
                        fig[(setup, workload, conns, target, "vs_imapproxy")] = med(vs)
                    cyc = "%s / %s" % (fmt(med([ms(x["r"]["cycle_p50_us"]) for x in xs]), 2),
                                       fmt(med([ms(x["r"]["cycle_p99_us"]) for x in xs]), 2))
                    if workload == "webmail":
                        login = "%s / %s" % (fmt(med([ms(x["r"]["login_p50_us"]) for x in xs]), 2),
                                             fmt(med([ms(x["r"]["login_p99_us"]) for x in xs]), 2))
                        reused = sum(x["r"]["reused"] for x in xs)
                        logins = sum(x["r"]["logins"] for x in xs)
                        rl = [ms(x["r"]["reuse_login_p50_us"]) for x in xs if x["r"]["reused"] > 0]
                        reuse_txt = "%d of %d" % (reused, logins)
                        if rl:
                            reuse_txt += " (p50 %s ms)" % fmt(med(rl), 3)
                            fig[(setup, "reuse_login_p50", conns, target)] = med(rl)
                    else:
                        login, reuse_txt = "–", "–"
                    failed = sum(x["r"]["failed"] for x in xs)
                    total = sum(x["r"]["cycles"] + x["r"]["failed"] for x in xs)
                    rows.append([setup, workload, str(conns), target, "%s %s" % (fmt(m), unit),
                                 " ".join(fmt(v) for v in vals),
                                 "%s (%s–%s)" % (fmt(mr, 2), fmt(min(rs), 2), fmt(max(rs), 2)) if rs else "–",
                                 cyc, login, reuse_txt, "%d of %d" % (failed, total)])
        for x in pick(results, setup=setup, workload="flood"):
            q, lo = x["quiet"]["cycles_per_s"], x["r"]["cycles_per_s"]
            fig.setdefault((setup, "flood"), []).append(ratio(lo, q))
        fl = pick(results, setup=setup, workload="flood")
        if fl:
            rs = [ratio(x["r"]["cycles_per_s"], x["quiet"]["cycles_per_s"]) for x in fl]
            rows.append([setup, "flood (webmail)", "16", "imapgate",
                         "%s cycles/s under flood, %s without" % (fmt(med([x["r"]["cycles_per_s"] for x in fl])),
                                                                fmt(med([x["quiet"]["cycles_per_s"] for x in fl]))),
                         " ".join(fmt(x["r"]["cycles_per_s"]) for x in fl),
                         "%s of its rate without flood" % fmt(med(rs), 2),
                         "%s / %s" % (fmt(med([ms(x["r"]["cycle_p50_us"]) for x in fl]), 2),
                                      fmt(med([ms(x["r"]["cycle_p99_us"]) for x in fl]), 2)),
                         "%s / %s" % (fmt(med([ms(x["r"]["login_p50_us"]) for x in fl]), 2),
                                      fmt(med([ms(x["r"]["login_p99_us"]) for x in fl]), 2)),
                         "%d of %d" % (sum(x["r"]["reused"] for x in fl), sum(x["r"]["logins"] for x in fl)),
                         "%d of %d" % (sum(x["r"]["failed"] for x in fl),
                                       sum(x["r"]["cycles"] + x["r"]["failed"] for x in fl))])
            rows.append([setup, "flood (banned)", "%dx%d" % (FLOOD_PROCS, FLOOD_CONNS), "imapgate",
                         "%d refused with BYE, then %d attempts dropped in the kernel"
                         % (sum(x.get("refused_n", 0) for x in fl), sum(x.get("dropped", 0) for x in fl)),
                         " ".join(str(x.get("refused_n", 0)) for x in fl), "–",
                         "imapgate CPU %s%% of a core without flood, %s%% with"
                         % (fmt(pct(med([x.get("cpu_quiet") for x in fl])), 0),
                            fmt(pct(med([x.get("cpu_loud") for x in fl])), 0)), "–", "–",
                         "%d not refused, %d errors" % (sum(x["not_refused"] for x in fl),
                                                       sum(x["flood_errors"] for x in fl))])
        for target in targets:
            xs = pick(results, setup=setup, workload="burst", target=target)
            if not xs:
                continue
            lost = sum(x["r"]["lost"] for x in xs)
            stalled = sum(x["r"]["stalled"] for x in xs)
            total = sum(x["r"]["cycles"] + x["r"]["lost"] for x in xs)
            fig[(setup, "burst", target)] = (lost, stalled, total)
            rows.append([setup, "burst", str(BURST_CONNS), target,
                         "%d lost, %d stalled of %d" % (lost, stalled, total),
                         " ".join("%d+%d" % (x["r"]["lost"], x["r"]["stalled"]) for x in xs), "–",
                         "greeting p99 %s, max %s" % (fmt(med([ms(x["r"]["greet_p99_us"]) for x in xs]), 1),
                                                      fmt(max(ms(x["r"]["greet_max_us"]) or 0 for x in xs), 1)),
                         "–", "–", "%d of %d" % (lost, total)])
        for x in pick(results, setup=setup, workload="idle"):
            fig[(setup, "idle", x["target"])] = x["per_session"]
            fig[(setup, "idle-n", x["target"])] = x["idle"]
            if not x["complete"]:
                fig[(setup, "idle-short", x["target"])] = True
            rows.append([setup, "idle", str(x["conns"]), x["target"],
                         "%s KiB/session" % fmt(x["per_session"], 1),
                         "%d idle" % x["idle"], "–", "–",
                         "%s / %s" % (fmt(ms(x["r"]["login_p50_us"]), 2), fmt(ms(x["r"]["login_p99_us"]), 2)),
                         "%d of %d" % (x["r"]["reused"], x["r"]["logins"]),
                         "%d; %s %d → %d KiB" % (x["r"]["failed"], x["what"], x["before_kib"], x["after_kib"])])
    return header, rows, fig


TLS_CASE_TEXT = {"plain": "plain both sides", "tls-backend": "TLS to Dovecot (STARTTLS), plain client",
                 "tls-both": "TLS both sides (implicit TLS client)"}


def summarize_tls(results):
    """The TLS relay table: per case and conns, imapgate's bulk rate against direct
    Dovecot over the same kind of connection in the same round, and its CPU per GB."""
    header = ["case", "conns", "direct (same connection kind)", "imapgate", "imapgate rounds", "× direct (min–max)",
              "imapgate CPU s/GB", "CPU × plain relay", "failed"]
    rows, fig = [], {}
    tl = pick(results, workload="tls")
    for conns in sorted({x["conns"] for x in tl}):
        for case in ("plain", "tls-backend", "tls-both"):
            xs = pick(tl, conns=conns, target=case)
            if not xs:
                continue
            ref = TLS_REFERENCE[case]
            rs, cpu_rs, refs = [], [], []
            for x in xs:
                d = pick(tl, conns=conns, target=ref, round=x["round"])
                if d:
                    refs.append(d[0]["r"]["mb_per_s"])
                    rs.append(ratio(x["r"]["mb_per_s"], d[0]["r"]["mb_per_s"]))
                p = pick(tl, conns=conns, target="plain", round=x["round"])
                if p:
                    cpu_rs.append(ratio(x["cpu_s_per_gb"], p[0]["cpu_s_per_gb"]))
            rs = [r for r in rs if r is not None]
            cpu_rs = [r for r in cpu_rs if r is not None]
            m, mr, cpu, cr = med([x["r"]["mb_per_s"] for x in xs]), med(rs), med([x["cpu_s_per_gb"] for x in xs]), \
                med(cpu_rs)
            fig[(case, conns, "ratio")] = mr
            fig[(case, conns, "cpu_vs_plain")] = cr
            failed = sum(x["r"]["failed"] for x in xs) + sum(d["r"]["failed"] for d in pick(tl, conns=conns, target=ref))
            total = sum(x["r"]["cycles"] + x["r"]["failed"] for x in xs)
            rows.append([TLS_CASE_TEXT[case], str(conns), "%s MB/s (%s)" % (fmt(med(refs)), ref), "%s MB/s" % fmt(m),
                         " ".join(fmt(x["r"]["mb_per_s"]) for x in xs),
                         "%s (%s–%s)" % (fmt(mr, 2), fmt(min(rs), 2), fmt(max(rs), 2)) if rs else "–",
                         fmt(cpu, 2), fmt(cr, 2) if case != "plain" else "1", "%d of %d" % (failed, total)])
    return header, rows, fig


def check_tls_targets(fig):
    out = []
    v = fig.get(("tls-backend", 1, "ratio"))
    out.append(("TLS backend, bulk at 1 conn: imapgate (plain client) / direct TLS client",
                "%s×" % fmt(v, 2) if v is not None else "not run", "≥ 0.9×",
                "not run" if v is None else ("pass" if v >= 0.9 else "miss")))
    v = fig.get(("tls-backend", 1, "cpu_vs_plain"))
    out.append(("TLS backend, bulk at 1 conn: imapgate CPU per byte / the plain relay's",
                "%s×" % fmt(v, 2) if v is not None else "not run", "≤ 2×",
                "not run" if v is None else ("pass" if v <= 2 else "miss")))
    return out


def check_targets(fig, setups):
    """(goal, measured text, pass/miss/not run) for each target of the issue."""
    out = []

    def ratio_goal(name, key, goal):
        v = fig.get(key)
        out.append((name, "%s×" % fmt(v, 2) if v is not None else "not run", "≥ %.1f×" % goal,
                    "not run" if v is None else ("pass" if v >= goal else "miss")))

    ratio_goal("webmail, stock Dovecot, 1 conn: imapgate / direct", ("stock", "webmail", 1, "imapgate", "ratio"), 4.0)
    ratio_goal("webmail, stock Dovecot, 64 conns: imapgate / direct", ("stock", "webmail", 64, "imapgate", "ratio"),
               4.5)
    v = fig.get(("stock", "webmail", 64, "imapgate", "vs_imapproxy"))
    out.append(("webmail, stock Dovecot, 64 conns: imapgate / imapproxy",
                "%s×" % fmt(v, 2) if v is not None else "not run", "≥ 1.5×",
                "not run" if v is None else ("pass" if v >= 1.5 else "miss")))
    ratio_goal("webmail, Dovecot with process reuse, 1 conn: imapgate / direct",
               ("reuse", "webmail", 1, "imapgate", "ratio"), 1.3)
    ratio_goal("webmail, Dovecot with process reuse, 64 conns: imapgate / direct",
               ("reuse", "webmail", 64, "imapgate", "ratio"), 1.5)
    ratio_goal("beyond the issue: webmail, process reuse + high-performance logins, 1 conn",
               ("tuned", "webmail", 1, "imapgate", "ratio"), 1.3)
    ratio_goal("beyond the issue: webmail, process reuse + high-performance logins, 64 conns",
               ("tuned", "webmail", 64, "imapgate", "ratio"), 1.5)
    bursts = [fig[k] for k in fig if len(k) == 3 and k[1] == "burst" and k[2] == "imapgate"]
    if bursts:
        lost = sum(b[0] + b[1] for b in bursts)
        total = sum(b[2] for b in bursts)
        out.append(("burst of %d simultaneous connects: imapgate lost or stalled" % BURST_CONNS,
                    "%d of %d" % (lost, total), "0", "pass" if lost == 0 else "miss"))
    else:
        out.append(("burst of %d simultaneous connects: imapgate lost or stalled" % BURST_CONNS, "not run", "0",
                    "not run"))
    rl = [v for k, v in fig.items() if len(k) == 4 and k[1] == "reuse_login_p50" and k[3] == "imapgate"]
    webmail_ran = any(len(k) == 4 and k[1] == "webmail" and k[3] == "imapgate" for k in fig)
    if rl:
        worst = max(rl)
        out.append(("LOGIN that reuses a parked connection: p50 (worst over setups and conns)",
                    "%s ms" % fmt(worst, 3), "< 1 ms", "pass" if worst < 1 else "miss"))
    else:
        out.append(("LOGIN that reuses a parked connection: p50", "no LOGIN answered XPROXYREUSE" if webmail_ran
                    else "not run", "< 1 ms", "miss" if webmail_ran else "not run"))
    for setup in [x for x in setups if "bulk" in SETUP_WORKLOADS.get(x, ("bulk",))]:
        ratio_goal("bulk, %s Dovecot, 1 conn: imapgate / direct" % setup, (setup, "bulk", 1, "imapgate", "ratio"),
                   0.8)
    idle = [fig[k] for k in fig if len(k) == 3 and k[1] == "idle" and k[2] == "imapgate" and fig[k] is not None]
    short = [k for k in fig if len(k) == 3 and k[1] == "idle-short" and k[2] == "imapgate"]
    sessions = [fig[k] for k in fig if len(k) == 3 and k[1] == "idle-n" and k[2] == "imapgate"]
    out.append(("idle: imapgate memory per idle session",
                ("%s KiB (%d sessions)" % (fmt(max(idle), 1), min(sessions)) if idle else "not run")
                + (" (not every session got to IDLE)" if short else ""), "≤ 8 KiB",
                "not run" if not idle else ("pass" if max(idle) <= 8 and not short else "miss")))
    fl = [r for setup in setups for r in fig.get((setup, "flood"), []) if r is not None]
    out.append(("flood: legit webmail throughput under flood / without (worst setup, median of rounds)",
                "%s×" % fmt(min(med(fig[(s, "flood")]) for s in setups if fig.get((s, "flood"))), 2) if fl
                else "not run", "≥ 0.9×",
                "not run" if not fl else
                ("pass" if min(med(fig[(s, "flood")]) for s in setups if fig.get((s, "flood"))) >= 0.9 else "miss")))
    return out


def summarize_policy(results):
    """The policy tables: login rates with the policy server off and on (ratio per round),
    and the storm at the endpoint alone; and the on/off ratios for the targets."""
    header = ["logins", "conns", "policy off", "policy on", "rounds off → on", "on / off (min–max)",
              "LOGIN/AUTH p50 ms off → on", "p99 ms off → on", "CPU ms per login, Dovecot auth off → on",
              "imapgate off → on", "failed"]
    rows, fig = [], {}
    for figure, what in POLICY_FIGURES:
        xs = pick(results, workload="policy-" + figure)
        if not xs:
            continue
        off, on = [x for x in xs if x["target"] == "off"], [x for x in xs if x["target"] == "on"]
        rs = []
        for x in on:
            o = pick(off, round=x["round"])
            if o:
                rs.append(ratio(x["r"]["cycles_per_s"], o[0]["r"]["cycles_per_s"]))
        rs = [r for r in rs if r is not None]
        fig[figure] = med(rs)

        def m(side, key, conv=lambda v: v):
            return med([conv(x["r"][key]) for x in side])

        rows.append([what, str(POLICY_CONNS), "%s/s" % fmt(m(off, "cycles_per_s")), "%s/s" % fmt(m(on, "cycles_per_s")),
                     " ".join("%s→%s" % (fmt(o["r"]["cycles_per_s"], 0), fmt(x["r"]["cycles_per_s"], 0))
                              for x in on for o in pick(off, round=x["round"])),
                     "%s (%s–%s)" % (fmt(med(rs), 2), fmt(min(rs), 2), fmt(max(rs), 2)) if rs else "–",
                     "%s → %s" % (fmt(m(off, "login_p50_us", ms), 2), fmt(m(on, "login_p50_us", ms), 2)),
                     "%s → %s" % (fmt(m(off, "login_p99_us", ms), 2), fmt(m(on, "login_p99_us", ms), 2)),
                     "%s → %s" % (fmt(med([x["auth_ms"] for x in off]), 3), fmt(med([x["auth_ms"] for x in on]), 3)),
                     "%s → %s" % (fmt(med([x["gate_ms"] for x in off]), 3), fmt(med([x["gate_ms"] for x in on]), 3)),
                     "%d of %d" % (sum(x["r"]["failed"] for x in xs), sum(x["r"]["cycles"] + x["r"]["failed"] for x in xs))])
    sheader = ["requests", "conns", "requests/s (rounds)", "p50 / p99 ms", "imapgate CPU per 1000 requests",
               "imapgate CPU", "allow answers", "reports", "failed"]
    srows = []
    st = pick(results, workload="policy-storm")
    if st:
        per = med([x["cpu_per_1000"] for x in st])
        fig["storm"] = (med([x["r"]["cycles_per_s"] for x in st]), per)
        srows.append(["allow and report in turn, keep-alive, one at a time per connection", str(POLICY_CONNS),
                      "%s (%s)" % (fmt(med([x["r"]["cycles_per_s"] for x in st]), 0),
                                   " ".join(fmt(x["r"]["cycles_per_s"], 0) for x in st)),
                      "%s / %s" % (fmt(med([ms(x["r"]["cycle_p50_us"]) for x in st]), 3),
                                   fmt(med([ms(x["r"]["cycle_p99_us"]) for x in st]), 3)),
                      "%s ms" % fmt(1000 * per if per is not None else None, 1),
                      "%s%% of a core" % fmt(pct(med([x["cpu_share"] for x in st])), 0),
                      "%d: %d refused (banned), %d delayed" % (sum(x["r"]["allows"] for x in st),
                                                               sum(x["r"]["policy_refused"] for x in st),
                                                               sum(x["r"]["policy_delayed"] for x in st)),
                      "%d, %d of them failures" % (sum(x["r"]["reports"] for x in st),
                                                   sum(x["r"]["reports_failed"] for x in st)),
                      "%d of %d" % (sum(x["r"]["failed"] for x in st),
                                    sum(x["r"]["cycles"] + x["r"]["failed"] for x in st))])
    return header, rows, sheader, srows, fig


def check_policy_targets(fig):
    out = []
    for figure, what in POLICY_FIGURES:
        v = fig.get(figure)
        out.append(("policy server on / off (issue 11): %s, %d conns" % (what, POLICY_CONNS),
                    "%s×" % fmt(v, 2) if v is not None else "not run", "≥ %.2f×" % POLICY_GOAL,
                    "not run" if v is None else ("pass" if v >= POLICY_GOAL else "miss")))
    return out


def quantiles(values):
    """(p50, p99, max) by nearest rank; Nones when there are no values."""
    v = sorted(values)
    if not v:
        return None, None, None

    def rank(p):
        return v[max(0, min(len(v) - 1, -(-len(v) * p // 100) - 1))]

    return rank(50), rank(99), v[-1]


def summarize_fleet(results):
    """The fleet tables: the webmail rate through imapgate with Redis off and on (ratio per
    round), and the ban propagation A → B; and the figures for the targets."""
    header = ["webmail through imapgate", "conns", "Redis off", "Redis on", "rounds off → on", "on / off (min–max)",
              "LOGIN p50 / p99 ms off → on", "events published per cycle (on)",
              "CPU ms per cycle: imapgate off → on", "Redis, B (on)", "failed"]
    rows, fig = [], {}
    xs = pick(results, workload="fleet-webmail")
    for conns in sorted({x["conns"] for x in xs}):
        cx = pick(xs, conns=conns)
        off, on = pick(cx, target="off"), pick(cx, target="on")
        rs = [ratio(x["r"]["cycles_per_s"], o["r"]["cycles_per_s"]) for x in on for o in pick(off, round=x["round"])]
        rs = [r for r in rs if r is not None]
        fig[("rate", conns)] = med(rs)
        per = [x["events_out"] / x["r"]["cycles"] for x in on if x.get("events_out") is not None and x["r"]["cycles"]]

        def m(side, key):
            return fmt(med([ms(x["r"][key]) for x in side]), 2)

        rows.append(["cycles/s", str(conns), "%s/s" % fmt(med([x["r"]["cycles_per_s"] for x in off])),
                     "%s/s" % fmt(med([x["r"]["cycles_per_s"] for x in on])),
                     " ".join("%s→%s" % (fmt(o["r"]["cycles_per_s"], 0), fmt(x["r"]["cycles_per_s"], 0))
                              for x in on for o in pick(off, round=x["round"])),
                     "%s (%s–%s)" % (fmt(med(rs), 2), fmt(min(rs), 2), fmt(max(rs), 2)) if rs else "–",
                     "%s / %s → %s / %s" % (m(off, "login_p50_us"), m(off, "login_p99_us"), m(on, "login_p50_us"),
                                            m(on, "login_p99_us")),
                     "%s (%d dropped)" % (fmt(med(per), 2), max([x.get("dropped") or 0 for x in on] or [0])),
                     "%s → %s" % (fmt(med([x.get("gate_ms") for x in off]), 3), fmt(med([x.get("gate_ms") for x in on]), 3)),
                     "%s, %s" % (fmt(med([x.get("redis_ms") for x in on]), 3), fmt(med([x.get("b_ms") for x in on]), 3)),
                     "%d of %d" % (sum(x["r"]["failed"] for x in cx), sum(x["r"]["cycles"] + x["r"]["failed"] for x in cx))])
    lheader = ["ban on A, refused at B", "samples", "p50 ms", "p99 ms", "max ms", "missed (no BYE within %g s)"
               % FLEET_PROBE_LIMIT_S, "probes per sample (median, max)", "probe p50 µs (resolution)",
               "B: events in"]
    lrows = []
    for x in pick(results, workload="fleet-latency"):
        p50, p99, mx = quantiles(x["latency_ms"])
        fig["latency"] = (p50, p99, len(x["latency_ms"]), x["misses"])
        lrows.append(["`ban ADDR 600` on A's control socket answered OK → B's first `* BYE` to a new connection",
                      str(len(x["latency_ms"]) + x["misses"]), fmt(p50, 2), fmt(p99, 2), fmt(mx, 2),
                      str(x["misses"]), "%s, %d" % (fmt(med(x["probes"]), 0), max(x["probes"] or [0])),
                      fmt(med(x["probe_us"]), 0), str(x["b_events_in"])])
    return header, rows, lheader, lrows, fig


def check_fleet_targets(fig, conns):
    out = []
    lat = fig.get("latency")
    if lat is None or lat[1] is None:
        out.append(("fleet (issue 12): ban on A refused at B, p50 / p99", "not run",
                    "≤ %d ms" % FLEET_LATENCY_GOAL_MS, "not run"))
    else:
        p50, p99, n, misses = lat
        ok = p99 <= FLEET_LATENCY_GOAL_MS and misses == 0
        out.append(("fleet (issue 12): ban on A refused at B, p50 / p99",
                    "%s / %s ms (%d samples%s)" % (fmt(p50, 2), fmt(p99, 2), n,
                                                  ", %d missed" % misses if misses else ""),
                    "≤ %d ms" % FLEET_LATENCY_GOAL_MS, "pass" if ok else "miss"))
    for c in conns:
        v = fig.get(("rate", c))
        out.append(("fleet (issue 12): webmail cycles/s through imapgate, Redis on / off, %d conn%s"
                    % (c, "" if c == 1 else "s"), "%s×" % fmt(v, 2) if v is not None else "not run",
                    "≥ %.2f×" % FLEET_RATE_GOAL, "not run" if v is None else ("pass" if v >= FLEET_RATE_GOAL else "miss")))
    return out


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cmd_out(argv):
    try:
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10,
                              check=False).stdout.decode(errors="replace").strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine(build):
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = cmd_out(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
    return [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("nproc", str(NPROC)),
        ("CPU", cpu),
        ("kernel", platform.release()),
        ("Dovecot", cmd_out(["dovecot", "--version"])),
        ("imapproxy", cmd_out(["dpkg-query", "-W", "-f", "${Version}", "imapproxy"])),
        ("Postfix", cmd_out(["dpkg-query", "-W", "-f", "${Version}", "postfix"])),
        ("imapgate", "%s (%s)" % (cmd_out([str(Path(build) / "imapgate"), "-V"]), commit)),
    ]


def report(bench, args, elapsed, cpu):
    header, rows, fig = summarize(bench.results, args.setups, bench.targets)
    tg = check_targets(fig, args.setups)
    errors = []
    for x in bench.results:
        for r in [x["r"]] + ([x["quiet"]] if "quiet" in x else []) + x.get("flood", []):
            if r.get("first_error"):
                errors.append("%s %s c=%s %s round %d: %s" % (x["setup"], x["workload"], x["conns"], x["target"],
                                                             x["round"] + 1, r["first_error"]))
    out = ["# imapgate benchmark (make bench)", ""]
    out += ["- %s: %s" % kv for kv in machine(args.build)]
    out += ["- run: %s; %d round(s) of %g s per figure, setups %s, %d users, %.0f s in all"
            % ("quick" if args.quick else "full" if args.full else "partial", args.rounds, args.seconds,
               ", ".join(args.setups), args.users, elapsed)]
    other = cpu.other_share()
    out += ["- other load: load average %s at the start; other processes used %s of the CPU during the run%s"
            % (cpu.load, "?" if other is None else "%.0f%%" % (100 * other),
               " — **the figures are disturbed; run again on a quiet machine**" if other and other > 0.05 else ""),
            ""]
    out += ["Each figure is the median over rounds (the per-round values follow it); × direct is the "
            "median of the ratios to direct Dovecot measured in the same round. "
            "Cycles/s count only cycles whose every reply was a tagged OK.", ""]
    if rows:
        out += [md_table(header, rows), ""]
    theader, trows, tfig = summarize_tls(bench.results)
    if trows:
        out += ["## TLS relay (issue 10)", "",
                "Bulk (`UID FETCH n BODY.PEEK[]` of 5 MB messages) through imapgate with TLS on neither side, "
                "toward Dovecot only (STARTTLS, verified; the client plain), and on both sides (the client "
                "on imapgate's implicit-TLS listener), each against direct Dovecot over the same kind of "
                "connection in the same round (plain port; implicit TLS on its imaps port). CPU: imapgate's "
                "user + system time (/proc/PID/stat) over the run, per GB of message bodies relayed; "
                "\"× plain relay\" is its ratio to the plain case of the same round.", "",
                md_table(theader, trows), ""]
        tg = tg + check_tls_targets(tfig)
    pheader, prows, sheader, srows, pfig = summarize_policy(bench.results)
    if prows or srows:
        out += ["## Policy server (issue 11)", "",
                "Dovecot (%s setup, %d users, valid passwords) twice: without auth_policy_server_url, and with "
                "it pointing at imapgate's policy_listen (check before auth, %s, report after auth; guard "
                "on, in memory). Each login rate at %d connections with the policy server off and on, in the same "
                "round (the order alternating); \"on / off\" is the median of the per-round ratios. The webmail "
                "row goes through imapgate's IMAP front with connection reuse off, so every LOGIN reaches "
                "Dovecot's auth. CPU per login: user + system time of Dovecot's auth process and of that "
                "side's imapgate (which for webmail also proxies the IMAP session)."
                % (args.policy_setup, args.users,
                   "check after auth too (3 requests per good login)" if args.policy_after_auth == "yes"
                   else "no check after auth, as the README recommends (2 requests per login)",
                   POLICY_CONNS), ""]
        if prows:
            out += [md_table(pheader, prows), ""]
        if srows:
            out += ["The endpoint alone: allow and report requests in turn (a quarter of the reports are "
                    "failures from addresses in 198.19.0.0/16, six each with distinct password hashes, so the "
                    "guard bans them; every other allow asks about the attacker address of the moment). "
                    "Latency: request sent → whole response read. CPU: imapgate's user + system time "
                    "(/proc/PID/stat) over the run.", "",
                    md_table(sheader, srows), ""]
        tg = tg + check_policy_targets(pfig)
    fheader, frows, lheader, lrows, ffig = summarize_fleet(bench.results)
    if frows or lrows:
        out += ["## Fleet (Redis) (issue 12)", "",
                "Two imapgates, A and B, share their guard through a private redis-server (ACL user, "
                "`guard_redis redis://USER:PW@127.0.0.1:PORT/0`, `guard_redis_node` a and b) in front of one "
                "Dovecot (%s setup, %d users); a third imapgate without `guard_redis` is \"off\". The webmail "
                "workload (the bench's usual imapgate config: guard on in memory, connection reuse) through "
                "\"off\" and through A (\"on\"; B idle) in the same round, the order alternating; \"on / off\" "
                "is the median of the per-round ratios; the load client is out of guard_ignore, so its logins are shared like a real client's: a success event per (address, user) pair at most every 5 minutes, the failures and bans as they come."
                % (args.fleet_setup, args.users), ""]
        if frows:
            out += [md_table(fheader, frows), ""]
        if lrows:
            out += ["Propagation: each sample from a loopback address of its own (127.2.0.0/16). B greets it "
                    "with `* OK`; the ban is made on A over its control socket; from the moment A answers OK, "
                    "new connections from that address to B, one after the other, until B greets one with "
                    "`* BYE`. Latency: A's OK read → that BYE read (B had the ban at most one probe earlier).", "",
                    md_table(lheader, lrows), ""]
    tg = tg + check_fleet_targets(ffig, args.fleet_conns)
    out += ["## Targets (issues 6, 10, 11 and 12)", ""]
    out += [md_table(["target", "measured", "goal", "status"], [list(t) for t in tg]), ""]
    if errors or bench.notes:
        out += ["## Notes", ""]
        out += ["- " + n for n in bench.notes]
        seen = set()
        for e in errors:
            key = e.split(":", 1)[1]
            if key not in seen:
                seen.add(key)
                out.append("- first error, " + e)
        out.append("")
    out += ["How it was measured: bench/README.md.", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description="imapgate vs direct Dovecot vs imapproxy (issue 6)")
    ap.add_argument("--build", default=str(REPO / "build"), help="directory with imapgate, imapgate-ctl, loadgen")
    ap.add_argument("--quick", action="store_true", help="1 round of 1.5 s, 1000 idle sessions: ~2 minutes")
    ap.add_argument("--rounds", type=int, help="rounds per figure (3)")
    ap.add_argument("--seconds", type=float, help="seconds per measurement (5)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="subset of " + ",".join(WORKLOADS))
    ap.add_argument("--setups", default=",".join(SETUPS), help="Dovecot setups: stock,reuse,tuned")
    ap.add_argument("--targets", default=",".join(TARGETS), help="subset of " + ",".join(TARGETS))
    ap.add_argument("--conns", default="1,16,64", help="webmail concurrency levels")
    ap.add_argument("--tls-conns", default="1,4", help="concurrency levels of the tls workload (bulk)")
    ap.add_argument("--policy-setup", default="tuned", choices=SETUPS,
                    help="Dovecot setup of the policy workload (tuned: the cheapest logins, so the policy "
                    "server's share is largest)")
    ap.add_argument("--policy-after-auth", default="no", choices=["no", "yes"],
                    help="Dovecot's auth_policy_check_after_auth in the policy workload (no: the README's "
                    "recommendation; yes: a third request per good login)")
    ap.add_argument("--fleet-setup", default="tuned", choices=SETUPS,
                    help="Dovecot setup of the fleet workload (tuned: the cheapest logins, so imapgate's share, "
                    "Redis included, is largest)")
    ap.add_argument("--fleet-conns", default="1,16", help="webmail concurrency levels of the fleet workload")
    ap.add_argument("--fleet-samples", type=int, help="ban propagation samples of the fleet workload (200)")
    ap.add_argument("--users", type=int, default=1000, help="generated users (1000)")
    ap.add_argument("--idle-sessions", type=int, help="IDLE sessions (5000)")
    ap.add_argument("--idle-setups", default="reuse", help="setups to run idle in (reuse: stock would need an "
                    "imap process per session)")
    ap.add_argument("--bursts", type=int, help="bursts of 64 connects per target and round (3)")
    ap.add_argument("--out", help="write the report here (a full default run writes bench/RESULTS.md)")
    ap.add_argument("--json", help="write every raw loadgen result here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs) for a look")
    a = ap.parse_args(argv)
    defaults = dict(rounds=1, seconds=1.5, idle_sessions=1000, bursts=2, fleet_samples=50) if a.quick else \
        dict(rounds=3, seconds=5.0, idle_sessions=5000, bursts=3, fleet_samples=200)
    full = not a.quick
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
        else:
            full = False
    for k, allowed in (("workloads", WORKLOADS), ("setups", SETUPS), ("targets", TARGETS), ("idle_setups", SETUPS)):
        items = [s.strip() for s in getattr(a, k).split(",") if s.strip()]
        bad = [s for s in items if s not in allowed]
        if bad:
            ap.error("--%s: unknown %s (choose from %s)" % (k.replace("_", "-"), ",".join(bad), ",".join(allowed)))
        if items != list(allowed) and k != "idle_setups":
            full = False
        setattr(a, k, items)
    a.conns = [int(c) for c in a.conns.split(",")]
    a.tls_conns = [int(c) for c in a.tls_conns.split(",")]
    a.fleet_conns = [int(c) for c in a.fleet_conns.split(",")]
    if a.fleet_conns != [1, 16] or a.fleet_setup != "tuned":
        full = False
    if a.conns != [1, 16, 64] or a.tls_conns != [1, 4] or a.users != 1000 or a.policy_setup != "tuned" or a.policy_after_auth != "no":
        full = False
    if "direct" not in a.targets:
        a.targets.insert(0, "direct")  # every ratio needs it
    if not (1 <= a.rounds <= 20 and 0.2 <= a.seconds <= 120 and 1 <= a.users <= 10000
            and 1 <= a.idle_sessions <= 20000 and 1 <= a.bursts <= 100 and 1 <= a.fleet_samples <= 10000):
        ap.error("out of range: rounds 1..20, seconds 0.2..120, users 1..10000, idle sessions 1..20000, "
                 "bursts 1..100, fleet samples 1..10000")
    a.full = full
    if a.out is None and full:
        a.out = str(REPO / "bench" / "RESULTS.md")
    return a


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if not harness.imapgate_binary(args.build).exists():
        sys.exit("bench: %s/imapgate missing (run make)" % args.build)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C even when started in the background by a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    fds = raise_fd_limit()
    log("imapgate bench: rounds %d, %g s each, setups %s, workloads %s, targets %s (fd limit %d)"
        % (args.rounds, args.seconds, ",".join(args.setups), ",".join(args.workloads), ",".join(args.targets), fds))
    t0 = time.monotonic()
    cpu = CpuWatch()
    bench = Bench(args)
    try:
        bench.run()
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        bench.cleanup()
    text = report(bench, args, time.monotonic() - t0, cpu)
    print()
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        log("written to %s" % args.out)
    if args.json:
        Path(args.json).write_text(json.dumps(bench.results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
