"""
Hostile and awkward clients: random bytes in random pieces, slow readers of
big replies. Bounded in count and time. The daemon must keep serving,
stay within its buffers, and (checked at teardown) exit cleanly with no
sanitizer report.
"""

import random
import socket
import time

from harness import login_raw, make_message, sanitized_build

CHUNKS = [b"a LOGIN ", b"{5}\r\n", b"{99999999999}\r\n", b"{3+}\r\nabc", b"\r\n", b"\n", b"\r", b"\x00",
          b"AUTHENTICATE PLAIN\r\n", b"*\r\n", b"ID (", b")", b'"', b"\\", b"STARTTLS\r\n", b"x" * 9000,
          b"b CAPABILITY\r\n", b"c NOOP\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", b"\xff\xfe", b" ", b"(((((",
          b"d AUTHENTICATE LOGIN\r\n", b"=\r\n", b"e LOGIN {0}\r\n", b"f ID NIL\r\n"]


def test_random_garbage_never_hurts_the_daemon(make_gate, dovecot, fresh_user):
    g = make_gate(max_connections_per_ip=0, auth_timeout=5, guard_db="none")
    rnd = random.Random(20261122)
    deadline = time.monotonic() + 15
    for i in range(150):
        if time.monotonic() > deadline:
            break
        s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        try:
            data = b"".join(rnd.choice(CHUNKS) for _ in range(rnd.randint(1, 30)))
            if rnd.random() < 0.5:
                data += bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 300)))
            for j in range(0, len(data), rnd.randint(1, 64)):
                s.sendall(data[j:j + 64])
            s.settimeout(0.05)
            try:
                while s.recv(65536):
                    pass
            except (socket.timeout, ConnectionResetError):
                pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            s.close()
    assert g.running()
    user, pw = fresh_user
    c = g.connect_greeted()
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_slow_reader_of_a_big_message_bounded_memory(gate, dovecot, fresh_user):
    user, pw = fresh_user
    body = ("0123456789abcdef" * 4 + "\r\n") * 100000  # ~6.6 MB
    msg = make_message(subject="big", body=body)
    dovecot.deliver(user, msg)
    c = gate.connect_greeted()
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    before = rss_kib(gate.pid())
    c.send(b"f FETCH 1 BODY.PEEK[]\r\n")
    # Read slowly at first: imapgate must stop reading from Dovecot, not buffer it all.
    got = b""
    for _ in range(20):
        got += c.sock.recv(4096)
        time.sleep(0.02)
    peak = rss_kib(gate.pid())
    c.sock.settimeout(20)
    while not got.endswith(b"f OK Fetch completed.\r\n") and b"\r\nf OK " not in got[-200:]:
        chunk = c.sock.recv(1 << 20)
        assert chunk, "closed before the end"
        got += chunk
    assert msg in got
    # (AddressSanitizer keeps freed blocks in quarantine: RSS says nothing there.)
    if not sanitized_build():
        assert peak - before < 2048, "imapgate grew by %d KiB while its client was slow" % (peak - before)
