"""
The connection cache: after LOGOUT (or a client that just goes away)
imapgate cleans the backend connection (commands in flight, IDLE, the
selected mailbox) and parks it; the same user with the same password gets it
back (XPROXYREUSE) without a backend login. Anything that leaves state behind
(ENABLE, COMPRESS, unknown commands, half a literal) is never parked; parked
connections leave on expiry, cache_max_age, eviction, server close and
shutdown.

Evidence is taken from both ends: the bytes the client gets, imapgate's log
(event=pool_park / pool_close / login backend=...), `imapgate-ctl pool`, and
Dovecot's own log (its Login: lines are the backend logins).
"""

import imaplib
import os
import pwd
import re
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from harness import (RawClient, b64, login_raw, make_message, normalize_timing, quote, register_secret, sasl_plain,
                     wait_for)

REUSE = b"* OK [XPROXYREUSE] IMAP connection reused by imapgate\r\n"
BYE = b"* BYE Logging out\r\n"


# --------------------------------------------------------------------------
# helpers


def cache_gate(make_gate, **config):
    """A gate with a control socket (for `imapgate-ctl pool`) and the given config."""
    g = make_gate(start=False, guard_failure_delay=0, **config)
    g.write_config(control_socket=str(g.dir / "ctl.sock"))
    g.start()
    wait_for(lambda: (g.dir / "ctl.sock").exists(), 5, what="control socket")
    return g


