"""
The guard: failed logins counted per client prefix, a ban at exactly
guard_maxretry, banned clients refused before the backend is touched, the
real client behind webmail (ID) and balancers (PROXY), escalation, the
exemptions (ignore list, stale password, trust), persistence across
restarts and kill -9, imapgate-ctl, and the counters.
"""

import json
import os
import pwd
import re
import secrets
import socket
import subprocess
import time

import pytest

from harness import RawClient, can_bind, login_raw, register_secret, wait_for

pytestmark = pytest.mark.skipif(not can_bind("127.0.0.2"), reason="needs 127.0.0.0/8 source addresses")

FAST = dict(guard_maxretry=3, guard_failure_delay=0, guard_db="none", forward_client_address=True)


def owned_dir(path):
    """A directory the daemon's run user can write (it drops to nobody as root)."""
    os.makedirs(path, exist_ok=True)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("nobody")
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def ctl(gate, *args):
    sock = str(gate.dir / "ctl.sock")
    p = subprocess.run([str(gate.build / "imapgate-ctl"), "-s", sock] + list(args),
                       capture_output=True, text=True, timeout=10)
    return p.returncode, p.stdout, p.stderr


def wrong(tag=""):
    return register_secret("wrong-" + tag + secrets.token_hex(4))


def fail_from(gate, src, user, password=None, expect_close=False):
    """One connection from src, one failed LOGIN; returns the tagged reply."""
    c = gate.connect_greeted(src=src)
    lines = login_raw(c, user, password or wrong())
    if expect_close:
        assert c.read_line().startswith(b"* BYE "), "a newly banned client is told and closed"
        c.expect_closed(timeout=3)
    c.close()
    return lines[-1]


def dovecot_attempts(dovecot, user, rip):
    """Dovecot's log lines about user from rip (one per failed attempt)."""
    return sum(1 for ln in dovecot.log_text().splitlines() if "rip=%s" % rip in ln and "user=<%s>" % user in ln)


def test_ban_at_exactly_maxretry_and_refusal_before_backend(make_gate, dovecot, fresh_user):
    g = make_gate(**FAST)
    user, pw = fresh_user
    for i in range(2):
        assert fail_from(g, "127.0.0.2", user).startswith(b"a NO ")
    # Two failures: not yet banned.
    c = g.connect_greeted(src="127.0.0.2")
    assert login_raw(c, user, wrong())[-1].startswith(b"a NO ")
    # That was the third: the client is told and closed.
    assert c.read_line().startswith(b"* BYE ")
    c.expect_closed(timeout=3)
    g.wait_log(r"event=ban prefix=127\.0\.0\.2/32 seconds=600 .*count=1 source=auto reason=auth_failed")
    g.wait_log(r"event=login_failed .*rip=127\.0\.0\.2 reason=auth_failed guard=counted failures=3/3")
    # Dovecot logs each failed attempt once, asynchronously: wait for all 3.
    mine = lambda: dovecot_attempts(dovecot, user, "127.0.0.2")
    wait_for(lambda: mine() == 3, 5, what="Dovecot's 3 failed attempts")
    # The banned client's next connection: BYE as greeting, nothing reaches Dovecot.
    r = RawClient("127.0.0.1", g.port, src="127.0.0.2")
    assert r.read_line() == b"* BYE Too many failed logins from your address, try again later\r\n"
    r.expect_closed(timeout=3)
    g.wait_log(r"event=refused session=\d+ client=127\.0\.0\.2:\d+ reason=banned until=")
    time.sleep(0.5)  # Dovecot logs asynchronously: give a wrong attempt time to show
    assert mine() == 3
    # Another client and the real user are not affected.
    c3 = g.connect_greeted(src="127.0.0.3")
    assert login_raw(c3, user, pw)[-1].startswith(b"a OK ")


