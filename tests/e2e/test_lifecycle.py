"""
The daemon's life: SIGTERM with sessions open, the IPv6 listener, and the
per-address connection limit.
"""

import imaplib
import re
import time

import pytest

from harness import can_bind, have_ipv6, login_raw, register_secret


def test_sigterm_with_logged_in_session(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    g = make_gate(shutdown_timeout=2)
    c = g.connect_greeted()
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    idle_pre = g.connect_greeted()  # and one that never logged in
    dovecot.wait_logins(user, 1)
    t0 = time.monotonic()
    rc = g.stop(timeout=2 + 5)
    assert rc == 0
    assert time.monotonic() - t0 <= 2 + 3
    c.expect_closed(timeout=3)
    idle_pre.expect_closed(timeout=3)
    # Dovecot saw the backend session end.
    (login,) = dovecot.login_lines(user)
    session = re.search(r"session=<([^>]*)>", login).group(1)

    def ended():
        return any(session in ln and "Disconnected" in ln for ln in dovecot.info_log_text().splitlines())

    deadline = time.monotonic() + 5
    while not ended() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ended(), "Dovecot never logged the end of the backend session"


def test_sigterm_idle_daemon_exits_promptly(make_gate):
    g = make_gate()
    t0 = time.monotonic()
    assert g.stop(timeout=10) == 0
    assert time.monotonic() - t0 < 3


@pytest.mark.skipif(not have_ipv6(), reason="no ::1")
def test_ipv6_listener(gate, dovecot):
    assert gate.port6
    c = gate.connect_greeted(ipv6=True)
    assert c.command("n", "NOOP") == [b"n OK Completed\r\n"]
    assert login_raw(c, "bob", "bobpw")[-1].startswith(b"a OK ")
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    m = imaplib.IMAP4("::1", gate.port6, timeout=10)
    assert m.login("alice", "alicepw")[0] == "OK"
    m.logout()


def test_ipv6_failed_login_logs_client(gate):
    if not gate.port6:
        pytest.skip("no ::1")
    c = gate.connect_greeted(ipv6=True)
    bad = register_secret("wrong-v6-pw")
    assert c.command("a", "LOGIN bob %s" % bad)[-1].startswith(b"a NO ")
    line = gate.wait_log(r"^.*\bevent=login_failed\b.*$").group(0)
    assert re.search(r"client=\[?::1\]?:\d+", line), line


def test_max_connections_per_ip(make_gate):
    g = make_gate(max_connections_per_ip=2)
    c1 = g.connect_greeted()
    c2 = g.connect_greeted()
    c3 = g.connect_raw()
    line = c3.read_line()
    assert line.startswith(b"* BYE "), line
    c3.expect_closed(timeout=3)
    # The first two are unaffected.
    assert c1.command("n", "NOOP") == [b"n OK Completed\r\n"]
    assert c2.command("n", "NOOP") == [b"n OK Completed\r\n"]
    if can_bind("127.0.0.2"):
        other = g.connect_raw(src="127.0.0.2")
        assert other.read_line().startswith(b"* OK ")
    # A slot frees up when a connection closes.
    c1.sendline("z LOGOUT")
    c1.expect_closed(timeout=3)
    deadline = time.monotonic() + 5
    while True:
        c4 = g.connect_raw()
        line = c4.read_line()
        if line.startswith(b"* OK ") or time.monotonic() > deadline:
            break
        c4.close()
        time.sleep(0.05)
    assert line.startswith(b"* OK "), line


@pytest.mark.skipif(not can_bind("127.0.0.2"), reason="cannot bind 127.0.0.2")
def test_per_ip_limit_counts_addresses_separately(make_gate):
    g = make_gate(max_connections_per_ip=1)
    a = g.connect_greeted(src="127.0.0.2")
    b = g.connect_greeted(src="127.0.0.1")
    c = g.connect_raw(src="127.0.0.2")
    assert c.read_line().startswith(b"* BYE ")
    assert a.command("n", "NOOP") == [b"n OK Completed\r\n"]
    assert b.command("n", "NOOP") == [b"n OK Completed\r\n"]


@pytest.mark.skipif(not can_bind("127.0.0.2"), reason="cannot bind 127.0.0.2")
def test_webmail_host_is_exempt_from_per_ip_limit(make_gate):
    g = make_gate(max_connections_per_ip=2, trusted_webmail="127.0.0.2/32")
    for _ in range(4):
        g.connect_greeted(src="127.0.0.2")
    # Others still have the limit.
    g.connect_greeted(src="127.0.0.3")
    g.connect_greeted(src="127.0.0.3")
    c = g.connect_raw(src="127.0.0.3")
    assert c.read_line().startswith(b"* BYE ")
