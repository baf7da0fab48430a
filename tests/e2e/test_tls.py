"""
TLS on both sides (issue 4): implicit TLS and STARTTLS for clients, verified
STARTTLS and implicit TLS toward Dovecot, LOGINDISABLED backends, the
STARTTLS command-injection class, certificate reload on SIGHUP, and
client_tls_required.

Certificates are made per session with `openssl` (tls_util.Certs). Backends
with TLS are private Dovecots (tls_util.tls_dovecot); their login lines carry
tls=<TLS> when the login came over TLS.
"""

import imaplib
import os
import re
import select
import shutil
import ssl
import tempfile
import time
from pathlib import Path

import pytest

from harness import RawClient, can_bind, login_raw, make_message, quote, sasl_plain
from tls_util import (Certs, RecordingProxy, connect_tls, peer_serial, plain_login_lines, s_client, starttls,
                      tls_dovecot, tls_gate, tls_is_open, tls_login_lines, wait_until, wrap_client)

GOOD_SANS = ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]


@pytest.fixture(scope="module")
def certs():
    # Under /tmp with 0755 directories: imapgate runs as nobody after start-up
    # and must read the files again on SIGHUP.
    d = tempfile.mkdtemp(prefix="imapgate-tls-")
    os.chmod(d, 0o755)
    try:
        yield Certs(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def work_dir():
    d = Path(tempfile.mkdtemp(prefix="imapgate-tls-work-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def capabilities(c, tag="cap"):
    """Words of the untagged CAPABILITY reply (upper case bytes)."""
    lines = c.command(tag, "CAPABILITY")
    assert lines[-1].startswith(tag.encode() + b" OK"), lines
    caps = [ln for ln in lines if ln.upper().startswith(b"* CAPABILITY ")]
    assert len(caps) == 1, lines
    return [w.upper() for w in caps[0].split()[2:]]


def tagged_status(line, tag):
    m = re.match(re.escape(tag.encode()) + rb" (OK|NO|BAD)\b", line)
    assert m, line
    return m.group(1).decode()


# --------------------------------------------------------------------------
# client side: implicit TLS and STARTTLS


def test_imaplib_imap4_ssl(make_gate, dovecot, fresh_user, certs):
    user, pw = fresh_user
    g = tls_gate(make_gate, certs.server)
    ctx = certs.client_context()
    with imaplib.IMAP4_SSL("127.0.0.1", g.tls_port, ssl_context=ctx, timeout=10) as m:
        assert m.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert peer_serial(m.sock) == certs.server.serial
        # STARTTLS inside TLS makes no sense and is not offered.
        assert "STARTTLS" not in m.capabilities
        typ, _ = m.login(user, pw)
        assert typ == "OK"
        typ, data = m.select("INBOX")
        assert typ == "OK" and data == [b"0"]
        m.logout()
    assert dovecot.wait_logins(user, 1) == 1


def test_imaplib_starttls(make_gate, dovecot, fresh_user, certs):
    user, pw = fresh_user
    g = tls_gate(make_gate, certs.server, implicit=False)
    ctx = certs.client_context()
    with imaplib.IMAP4("127.0.0.1", g.port, timeout=10) as m:
        assert "STARTTLS" in m.capabilities
        typ, _ = m.starttls(ssl_context=ctx)
        assert typ == "OK"
        assert m.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert peer_serial(m.sock) == certs.server.serial
        # imaplib asked again after the handshake (RFC 3501 6.2.1): no second STARTTLS.
        assert "STARTTLS" not in m.capabilities
        typ, _ = m.login(user, pw)
        assert typ == "OK"
        assert m.noop()[0] == "OK"
        m.logout()
    assert dovecot.wait_logins(user, 1) == 1


def test_starttls_raw_then_second_starttls_refused(make_gate, fresh_user, certs):
    user, pw = fresh_user
    g = tls_gate(make_gate, certs.server, implicit=False)
    c = g.connect_greeted()
    starttls(c, certs.client_context())
    caps = capabilities(c)
    assert b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps
    # A second STARTTLS is refused and the TLS session goes on.
    assert tagged_status(c.command("s2", "STARTTLS")[-1], "s2") in ("NO", "BAD")
    assert login_raw(c, user, pw)[-1].startswith(b"a OK")
    assert c.command("n", "NOOP")[-1].startswith(b"n OK")


def test_starttls_not_advertised_without_certificate(gate, fresh_user):
    user, pw = fresh_user
    c = gate.connect_greeted()
    assert b"STARTTLS" not in c.greeting.upper()
    caps = capabilities(c)
    assert b"STARTTLS" not in caps
    assert b"LOGINDISABLED" not in caps
    # Asked anyway: refused, and the session stays plain and usable.
    assert tagged_status(c.command("s", "STARTTLS")[-1], "s") in ("NO", "BAD")
    assert c.command("n", "NOOP")[-1].startswith(b"n OK")
    assert login_raw(c, user, pw)[-1].startswith(b"a OK")


def test_starttls_advertised_with_certificate(make_gate, certs):
    g = tls_gate(make_gate, certs.server, implicit=False)
    c = g.connect_greeted()
    caps = capabilities(c)
    assert b"STARTTLS" in caps
    assert b"LOGINDISABLED" not in caps  # client_tls_required is off


def test_implicit_listener_starttls_refused(make_gate, certs):
    g = tls_gate(make_gate, certs.server)
    c = connect_tls(g, certs.client_context())
    assert c.read_line().startswith(b"* OK ")
    assert b"STARTTLS" not in capabilities(c)
    assert tagged_status(c.command("s", "STARTTLS")[-1], "s") in ("NO", "BAD")
    assert c.command("n", "NOOP")[-1].startswith(b"n OK")


def test_implicit_listener_speaks_no_plaintext(make_gate, dovecot, fresh_user, certs):
    user, pw = fresh_user
    g = tls_gate(make_gate, certs.server)
    c = RawClient("127.0.0.1", g.tls_port, timeout=5)
    g.clients.append(c)
    # No plaintext greeting: the server waits for a ClientHello.
    assert c.read_available(0.5) == b""
    c.sendline("a LOGIN %s %s" % (quote(user), quote(pw)))
    data = c.expect_closed(timeout=5)
    assert b"OK" not in data
    time.sleep(0.3)
    assert dovecot.count_logins(user) == 0
    assert g.running()


def test_openssl_s_client_starttls(make_gate, dovecot, fresh_user, certs):
    user, pw = fresh_user
    g = tls_gate(make_gate, certs.server, implicit=False)
    rc, out, err = s_client(g.port, ["a LOGIN %s %s" % (quote(user), quote(pw)), "b LOGOUT"], certs.ca,
                            starttls=True)
    assert rc == 0, (out, err)
    assert "Verification: OK" in err, err
    assert re.search(r"^a OK ", out, re.M), out
    assert re.search(r"^\* BYE", out, re.M), out
    assert re.search(r"^b OK ", out, re.M), out
    assert dovecot.wait_logins(user, 1) == 1


def test_openssl_s_client_implicit(make_gate, dovecot, fresh_user, certs):
    user, pw = fresh_user
    g = tls_gate(make_gate, certs.server)
    rc, out, err = s_client(g.tls_port, ["a LOGIN %s %s" % (quote(user), quote(pw)), "b LOGOUT"], certs.ca)
    assert rc == 0, (out, err)
    assert "Verification: OK" in err, err
    assert re.search(r"^\* OK ", out, re.M), out  # the greeting comes inside TLS
    assert re.search(r"^a OK ", out, re.M), out
    assert re.search(r"^b OK ", out, re.M), out
    assert dovecot.wait_logins(user, 1) == 1


def test_client_tls_min_version(make_gate, certs):
    g = tls_gate(make_gate, certs.server, client_tls_min_version="TLSv1.3")
    with pytest.raises(ssl.SSLError):
        connect_tls(g, certs.client_context(max_version=ssl.TLSVersion.TLSv1_2))
    c = connect_tls(g, certs.client_context())
    assert c.sock.version() == "TLSv1.3"
    assert c.read_line().startswith(b"* OK ")
    assert g.running()


def test_client_tls12_accepted_by_default(make_gate, certs):
    g = tls_gate(make_gate, certs.server)
    c = connect_tls(g, certs.client_context(max_version=ssl.TLSVersion.TLSv1_2))
    assert c.sock.version() == "TLSv1.2"
    assert c.read_line().startswith(b"* OK ")


def test_pipelined_commands_in_one_record(make_gate, fresh_user, certs):
    # ~13 KB of commands in one TLS record: whatever imapgate does not read at once
    # sits decrypted inside OpenSSL, where epoll cannot see it. Every reply must come.
    user, pw = fresh_user
    g = tls_gate(make_gate, certs.server)
    c = connect_tls(g, certs.client_context())
    assert c.read_line().startswith(b"* OK ")
    assert login_raw(c, user, pw)[-1].startswith(b"a OK")
    n = 1000
    c.send(b"".join(b"n%d NOOP\r\n" % i for i in range(n)))
    lines = c.read_tagged("n%d" % (n - 1), timeout=15)
    done = [ln for ln in lines if re.match(rb"n\d+ OK", ln)]
    assert len(done) == n, lines[-5:]


# --------------------------------------------------------------------------
# STARTTLS command injection


def test_plaintext_after_starttls_in_same_packet_not_executed(make_gate, dovecot, fresh_user, certs):
    # The issue asks for the bytes to be discarded (not for the connection to be
    # dropped, which Dovecot itself does): the handshake then goes on.
    user, pw = fresh_user
    g = tls_gate(make_gate, certs.server, implicit=False)
    c = g.connect_greeted()
    # One send: STARTTLS and a LOGIN behind it, before any handshake.
    c.send(b"s STARTTLS\r\nx LOGIN " + quote(user).encode() + b" " + quote(pw).encode() + b"\r\n")
    lines = c.read_tagged("s")
    assert lines[-1].startswith(b"s OK"), lines
    # Nothing else in plaintext, and the handshake works (the injected bytes were
    # not taken for a ClientHello either).
    wrap_client(c, certs.client_context())
    lines = c.command("n", "NOOP")
    assert lines[-1].startswith(b"n OK"), lines
    assert not [ln for ln in lines if ln.startswith(b"x ")], lines
    # The injected LOGIN never reached the backend, and the session is not logged in.
    time.sleep(0.5)
    assert dovecot.count_logins(user) == 0
    assert tagged_status(c.command("sel", "SELECT INBOX")[-1], "sel") in ("NO", "BAD")
    # A login inside TLS works, once.
    assert login_raw(c, user, pw, tag="l")[-1].startswith(b"l OK")
    assert dovecot.wait_logins(user, 1) == 1
    time.sleep(0.3)
    assert dovecot.count_logins(user) == 1


def test_plaintext_after_starttls_separate_packet_not_executed(make_gate, dovecot, fresh_user, certs):
    user, pw = fresh_user
    g = tls_gate(make_gate, certs.server, implicit=False)
    c = g.connect_greeted()
    c.sendline("s STARTTLS")
    # Sent before reading the OK: may arrive before or after imapgate answered.
    c.sendline("x LOGIN %s %s" % (quote(user), quote(pw)))
    lines = c.read_tagged("s")
    assert lines[-1].startswith(b"s OK"), lines
    # Either the bytes are discarded (handshake then works) or they break the
    # handshake (connection closed); never executed.
    try:
        wrap_client(c, certs.client_context())
        lines = c.command("n", "NOOP")
        assert not [ln for ln in lines if ln.startswith(b"x ")], lines
    except (ssl.SSLError, OSError, EOFError):
        pass
    time.sleep(0.5)
    assert dovecot.count_logins(user) == 0


# --------------------------------------------------------------------------
# client_tls_required


def test_client_tls_required(make_gate, dovecot, fresh_user, certs):
    user, pw = fresh_user
    g = tls_gate(make_gate, certs.server, implicit=False, client_tls_required=True)
    c = g.connect_greeted()
    caps = capabilities(c)
    assert b"LOGINDISABLED" in caps
    assert b"STARTTLS" in caps
    # LOGIN and AUTHENTICATE before STARTTLS: a clear tagged NO, nothing sent on.
    assert login_raw(c, user, pw, tag="l1")[-1].startswith(b"l1 NO"), "LOGIN before STARTTLS accepted"
    assert c.command("l2", "AUTHENTICATE PLAIN %s" % sasl_plain(user, pw))[-1].startswith(b"l2 NO")
    time.sleep(0.3)
    assert dovecot.count_logins(user) == 0
    # After STARTTLS: no LOGINDISABLED, no STARTTLS, and LOGIN works.
    starttls(c, certs.client_context())
    caps = capabilities(c, "cap2")
    assert b"LOGINDISABLED" not in caps
    assert b"STARTTLS" not in caps
    assert login_raw(c, user, pw, tag="l3")[-1].startswith(b"l3 OK")
    assert dovecot.wait_logins(user, 1) == 1


def test_client_tls_required_implicit_listener_allows_login(make_gate, dovecot, fresh_user, certs):
    user, pw = fresh_user
    g = tls_gate(make_gate, certs.server, client_tls_required=True)
    c = connect_tls(g, certs.client_context())
    assert c.read_line().startswith(b"* OK ")
    assert b"LOGINDISABLED" not in capabilities(c)
    assert login_raw(c, user, pw)[-1].startswith(b"a OK")
    assert dovecot.wait_logins(user, 1) == 1


# --------------------------------------------------------------------------
# certificate reload


def test_certificate_reload_on_sighup(make_gate, fresh_user, certs, work_dir):
    user, pw = fresh_user
    live_cert, live_key = work_dir / "live.pem", work_dir / "live.key"
    certs.issue("first", GOOD_SANS, serial=0x2001, out_cert=live_cert, out_key=live_key)
    g = tls_gate(make_gate, certs.server, client_tls_cert_file=str(live_cert), client_tls_key_file=str(live_key))
    ctx = certs.client_context()

    old = connect_tls(g, ctx)
    assert old.read_line().startswith(b"* OK ")
    assert peer_serial(old.sock) == 0x2001
    assert login_raw(old, user, pw)[-1].startswith(b"a OK")

    # Renewal: new files at the same paths, then SIGHUP.
    certs.issue("second", GOOD_SANS, serial=0x2002, out_cert=live_cert, out_key=live_key)
    g.reload()

    def new_handshake_serial():
        c = connect_tls(g, ctx)
        try:
            return peer_serial(c.sock)
        finally:
            c.close()

    wait_until(lambda: new_handshake_serial() == 0x2002, 10, "new handshakes to present serial 0x2002")
    # STARTTLS on the plain listener uses the new one too.
    c = g.connect_greeted()
    starttls(c, ctx)
    assert peer_serial(c.sock) == 0x2002

    # The session opened before the reload keeps its TLS session and works.
    assert tls_is_open(old)
    assert peer_serial(old.sock) == 0x2001
    assert old.command("n", "NOOP")[-1].startswith(b"n OK")
    lines = old.command("s", "SELECT INBOX")
    assert lines[-1].startswith(b"s OK"), lines

    # A broken certificate on the next reload: the current one stays, and the log says why.
    mark = g.log_mark()
    tmp = live_cert.with_name("live.pem.tmp")
    tmp.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, live_cert)
    g.reload()
    g.wait_log(re.escape(str(live_cert)), timeout=10, since=mark)
    assert g.running()
    assert new_handshake_serial() == 0x2002
    assert old.command("n2", "NOOP")[-1].startswith(b"n2 OK")


# --------------------------------------------------------------------------
# backend side


def gate_to_tls_backend(make_gate, certs, port, **config):
    cfg = dict(server_hostname="127.0.0.1", tls_verify_server=True, tls_ca_file=certs.ca,
               tls_server_name="localhost", backend_timeout=5)
    cfg.update(config)
    return make_gate(backend=port, **cfg)


def test_backend_implicit_tls(make_gate, own_dovecot, certs):
    d = tls_dovecot(own_dovecot, certs.server)
    g = gate_to_tls_backend(make_gate, certs, d.imaps_port, server_tls="implicit")
    c = g.connect_greeted()
    assert login_raw(c, "alice", "alicepw")[-1].startswith(b"a OK")
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    wait_until(lambda: tls_login_lines(d, "alice"), 5, "a TLS login of alice in Dovecot's log")
    assert plain_login_lines(d, "alice") == []


def test_backend_implicit_tls_ip_name(make_gate, own_dovecot, certs):
    # No tls_server_name: server_hostname 127.0.0.1 is checked against the IP SAN.
    d = tls_dovecot(own_dovecot, certs.server)
    g = gate_to_tls_backend(make_gate, certs, d.imaps_port, server_tls="implicit", tls_server_name=None)
    c = g.connect_greeted()
    assert login_raw(c, "alice", "alicepw")[-1].startswith(b"a OK")
    wait_until(lambda: tls_login_lines(d, "alice"), 5, "a TLS login of alice in Dovecot's log")


def test_backend_starttls(make_gate, own_dovecot, certs):
    d = tls_dovecot(own_dovecot, certs.server)
    g = gate_to_tls_backend(make_gate, certs, d.port, server_tls="starttls")
    c = g.connect_greeted()
    assert login_raw(c, "bob", "bobpw")[-1].startswith(b"a OK")
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    wait_until(lambda: tls_login_lines(d, "bob"), 5, "a TLS login of bob in Dovecot's log")
    assert plain_login_lines(d, "bob") == []


def test_backend_auto_uses_advertised_starttls(make_gate, own_dovecot, certs):
    d = tls_dovecot(own_dovecot, certs.server)
    g = gate_to_tls_backend(make_gate, certs, d.port)  # server_tls auto (default)
    c = g.connect_greeted()
    assert login_raw(c, "bob", "bobpw")[-1].startswith(b"a OK")
    wait_until(lambda: tls_login_lines(d, "bob"), 5, "a TLS login of bob in Dovecot's log")
    assert plain_login_lines(d, "bob") == []


def test_backend_server_tls_none_stays_plain(make_gate, own_dovecot, certs):
    d = tls_dovecot(own_dovecot, certs.server)
    g = gate_to_tls_backend(make_gate, certs, d.port, server_tls="none")
    c = g.connect_greeted()
    assert login_raw(c, "bob", "bobpw")[-1].startswith(b"a OK")
    wait_until(lambda: d.login_lines("bob"), 5, "a login of bob in Dovecot's log")
    assert tls_login_lines(d, "bob") == []


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
@pytest.mark.parametrize("problem", ["wrong_name", "untrusted_ca"])
def test_backend_certificate_refused(make_gate, own_dovecot, certs, mode, problem):
    if problem == "wrong_name":
        # Dovecot presents a certificate for wrong.example.org; we expect localhost.
        d = tls_dovecot(own_dovecot, certs.wrong)
        extra = {}
        why = r"certificate verify failed: hostname mismatch"
    else:
        d = tls_dovecot(own_dovecot, certs.server)
        extra = {"tls_ca_file": certs.other_ca}
        why = r"certificate verify failed: (self-signed certificate in certificate chain|unable to get local issuer)"
    port = d.imaps_port if mode == "implicit" else d.port
    g = gate_to_tls_backend(make_gate, certs, port, server_tls=mode, **extra)
    c = g.connect_greeted()
    lines = login_raw(c, "alice", "alicepw", timeout=15)
    assert lines[-1].startswith(b"a NO [UNAVAILABLE]"), lines
    g.wait_log(why, timeout=5)
    time.sleep(0.3)
    assert d.count_logins("alice") == 0
    assert g.running()
    # The client may try again later; the session is still sane.
    if c.is_open():
        assert c.command("n", "NOOP")[-1].startswith(b"n OK")


def test_backend_wrong_name_accepted_without_verification(make_gate, own_dovecot, certs):
    # The refusal above is verification's doing: with it off, the same backend works.
    d = tls_dovecot(own_dovecot, certs.wrong)
    g = gate_to_tls_backend(make_gate, certs, d.imaps_port, server_tls="implicit", tls_verify_server=False)
    c = g.connect_greeted()
    assert login_raw(c, "alice", "alicepw")[-1].startswith(b"a OK")
    wait_until(lambda: tls_login_lines(d, "alice"), 5, "a TLS login of alice in Dovecot's log")


@pytest.fixture
def logindisabled_backend(own_dovecot, certs):
    """A Dovecot with ssl = required, reached through a recording relay whose backend
    side binds 127.0.0.2 (Dovecot treats a same-address connection as secure and would
    not advertise LOGINDISABLED)."""
    if not can_bind("127.0.0.2"):
        pytest.skip("127.0.0.2 not available")
    d = tls_dovecot(own_dovecot, certs.server, required=True)
    px = RecordingProxy(d.port, source="127.0.0.2")
    # Dovecot really refuses plaintext LOGIN here.
    with RawClient("127.0.0.1", px.port) as c:
        greeting = c.read_line()
        assert b"LOGINDISABLED" in greeting, greeting
        c.sendline("z LOGOUT")
    yield d, px
    px.close()


def cleartext_part(stream):
    """What was sent before the first TLS handshake record (0x16 0x03) of a stream."""
    i = stream.find(b"\x16\x03")
    return stream if i == -1 else stream[:i]


def test_logindisabled_backend_gets_credentials_only_over_tls(make_gate, logindisabled_backend, certs):
    d, px = logindisabled_backend
    user, pw = "carol", 'p@ss w"r\\d'
    g = gate_to_tls_backend(make_gate, certs, px.port)  # server_tls auto
    c = g.connect_greeted()
    assert login_raw(c, user, pw)[-1].startswith(b"a OK")
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    wait_until(lambda: tls_login_lines(d, user), 5, "a TLS login of carol in Dovecot's log")
    with px.lock:
        up = px.upstream
        streams = [bytes(r[0]) for r in px.streams]
    # The password never crossed the wire readable ...
    assert pw.encode() not in up
    assert sasl_plain(user, pw).encode() not in up
    # ... and on every connection, no credentials before the TLS handshake; the
    # login connection said STARTTLS first.
    for stream in streams:
        clear = cleartext_part(stream).upper()
        assert b"LOGIN" not in clear and b"AUTHENTICATE" not in clear, stream
    assert any(b"STARTTLS" in cleartext_part(s).upper() and len(s) > len(cleartext_part(s)) for s in streams), streams


def test_logindisabled_backend_with_server_tls_none_gets_no_credentials(make_gate, logindisabled_backend, certs):
    d, px = logindisabled_backend
    user, pw = "bob", "bobpw"
    g = gate_to_tls_backend(make_gate, certs, px.port, server_tls="none")
    c = g.connect_greeted()
    lines = login_raw(c, user, pw, timeout=15)
    assert lines[-1].startswith(b"a NO"), lines
    time.sleep(0.3)
    with px.lock:
        up = px.upstream
    assert pw.encode() not in up
    assert sasl_plain(user, pw).encode() not in up
    assert b" LOGIN " not in up.upper()
    assert b"AUTHENTICATE" not in up.upper()
    assert d.count_logins(user) == 0


def test_tls_both_sides_big_transfers(make_gate, own_dovecot, certs):
    # TLS toward the client and toward the backend at once, with messages
    # larger than every buffer: decrypted bytes left inside OpenSSL on either
    # side must flow without waiting for the socket.
    d = tls_dovecot(own_dovecot, certs.server)
    body = "".join("line %06d of a message bigger than any buffer\r\n" % i for i in range(60000))
    big = make_message(subject="tls-big", body=body)
    d.deliver("alice", big)
    g = gate_to_tls_backend(make_gate, certs, d.imaps_port, server_tls="implicit", start=False,
                            client_tls_cert_file=certs.server.cert, client_tls_key_file=certs.server.key)
    g.tls_port = g.add_listener("tls")
    g.start()
    with imaplib.IMAP4_SSL("127.0.0.1", g.tls_port, ssl_context=certs.client_context(), timeout=20) as m:
        assert m.login("alice", "alicepw")[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
        for _ in range(3):
            typ, data = m.fetch("1", "(BODY.PEEK[])")
            assert typ == "OK" and data[0][1] == big
        # And a big upload the other way.
        up = make_message(subject="tls-up", body=body[: len(body) // 2])
        assert m.append("INBOX", None, None, up)[0] == "OK"
        typ, data = m.fetch("2", "(BODY.PEEK[])")
        assert data[0][1] == up
        m.logout()


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_parked_backend_connection_keeps_its_tls(make_gate, own_dovecot, certs, mode):
    # Issue 4: a parked connection keeps its TLS session; the reused one
    # carries a big body intact, and Dovecot saw one (TLS) login only.
    d = tls_dovecot(own_dovecot, certs.server)
    body = "".join("reuse line %06d over a TLS backend link\r\n" % i for i in range(20000))
    big = make_message(subject="tls-reuse", body=body)
    d.deliver("carol", big)
    port = d.imaps_port if mode == "implicit" else d.port
    g = gate_to_tls_backend(make_gate, certs, port, server_tls=mode)
    for round_ in range(3):
        mark = g.log_mark()
        with imaplib.IMAP4("127.0.0.1", g.port, timeout=20) as m:
            assert m.login("carol", 'p@ss w"r\\d')[0] == "OK"
            reused = "XPROXYREUSE" in m.untagged_responses
            assert reused == (round_ > 0), (round_, m.untagged_responses)
            assert m.select("INBOX")[0] == "OK"
            typ, data = m.fetch("1", "(BODY.PEEK[])")
            assert typ == "OK" and data[0][1] == big
            m.logout()
        g.wait_log(r"event=pool_park user=carol", timeout=5, since=mark)
    wait_until(lambda: tls_login_lines(d, "carol"), 5, "a TLS login of carol in Dovecot's log")
    assert len(tls_login_lines(d, "carol")) == 1
    assert plain_login_lines(d, "carol") == []


def relay_cpu_s(gate):
    """CPU seconds (user + system) imapgate has used so far."""
    with open("/proc/%d/stat" % gate.pid()) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("reader", ["slow", "fast"])
def test_tls_both_sides_multi_megabyte_pipelined(make_gate, own_dovecot, certs, reader):
    # Issue 10: imapgate reads many TLS records per wake-up (read-ahead), so
    # records wait inside OpenSSL where epoll never reports them. Two
    # pipelined fetches of a 6 MB body and a NOOP, through TLS on both
    # sides: a slow reader keeps the client buffer full while Dovecot's
    # records sit in imapgate's TLS buffer (picked up when room appears,
    # no spinning meanwhile); a fast one drains everything at once.
    d = tls_dovecot(own_dovecot, certs.server)
    line = b"0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ %07d\r\n"
    big = b"Subject: tls-pipelined\r\nFrom: a@example.org\r\nTo: alice@example.org\r\n\r\n" + \
        b"".join(line % i for i in range(84000))
    assert len(big) > 6_000_000
    d.deliver("alice", big)
    g = gate_to_tls_backend(make_gate, certs, d.port, server_tls="starttls", start=False,
                            client_tls_cert_file=certs.server.cert, client_tls_key_file=certs.server.key)
    g.tls_port = g.add_listener("tls")
    g.start()
    c = connect_tls(g, certs.client_context(), timeout=20)
    assert c.read_line().startswith(b"* OK")
    assert login_raw(c, "alice", "alicepw")[-1].startswith(b"a OK")
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
    c.send(b"f1 UID FETCH 1 BODY.PEEK[]\r\nf2 FETCH 1 BODY.PEEK[]\r\nn NOOP\r\n")
    got = bytearray(c.buf)
    c.buf = b""
    sock = c.sock
    deadline = time.monotonic() + 30
    if reader == "slow":
        # Read nothing for a while: imapgate fills the socket and its
        # client buffer, then must sleep (not spin) with records waiting
        # in its TLS buffer.
        wait_until(lambda: select.select([sock], [], [], 0.05)[0], 10, "the first reply bytes")
        cpu0 = relay_cpu_s(g)
        time.sleep(0.5)  # a stalled reader, not a synchronisation
        spent = relay_cpu_s(g) - cpu0
        assert spent < 0.2, "imapgate used %.2fs of CPU in 0.5s with a stalled reader" % spent
        # Then trickle: small reads free a little room at a time.
        while len(got) < 2_000_000:
            assert time.monotonic() < deadline, "timed out with %d bytes" % len(got)
            chunk = sock.recv(8192)
            assert chunk, "connection closed after %d bytes" % len(got)
            got += chunk
    while not re.search(rb"\r\nn OK[^\r\n]*\r\n$", bytes(got[-300:])):
        assert time.monotonic() < deadline, "timed out with %d bytes" % len(got)
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed after %d bytes" % len(got)
        got += chunk
    data = bytes(got)
    for tag in (b"f1", b"f2"):
        head = re.match(rb"\* 1 FETCH \((?:UID 1 )?BODY\[\] \{(\d+)\}\r\n", data)
        assert head, data[:200]
        assert int(head.group(1)) == len(big)
        start = head.end()
        assert data[start:start + len(big)] == big, "body of %s differs" % tag.decode()
        data = data[start + len(big):]
        m = re.match(rb"(?: UID 1)?\)\r\n" + tag + rb" OK[^\r]*\r\n", data)
        assert m, data[:200]
        data = data[m.end():]
    assert re.match(rb"n OK[^\r]*\r\n$", data), data[:200]