def test_failed_login_reply_waits_without_blocking_others(make_gate, dovecot, fresh_user):
    g = make_gate(guard_maxretry=50, guard_failure_delay=800, guard_db="none")
    user, _ = fresh_user
    slow = g.connect_greeted(src="127.0.0.2")
    other = g.connect_greeted(src="127.0.0.3")
    t0 = time.monotonic()
    slow.send(b'a LOGIN "%s" "%s"\r\n' % (user.encode(), wrong().encode()))
    # While the failure is held back, the loop serves others at once.
    time.sleep(0.05)
    assert other.command("n", "NOOP")[-1] == b"n OK Completed\r\n"
    assert slow.read_tagged("a")[-1].startswith(b"a NO ")
    # Dovecot's own failure delay is ~0.5 s; ours adds 400..800 ms.
    assert time.monotonic() - t0 >= 0.85


def test_guard_ignore_is_never_counted(make_gate, dovecot, fresh_user):
    g = make_gate(**FAST)  # default guard_ignore: 127.0.0.1/32 ::1/128
    user, _ = fresh_user
    for _ in range(4):
        assert fail_from(g, "127.0.0.1", user).startswith(b"a NO ")
    g.wait_log(r"guard=ignored")
    assert "event=ban " not in g.log_text()
    g.connect_greeted(src="127.0.0.1")


def test_same_wrong_password_counts_once(make_gate, dovecot, fresh_user):
    g = make_gate(**FAST)
    user, _ = fresh_user
    stale = wrong("stale")
    for _ in range(5):
        assert fail_from(g, "127.0.0.4", user, stale).startswith(b"a NO ")
    g.wait_log(r"rip=127\.0\.0\.4 reason=auth_failed guard=duplicate")
    assert "event=ban " not in g.log_text()
    g.connect_greeted(src="127.0.0.4")


def test_trust_after_success_for_that_user(make_gate, dovecot, fresh_user):
    g = make_gate(**FAST)
    user, pw = fresh_user
    c = g.connect_greeted(src="127.0.0.5")
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    c.close()
    for _ in range(4):
        assert fail_from(g, "127.0.0.5", user).startswith(b"a NO ")
    g.wait_log(r"rip=127\.0\.0\.5 reason=auth_failed guard=trusted")
    assert "event=ban " not in g.log_text()
    # Another user's failures from that address still count.
    for _ in range(2):
        fail_from(g, "127.0.0.5", "nosuchuser-" + secrets.token_hex(3))
    fail_from(g, "127.0.0.5", "nosuchuser-x", expect_close=True)
    g.wait_log(r"event=ban prefix=127\.0\.0\.5/32")


def test_webmail_origin_is_banned_not_the_host(make_gate, dovecot, fresh_user):
    g = make_gate(trusted_webmail="127.0.0.10/32", **FAST)
    user, pw = fresh_user

    def webmail_login(origin, password):
        c = g.connect_greeted(src="127.0.0.10")
        c.command("i", 'ID ("name" "roundcube" "x-originating-ip" "%s")' % origin)
        lines = login_raw(c, user, password)
        c.close()
        return lines[-1]

    for _ in range(3):
        assert webmail_login("192.0.2.66", wrong()).startswith(b"a NO [AUTHENTICATIONFAILED]")
    g.wait_log(r"event=ban prefix=192\.0\.2\.66/32")
    mine = lambda: dovecot_attempts(dovecot, user, "192.0.2.66")
    wait_for(lambda: mine() == 3, 5, what="Dovecot's 3 failed attempts from the origin")
    # The guessing origin is refused at LOGIN, before Dovecot.
    assert webmail_login("192.0.2.66", pw).startswith(b"a NO [UNAVAILABLE]")
    g.wait_log(r"event=login_refused .*rip=192\.0\.2\.66 reason=banned")
    time.sleep(0.3)
    assert mine() == 3
    # Other origins through the same host log in; the host itself is never banned.
    assert webmail_login("192.0.2.67", pw).startswith(b"a OK ")
    assert "prefix=127.0.0.10/32" not in g.log_text()
    # The same ID from an untrusted host changes nothing: its own address counts.
    for _ in range(2):
        c = g.connect_greeted(src="127.0.0.11")
        c.command("i", 'ID ("x-originating-ip" "192.0.2.99")')
        assert login_raw(c, user, wrong())[-1].startswith(b"a NO ")
        c.close()
    g.wait_log(r"event=login_failed .*client=127\.0\.0\.11:\d+ rip=127\.0\.0\.11 .*failures=2/3")
    assert "192.0.2.99" not in g.log_text()


