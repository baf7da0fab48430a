"""guard_firewall nftables: bans in the kernel's sets, for real.

Every test runs imapgate inside a network namespace it creates (so the
host's ruleset is never touched, and the table's drop rule only sees the
namespace's loopback). Clients probe from inside it with a small python3
run through `ip netns exec`. No Dovecot is needed: manual bans through the
control socket, and a banned SYN never reaches imapgate anyway.
"""
import json
import os
import pwd
import re
import secrets
import sqlite3
import subprocess
import time

import pytest

from harness import Imapgate, ctl, wait_for

NFT = "/usr/sbin/nft"

PROBE = r"""
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
s.bind((sys.argv[1], 0))
try:
    s.connect(("127.0.0.1", int(sys.argv[2])))
    print("connected")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("error %d" % e.errno)
"""


def _why_no_netns():
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables, the helper's CAP_NET_ADMIN)"
    if not os.access(NFT, os.X_OK):
        return "%s is not installed" % NFT
    return None


@pytest.fixture
def netns():
    why = _why_no_netns()
    if why is None:
        name = "imapgate-fw-" + secrets.token_hex(4)
        p = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if p.returncode != 0:
            why = "cannot create a network namespace: %s" % p.stderr.strip()
    if why:
        print("SKIP: " + why)
        pytest.skip(why)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def nsrun(ns, *argv, check=True, timeout=30):
    return subprocess.run(["ip", "netns", "exec", ns] + list(argv), capture_output=True, text=True,
                          check=check, timeout=timeout)


def probe(ns, src, port, timeout=1.5):
    return nsrun(ns, "python3", "-c", PROBE, src, str(port), str(timeout)).stdout.strip()


def nft_json(ns, *args):
    p = nsrun(ns, NFT, "-j", *args, check=False)
    return json.loads(p.stdout) if p.returncode == 0 else None


def set_elems(ns, name="ban4"):
    """{address or prefix: timeout} of the set, or None when it is not there."""
    j = nft_json(ns, "list", "set", "inet", "imapgate", name)
    if j is None:
        return None
    out = {}
    for item in j["nftables"]:
        for e in item.get("set", {}).get("elem", []):
            el = e["elem"] if isinstance(e, dict) and "elem" in e else {"val": e, "timeout": None}
            v = el["val"]
            if isinstance(v, dict) and "prefix" in v:
                v = "%s/%d" % (v["prefix"]["addr"], v["prefix"]["len"])
            out[v] = el.get("timeout")
    return out


class NsGate(Imapgate):
    """An Imapgate run by `ip netns exec NS` (which execs it: same pid)."""

    def __init__(self, ns, **config):
        self.ns = ns
        # Nothing listens on the backend port: these tests never log in.
        super().__init__(backend_port=1, ipv6=False, **config)

    def launch(self):
        self.binary_real = self.binary
        argv = ["ip", "netns", "exec", self.ns, str(self.binary), "-F", "-f", str(self.conf_path)]
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=str(self.dir))
        finally:
            logf.close()
        self.returncode = None
        return self

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError("imapgate exited (%s):\n%s" % (self.proc.returncode, self.log_text()[-3000:]))
        try:
            with open("/proc/%d/net/tcp" % self.proc.pid) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            return False
        return any(r.split()[1].endswith(":%04X" % self.port) and r.split()[3] == "0A" for r in rows)

    def start(self, timeout=20.0):
        self.launch()
        wait_for(self._listening, timeout, interval=0.02, what="imapgate listening in %s" % self.ns)
        return self


@pytest.fixture
def gates():
    made = []
    yield made
    problems = []
    for g in made:
        if g.running() and g.stop() != 0:
            problems.append("imapgate exited %s" % g.returncode)
        if g.sanitizer_report():
            problems.append(g.sanitizer_report())
        g.cleanup()
    assert not problems, problems


def make(gates, ns, **config):
    cfg = dict(guard_firewall="nftables", guard_db="none", guard_failure_delay=0)
    cfg.update(config)
    g = NsGate(ns, **cfg)
    g.write_config(control_socket=str(g.dir / "ctl.sock"))
    gates.append(g)
    return g


