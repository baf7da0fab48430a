"""
PROXY protocol v1/v2 on listeners marked proxy_protocol: the header is
believed only from trusted_proxies; a missing, bad or late header, or one
from anyone else, closes the connection with a log line. The address it
carries is the client from then on (limits, logs, the backend's ID).
"""

import socket
import struct
import time

import pytest

from harness import RawClient, login_raw, can_bind

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src, sport, dst="127.0.0.1", dport=1143, tlv=b""):
    if ":" in src:
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, "::1")
        fam = 0x21
    else:
        addrs = socket.inet_aton(src) + socket.inet_aton(dst)
        fam = 0x11
    body = addrs + struct.pack("!HH", sport, dport) + tlv
    return SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


@pytest.fixture
def proxied(make_gate):
    """A gate with an extra proxy_protocol listener; returns (gate, port)."""

    def make(**config):
        g = make_gate(start=False, **config)
        port = g.add_listener("proxy_protocol")
        g.start()
        return g, port

    return make


def test_v1_trusted_header_gives_the_real_client(proxied, dovecot, fresh_user):
    g, port = proxied(trusted_proxies="127.0.0.1/32", forward_client_address=True)
    user, pw = fresh_user
    c = RawClient("127.0.0.1", port)
    g.clients.append(c)
    c.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 40312 1143\r\n")
    assert c.read_line().startswith(b"* OK ")
    g.wait_log(r"event=proxy session=\d+ client=192\.0\.2\.7:40312 via=127\.0\.0\.1:\d+")
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    g.wait_log(r"event=login .*user=%s client=192\.0\.2\.7:40312 rip=192\.0\.2\.7" % user)
    dovecot.wait_logins(user, 1)
    (login,) = dovecot.login_lines(user)
    assert "rip=192.0.2.7" in login, login


def test_v2_ipv4_with_tlv_and_ipv6(proxied):
    g, port = proxied(trusted_proxies="127.0.0.0/8")
    c = RawClient("127.0.0.1", port)
    g.clients.append(c)
    c.send(v2_header("198.51.100.4", 5555, tlv=b"\x04\x00\x02ab"))
    assert c.read_line().startswith(b"* OK ")
    assert c.command("a", "NOOP")[-1] == b"a OK Completed\r\n"
    g.wait_log(r"client=198\.51\.100\.4:5555 via=127\.0\.0\.1")
    c6 = RawClient("127.0.0.1", port)
    g.clients.append(c6)
    c6.send(v2_header("2001:db8::7", 6000))
    assert c6.read_line().startswith(b"* OK ")
    g.wait_log(r"client=2001:db8::7:6000 via=127\.0\.0\.1")


def test_header_split_across_packets(proxied):
    g, port = proxied(trusted_proxies="127.0.0.1")
    c = RawClient("127.0.0.1", port)
    g.clients.append(c)
    h = b"PROXY TCP4 192.0.2.8 127.0.0.1 1234 1143\r\n"
    for i in range(0, len(h), 5):
        c.send(h[i:i + 5])
        time.sleep(0.01)
    assert c.read_line().startswith(b"* OK ")
    g.wait_log(r"client=192\.0\.2\.8:1234 via=")


def test_untrusted_sender_is_closed_without_greeting(proxied):
    g, port = proxied(trusted_proxies="127.0.0.9/32")
    c = RawClient("127.0.0.1", port)
    g.clients.append(c)
    c.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 40312 1143\r\n")
    c.expect_closed(timeout=3)
    assert c.buf == b""
    g.wait_log(r"event=refused session=\d+ client=127\.0\.0\.1:\d+ reason=untrusted_proxy")


def test_missing_or_bad_header_closes(proxied):
    g, port = proxied(trusted_proxies="127.0.0.1/32")
    c = RawClient("127.0.0.1", port)
    g.clients.append(c)
    c.send(b"a LOGIN bob bobpw\r\n")
    c.expect_closed(timeout=3)
    assert c.buf == b""
    g.wait_log(r"event=proxy_error .*reason=bad_header")


def test_header_timeout(proxied):
    g, port = proxied(trusted_proxies="127.0.0.1/32", proxy_header_timeout=1)
    c = RawClient("127.0.0.1", port)
    g.clients.append(c)
    t0 = time.monotonic()
    c.expect_closed(timeout=4)
    assert time.monotonic() - t0 < 3.5
    g.wait_log(r"event=proxy_error .*reason=header_timeout")


def test_plain_listener_ignores_proxy_settings(proxied):
    # A header sent to a listener without proxy_protocol is just a bad command.
    g, port = proxied(trusted_proxies="127.0.0.1/32")
    c = g.connect_greeted()
    lines = c.command("x", "NOOP")
    assert lines[-1] == b"x OK Completed\r\n"


def test_per_address_limit_counts_the_proxied_client(proxied):
    g, port = proxied(trusted_proxies="127.0.0.1/32", max_connections_per_ip=1)
    clients = []
    for src in ("192.0.2.20", "192.0.2.21"):
        c = RawClient("127.0.0.1", port)
        g.clients.append(c)
        c.send(b"PROXY TCP4 %s 127.0.0.1 1000 1143\r\n" % src.encode())
        assert c.read_line().startswith(b"* OK "), src
        clients.append(c)
    c = RawClient("127.0.0.1", port)
    g.clients.append(c)
    c.send(b"PROXY TCP4 192.0.2.20 127.0.0.1 1001 1143\r\n")
    assert c.read_line().startswith(b"* BYE ")
    c.expect_closed(timeout=3)