def proxy_listener(make_gate, **config):
    g = make_gate(start=False, trusted_proxies="127.0.0.1/32", **config)
    port = g.add_listener("proxy_protocol")
    g.start()
    return g, port


def via_proxy(g, port, src, sport=4000):
    c = RawClient("127.0.0.1", port)
    g.clients.append(c)
    fam = "TCP6" if ":" in src else "TCP4"
    dst = "::1" if ":" in src else "127.0.0.1"
    c.send(b"PROXY %s %s %s %d 1143\r\n" % (fam.encode(), src.encode(), dst.encode(), sport))
    return c


def test_proxy_ipv6_sources_in_one_64_share_a_counter(make_gate, dovecot, fresh_user):
    g, port = proxy_listener(make_gate, **FAST)
    user, _ = fresh_user
    for i, src in enumerate(["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"]):
        c = via_proxy(g, port, src)
        assert c.read_line().startswith(b"* OK ")
        assert login_raw(c, user, wrong())[-1].startswith(b"a NO ")
        c.close()
    g.wait_log(r"event=ban prefix=2001:db8:1:2::/64 ")
    c = via_proxy(g, port, "2001:db8:1:2::99")
    assert c.read_line().startswith(b"* BYE ")
    c.expect_closed(timeout=3)
    # Another /64 is someone else.
    c = via_proxy(g, port, "2001:db8:1:3::1")
    assert c.read_line().startswith(b"* OK ")


def test_proxy_ipv4_source_is_banned_not_the_balancer(make_gate, dovecot, fresh_user):
    g, port = proxy_listener(make_gate, **FAST)
    user, _ = fresh_user
    for _ in range(3):
        c = via_proxy(g, port, "198.51.100.9")
        assert c.read_line().startswith(b"* OK ")
        login_raw(c, user, wrong())
        c.close()
    g.wait_log(r"event=ban prefix=198\.51\.100\.9/32")
    c = via_proxy(g, port, "198.51.100.9")
    assert c.read_line().startswith(b"* BYE ")
    c = via_proxy(g, port, "198.51.100.10")
    assert c.read_line().startswith(b"* OK ")


def test_escalation_and_expiry(make_gate, dovecot, fresh_user):
    g = make_gate(guard_bantime=2, guard_bantime_factor=2, guard_bantime_max=5, **FAST)
    user, _ = fresh_user
    for rounds, seconds in enumerate([2, 4, 5], start=1):
        for i in range(3):
            fail_from(g, "127.0.0.6", user, expect_close=(i == 2))
        g.wait_log(r"event=ban prefix=127\.0\.0\.6/32 seconds=%d .*count=%d" % (seconds, rounds))
        mark = g.log_mark()
        r = RawClient("127.0.0.1", g.port, src="127.0.0.6")
        assert r.read_line().startswith(b"* BYE ")
        r.close()
        # Expiry: timer-driven, within a second of the ban's end.
        g.wait_log(r"event=unban prefix=127\.0\.0\.6/32 reason=expired", timeout=seconds + 3, since=mark)
        g.connect_greeted(src="127.0.0.6").close()


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_bans_survive_restart(make_gate, dovecot, fresh_user, how):
    g = make_gate(start=False, **FAST)
    g.write_config(guard_db=owned_dir(str(g.dir / "guard")) + "/guard.db")
    g.start()
    user, _ = fresh_user
    for i in range(3):
        fail_from(g, "127.0.0.7", user, expect_close=(i == 2))
    g.wait_log(r"event=ban prefix=127\.0\.0\.7/32")
    if how == "sigterm":
        assert g.stop() == 0
    else:
        time.sleep(0.5)  # the writer thread commits within a moment
        g.kill()
    g.start()
    g.wait_log(r"event=guard_db file=.* restored_bans=1")
    r = RawClient("127.0.0.1", g.port, src="127.0.0.7")
    g.clients.append(r)
    assert r.read_line().startswith(b"* BYE ")
    g.connect_greeted(src="127.0.0.8")