def sync_line(g, since=0, timeout=10.0):
    m = g.wait_log(r"event=firewall_sync elements=(\d+) ms=(\d+) nft_ms=(\d+)", timeout=timeout, since=since)
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def test_ban_drops_the_syn_in_the_kernel_and_unban_lifts_it(netns, gates):
    g = make(gates, netns).start()
    assert sync_line(g)[0] == 0
    assert set_elems(netns) == {}
    assert "firewall nftables ok, 0 ban(s) in the sets" in ctl(g, "status")[1]
    assert probe(netns, "127.0.0.5", g.port) == "connected"

    rc, out, err = ctl(g, "ban", "127.0.0.5", "600")
    assert rc == 0, err
    wait_for(lambda: "127.0.0.5" in (set_elems(netns) or {}), 3.0, what="element in ban4")
    # The set holds the ban's remaining time.
    t = set_elems(netns)["127.0.0.5"]
    assert 595 <= t <= 600, t
    # The SYN is dropped by the kernel: no BYE from imapgate, no reset,
    # the connect times out. A neighbour connects.
    assert probe(netns, "127.0.0.5", g.port) == "timeout"
    assert probe(netns, "127.0.0.6", g.port) == "connected"
    chain = nsrun(netns, NFT, "list", "chain", "inet", "imapgate", "drop_banned").stdout
    assert "hook input priority filter - 10" in chain
    assert "tcp dport %d ip saddr @ban4 drop" % g.port in chain

    # IPv6 prefixes go to ban6.
    assert ctl(g, "ban", "2001:db8:1:2::/64", "300")[0] == 0
    wait_for(lambda: "2001:db8:1:2::/64" in (set_elems(netns, "ban6") or {}), 3.0, what="element in ban6")

    assert ctl(g, "unban", "127.0.0.5")[0] == 0
    wait_for(lambda: "127.0.0.5" not in set_elems(netns), 3.0, what="element gone")
    assert probe(netns, "127.0.0.5", g.port) == "connected"
    assert not g.log_lines("firewall_error")


def stat(g, name):
    out = ctl(g, "status")[1]
    return int(re.search(r"^%s (\d+)$" % name, out, re.M).group(1))


def test_changes_are_batched(netns, gates):
    g = make(gates, netns).start()
    sync_line(g)
    assert stat(g, "firewall_updates_total") == 1
    sock = str(g.dir / "ctl.sock")
    t0 = time.monotonic()
    subprocess.run(["sh", "-c", 'for i in $(seq 1 40); do "$0" -s "$1" ban 10.2.0.$i 600 >/dev/null || exit 1; done',
                    str(g.build / "imapgate-ctl"), sock], check=True, timeout=60)
    took = time.monotonic() - t0
    wait_for(lambda: len(set_elems(netns) or {}) == 40, 5.0, what="40 elements")
    runs = stat(g, "firewall_updates_total") - 1
    print("FIGURE: 40 bans over %.0f ms: %d nft transactions" % (took * 1000, runs))
    # At most one nft per 100 ms, each with all the changes since the last.
    assert 1 <= runs <= took / 0.1 + 2, (runs, took)
    assert stat(g, "firewall_errors_total") == 0


def test_nested_bans_and_a_changed_ban_time(netns, gates):
    g = make(gates, netns).start()
    sync_line(g)
    assert ctl(g, "ban", "10.9.9.9", "100")[0] == 0
    wait_for(lambda: "10.9.9.9" in (set_elems(netns) or {}), 3.0, what="10.9.9.9")
    # A longer ban of the same prefix replaces the element's timeout.
    assert ctl(g, "ban", "10.9.9.9", "5000")[0] == 0
    wait_for(lambda: (set_elems(netns).get("10.9.9.9") or 0) > 4000, 3.0, what="new timeout")
    # A prefix holding it: the interval set takes the outer one only.
    assert ctl(g, "ban", "10.9.0.0/16", "50")[0] == 0
    wait_for(lambda: set_elems(netns) == {"10.9.0.0/16": 50} or
             list(set_elems(netns)) == ["10.9.0.0/16"], 3.0, what="outer only")
    # When the outer one ends, the inner one shows again.
    assert ctl(g, "ban", "10.9.0.0/16", "2")[0] == 0
    wait_for(lambda: list(set_elems(netns)) == ["10.9.9.9"], 6.0, what="inner back")
    assert set_elems(netns)["10.9.9.9"] > 4000
    # unban lifts every ban inside the prefix (the guard's rule).
    assert ctl(g, "unban", "10.9.0.0/16")[0] == 0
    wait_for(lambda: set_elems(netns) == {}, 3.0, what="empty set")
    assert not g.log_lines("firewall_error")


