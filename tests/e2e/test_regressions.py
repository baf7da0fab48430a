"""
Regressions from code review: each once crashed, spun or hung the daemon.
"""

import os
import socket
import struct
import time

import pytest

from harness import can_bind, login_raw, make_message, register_secret

needs_alias = pytest.mark.skipif(not can_bind("127.0.0.2"), reason="needs 127.0.0.2")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_shutdown_with_a_client_that_stopped_reading(make_gate, dovecot, fresh_user):
    # The BYE did not fit a full output buffer: the session closed inside
    # session_reply and a timer was then armed on it after its free.
    g = make_gate(shutdown_timeout=1)
    user, pw = fresh_user
    dovecot.deliver(user, make_message(subject="big", body=("y" * 1000 + "\r\n") * 8000))
    c = g.connect_greeted()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    c.send(b"f FETCH 1 BODY.PEEK[]\r\n")
    time.sleep(0.5)  # imapgate's buffer toward us fills up; we never read
    assert g.stop(timeout=10) == 0  # teardown also checks for sanitizer reports


@needs_alias
def test_auth_timeout_survives_a_login_in_progress(make_gate, dovecot, fresh_user):
    # The deadline fired while the failure reply was held back and was lost:
    # the client could then stay before login for ever.
    g = make_gate(auth_timeout=2, guard_failure_delay=3000, guard_maxretry=50)
    user, _ = fresh_user
    c = g.connect_greeted(src="127.0.0.2")
    time.sleep(1.2)
    t0 = time.monotonic()
    assert login_raw(c, user, register_secret("late-wrong"), timeout=10)[-1].startswith(b"a NO ")
    # Past the deadline: BYE right after the reply, no more commands.
    assert c.read_line(timeout=3).startswith(b"* BYE ")
    c.expect_closed(timeout=3)
    assert time.monotonic() - t0 < 6


@needs_alias
def test_reset_during_login_does_not_spin(make_gate, dovecot, fresh_user):
    # A client reset while no read was wanted: EPOLLHUP was reported again and
    # again until the held-back reply was due (100% CPU).
    g = make_gate(guard_failure_delay=2500, guard_maxretry=50)
    user, _ = fresh_user
    pid = g.pid()
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", g.port))
    s.recv(1000)
    s.sendall(b'x LOGIN "%s" "%s"\r\n' % (user.encode(), register_secret("rst-wrong").encode()))
    time.sleep(0.7)  # Dovecot answered NO; imapgate holds the reply back
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST
    before = cpu_seconds(pid)
    time.sleep(1.5)
    assert cpu_seconds(pid) - before < 0.3
    g.wait_log(r"reason=client_error")


def test_long_id_reaches_the_backend(gate, dovecot, fresh_user):
    # An ID over 1 KiB was silently not sent and the login hung until
    # backend_timeout.
    user, pw = fresh_user
    c = gate.connect_greeted()
    assert c.command("i", 'ID ("name" "%s" "version" "%s")' % ("R" * 600, "1" * 500))[-1] == b"i OK Completed\r\n"
    t0 = time.monotonic()
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    assert time.monotonic() - t0 < 3
