"""
After login imapgate relays: every reply must be the backend's, byte for
byte, literals included in both directions; IDLE works; LOGOUT ends it.
"""

import imaplib
import os
import re
import signal
import socket
import time

from harness import RawClient, login_raw, make_message, normalize_timing

# A read-only script; BODY.PEEK so that running it changes no flag.
SCRIPT = [
    "SELECT INBOX",
    "FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)",
    "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])",
    "FETCH 2 (BODY.PEEK[])",
    "UID SEARCH ALL",
    'LIST "" "*"',
    "STATUS INBOX (MESSAGES UIDNEXT UNSEEN)",
    "NAMESPACE",
    "NOOP",
    "CLOSE",
]


def run_script(host, port, user, pw):
    c = RawClient(host, port)
    try:
        c.read_line()
        out = [login_raw(c, user, pw, tag="L")[-1]]
        for i, cmd in enumerate(SCRIPT):
            out += [normalize_timing(ln) for ln in c.command("s%d" % i, cmd)]
        return out
    finally:
        c.close()


def test_replies_are_the_backends_byte_for_byte(gate, dovecot, fresh_user):
    user, pw = fresh_user
    dovecot.deliver(user, make_message(subject="first"))
    # A body with 8-bit bytes, a long line and text that looks like IMAP.
    dovecot.deliver(user, b"Subject: second\r\n\r\n\xc3\xa9t\xc3\xa9\r\nz LOGOUT\r\n* BYE fake\r\n"
                    + b"q" * 5000 + b"\r\n")
    # A first direct run clears \Recent, so the next two see the same state.
    run_script("127.0.0.1", dovecot.port, user, pw)
    through = run_script("127.0.0.1", gate.port, user, pw)
    direct = run_script("127.0.0.1", dovecot.port, user, pw)
    assert through == direct


def test_imaplib_session(gate, dovecot, fresh_user):
    user, pw = fresh_user
    msg = make_message(subject="imaplib-flow")
    dovecot.deliver(user, msg)
    m = imaplib.IMAP4("127.0.0.1", gate.port, timeout=10)
    assert m.login(user, pw)[0] == "OK"
    assert m.select("INBOX") == ("OK", [b"1"])
    typ, data = m.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == msg
    appended = make_message(subject="appended", body="x" * 3000)
    typ, data = m.append("INBOX", None, None, appended)
    assert typ == "OK", data
    typ, data = m.fetch("2", "(BODY.PEEK[])")
    assert data[0][1] == appended
    typ, data = m.search(None, "SUBJECT", "appended")
    assert data == [b"2"]
    assert m.logout()[0] == "BYE"


def _login_select(gate, user, pw):
    c = gate.connect_greeted()
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
    return c


def test_append_synchronising_literal(gate, fresh_user):
    user, pw = fresh_user
    c = _login_select(gate, user, pw)
    msg = make_message(subject="sync", body="line\r\nt OK not a reply\r\n" + "y" * 10000)
    c.send(b"t APPEND INBOX {%d}\r\n" % len(msg))
    cont = c.read_line()
    assert cont == b"+ OK\r\n", cont  # Dovecot's continuation, relayed
    c.send(msg + b"\r\n")
    assert c.read_tagged("t")[-1].startswith(b"t OK [APPENDUID ")
    lines = c.command("f", "FETCH 1 (BODY.PEEK[])")
    head = lines[0]
    assert head.endswith(b"{%d}\r\n" % len(msg)), head
    body = b"".join(lines[1:-1])
    assert body == msg + b")\r\n"


def test_append_non_synchronising_literal(gate, fresh_user):
    user, pw = fresh_user
    c = _login_select(gate, user, pw)
    msg = make_message(subject="nonsync", body="z LOGOUT\r\n")
    c.send(b"t APPEND INBOX (\\Flagged) {%d+}\r\n" % len(msg) + msg + b"\r\nn NOOP\r\n")
    lines = c.read_tagged("n")
    assert not any(ln.startswith(b"+ ") for ln in lines), lines
    assert any(ln.startswith(b"t OK [APPENDUID ") for ln in lines), lines
    lines = c.command("f", "FETCH 1 (FLAGS BODY.PEEK[])")
    assert b"\\Flagged" in lines[0]
    assert b"".join(lines[1:-1]) == msg + b")\r\n"


def test_large_literal_after_login(gate, fresh_user):
    # preauth_max_literal applies only before login.
    user, pw = fresh_user
    c = _login_select(gate, user, pw)
    msg = make_message(subject="big", body="B" * 300000)
    c.send(b"t APPEND INBOX {%d}\r\n" % len(msg))
    assert c.read_line().startswith(b"+ ")
    c.send(msg + b"\r\n")
    assert c.read_tagged("t", timeout=15)[-1].startswith(b"t OK ")
    c.sendline("f FETCH 1 (RFC822.SIZE)")
    assert b"RFC822.SIZE %d" % len(msg) in c.read_tagged("f")[0]