def pool(g):
    """`imapgate-ctl pool` as a list of dicts (session, user, state, ...)."""
    p = subprocess.run([str(g.build / "imapgate-ctl"), "-s", str(g.dir / "ctl.sock"), "pool"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, (p.stdout, p.stderr)
    return [dict(kv.split("=", 1) for kv in ln.split()) for ln in p.stdout.splitlines() if ln.startswith("session=")]


def pool_of(g, user, state=None):
    return [e for e in pool(g) if e["user"] == user and (state is None or e["state"] == state)]


def login(g, user, pw, tag="a"):
    """A new client, logged in (OK checked); returns (client, lines of the login reply)."""
    c = g.connect_greeted()
    lines = login_raw(c, user, pw, tag=tag)
    assert lines[-1].startswith(tag.encode() + b" OK [CAPABILITY "), lines
    return c, lines


def assert_reused(lines, tag="a"):
    assert len(lines) == 2, lines
    assert lines[0] == REUSE, lines
    assert lines[1].startswith(tag.encode() + b" OK [CAPABILITY ") and lines[1].endswith(b"] Logged in\r\n"), lines


def assert_fresh(lines, tag="a"):
    assert len(lines) == 1, lines
    assert lines[0].startswith(tag.encode() + b" OK [CAPABILITY "), lines
    assert not any(b"XPROXYREUSE" in ln for ln in lines), lines


def session_of(g, user):
    """imapgate's session number of user's latest login."""
    pat = r"event=login session=(\d+) user=%s " % re.escape(user)
    g.wait_log(pat)
    return int(re.findall(pat, g.log_text())[-1])


def logout(c, tag="z"):
    """LOGOUT answered by imapgate itself: exactly BYE and OK, then EOF."""
    c.sendline("%s LOGOUT" % tag)
    data = c.expect_closed(timeout=5)
    assert data == BYE + b"%s OK Logout completed.\r\n" % tag.encode(), data


def wait_park(g, sid, since=0):
    return g.wait_log(r"event=pool_park user=\S+ session=%d " % sid, since=since)


def wait_close(g, sid, reason=r"\S+", since=0, timeout=5.0):
    """Wait for the pool_close of session sid; returns the match (group 1: reason, 2: parked_ms)."""
    return g.wait_log(r"event=pool_close user=\S+ session=%d reason=(%s) parked_ms=(\d+)" % (sid, reason),
                      since=since, timeout=timeout)


def use_then_logout(g, user, pw, reused):
    """One session: login (checked fresh or reused), SELECT, LOGOUT; waits until parked."""
    c, lines = login(g, user, pw)
    (assert_reused if reused else assert_fresh)(lines)
    sid = session_of(g, user)
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    mark = g.log_mark()
    logout(c)
    wait_park(g, sid, since=mark)
    return sid


def dovecot_barrier(dovecot):
    """Return once Dovecot's log holds every line imap-login wrote before now: an ID
    (logged by imap_id_log) goes through the same imap-login process and log pipe as the
    Login: lines, so once its line is there, so is any earlier login. Makes 'still one
    login' a claim that can fail."""
    name = "barrier-" + secrets.token_hex(4)
    with RawClient(dovecot.host, dovecot.port) as c:
        c.read_line()
        assert c.command("b", 'ID ("name" "%s")' % name)[-1].startswith(b"b OK ")
    wait_for(lambda: "name=%s" % name in dovecot.info_log_text(), 5, what="Dovecot log barrier")


def logins_now(dovecot, user):
    dovecot_barrier(dovecot)
    return dovecot.count_logins(user)


def dovecot_logged_out(dovecot, user, n=1, timeout=5.0):
    """Wait until Dovecot logged n (or more) clean LOGOUTs of user's imap processes."""
    pat = re.compile(r"imap\(%s\)<\d+><[^>]*>: Info: Disconnected: Logged out " % re.escape(user))
    wait_for(lambda: len(pat.findall(dovecot.info_log_text())) >= n, timeout,
             what="Dovecot to log %d LOGOUT(s) of %s" % (n, user))


def message_count(dovecot, user, pw):
    """MESSAGES of user's INBOX, asked of Dovecot directly."""
    with RawClient(dovecot.host, dovecot.port) as c:
        c.read_line()
        assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
        lines = c.command("s", "STATUS INBOX (MESSAGES)")
        m = re.search(rb"MESSAGES (\d+)", b"".join(lines))
        assert m, lines
        c.command("z", "LOGOUT")
        return int(m.group(1))


def assert_clean_session(c):
    """Nothing unasked-for arrives, NOOP gets only its own reply, no mailbox is selected."""
    assert c.read_available(0.2) == b""
    assert [normalize_timing(ln) for ln in c.command("n", "NOOP")] == [b"n OK NOOP completed.\r\n"]
    assert [normalize_timing(ln) for ln in c.command("f", "FETCH 1 FLAGS")] == [b"f BAD No mailbox selected.\r\n"]
    assert c.read_available(0.2) == b""


def imap_processes(dovecot, user):
    return dovecot.imap_pids(user)


class HoldingRelay:
    """A TCP relay from imapgate to Dovecot that holds back the pool's deselect
    (imapgate's line with the tag IGU) until release() or drop(): the cleaning
    after a LOGOUT then lasts exactly as long as a test needs. drop() closes
    that connection on both sides instead (the cleaning fails). Other bytes pass."""

    def __init__(self, backend_port):
        self.backend_port = backend_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held = threading.Event()
        self.go = threading.Event()
        self.dropping = False
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.sock.accept()
                up = socket.create_connection(("127.0.0.1", self.backend_port), timeout=10)
            except OSError:
                return
            self.socks += [down, up]
            threading.Thread(target=self._pump, args=(down, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, False), daemon=True).start()

    def _pump(self, src, dst, from_gate):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                at = data.find(b"IGU ") if from_gate and not self.go.is_set() else -1
                if at == 0 or (at > 0 and data[at - 1:at] == b"\n"):
                    dst.sendall(data[:at])
                    self.held.set()
                    self.go.wait(30)
                    if self.dropping:
                        break
                    data = data[at:]
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst) if self.dropping else (dst,):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wait_held(self):
        wait_for(self.held.is_set, 5, what="the pool's deselect, held by the relay")

    def release(self):
        self.go.set()

    def drop(self):
        self.dropping = True
        self.go.set()

    def close(self):
        self.go.set()
        for s in [self.sock] + self.socks:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture
def relay(dovecot):
    r = HoldingRelay(dovecot.port)
    yield r
    r.close()


def owned_dir(path):
    """A directory the daemon's run user can write (it drops to nobody as root)."""
    os.makedirs(path, exist_ok=True)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("nobody")
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


# --------------------------------------------------------------------------
# reuse


def test_second_login_is_served_by_the_parked_connection(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    dovecot.deliver(user, make_message(subject="cached"))
    g = cache_gate(make_gate)
    c, first = login(g, user, pw)
    assert_fresh(first)
    sid = session_of(g, user)
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    assert [e["state"] for e in pool_of(g, user)] == ["active"]
    mark = g.log_mark()
    logout(c)
    wait_park(g, sid, since=mark)
    parked = pool_of(g, user)
    assert [(e["session"], e["state"], e["reuses"]) for e in parked] == [(str(sid), "parked", "0")]

    c, second = login(g, user, pw)
    assert_reused(second)
    # The capability answer is the one the real login got.
    assert second[1] == first[0]
    g.wait_log(r"event=login session=%d user=%s .*backend=reused" % (session_of(g, user), re.escape(user)))
    assert pool_of(g, user, "parked") == []
    # The connection works: same mailbox, same message.
    lines = c.command("s", "SELECT INBOX")
    assert b"* 1 EXISTS\r\n" in lines and lines[-1].startswith(b"s OK ")
    assert b"Subject: cached" in b"".join(c.command("f", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    logout(c)
    assert logins_now(dovecot, user) == 1


def test_wrong_password_leaves_the_parked_connection_alone(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    g = cache_gate(make_gate)
    sid = use_then_logout(g, user, pw, reused=False)
    before = [(e["session"], e["state"], e["reuses"]) for e in pool_of(g, user)]
    assert before == [(str(sid), "parked", "0")]

    bad = register_secret("wrong-cache-" + secrets.token_hex(4))
    c = g.connect_greeted()
    lines = login_raw(c, user, bad)
    assert len(lines) == 1 and lines[0].startswith(b"a NO "), lines
    assert not any(b"XPROXYREUSE" in ln for ln in lines)
    # The wrong attempt went to Dovecot (a fresh backend connection) and failed there.
    wait_for(lambda: re.search(r"imap-login: Info: Disconnected: .*auth failed.*user=<%s>" % re.escape(user),
                               dovecot.info_log_text()), 5, what="Dovecot's auth failure line")
    assert [(e["session"], e["state"], e["reuses"]) for e in pool_of(g, user)] == before
    # The right password, even on the same client connection, gets the parked one.
    lines = login_raw(c, user, pw, tag="b")
    assert_reused(lines, tag="b")
    assert pool_of(g, user, "parked") == []
    assert logins_now(dovecot, user) == 1


def test_atom_quoted_and_literal_username_are_the_same_user(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    g = cache_gate(make_gate)
    # atom
    c = g.connect_greeted()
    c.sendline("a LOGIN %s %s" % (user, pw))
    assert_fresh(c.read_tagged("a"))
    sid = session_of(g, user)
    mark = g.log_mark()
    logout(c)
    wait_park(g, sid, since=mark)
    # quoted
    c = g.connect_greeted()
    c.sendline("a LOGIN %s %s" % (quote(user), quote(pw)))
    assert_reused(c.read_tagged("a"))
    sid = session_of(g, user)
    mark = g.log_mark()
    logout(c)
    wait_park(g, sid, since=mark)
    # literal user, literal password
    c = g.connect_greeted()
    c.send("a LOGIN {%d}\r\n" % len(user))
    assert c.read_line().startswith(b"+ ")
    c.send("%s {%d}\r\n" % (user, len(pw)))
    assert c.read_line().startswith(b"+ ")
    c.send(pw + "\r\n")
    assert_reused(c.read_tagged("a"))
    logout(c)
    assert logins_now(dovecot, user) == 1


def test_authenticate_plain_reuses(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    g = cache_gate(make_gate)
    use_then_logout(g, user, pw, reused=False)
    # AUTHENTICATE PLAIN with a continuation...
    c = g.connect_greeted()
    c.sendline("a AUTHENTICATE PLAIN")
    assert c.read_line().startswith(b"+")
    c.sendline(sasl_plain(user, pw))
    assert_reused(c.read_tagged("a"))
    sid = session_of(g, user)
    mark = g.log_mark()
    logout(c)
    wait_park(g, sid, since=mark)
    # ...with an initial response (SASL-IR)...
    c = g.connect_greeted()
    c.sendline("a AUTHENTICATE PLAIN %s" % sasl_plain(user, pw))
    assert_reused(c.read_tagged("a"))
    sid = session_of(g, user)
    mark = g.log_mark()
    logout(c)
    wait_park(g, sid, since=mark)
    # ...and AUTHENTICATE LOGIN.
    c = g.connect_greeted()
    c.sendline("a AUTHENTICATE LOGIN")
    assert c.read_line().startswith(b"+ ")
    c.sendline(b64(user))
    assert c.read_line().startswith(b"+ ")
    c.sendline(b64(pw))
    assert_reused(c.read_tagged("a"))
    logout(c)
    assert logins_now(dovecot, user) == 1


def test_imaplib_sees_xproxyreuse(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    msg = make_message(subject="imaplib-cache")
    dovecot.deliver(user, msg)
    g = cache_gate(make_gate)
    for i in range(2):
        mark = g.log_mark()
        m = imaplib.IMAP4("127.0.0.1", g.port, timeout=10)
        assert m.login(user, pw)[0] == "OK"
        if i == 0:
            assert "XPROXYREUSE" not in m.untagged_responses
        else:
            assert "XPROXYREUSE" in m.untagged_responses, m.untagged_responses
        assert m.select("INBOX") == ("OK", [b"1"])
        typ, data = m.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and data[0][1] == msg
        assert m.logout()[0] == "BYE"
        g.wait_log(r"event=pool_park user=%s " % re.escape(user), since=mark)
    assert logins_now(dovecot, user) == 1


def test_concurrent_sessions_get_their_own_connections(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    g = cache_gate(make_gate)
    c1, lines = login(g, user, pw)
    assert_fresh(lines)
    c2, lines = login(g, user, pw)
    assert_fresh(lines)
    assert [e["state"] for e in pool_of(g, user)] == ["active", "active"]
    assert dovecot.wait_logins(user, 2) == 2
    # Both work independently.
    assert c1.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    assert c2.command("s", "EXAMINE INBOX")[-1].startswith(b"s OK [READ-ONLY]")
    logout(c1)
    logout(c2)
    wait_for(lambda: len(pool_of(g, user, "parked")) == 2, 5, what="both parked")


def test_max_per_user_keeps_one_parked(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    g = cache_gate(make_gate, cache_max_per_user=1)
    c1, _ = login(g, user, pw)
    s1 = session_of(g, user)
    c2, _ = login(g, user, pw)
    s2 = session_of(g, user)
    mark = g.log_mark()
    logout(c1)
    wait_park(g, s1, since=mark)
    logout(c2)
    wait_park(g, s2, since=mark)
    wait_close(g, s1, reason="max_per_user", since=mark)
    assert [(e["session"], e["state"]) for e in pool_of(g, user)] == [(str(s2), "parked")]
    dovecot_logged_out(dovecot, user, 1)


# --------------------------------------------------------------------------
# a login that arrives while its user's connection is still being cleaned


def logout_into_cleaning(g, relay, user, pw):
    """A session that pipelines SELECT, NOOP, LOGOUT; returns its session number once
    the pool's deselect of its connection is held by the relay (cleaning, not parked)."""
    c, lines = login(g, user, pw)
    assert_fresh(lines)
    sid = session_of(g, user)
    c.send(b"a SELECT INBOX\r\nb NOOP\r\nc LOGOUT\r\n")
    out = c.expect_closed(timeout=5)
    assert b" EXISTS\r\n" in out and out.endswith(BYE + b"c OK Logout completed.\r\n"), out
    relay.wait_held()
    assert [e["state"] for e in pool_of(g, user)] == ["cleaning"]
    return sid


def start_waiting_login(g, user, pw, sid, since):
    """A new client sends LOGIN; returns (client, its session) once it waits for sid's connection."""
    c = g.connect_greeted()
    c.sendline("a LOGIN %s %s" % (quote(user), quote(pw)))
    m = g.wait_log(r"event=pool_wait session=(\d+) user=%s cleaning_session=%d$" % (re.escape(user), sid),
                   since=since)
    return c, int(m.group(1))


def login_waiting_for_cleaning(make_gate, relay, user, pw, **config):
    """A gate behind the relay, a session that logged out into cleaning (sid) and a
    new client whose LOGIN waits for it: (gate, log mark, sid, client, its session)."""
    g = cache_gate(make_gate, backend=relay.port, **config)
    mark = g.log_mark()
    sid = logout_into_cleaning(g, relay, user, pw)
    c, waiter = start_waiting_login(g, user, pw, sid, mark)
    return g, mark, sid, c, waiter


def wait_end(g, waiter, sid, result, since):
    """The pool_wait_end line of session waiter; returns waited_ms."""
    m = g.wait_log(r"event=pool_wait_end session=%d user=\S+ cleaning_session=%d result=%s waited_ms=(\d+)$"
                   % (waiter, sid, result), since=since)
    return int(m.group(1))


def test_login_during_cleaning_waits_for_it(make_gate, dovecot, fresh_user, relay):
    # SELECT, NOOP, LOGOUT pipelined, and the same user logs in again while the
    # pool's UNSELECT is still on its way: the login waits for that connection.
    user, pw = fresh_user
    dovecot.deliver(user)
    g = cache_gate(make_gate, backend=relay.port)
    mark = g.log_mark()
    sid = logout_into_cleaning(g, relay, user, pw)
    c = g.connect_greeted()
    c.sendline("a LOGIN %s %s" % (quote(user), quote(pw)))
    # Nothing for the client until the cleaning ends...
    assert c.read_available(0.3) == b""
    # ...because it waits for that connection.
    m = g.wait_log(r"event=pool_wait session=(\d+) user=%s cleaning_session=%d$" % (re.escape(user), sid), since=mark)
    waiter = int(m.group(1))
    relay.release()
    lines = c.read_tagged("a")
    assert_reused(lines)
    waited = wait_end(g, waiter, sid, "reused", mark)
    assert waited >= 300, waited
    # login_ms counts the wait.
    m = g.wait_log(r"event=login session=%d user=%s .*backend=reused login_ms=(\d+)$" % (waiter, re.escape(user)),
                   since=mark)
    assert int(m.group(1)) >= waited, m.group(0)
    assert "event=pool_park user=%s session=%d " % (user, sid) not in g.log_text()
    assert pool_of(g, user, "parked") == [] and len(pool_of(g, user, "active")) == 1
    assert_clean_session(c)
    assert b"* 1 EXISTS\r\n" in c.command("s", "SELECT INBOX")
    logout(c)
    assert logins_now(dovecot, user) == 1


def test_wrong_password_during_cleaning_does_not_wait(make_gate, dovecot, fresh_user, relay):
    user, pw = fresh_user
    dovecot.deliver(user)
    g = cache_gate(make_gate, backend=relay.port)
    mark = g.log_mark()
    sid = logout_into_cleaning(g, relay, user, pw)
    bad = register_secret("wrong-cleaning-" + secrets.token_hex(4))
    c = g.connect_greeted()
    # Answered by Dovecot while the cleaning is still held.
    lines = login_raw(c, user, bad)
    assert len(lines) == 1 and lines[0].startswith(b"a NO "), lines
    assert g.log_lines("pool_wait", since=mark) == []
    assert [e["state"] for e in pool_of(g, user)] == ["cleaning"]
    relay.release()
    wait_park(g, sid, since=mark)
    lines = login_raw(c, user, pw, tag="b")
    assert_reused(lines, tag="b")
    assert logins_now(dovecot, user) == 1


def test_second_login_does_not_wait_for_a_promised_connection(make_gate, dovecot, fresh_user, relay):
    user, pw = fresh_user
    g, mark, sid, c1, waiter = login_waiting_for_cleaning(make_gate, relay, user, pw)
    # The same user again: that connection is promised, so a backend login at once.
    c2, lines = login(g, user, pw)
    assert_fresh(lines)
    assert len(g.log_lines("pool_wait", since=mark)) == 1
    relay.release()
    assert_reused(c1.read_tagged("a"))
    wait_end(g, waiter, sid, "reused", mark)
    assert logins_now(dovecot, user) == 2
    logout(c1)
    logout(c2)


def test_cleaning_fails_while_a_login_waits(make_gate, dovecot, fresh_user, relay):
    user, pw = fresh_user
    g, mark, sid, c, waiter = login_waiting_for_cleaning(make_gate, relay, user, pw)
    relay.drop()
    # A backend login, at once.
    lines = c.read_tagged("a", timeout=3)
    assert_fresh(lines)
    wait_close(g, sid, reason="server_closed", since=mark)
    assert wait_end(g, waiter, sid, "gone", mark) < 3000
    g.wait_log(r"event=login session=%d user=%s .*backend=new " % (waiter, re.escape(user)), since=mark)
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    assert logins_now(dovecot, user) == 2
    logout(c)


def test_login_waits_at_most_two_seconds(make_gate, dovecot, fresh_user, relay):
    user, pw = fresh_user
    g, mark, sid, c, waiter = login_waiting_for_cleaning(make_gate, relay, user, pw)
    assert_fresh(c.read_tagged("a", timeout=4))
    assert 2000 <= wait_end(g, waiter, sid, "timeout", mark) < 2500
    # The connection nobody waits for any more parks as usual.
    relay.release()
    wait_park(g, sid, since=mark)
    assert logins_now(dovecot, user) == 2
    logout(c)


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_waiting_client_leaves(make_gate, dovecot, fresh_user, relay, how):
    user, pw = fresh_user
    g, mark, sid, c, waiter = login_waiting_for_cleaning(make_gate, relay, user, pw)
    if how == "rst":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    # Seen while waiting, not when the cleaning ends.
    g.wait_log(r"event=disconnect session=%d .*reason=client_(eof|read_error|error) " % waiter, since=mark)
    wait_end(g, waiter, sid, "session_closed", mark)
    relay.release()
    # The connection parks as if nobody had waited, and serves the next login.
    wait_park(g, sid, since=mark)
    assert "event=login session=%d " % waiter not in g.log_text()
    c, lines = login(g, user, pw)
    assert_reused(lines)
    assert logins_now(dovecot, user) == 1


def test_cache_size_counts_the_cleaning_connection_once(make_gate, dovecot, fresh_user, relay):
    # cache_size 2: the connection being cleaned is one, the login waiting for
    # it holds none of its own, so one more backend login fits and no second.
    user, pw = fresh_user
    full = b"NO [UNAVAILABLE] Too many backend connections (cache_size), try again later\r\n"
    g, mark, sid, c, waiter = login_waiting_for_cleaning(make_gate, relay, user, pw, cache_size=2)
    bob, lines = login(g, "bob", "bobpw")
    assert_fresh(lines)
    other = g.connect_greeted()
    assert login_raw(other, "bob", "bobpw") == [b"a " + full]
    relay.release()
    assert_reused(c.read_tagged("a"))
    assert sorted(e["state"] for e in pool(g)) == ["active", "active"]
    assert login_raw(other, "bob", "bobpw", tag="b") == [b"b " + full]
    logout(bob)
    assert login_raw(other, "bob", "bobpw", tag="d")[-1].startswith(b"d OK ")


def test_backend_changed_while_a_login_waits(make_gate, dovecot, fresh_user, relay):
    # The connection being cleaned belongs to the old backend: it is closed, and
    # the waiting login goes to the new one at once.
    user, pw = fresh_user
    g, mark, sid, c, waiter = login_waiting_for_cleaning(make_gate, relay, user, pw)
    g.write_config(server_port=dovecot.port)
    g.reload()
    assert_fresh(c.read_tagged("a", timeout=3))
    wait_close(g, sid, reason="backend_changed", since=mark)
    wait_end(g, waiter, sid, "gone", mark)
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    assert logins_now(dovecot, user) == 2
    logout(c)


def test_sigterm_while_a_login_waits(make_gate, dovecot, fresh_user, relay):
    user, pw = fresh_user
    g, mark, sid, c, waiter = login_waiting_for_cleaning(make_gate, relay, user, pw)
    g.signal(signal.SIGTERM)
    assert c.expect_closed(timeout=5) == b"a NO [UNAVAILABLE] Server shutting down\r\n* BYE Server shutting down\r\n"
    assert g.wait_exit(timeout=5) == 0
    wait_end(g, waiter, sid, "gone", mark)
    assert re.search(r"event=pool_close user=%s session=%d reason=shutdown " % (re.escape(user), sid), g.log_text())
    assert logins_now(dovecot, user) == 1


# --------------------------------------------------------------------------
# what the next session must never see


def test_pipelined_commands_before_logout(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    dovecot.deliver(user)
    g = cache_gate(make_gate)
    c, _ = login(g, user, pw)
    sid = session_of(g, user)
    mark = g.log_mark()
    c.send(b"b SELECT INBOX\r\nc NOOP\r\nd LOGOUT\r\n")
    lines = c.expect_closed(timeout=5).splitlines(keepends=True)
    tagged = [ln for ln in lines if not ln.startswith(b"* ")]
    assert [ln.split(b" ", 2)[:2] for ln in tagged] == [[b"b", b"OK"], [b"c", b"OK"], [b"d", b"OK"]], lines
    assert b"* 1 EXISTS\r\n" in lines[:lines.index(tagged[0])]
    assert lines[-2:] == [BYE, b"d OK Logout completed.\r\n"], lines
    wait_park(g, sid, since=mark)
    c, lines = login(g, user, pw)
    assert_reused(lines)
    assert_clean_session(c)


def test_logout_pipelined_behind_login(make_gate, dovecot, fresh_user):
    # LOGIN, SELECT and LOGOUT in one send: once with a backend login, once
    # answered from the pool (the pipelined commands must follow the reuse).
    user, pw = fresh_user
    dovecot.deliver(user)
    g = cache_gate(make_gate)
    for reused in (False, True):
        c = g.connect_greeted()
        mark = g.log_mark()
        c.send("a LOGIN %s %s\r\nb SELECT INBOX\r\nz LOGOUT\r\n" % (quote(user), quote(pw)))
        lines = c.expect_closed(timeout=5).splitlines(keepends=True)
        assert (lines[0] == REUSE) == reused, lines
        assert lines[int(reused)].startswith(b"a OK [CAPABILITY "), lines
        assert b"* 1 EXISTS\r\n" in lines
        assert lines[-3].startswith(b"b OK [READ-WRITE] "), lines
        assert lines[-2:] == [BYE, b"z OK Logout completed.\r\n"], lines
        wait_park(g, session_of(g, user), since=mark)
    c, lines = login(g, user, pw)
    assert_reused(lines)
    assert_clean_session(c)
    assert logins_now(dovecot, user) == 1


def test_commands_in_flight_and_a_partial_line_at_disconnect(make_gate, dovecot, fresh_user):
    # The client goes away without reading: SELECT and FETCH are still being
    # answered, and "d FET" (no end of line) was never a whole command.
    user, pw = fresh_user
    dovecot.deliver(user)
    g = cache_gate(make_gate)
    c, _ = login(g, user, pw)
    sid = session_of(g, user)
    mark = g.log_mark()
    c.send(b"b SELECT INBOX\r\nc FETCH 1:* (FLAGS UID)\r\nd FET")
    c.close()
    wait_park(g, sid, since=mark)
    c, lines = login(g, user, pw)
    assert_reused(lines)
    assert_clean_session(c)
    assert logins_now(dovecot, user) == 1


def test_failed_select_then_logout(make_gate, dovecot, fresh_user):
    # A failed SELECT leaves no mailbox selected: the deselect gets BAD, which is fine.
    user, pw = fresh_user
    dovecot.deliver(user)
    g = cache_gate(make_gate)
    c, _ = login(g, user, pw)
    sid = session_of(g, user)
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    assert c.command("t", "SELECT no-such-box")[-1].startswith(b"t NO ")
    mark = g.log_mark()
    logout(c)
    wait_park(g, sid, since=mark)
    c, lines = login(g, user, pw)
    assert_reused(lines)
    assert_clean_session(c)


def test_disconnect_while_selected_parks_unselected(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    dovecot.deliver(user)
    g = cache_gate(make_gate)
    c, _ = login(g, user, pw)
    sid = session_of(g, user)
    assert b"* 1 EXISTS\r\n" in c.command("s", "SELECT INBOX")
    assert c.command("d", "STORE 1 +FLAGS (\\Deleted)")[-1].startswith(b"d OK ")
    mark = g.log_mark()
    c.close()
    g.wait_log(r"event=disconnect session=%d .*reason=client_eof" % sid, since=mark)
    wait_park(g, sid, since=mark)
    c, lines = login(g, user, pw)
    assert_reused(lines)
    assert_clean_session(c)
    # Deselected without CLOSE: nothing was expunged.
    assert b"* 1 EXISTS\r\n" in c.command("s", "SELECT INBOX")
    assert logins_now(dovecot, user) == 1


def test_idle_then_disconnect(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    dovecot.deliver(user)
    g = cache_gate(make_gate)
    c, _ = login(g, user, pw)
    sid = session_of(g, user)
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    c.sendline("t IDLE")
    assert c.read_line() == b"+ idling\r\n"
    mark = g.log_mark()
    c.close()
    # Parking needs IDLE's tagged reply, which Dovecot sends only after DONE.
    wait_park(g, sid, since=mark)
    # Mail arriving now must not reach the next session as news of a mailbox it never selected.
    dovecot.deliver(user, subject="while parked")
    c, lines = login(g, user, pw)
    assert_reused(lines)
    assert_clean_session(c)
    lines = c.command("s", "SELECT INBOX")
    assert b"* 2 EXISTS\r\n" in lines and lines[-1].startswith(b"s OK ")
    assert logins_now(dovecot, user) == 1


def test_done_and_logout_in_one_send(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    g = cache_gate(make_gate)
    c, _ = login(g, user, pw)
    sid = session_of(g, user)
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    c.sendline("t IDLE")
    assert c.read_line() == b"+ idling\r\n"
    mark = g.log_mark()
    c.send(b"DONE\r\nz LOGOUT\r\n")
    lines = c.expect_closed(timeout=5).splitlines(keepends=True)
    assert len(lines) == 3 and normalize_timing(lines[0]) == b"t OK Idle completed.\r\n", lines
    assert lines[1:] == [BYE, b"z OK Logout completed.\r\n"], lines
    wait_park(g, sid, since=mark)
    c, lines = login(g, user, pw)
    assert_reused(lines)
    assert_clean_session(c)


def test_big_fetch_then_disconnect(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    size = 8 * 1024 * 1024
    # Lines that would look like replies if the tracker did not skip the literal.
    body = ("0123456789abcdef" * 4 + "\r\nf OK fake\r\n* BYE fake\r\n") * (size // 89)
    dovecot.deliver(user, make_message(subject="big", body=body))
    g = cache_gate(make_gate)
    c, _ = login(g, user, pw)
    sid = session_of(g, user)
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    c.sendline("f FETCH 1 BODY.PEEK[]")
    assert c.read_line().startswith(b"* 1 FETCH (BODY[] {")
    mark = g.log_mark()
    c.close()
    m = g.wait_log(r"event=disconnect session=%d .*bytes_out=(\d+)" % sid, since=mark)
    # The client got only part of the answer: the rest was still on its way.
    assert int(m.group(1)) < size
    wait_park(g, sid, since=mark)
    c, lines = login(g, user, pw)
    assert_reused(lines)
    assert_clean_session(c)
    assert logins_now(dovecot, user) == 1


def test_literals_that_look_like_commands_and_replies(make_gate, dovecot, fresh_user):
    # Literal bytes are data: a "z LOGOUT" line in an APPEND must not be taken
    # for the client's LOGOUT, nor "* BYE" or "f OK" in a FETCH body for the
    # server's words; the connection stays clean and is parked.
    user, pw = fresh_user
    g = cache_gate(make_gate)
    c, _ = login(g, user, pw)
    sid = session_of(g, user)
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    msg = make_message(subject="tricky", body="z LOGOUT\r\ne ENABLE CONDSTORE\r\n* BYE fake\r\nf OK fake\r\n")
    c.send(b"t APPEND INBOX {%d}\r\n" % len(msg))
    assert c.read_line().startswith(b"+ ")
    c.send(msg + b"\r\n")
    assert c.read_tagged("t")[-1].startswith(b"t OK [APPENDUID ")
    c.send(b"u APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
    assert c.read_tagged("u")[-1].startswith(b"u OK [APPENDUID ")
    lines = c.command("g", "FETCH 1:2 (BODY.PEEK[])")  # not "f": RawClient does not skip literals
    assert b"".join(lines).count(b"{%d}\r\n" % len(msg) + msg + b")\r\n") == 2, lines
    mark = g.log_mark()
    logout(c)
    wait_park(g, sid, since=mark)
    c, lines = login(g, user, pw)
    assert_reused(lines)
    assert_clean_session(c)
    assert b"* 2 EXISTS\r\n" in c.command("s", "SELECT INBOX")


def test_server_without_unselect(make_gate, own_dovecot):
    # Without UNSELECT in the login's capabilities imapgate deselects with
    # EXAMINE "" (which fails, and so closes the mailbox without expunging).
    d = own_dovecot(users={"alice": "alicepw"}, extra_conf=(
        "protocol imap {\n  imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+\n}\n"))
    d.deliver("alice")
    g = cache_gate(make_gate, backend=d)
    c, lines = login(g, "alice", "alicepw")
    assert b" UNSELECT" not in lines[0]
    sid = session_of(g, "alice")
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    assert c.command("d", "STORE 1 +FLAGS (\\Deleted)")[-1].startswith(b"d OK ")
    mark = g.log_mark()
    logout(c)
    wait_park(g, sid, since=mark)
    c, lines = login(g, "alice", "alicepw")
    assert_reused(lines)
    assert_clean_session(c)
    # Deselected without CLOSE: the \Deleted message is still there.
    assert b"* 1 EXISTS\r\n" in c.command("s", "SELECT INBOX")
    assert d.count_logins("alice") == 1


def test_half_append_then_disconnect(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    dovecot.deliver(user)
    g = cache_gate(make_gate, backend_timeout=1)
    c, _ = login(g, user, pw)
    sid = session_of(g, user)
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    c.send(b"a APPEND INBOX {100}\r\n")
    assert c.read_line().startswith(b"+ ")
    c.send(b"x" * 50)
    mark = g.log_mark()
    c.close()
    g.wait_log(r"event=disconnect session=%d " % sid, since=mark)
    # The next session cannot have that connection: a fresh one, clean.
    c, lines = login(g, user, pw)
    assert_fresh(lines)
    assert_clean_session(c)
    logout(c)
    # The half-sent message never becomes one, whatever imapgate writes afterwards.
    wait_close(g, sid, since=mark, timeout=5)
    assert "event=pool_park user=%s session=%d " % (user, sid) not in g.log_text()
    wait_for(lambda: re.search(r"imap\(%s\)<\d+><[^>]*>: Info: Disconnected: .*While APPENDing" % re.escape(user),
                               dovecot.info_log_text()), 5, what="Dovecot to drop the APPEND")
    assert message_count(dovecot, user, pw) == 1


@pytest.mark.parametrize("command,reason", [
    ("ENABLE CONDSTORE", "enable"),
    ("COMPRESS DEFLATE", "compress"),
    ("XYZZY", "command"),
])
def test_state_that_cannot_be_undone_is_not_parked(make_gate, dovecot, fresh_user, command, reason):
    user, pw = fresh_user
    g = cache_gate(make_gate)
    c, _ = login(g, user, pw)
    sid = session_of(g, user)
    assert c.command("e", command)[-1].startswith((b"e OK", b"e BAD"))
    mark = g.log_mark()
    c.close()
    wait_close(g, sid, reason=reason, since=mark)
    assert "event=pool_park user=%s session=%d " % (user, sid) not in g.log_text()
    assert pool_of(g, user) == []
    c, lines = login(g, user, pw)
    assert_fresh(lines)
    assert logins_now(dovecot, user) == 2


def test_logout_after_enable_goes_to_the_server(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    g = cache_gate(make_gate)
    c, _ = login(g, user, pw)
    assert c.command("e", "ENABLE CONDSTORE")[-1].startswith(b"e OK")
    c.sendline("z LOGOUT")
    lines = c.expect_closed(timeout=5).splitlines(keepends=True)
    # Dovecot's own answer (it carries Dovecot's timing), not imapgate's.
    assert lines[0] == BYE and len(lines) == 2, lines
    assert lines[1] != b"z OK Logout completed.\r\n" and normalize_timing(lines[1]) == b"z OK Logout completed.\r\n"
    dovecot_logged_out(dovecot, user, 1)
    assert pool_of(g, user) == []
    c, lines = login(g, user, pw)
    assert_fresh(lines)


# --------------------------------------------------------------------------
# leaving the pool


@pytest.mark.parametrize("sig,reasons", [
    (signal.SIGTERM, "server_bye|server_closed"),  # Dovecot says BYE, then closes
    (signal.SIGKILL, "server_closed"),
], ids=["SIGTERM", "SIGKILL"])
def test_server_closes_a_parked_connection(make_gate, dovecot, fresh_user, sig, reasons):
    user, pw = fresh_user
    g = cache_gate(make_gate)
    sid = use_then_logout(g, user, pw, reused=False)
    pids = imap_processes(dovecot, user)
    assert len(pids) == 1, pids
    mark = g.log_mark()
    os.kill(pids[0], sig)
    # It leaves the pool when that happens, not at the next login.
    wait_close(g, sid, reason=reasons, since=mark)
    assert pool_of(g, user) == []
    c, lines = login(g, user, pw)
    assert_fresh(lines)
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    assert logins_now(dovecot, user) == 2


def test_expiry(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    g = cache_gate(make_gate, cache_expiration_time=1)
    c, _ = login(g, user, pw)
    sid = session_of(g, user)
    mark = g.log_mark()
    logout(c)
    t_logout = time.monotonic()
    wait_park(g, sid, since=mark)
    e = pool_of(g, user)
    assert len(e) == 1 and e[0]["state"] == "parked" and int(e[0]["expires_in_ms"]) <= 1000, e
    m = wait_close(g, sid, reason="expired", since=mark, timeout=3)
    elapsed = time.monotonic() - t_logout
    assert 0.9 <= elapsed < 2.5, elapsed
    assert 1000 <= int(m.group(2)) < 1500, m.group(0)
    dovecot_logged_out(dovecot, user, 1)
    assert pool_of(g, user) == []
    c, lines = login(g, user, pw)
    assert_fresh(lines)
    assert logins_now(dovecot, user) == 2


def test_changed_password_stops_working_after_max_age(make_gate, dovecot, fresh_user):
    user, old = fresh_user
    new = "pw-new-" + secrets.token_hex(6)
    g = cache_gate(make_gate, cache_max_age=2)
    c, lines = login(g, user, old)
    t_login = time.monotonic()
    assert_fresh(lines)
    sid = session_of(g, user)
    # Time is the subject: the deadline counts from the backend login, not from
    # parking, and a reuse does not restart it.
    time.sleep(0.5)
    for reused in (False, True):
        if reused:
            c, lines = login(g, user, old)
            assert_reused(lines)
            sid = session_of(g, user)
        mark = g.log_mark()
        logout(c)
        wait_park(g, sid, since=mark)
        t_req = time.monotonic()
        e = pool_of(g, user)
        assert len(e) == 1 and int(e[0]["expires_in_ms"]) <= 2000 - (t_req - t_login) * 1000 + 5, e
    dovecot.set_password(user, new)
    wait_close(g, sid, reason="max_age", since=mark, timeout=5)
    # The old password now goes to Dovecot, which refuses it.
    c = g.connect_greeted()
    lines = login_raw(c, user, old)
    assert len(lines) == 1 and lines[0].startswith(b"a NO "), lines
    c.close()
    c, lines = login(g, user, new)
    assert_fresh(lines)
    assert logins_now(dovecot, user) == 2


def test_cache_size_exhausted_then_eviction(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    g = cache_gate(make_gate, cache_size=2)
    c1, _ = login(g, user, pw)
    s1 = session_of(g, user)
    c2, _ = login(g, user, pw)
    third = g.connect_greeted()
    lines = login_raw(third, "bob", "bobpw", tag="c")
    assert lines == [b"c NO [UNAVAILABLE] Too many backend connections (cache_size), try again later\r\n"], lines
    assert g.running() and third.is_open()
    assert [e["state"] for e in pool(g)] == ["active", "active"]
    # One logs out: parked, and a login of another user may evict it.
    mark = g.log_mark()
    logout(c1)
    wait_park(g, s1, since=mark)
    lines = login_raw(third, "bob", "bobpw", tag="d")
    assert_fresh(lines, tag="d")
    wait_close(g, s1, reason="evicted", since=mark)
    assert sorted((e["user"], e["state"]) for e in pool(g)) == sorted([(user, "active"), ("bob", "active")])
    dovecot_logged_out(dovecot, user, 1)
    assert c2.command("n", "NOOP")[-1].startswith(b"n OK")
    assert third.command("n", "NOOP")[-1].startswith(b"n OK")


def test_expiration_time_zero_turns_the_cache_off(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    g = cache_gate(make_gate, cache_expiration_time=0)
    for _ in range(2):
        c, lines = login(g, user, pw)
        assert_fresh(lines)
        c.sendline("z LOGOUT")
        lines = c.expect_closed(timeout=5).splitlines(keepends=True)
        # Dovecot's own LOGOUT answer (with its timing), not imapgate's.
        assert lines[0] == BYE and len(lines) == 2, lines
        assert b" secs)" in lines[1] and normalize_timing(lines[1]) == b"z OK Logout completed.\r\n", lines
    assert "event=pool_park" not in g.log_text()
    assert pool(g) == []
    assert logins_now(dovecot, user) == 2


def test_reload_shortening_max_age_applies_to_parked_connections(make_gate, dovecot, fresh_user):
    # A parked connection logged in under the old, longer cache_max_age: once
    # the reload makes it older than the new one it must not be reused (the
    # point of cache_max_age is that a changed password stops working).
    user, pw = fresh_user
    g = cache_gate(make_gate)
    c, _ = login(g, user, pw)
    t_login = time.monotonic()
    sid = session_of(g, user)
    mark = g.log_mark()
    logout(c)
    wait_park(g, sid, since=mark)
    g.write_config(cache_max_age=1)
    g.reload()
    g.wait_log(r"event=reload status=ok", since=mark)
    # Time is the subject: the listing already shows the new deadline...
    e = pool_of(g, user)
    assert len(e) == 1 and int(e[0]["expires_in_ms"]) <= 1000, e
    wait_for(lambda: time.monotonic() - t_login > 1.3, 3, what="the new cache_max_age to pass")
    # ...so the connection must have left the pool, and the next login is a real one.
    c, lines = login(g, user, pw)
    assert_fresh(lines)
    assert re.search(r"event=pool_close user=%s session=%d reason=max_age " % (re.escape(user), sid),
                     g.log_text()[mark:])
    assert logins_now(dovecot, user) == 2


def test_sigterm_logs_out_parked_connections(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    g = cache_gate(make_gate)
    sid = use_then_logout(g, user, pw, reused=False)
    assert g.stop() == 0
    assert re.search(r"event=pool_close user=%s session=%d reason=shutdown " % (re.escape(user), sid), g.log_text())
    dovecot_logged_out(dovecot, user, 1)


def test_stats_count_reuse(make_gate, dovecot, fresh_user):
    user, pw = fresh_user
    g = make_gate(start=False, stat_filename=None)
    stat = owned_dir(str(g.dir / "st")) + "/stats"
    g.write_config(stat_filename=stat, control_socket=str(g.dir / "ctl.sock"))
    g.start()

    def stats():
        out = subprocess.run([str(g.build / "imapgate-stat"), "-c", "-f", str(g.conf_path)],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        return {k: int(v) for k, v in (ln.split(" ", 1) for ln in out.stdout.splitlines() if " " in ln)}

    use_then_logout(g, user, pw, reused=False)
    s = stats()
    assert s["server_connections_created_total"] == 1, s
    assert (s["server_connections_reused_total"], s["server_connections_retained_current"]) == (0, 1), s
    c, lines = login(g, user, pw)
    assert_reused(lines)
    sid = session_of(g, user)
    s = stats()
    assert s["server_connections_reused_total"] == 1, s
    assert s["server_connections_created_total"] == 1, s
    assert s["server_connections_retained_current"] == 0, s
    assert s["server_connections_in_use_current"] == 1, s
    assert s["client_logins_total"] == 2, s
    mark = g.log_mark()
    logout(c)
    wait_park(g, sid, since=mark)
    s = stats()
    assert s["server_connections_reused_total"] == 1, s
    assert s["server_connections_retained_current"] == 1, s
    assert s["server_connections_in_use_current"] == 0, s