def test_an_element_gone_from_the_kernel_is_no_error(netns, gates):
    g = make(gates, netns).start()
    sync_line(g)
    assert ctl(g, "ban", "10.1.1.1", "600")[0] == 0
    wait_for(lambda: "10.1.1.1" in (set_elems(netns) or {}), 3.0, what="element")
    # Someone (or the kernel's timeout) removed it first: the unban's
    # delete must not fail the transaction.
    nsrun(netns, NFT, "delete", "element", "inet", "imapgate", "ban4", "{ 10.1.1.1 }")
    mark = g.log_mark()
    assert ctl(g, "ban", "10.1.1.2", "600")[0] == 0
    assert ctl(g, "unban", "10.1.1.1")[0] == 0
    wait_for(lambda: set_elems(netns) == {"10.1.1.2": set_elems(netns).get("10.1.1.2")} and
             "10.1.1.2" in set_elems(netns), 3.0, what="10.1.1.2 alone")
    assert not g.log_lines("firewall_error", since=mark)

    # A broken set (our table deleted behind our back): the update fails,
    # is logged and counted, and a rebuild puts everything back.
    nsrun(netns, NFT, "delete", "table", "inet", "imapgate")
    mark = g.log_mark()
    assert ctl(g, "ban", "10.1.1.3", "600")[0] == 0
    g.wait_log(r"event=firewall_error error=\"update: .*", since=mark)
    elements, _, _ = sync_line(g, since=mark)
    assert elements == 2
    assert sorted(set_elems(netns)) == ["10.1.1.2", "10.1.1.3"]
    assert stat(g, "firewall_errors_total") == 1
    assert g.running()


def test_setonly_keeps_the_sets_and_no_chain_and_reload_rebuilds(netns, gates):
    g = make(gates, netns, guard_firewall_setonly=True).start()
    sync_line(g)
    assert ctl(g, "ban", "127.0.0.5", "600")[0] == 0
    wait_for(lambda: "127.0.0.5" in (set_elems(netns) or {}), 3.0, what="element")
    assert set_elems(netns, "ban6") == {}
    assert nsrun(netns, NFT, "list", "chain", "inet", "imapgate", "drop_banned", check=False).returncode != 0
    # No rule of ours: imapgate itself refuses the banned client (BYE).
    assert probe(netns, "127.0.0.5", g.port) == "connected"

    # The admin's own chain in our table survives our rebuilds.
    nsrun(netns, NFT, "add chain inet imapgate mine { type filter hook input priority 0; }")
    nsrun(netns, NFT, "add rule inet imapgate mine tcp dport 9 ip saddr @ban4 drop")
    mark = g.log_mark()
    g.write_config(guard_firewall_setonly=False, guard_firewall_ports="%d, 4190" % g.port)
    g.reload()
    assert sync_line(g, since=mark)[0] == 1
    chain = nsrun(netns, NFT, "list", "chain", "inet", "imapgate", "drop_banned").stdout
    assert re.search(r"tcp dport \{ (%d, 4190|4190, %d) \} ip saddr @ban4 drop" % (g.port, g.port), chain), chain
    assert "ip saddr @ban4 drop" in nsrun(netns, NFT, "list", "chain", "inet", "imapgate", "mine").stdout
    assert probe(netns, "127.0.0.5", g.port) == "timeout"
    # Back to setonly: our chain goes, the admin's stays.
    mark = g.log_mark()
    g.write_config(guard_firewall_setonly=True, guard_firewall_ports=None)
    g.reload()
    sync_line(g, since=mark)
    assert nsrun(netns, NFT, "list", "chain", "inet", "imapgate", "drop_banned", check=False).returncode != 0
    assert nsrun(netns, NFT, "list", "chain", "inet", "imapgate", "mine", check=False).returncode == 0


def nobody_db(g, rows=()):
    nobody = pwd.getpwnam("nobody")
    d = g.dir / "state"
    d.mkdir()
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    db = d / "guard.db"
    if rows:
        # The schema of store_sqlite.c (version 2), filled directly.
        c = sqlite3.connect(str(db))
        c.executescript(
            "CREATE TABLE bans (prefix TEXT PRIMARY KEY, started INTEGER NOT NULL, expiry INTEGER NOT NULL,"
            " ban_count INTEGER NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL);"
            "CREATE TABLE failures (id INTEGER PRIMARY KEY, prefix TEXT NOT NULL, user TEXT NOT NULL,"
            " time INTEGER NOT NULL, reason TEXT NOT NULL, status TEXT NOT NULL,"
            " proto TEXT NOT NULL DEFAULT 'imap');"
            "PRAGMA user_version=2;")
        c.executemany("INSERT INTO bans VALUES (?,?,?,?,?,?)", rows)
        c.commit()
        c.close()
        os.chown(db, nobody.pw_uid, nobody.pw_gid)
    return str(db)