def test_idle(gate, dovecot, fresh_user):
    user, pw = fresh_user
    c = _login_select(gate, user, pw)
    c.sendline("t IDLE")
    assert c.read_line() == b"+ idling\r\n"
    dovecot.deliver(user, make_message(subject="during idle"))
    assert c.read_until(rb"^\* \d+ EXISTS\r\n$", timeout=10)[-1] == b"* 1 EXISTS\r\n"
    c.sendline("DONE")
    assert c.read_tagged("t")[-1].startswith(b"t OK ")
    lines = c.command("f", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: during idle" in b"".join(lines)


def test_logout_after_login(gate, fresh_user):
    user, pw = fresh_user
    c = _login_select(gate, user, pw)
    c.sendline("z LOGOUT")
    lines = c.read_tagged("z")
    assert lines[0].startswith(b"* BYE"), lines
    assert lines[-1].startswith(b"z OK"), lines
    c.expect_closed(timeout=5)


def test_many_sequential_sessions(gate, dovecot, fresh_user):
    user, pw = fresh_user
    for i in range(20):
        m = imaplib.IMAP4("127.0.0.1", gate.port, timeout=10)
        assert m.login(user, pw)[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
        assert m.logout()[0] == "BYE"


def test_client_disconnect_mid_command_does_not_hurt_next_session(gate, fresh_user):
    user, pw = fresh_user
    c = _login_select(gate, user, pw)
    # Half a literal, then vanish.
    c.send(b"t APPEND INBOX {1000}\r\n")
    c.read_line()
    c.send(b"partial")
    c.close()
    c2 = _login_select(gate, user, pw)
    assert normalize_timing(c2.command("n", "NOOP")[-1]) == b"n OK NOOP completed.\r\n"
    lines = c2.command("f", "UID FETCH 1:* (FLAGS)")
    assert lines[-1].startswith(b"f OK"), lines


def _read_all_tagged(c, tag, timeout=30):
    """Everything up to and including the tagged reply, as one byte string."""
    return b"".join(c.read_tagged(tag, timeout=timeout))


def test_large_bodies_relayed_byte_exact_while_the_client_reads_slowly(gate, dovecot, fresh_user):
    # Bodies over 64 KiB move through a splice pipe (plain TCP both sides):
    # several of them in one FETCH, interleaved with small ones, read slowly
    # by the client, must arrive byte for byte and in order, and the session
    # (and a parked connection) must go on cleanly afterwards.
    user, pw = fresh_user
    bodies = [make_message(subject="s%d" % i, body=("%d" % i) * (50 if i % 2 else 400000)) for i in range(5)]
    for b in bodies:
        dovecot.deliver(user, b)
    direct = RawClient("127.0.0.1", dovecot.port)
    direct.read_line()
    login_raw(direct, user, pw)
    direct.command("s", "SELECT INBOX")
    direct.sendline("f FETCH 1:* (BODY.PEEK[] UID)")
    want = normalize_timing(_read_all_tagged(direct, "f"))
    assert len(want) > 1000000
    direct.close()
    for round_ in range(2):
        c = _login_select(gate, user, pw)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        c.sendline("f FETCH 1:* (BODY.PEEK[] UID)")
        got = b""
        deadline = time.monotonic() + 30
        while not re.search(rb"\r\nf (OK|NO|BAD)[^\r\n]*\r\n$", got) and time.monotonic() < deadline:
            time.sleep(0.005)  # a slow reader: the relay must hold back, not lose or reorder
            got += c.read_bytes(1, timeout=10) + c.read_available(wait=0)
        assert normalize_timing(got) == want
        assert c.command("n", "NOOP")[-1].startswith(b"n OK")
        c.sendline("z LOGOUT")
        assert c.read_tagged("z")[-1].startswith(b"z OK")
        c.close()
        gate.wait_log(r"event=pool_park user=%s " % re.escape(user), timeout=10)


def test_disconnect_line_gives_the_whole_session_duration(gate, fresh_user):
    # duration_ms counts from accept to close; it once restarted at every
    # relayed byte and logged 0 for every LOGOUT.
    user, pw = fresh_user
    t0 = time.monotonic()
    c = _login_select(gate, user, pw)
    sid = gate.wait_log(r"event=login session=(\d+) user=%s " % re.escape(user)).group(1)
    time.sleep(0.3)  # a session that lasts: the idle time is what is measured
    mark = gate.log_mark()
    c.sendline("z LOGOUT")
    c.read_tagged("z")
    elapsed_ms = (time.monotonic() - t0) * 1000
    m = gate.wait_log(r"event=disconnect session=%s .*reason=logout duration_ms=(\d+) " % sid, since=mark)
    assert 300 <= int(m.group(1)) <= elapsed_ms + 50, (m.group(0), elapsed_ms)


def _kill_imap_process(dovecot, gate, user, pw, sig):
    """A logged-in session whose Dovecot imap process gets sig; the bytes
    the client received until imapgate closed it."""
    c = _login_select(gate, user, pw)
    pids = dovecot.imap_pids(user)
    assert len(pids) == 1, pids
    os.kill(pids[0], sig)
    return c.expect_closed(timeout=5)


def test_server_dying_mid_session_gets_the_client_a_bye(gate, dovecot, fresh_user):
    user, pw = fresh_user
    got = _kill_imap_process(dovecot, gate, user, pw, signal.SIGKILL)
    assert got == b"* BYE [UNAVAILABLE] Connection to the mail server lost\r\n", got
    gate.wait_log(r"event=disconnect .*user=%s reason=server_closed " % re.escape(user))


def test_server_bye_is_not_doubled(gate, dovecot, fresh_user):
    # Dovecot says BYE itself when it is told to stop a session (SIGTERM):
    # the client gets that one, and no second BYE of imapgate's.
    user, pw = fresh_user
    got = _kill_imap_process(dovecot, gate, user, pw, signal.SIGTERM)
    assert got.startswith(b"* BYE ") and got.count(b"BYE") == 1, got
    assert b"Connection to the mail server lost" not in got, got