def test_ctl_ban_unban_why_bans(make_gate, dovecot, fresh_user):
    g = make_gate(control_socket=None, **FAST)
    g.write_config(control_socket=str(g.dir / "ctl.sock"))
    g.stop()
    g.start()
    user, _ = fresh_user
    rc, out, err = ctl(g, "ban", "127.0.0.9", "120")
    assert rc == 0 and out.startswith("banned 127.0.0.9/32 until "), (out, err)
    r = RawClient("127.0.0.1", g.port, src="127.0.0.9")
    assert r.read_line().startswith(b"* BYE ")
    rc, out, _ = ctl(g, "bans", "--json")
    bans = json.loads(out)
    assert [b["prefix"] for b in bans] == ["127.0.0.9/32"] and bans[0]["source"] == "manual"
    assert 100 < bans[0]["seconds_left"] <= 120
    rc, out, _ = ctl(g, "unban", "127.0.0.9")
    assert rc == 0 and out == "lifted 1 ban(s)\n"
    g.connect_greeted(src="127.0.0.9")
    # why: the failures of an address, with users and reasons.
    fail_from(g, "127.0.0.12", user)
    fail_from(g, "127.0.0.12", "mallory")
    rc, out, _ = ctl(g, "why", "127.0.0.12")
    assert rc == 0
    assert "127.0.0.12/32: not banned, 2 failure(s) counted in the window\n" in out
    assert ("user=%s proto=imap reason=auth_failed status=counted" % user) in out and "user=mallory" in out
    rc, out, _ = ctl(g, "why", "127.0.0.12", "--json")
    (p,) = json.loads(out)
    assert sorted(f["user"] for f in p["recent"]) == sorted([user, "mallory"])
    assert [f["proto"] for f in p["recent"]] == ["imap", "imap"]
    rc, out, _ = ctl(g, "bans")
    assert out == "no active bans\n"
    # Clear errors.
    rc, _, err = ctl(g, "ban", "not-an-address")
    assert rc == 1 and "bad address 'not-an-address'" in err
    rc, _, err = ctl(g, "ban", "127.0.0.1")
    assert rc == 1 and "cannot ban 127.0.0.1" in err
    rc, _, err = ctl(g, "unban")
    assert rc == 1 and "usage: unban" in err
    g.stop()
    rc, _, err = ctl(g, "bans")
    assert rc == 2 and "cannot connect" in err and "is imapgate running?" in err


def test_guard_counters_in_stats(make_gate, dovecot, fresh_user):
    g = make_gate(stat_filename=None, **FAST)
    stat = owned_dir(str(g.dir / "st")) + "/stats"
    g.write_config(stat_filename=stat)
    g.stop()
    g.start()
    user, _ = fresh_user
    for i in range(3):
        fail_from(g, "127.0.0.13", user, expect_close=(i == 2))
    r = RawClient("127.0.0.1", g.port, src="127.0.0.13")
    assert r.read_line().startswith(b"* BYE ")
    r.close()
    out = subprocess.run([str(g.build / "imapgate-stat"), "-c", "-f", str(g.conf_path)],
                         capture_output=True, text=True, timeout=10).stdout
    vals = dict(ln.split(" ", 1) for ln in out.splitlines() if " " in ln)
    assert vals["guard_failures_total"] == "3"
    assert vals["guard_bans_total"] == "1"
    assert vals["guard_bans_active"] == "1"
    assert vals["guard_refused_connections_total"] == "1"
    assert vals["client_login_failures_total"] == "3"


