"""
Connection limits: max_connections makes room by closing the connection
that has waited longest for a login; both limits count only clients still
there; the listen backlog is the system's.
"""

import re
import subprocess
import time
import urllib.request

import pytest

from harness import RawClient, can_bind, free_port, login_raw, register_secret

BAD_PW = register_secret("limits-wrong-pw")


def stat_values(g):
    p = subprocess.run([str(g.build / "imapgate-stat"), "-f", str(g.conf_path), "-c"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    return {k: int(v) for k, v in (ln.split() for ln in p.stdout.splitlines() if ln.strip())}


def counted_gate(make_gate, **config):
    """A gate with a stat file and the Prometheus endpoint; returns (gate, metrics URL)."""
    mport = free_port()
    g = make_gate(start=False, metrics_listen="127.0.0.1:%d" % mport, **config)
    g.write_config(stat_filename=str(g.dir / "stats"))
    g.start()
    return g, "http://127.0.0.1:%d/metrics" % mport


def metric(url, name):
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^imapgate_%s (\d+)$" % name, text, re.M)
    assert m, text
    return int(m.group(1))


def need_addresses(*addrs):
    for a in addrs:
        if not can_bind(a):
            pytest.skip("cannot bind %s" % a)


def test_full_server_evicts_the_longest_waiting_for_login(make_gate, fresh_user):
    user, pw = fresh_user
    srcs = ["127.0.0.%d" % (60 + i) for i in range(4)]
    need_addresses("127.0.0.70", *srcs)
    g, url = counted_gate(make_gate, max_connections=20)
    idle = [g.connect_greeted(src=srcs[i % 4]) for i in range(20)]
    oldest_port = idle[0].sock.getsockname()[1]

    # Full of connections that never log in: a new client still gets in...
    c = g.connect_greeted(src="127.0.0.70")
    # ...and the oldest of them was told and closed.
    assert idle[0].expect_closed(timeout=5) == \
        b"* BYE Too many connections: closing the longest waiting for a login\r\n"
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    line = g.wait_log(r"^.*\bevent=evicted\b.*$").group(0)
    assert re.search(r"\bevent=evicted session=\d+ client=127\.0\.0\.60:%d reason=max_connections age_ms=\d+$"
                     % oldest_port, line), line
    g.wait_log(r"event=disconnect session=\d+ client=127\.0\.0\.60:%d user=- reason=evicted " % oldest_port)
    # The others are untouched.
    for r in idle[1:]:
        assert r.command("n", "NOOP") == [b"n OK Completed\r\n"]
    assert stat_values(g)["client_connections_evicted_total"] == 1
    assert metric(url, "client_connections_evicted_total") == 1
    assert len(g.log_lines("evicted")) == 1


def test_only_sessions_not_logged_in_are_evicted(make_gate, fresh_user):
    user, pw = fresh_user
    g, url = counted_gate(make_gate, max_connections=3)
    a = g.connect_greeted()
    b = g.connect_greeted()
    for cl in (a, b):
        assert login_raw(cl, user, pw)[-1].startswith(b"a OK ")
    waiting = g.connect_greeted()
    # Full: the one not logged in makes room, though it came last.
    d = g.connect_greeted()
    assert waiting.expect_closed(timeout=5).startswith(b"* BYE Too many connections: ")
    assert login_raw(d, user, pw)[-1].startswith(b"a OK ")
    # Now everyone is logged in: a newcomer is refused as before.
    e = g.connect_raw()
    assert e.expect_closed(timeout=5) == b"* BYE Too many connections\r\n"
    g.wait_log(r"event=refused client=127\.0\.0\.1:\d+ reason=max_connections$")
    for cl in (a, b, d):
        assert cl.command("n", "NOOP")[-1].startswith(b"n OK ")
    assert stat_values(g)["client_connections_evicted_total"] == 1
    assert metric(url, "client_connections_evicted_total") == 1


def reconnect_rounds(g, srcs, n_clients, rounds):
    """n_clients (spread over srcs) each fail a login, then close and at once
    reconnect, rounds times. Returns the lines other than a greeting the
    reconnects got."""
    bad = []

    def greeted(src, cl):
        # A refused client tries again (bounded) before the next round.
        for _ in range(50):
            line = cl.read_line()
            if line.startswith(b"* OK "):
                return cl
            bad.append(line)
            cl.close()
            cl = RawClient("127.0.0.1", g.port, src=src)
        raise AssertionError("never greeted: %r" % bad[-3:])

    clients = [(s, greeted(s, RawClient("127.0.0.1", g.port, src=s)))
               for s in (srcs[i % len(srcs)] for i in range(n_clients))]
    deadline = time.monotonic() + 20
    for _ in range(rounds):
        assert time.monotonic() < deadline, "rounds too slow"
        for _, cl in clients:
            cl.sendline("a LOGIN nosuchuser %s" % BAD_PW)
        for _, cl in clients:
            assert cl.read_tagged("a")[-1].startswith(b"a NO ")
        fresh = []
        for src, cl in clients:
            cl.close()
            fresh.append((src, RawClient("127.0.0.1", g.port, src=src)))
        clients = [(src, greeted(src, cl)) for src, cl in fresh]
    for _, cl in clients:
        cl.close()
    return bad


@pytest.mark.parametrize("limit", ["per_ip", "global"])
def test_limits_count_only_clients_still_there(make_gate, limit):
    # 40 clients that each hold at most one connection, under a limit of 50.
    if limit == "per_ip":
        srcs = ["127.0.0.1"]  # in guard_ignore: the failed logins ban nobody
        g = make_gate(max_connections_per_ip=50, guard_failure_delay=0, guard_maxretry=100000)
    else:
        srcs = ["127.0.0.%d" % (80 + i) for i in range(4)]
        need_addresses(*srcs)
        g = make_gate(max_connections=50, max_connections_per_ip=0, guard_failure_delay=0,
                      guard_maxretry=100000, guard_ignore="127.0.0.0/8")
    bad = reconnect_rounds(g, srcs, 40, 5)
    assert bad == []
    assert g.log_lines("refused") == []


def listen_backlog(port):
    """The accept queue's size of the LISTEN socket on port (ss: Send-Q)."""
    out = subprocess.run(["ss", "-ltnH", "sport = :%d" % port], capture_output=True, text=True,
                         timeout=10).stdout
    lines = out.splitlines()
    assert len(lines) == 1, out
    return int(lines[0].split()[2])


def test_listen_backlog_is_the_system_maximum(gate):
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    assert listen_backlog(gate.port) == somaxconn
    gate.wait_log(r"event=listen address=127\.0\.0\.1 port=%d backlog=%d$" % (gate.port, somaxconn))


def test_waiting_for_a_proxy_header_is_evicted_without_a_word(make_gate):
    g = make_gate(start=False, max_connections=2, trusted_proxies="127.0.0.1/32")
    port = g.add_listener("proxy_protocol")
    g.start()
    first = RawClient("127.0.0.1", port)
    g.wait_log(r"event=connect session=1 ")
    second = RawClient("127.0.0.1", port)
    g.wait_log(r"event=connect session=2 ")
    # The balancer's third connection sends its header and is served...
    third = RawClient("127.0.0.1", port)
    third.send(b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 143\r\n")
    assert third.read_line().startswith(b"* OK ")
    # ...the oldest, which never sent one, is closed with nothing said (its
    # client would not be the one to read it).
    assert first.expect_closed(timeout=5) == b""
    g.wait_log(r"event=evicted session=1 client=127\.0\.0\.1:\d+ reason=max_connections age_ms=\d+$")
    assert second.is_open()
