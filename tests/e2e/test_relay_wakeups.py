"""
The relay's wake-up mark (issue 10): while a large server literal is still
coming, imapgate asks the kernel to wake it only once RELAY_LOWAT bytes are
queued on the backend socket (SO_RCVLOWAT). A mark left too high would hang
a reply for good, so these tests fetch literals of every size around the
thresholds (a TCP segment, a TLS record, the mark, the mark plus OpenSSL's
read-ahead buffer, the client buffer), pipelined between small commands,
through a plain and a TLS backend, and want every byte within a bound.
"""

import re
import time

import pytest

from harness import login_raw
from test_tls import certs  # noqa: F401 (the fixture)
from tls_util import tls_dovecot


# Partial fetches <0.N> give literals of exactly N bytes from one message.
SIZES = [1, 4095, 4096, 16383, 16384, 65535, 65536, 65537, 131071, 131072, 131073,
         150000, 151000, 152000, 153000, 155000, 200000, 262143, 262144, 262145, 1 << 20]


def body_message():
    line = b"%07d wake-up mark test line, long enough to matter ....................\r\n"
    msg = b"Subject: lowat\r\nFrom: a@example.org\r\nTo: alice@example.org\r\n\r\n" + \
        b"".join(line % i for i in range(40000))
    assert len(msg) > 3_000_000
    return msg


def read_until(c, pattern, deadline):
    """Bytes from c up to and including the first match of pattern."""
    got = bytearray(c.buf)
    c.buf = b""
    while True:
        m = re.search(pattern, got)
        if m:
            c.buf = bytes(got[m.end():])
            return bytes(got[:m.end()])
        left = deadline - time.monotonic()
        assert left > 0, "timed out after %d bytes: %r" % (len(got), bytes(got[-200:]))
        c.sock.settimeout(left)
        chunk = c.sock.recv(1 << 20)
        assert chunk, "connection closed after %d bytes" % len(got)
        got += chunk


@pytest.mark.parametrize("backend", ["plain", "tls"])
def test_literals_around_the_wakeup_mark(make_gate, own_dovecot, certs, backend):
    d = tls_dovecot(own_dovecot, certs.server)
    msg = body_message()
    d.deliver("alice", msg)
    if backend == "tls":
        g = make_gate(backend=d.imaps_port, server_tls="implicit", server_hostname="127.0.0.1",
                      tls_verify_server=True, tls_ca_file=certs.ca, tls_server_name="localhost",
                      backend_timeout=5)
    else:
        g = make_gate(backend=d.port, server_tls="none")
    c = g.connect_greeted()
    assert login_raw(c, "alice", "alicepw")[-1].startswith(b"a OK")
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    sizes = SIZES + [len(msg)]
    # All pipelined in one go, each fetch followed by a NOOP: a literal that
    # ends mid-record or mid-segment is followed by a short reply that must
    # not wait for bytes that never come.
    cmds = b"".join(b"f%d FETCH 1 BODY.PEEK[]<0.%d>\r\nn%d NOOP\r\n" % (i, n, i) for i, n in enumerate(sizes))
    c.send(cmds)
    # Dovecot may run pipelined FETCHes side by side and hold their tagged
    # replies back: read replies as they come, literals in command order.
    deadline = time.monotonic() + 20
    tags = set()
    bodies = []
    want = {b"f%d" % i for i in range(len(sizes))} | {b"n%d" % i for i in range(len(sizes))}
    while tags != want:
        line = read_until(c, rb"\r\n", deadline)
        m = re.fullmatch(rb"\* 1 FETCH \(BODY\[\]<0> \{(\d+)\}\r\n", line)
        if m:
            n = int(m.group(1))
            bodies.append(read_until(c, rb"(?s)^.{%d}" % n, deadline))
            assert read_until(c, rb"\r\n", deadline) == b")\r\n"
            continue
        m = re.fullmatch(rb"([fn]\d+) OK [^\r\n]*\r\n", line)
        assert m and m.group(1) not in tags, line
        tags.add(m.group(1))
    assert [len(b) for b in bodies] == sizes
    for b in bodies:
        assert b == msg[:len(b)], "literal of %d bytes differs" % len(b)
    # One at a time too: nothing behind a literal's end but the tagged OK.
    for n in (65537, 152000, 1 << 20):
        c.send(b"g FETCH 1 BODY.PEEK[]<0.%d>\r\n" % n)
        read_until(c, rb"\* 1 FETCH \(BODY\[\]<0> \{%d\}\r\n" % n, time.monotonic() + 10)
        assert read_until(c, rb"(?s)^.{%d}" % n, time.monotonic() + 10) == msg[:n]
        read_until(c, rb"\)\r\ng OK[^\r\n]*\r\n", time.monotonic() + 10)
    # The connection goes back to the pool after a big literal and serves
    # the next session (the pool's reads must not wait for a mark).
    c.send(b"z LOGOUT\r\n")
    read_until(c, rb"z OK[^\r\n]*\r\n", time.monotonic() + 10)
    c2 = g.connect_greeted()
    assert login_raw(c2, "alice", "alicepw")[-1].startswith(b"a OK")
    assert c2.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    c2.send(b"h FETCH 1 BODY.PEEK[]<0.200000>\r\n")
    read_until(c2, rb"\{200000\}\r\n", time.monotonic() + 10)
    assert read_until(c2, rb"(?s)^.{200000}", time.monotonic() + 10) == msg[:200000]
    read_until(c2, rb"\)\r\nh OK[^\r\n]*\r\n", time.monotonic() + 10)