def test_distributed_guessing_slows_the_user_never_locks(make_gate, dovecot, fresh_user):
    g = make_gate(guard_maxretry=50, guard_failure_delay=0, guard_db="none",
                  guard_user_maxretry=3, guard_user_delay_max=1500)
    user, pw = fresh_user
    for i in range(3):
        fail_from(g, "127.0.0.%d" % (30 + i), user)
    g.wait_log(r"event=login_failed .*user=%s .*user_failures=3" % user)
    # Past guard_user_maxretry each failure on that user is answered later
    # (1 s, doubling, capped at guard_user_delay_max), from any address...
    t0 = time.monotonic()
    fail_from(g, "127.0.0.40", user)
    assert time.monotonic() - t0 >= 1.45
    # ...but the real user's right password is not held back, and other
    # users are not slowed.
    c = g.connect_greeted(src="127.0.0.41")
    t0 = time.monotonic()
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    assert time.monotonic() - t0 < 0.9
    other = g.connect_greeted(src="127.0.0.42")
    t0 = time.monotonic()
    assert login_raw(other, "someone-else", wrong())[-1].startswith(b"a NO ")
    assert time.monotonic() - t0 < 1.4
    assert "event=ban " not in g.log_text()


def try_connect(port, src, timeout=1.0):
    """Connect from src: the greeting, or None when the connection attempt got no answer."""
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(timeout)
    try:
        s.connect(("127.0.0.1", port))
        return s.recv(200)
    except socket.timeout:
        return None
    finally:
        s.close()


def test_banned_address_that_keeps_coming_is_dropped_in_the_kernel(make_gate, dovecot, fresh_user):
    g = make_gate(control_socket=None, guard_drop_after=3, **FAST)
    g.write_config(control_socket=str(g.dir / "ctl.sock"))
    g.stop()
    g.start()
    user, password = fresh_user
    assert ctl(g, "ban", "127.0.0.9", "120")[0] == 0
    mark = g.log_mark()
    # The first refusals are told why, in words.
    for _ in range(3):
        assert try_connect(g.port, "127.0.0.9").startswith(b"* BYE Too many failed logins")
    g.wait_log(r"event=ban_drop client=127\.0\.0\.9 refused=3 kernel_set=1", since=mark)
    # From then on (the filter is attached by a helper, a moment later) its
    # connection attempts get no answer at all: not even an accept.
    wait_for(lambda: try_connect(g.port, "127.0.0.9", timeout=0.5) is None, 5, what="the kernel drop")
    accepted = g.log_text().count("client=127.0.0.9:")
    assert try_connect(g.port, "127.0.0.9") is None
    assert try_connect(g.port, "127.0.0.9") is None
    assert g.log_text().count("client=127.0.0.9:") == accepted
    # Everyone else, and established sessions, are untouched.
    c = g.connect_greeted(src="127.0.0.10")
    assert login_raw(c, user, password)[-1].startswith(b"a OK")
    assert c.command("n", "NOOP")[-1].startswith(b"n OK")
    c.close()
    # Unban lifts the kernel drop too.
    assert ctl(g, "unban", "127.0.0.9")[0] == 0
    assert try_connect(g.port, "127.0.0.9", timeout=5).startswith(b"* OK")


def test_kernel_drop_off_with_zero(make_gate, dovecot):
    g = make_gate(control_socket=None, guard_drop_after=0, **FAST)
    g.write_config(control_socket=str(g.dir / "ctl.sock"))
    g.stop()
    g.start()
    assert ctl(g, "ban", "127.0.0.9", "120")[0] == 0
    for _ in range(6):
        assert try_connect(g.port, "127.0.0.9").startswith(b"* BYE ")
    assert "event=ban_drop" not in g.log_text()