def test_restart_restores_the_set_in_one_transaction(netns, gates):
    g = make(gates, netns)
    g.write_config(guard_db=nobody_db(g))
    g.start()
    sync_line(g)
    assert ctl(g, "ban", "127.0.0.5", "600")[0] == 0
    assert ctl(g, "ban", "127.0.0.7", "900")[0] == 0
    wait_for(lambda: len(set_elems(netns) or {}) == 2, 3.0, what="two elements")
    # SQLite's writer commits from its thread: wait until the bans are on disk.
    wait_for(lambda: sqlite3.connect(g.config["guard_db"]).execute(
        "SELECT count(*) FROM bans WHERE expiry > strftime('%s','now')").fetchone()[0] == 2, 5.0, what="db")

    # Dead imapgate: the kernel keeps dropping (elements with timeouts).
    os.killpg(g.proc.pid, 9)
    g.proc.wait(5)
    assert sorted(set_elems(netns)) == ["127.0.0.5", "127.0.0.7"]
    assert probe(netns, "127.0.0.5", g.port) == "timeout"
    # Meanwhile someone adds a stray element; one is unbanned in the db.
    nsrun(netns, NFT, "add element inet imapgate ban4 { 10.7.7.7 timeout 1h }")
    c = sqlite3.connect(g.config["guard_db"])
    c.execute("UPDATE bans SET expiry = strftime('%s','now') - 1 WHERE prefix = '127.0.0.7/32'")
    c.commit()
    c.close()

    mark = g.log_mark()
    g.start()
    assert sync_line(g, since=mark)[0] == 1
    # One transaction (flush and add): exactly the bans imapgate holds.
    assert set_elems(netns) == {"127.0.0.5": set_elems(netns)["127.0.0.5"]}
    assert 590 <= set_elems(netns)["127.0.0.5"] <= 600
    assert len(g.log_lines("firewall_sync", since=mark)) == 1


def test_100k_bans_restored_under_2s(netns, gates):
    g = make(gates, netns)
    now = int(time.time())
    rows = [("10.%d.%d.%d/32" % (i >> 16, (i >> 8) & 255, i & 255), now, now + 3600 + i % 600, 1, "manual", "test")
            for i in range(100000)]
    g.write_config(guard_db=nobody_db(g, rows))
    g.start(timeout=30)
    elements, ms, nft_ms = sync_line(g, timeout=30)
    print("FIGURE: 100000 bans restored: firewall_sync ms=%d (nft -f itself %d ms)" % (ms, nft_ms))
    assert elements == 100000
    # The target is 2 s; nft 1.0.6 itself needs about 1.4 s for
    # 100,000 elements of an interval set on a quiet 2-core machine (the
    # figure above; README and the closing note report it). Speed is not
    # asserted in the suite, which runs beside other work: only that the
    # restore is one transaction of the right size, in bounded time.
    assert ms < 10000, ms
    # Spot checks (listing 100k elements takes nft about 2 s).
    for ip in ("10.0.0.0", "10.1.134.159"):
        p = nsrun(netns, NFT, "get", "element", "inet", "imapgate", "ban4", "{ %s }" % ip, check=False)
        assert p.returncode == 0, p.stderr
    assert nsrun(netns, NFT, "get", "element", "inet", "imapgate", "ban4", "{ 10.2.0.0 }",
                 check=False).returncode != 0


def test_check_refuses_a_firewall_it_cannot_have():
    if os.geteuid() != 0:
        pytest.skip("needs root to run imapgate -t as others")
    g = Imapgate(backend_port=1, ipv6=False, guard_firewall="nftables", guard_db="none")
    try:
        # Not root: the helper cannot be had.
        p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(g.binary), "-t",
                            "-f", str(g.conf_path)], capture_output=True, text=True, timeout=30)
        assert p.returncode == 1
        assert re.search(r"guard_firewall nftables: imapgate must be started as root", p.stderr), p.stderr
        # Root without CAP_NET_ADMIN (as in a container that took it).
        p = subprocess.run(["setpriv", "--bounding-set=-net_admin", "--inh-caps=-all", str(g.binary), "-t", "-f",
                            str(g.conf_path)], capture_output=True, text=True, timeout=30)
        assert p.returncode == 1
        assert "guard_firewall nftables: no CAP_NET_ADMIN" in p.stderr, p.stderr
        # As root it is fine (nft -c changes nothing).
        p = subprocess.run([str(g.binary), "-t", "-f", str(g.conf_path)], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
    finally:
        g.cleanup()


def test_a_peer_ban_from_redis_reaches_the_firewall(netns, gates, make_redis):
    # Redis on a Unix socket: the namespace has its own loopback, not the
    # file system's.
    r = make_redis(unix=True, extra_conf="unixsocketperm 777\n")
    os.chmod(r.dir, 0o755)
    g = make(gates, netns, guard_redis=r.unix_url(), guard_redis_node="fw").start()
    wait_for(lambda: json.loads(ctl(g, "status", "--json")[1]).get("redis", {}).get("up"), 10,
             what="imapgate in the namespace connected to Redis")
    now = int(time.time())
    r.cli("PUBLISH", "imapgate:events", "ig1 B peer %d 127.0.0.9/32 %d %d 1 auto auth_failed" % (now, now, now + 300))
    wait_for(lambda: "127.0.0.9" in (set_elems(netns) or {}), 5.0, what="the peer's ban in ban4")
    assert 290 <= set_elems(netns)["127.0.0.9"] <= 300
    assert probe(netns, "127.0.0.9", g.port) == "timeout"
