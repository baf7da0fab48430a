"""
Logging in through imapgate: LOGIN with every string form, AUTHENTICATE PLAIN
and LOGIN, wrong passwords (and what is logged about them), pipelining, and
what imapgate tells the backend about the client (ID).
"""

import base64
import imaplib
import re
import secrets

import pytest

from harness import (DEFAULT_USERS, RawClient, b64, can_bind, login_raw, normalize_timing, quote, register_secret,
                     sasl_plain)


def direct_login_ok(dovecot, user, password):
    """The tagged OK line Dovecot itself gives for this LOGIN (tag 'a')."""
    with RawClient("127.0.0.1", dovecot.port) as c:
        c.read_line()
        return login_raw(c, user, password)[-1]


def wrong_password(label):
    """A distinctive wrong password, registered so the log check looks for it."""
    return register_secret("wrong-%s-%s" % (label, secrets.token_hex(4)))


# --- LOGIN argument forms -------------------------------------------------
#
# Each form is a list of (kind, text) for the user and the password:
# atom, quoted (escaped), literal {n} (waits for "+ "), literal+ {n+}.


def send_login(c, tag, args):
    """Send LOGIN with args [(kind, value)], handling continuations; return the tagged reply."""
    line = tag.encode() + b" LOGIN"
    for kind, value in args:
        v = value.encode()
        if kind == "atom":
            line += b" " + v
        elif kind == "quoted":
            line += b" " + quote(value).encode()
        elif kind == "literal":
            c.send(line + b" {%d}\r\n" % len(v))
            cont = c.read_line()
            assert cont.startswith(b"+ "), cont
            line = v
        elif kind == "literal+":
            line += b" {%d+}\r\n" % len(v) + v
        else:
            raise ValueError(kind)
    c.send(line + b"\r\n")
    return c.read_tagged(tag)


LOGIN_FORMS = {
    "atom-atom": ("bob", "atom", "atom"),
    "quoted-quoted": ("bob", "quoted", "quoted"),
    "literal-literal": ("bob", "literal", "literal"),
    "atom-literalplus": ("bob", "atom", "literal+"),
    "literalplus-literalplus": ("bob", "literal+", "literal+"),
    "quoted-atom": ("bob", "quoted", "atom"),
    "literal-atom": ("bob", "literal", "atom"),
    "escapes-quoted": ("carol", "atom", "quoted"),
    "escapes-literal": ("carol", "quoted", "literal"),
    "escapes-literalplus": ("carol", "atom", "literal+"),
}


@pytest.mark.parametrize("form", sorted(LOGIN_FORMS))
def test_login_forms(make_gate, dovecot, form):
    user, ukind, pkind = LOGIN_FORMS[form]
    pw = DEFAULT_USERS[user]
    g = make_gate()
    before = dovecot.count_logins(user)
    c = g.connect_greeted()
    lines = send_login(c, "a", [(ukind, user), (pkind, pw)])
    assert lines[-1].startswith(b"a OK "), lines
    # The login reached the backend...
    assert dovecot.wait_logins(user, before + 1) == before + 1
    # ...and the session is relayed to it (Dovecot's own NOOP text).
    assert normalize_timing(c.command("n", "NOOP")[-1]) == b"n OK NOOP completed.\r\n"


def test_login_reply_is_the_backends(gate, dovecot, fresh_user):
    user, pw = fresh_user
    expected = direct_login_ok(dovecot, user, pw)
    assert expected.startswith(b"a OK [CAPABILITY ")
    c = gate.connect_greeted()
    assert login_raw(c, user, pw)[-1] == expected


def test_login_with_imaplib(gate):
    m = imaplib.IMAP4("127.0.0.1", gate.port, timeout=10)
    typ, data = m.login("alice", "alicepw")
    assert typ == "OK"
    assert m.noop()[0] == "OK"
    assert m.logout()[0] == "BYE"


def test_login_with_imaplib_quoted_password(gate):
    m = imaplib.IMAP4("127.0.0.1", gate.port, timeout=10)
    assert m.login("carol", DEFAULT_USERS["carol"])[0] == "OK"
    m.logout()


# --- wrong passwords --------------------------------------------------------


def test_wrong_password_then_right_one(gate, dovecot):
    bad = wrong_password("login")
    before = dovecot.count_logins("bob")
    c = gate.connect_greeted()
    client_port = c.sock.getsockname()[1]
    line = c.command("a", "LOGIN bob %s" % bad)[-1]
    assert line.startswith(b"a NO "), line
    assert b"[AUTHENTICATIONFAILED]" in line  # the backend's text
    # The same connection can try again.
    assert c.command("b", "LOGIN bob bobpw")[-1].startswith(b"b OK ")
    assert dovecot.wait_logins("bob", before + 1) == before + 1
    m = gate.wait_log(r"^.*\bevent=login_failed\b.*$")
    failed = m.group(0)
    assert re.search(r"\buser=bob\b", failed), failed
    assert "client=127.0.0.1:%d" % client_port in failed, failed
    assert re.search(r"\breason=\S+", failed), failed
    assert bad not in gate.log_text()


def test_successful_login_is_logged(gate):
    c = gate.connect_greeted()
    client_port = c.sock.getsockname()[1]
    assert login_raw(c, "alice", "alicepw")[-1].startswith(b"a OK ")
    line = gate.wait_log(r"^.*\bevent=login\b.*$").group(0)
    assert re.search(r"\buser=alice\b", line), line
    assert "client=127.0.0.1:%d" % client_port in line, line


def test_unknown_user(gate):
    c = gate.connect_greeted()
    line = c.command("a", "LOGIN nosuchuser %s" % wrong_password("nouser"))[-1]
    assert line.startswith(b"a NO "), line
    gate.wait_log(r"\bevent=login_failed\b.*\buser=nosuchuser\b")


def test_passwords_never_logged(gate):
    """Wrong passwords in every form the client can send; none may reach the log."""
    used = []
    c = gate.connect_greeted()

    pw = wrong_password("atom")
    used.append(pw)
    assert c.command("a1", "LOGIN alice %s" % pw)[-1].startswith(b"a1 NO ")

    pw = wrong_password('q "uo\\ted')
    used.append(pw)
    assert login_raw(c, "alice", pw, tag="a2")[-1].startswith(b"a2 NO ")

    pw = wrong_password("literal")
    used.append(pw)
    assert send_login(c, "a3", [("atom", "alice"), ("literal", pw)])[-1].startswith(b"a3 NO ")

    pw = wrong_password("literalplus")
    used.append(pw)
    assert send_login(c, "a4", [("atom", "alice"), ("literal+", pw)])[-1].startswith(b"a4 NO ")

    pw = wrong_password("plain-ir")
    used.append(pw)
    ir = register_secret(sasl_plain("alice", pw))
    used.append(ir)
    assert c.command("a5", "AUTHENTICATE PLAIN %s" % ir)[-1].startswith(b"a5 NO ")

    pw = wrong_password("authlogin")
    used += [pw, register_secret(b64(pw))]
    c.sendline("a6 AUTHENTICATE LOGIN")
    assert c.read_line().startswith(b"+ ")
    c.sendline(b64("alice"))
    assert c.read_line().startswith(b"+ ")
    c.sendline(b64(pw))
    assert c.read_tagged("a6")[-1].startswith(b"a6 NO ")

    gate.wait_log(r"(?s)(event=login_failed.*){6}")
    log = gate.log_text()
    assert "user=alice" in log  # the log is there, and names the user...
    for secret in used + list(DEFAULT_USERS.values()):
        assert secret not in log  # ...but never a password


# --- AUTHENTICATE -----------------------------------------------------------


def test_authenticate_plain_initial_response(gate, dovecot):
    before = dovecot.count_logins("bob")
    c = gate.connect_greeted()
    lines = c.command("a", "AUTHENTICATE PLAIN %s" % sasl_plain("bob", "bobpw"))
    assert lines[-1].startswith(b"a OK "), lines
    assert dovecot.wait_logins("bob", before + 1) == before + 1
    assert normalize_timing(c.command("n", "NOOP")[-1]) == b"n OK NOOP completed.\r\n"


def test_authenticate_plain_continuation(gate):
    c = gate.connect_greeted()
    c.sendline("a AUTHENTICATE PLAIN")
    cont = c.read_line()
    assert cont.startswith(b"+ ") or cont == b"+\r\n", cont
    c.sendline(sasl_plain("carol", DEFAULT_USERS["carol"]))
    assert c.read_tagged("a")[-1].startswith(b"a OK ")


def test_authenticate_plain_with_authzid_equal_to_user(gate):
    c = gate.connect_greeted()
    lines = c.command("a", "AUTHENTICATE PLAIN %s" % sasl_plain("bob", "bobpw", authzid="bob"))
    assert lines[-1].startswith(b"a OK "), lines


def test_authenticate_cancel(gate):
    c = gate.connect_greeted()
    c.sendline("a AUTHENTICATE PLAIN")
    assert c.read_line().startswith(b"+")
    c.sendline("*")
    line = c.read_line()
    assert line.startswith(b"a BAD "), line
    # Still usable.
    assert c.command("b", "LOGIN bob bobpw")[-1].startswith(b"b OK ")


def test_authenticate_login(gate, dovecot):
    before = dovecot.count_logins("alice")
    c = gate.connect_greeted()
    c.sendline("a AUTHENTICATE LOGIN")
    assert c.read_line() == b"+ VXNlcm5hbWU6\r\n"  # "Username:"
    c.sendline(b64("alice"))
    assert c.read_line() == b"+ UGFzc3dvcmQ6\r\n"  # "Password:"
    c.sendline(b64("alicepw"))
    assert c.read_tagged("a")[-1].startswith(b"a OK ")
    assert dovecot.wait_logins("alice", before + 1) == before + 1


def test_authenticate_wrong_password(gate):
    c = gate.connect_greeted()
    pw = wrong_password("plain")
    line = c.command("a", "AUTHENTICATE PLAIN %s" % register_secret(sasl_plain("bob", pw)))[-1]
    assert line.startswith(b"a NO "), line
    assert c.command("b", "AUTHENTICATE PLAIN %s" % sasl_plain("bob", "bobpw"))[-1].startswith(b"b OK ")


def test_authenticate_bad_base64(gate):
    c = gate.connect_greeted()
    line = c.command("a", "AUTHENTICATE PLAIN !!!notbase64!!!")[-1]
    assert line.startswith((b"a BAD ", b"a NO ")), line
    assert c.command("n", "NOOP") == [b"n OK Completed\r\n"]


def test_authenticate_unsupported_mechanism(gate):
    c = gate.connect_greeted()
    line = c.command("a", "AUTHENTICATE CRAM-MD5")[-1]
    assert line.startswith((b"a BAD ", b"a NO ")), line
    assert c.command("n", "NOOP") == [b"n OK Completed\r\n"]


@pytest.mark.parametrize("user", ["bob", "carol"])
def test_imaplib_authenticate_plain(gate, user):
    pw = DEFAULT_USERS[user]
    m = imaplib.IMAP4("127.0.0.1", gate.port, timeout=10)
    typ, _ = m.authenticate("PLAIN", lambda _challenge: ("\0%s\0%s" % (user, pw)).encode())
    assert typ == "OK"
    assert m.select("INBOX")[0] == "OK"
    m.logout()


# --- pipelining -------------------------------------------------------------


def test_pipelined_login_select_noop(gate):
    c = gate.connect_greeted()
    c.send(b"a LOGIN bob bobpw\r\nb SELECT INBOX\r\nc NOOP\r\n")
    lines = c.read_tagged("c")
    tags = [ln.split(b" ", 1)[0] for ln in lines if not ln.startswith((b"* ", b"+ "))]
    assert tags == [b"a", b"b", b"c"], lines
    assert all(re.match(rb"^[abc] OK ", ln) for ln in lines if ln[:1] in b"abc"), lines


def test_pipelined_after_failed_login(gate):
    bad = wrong_password("pipe")
    c = gate.connect_greeted()
    c.send(("a LOGIN bob %s\r\nb LOGIN bob bobpw\r\nc NOOP\r\n" % bad).encode())
    lines = c.read_tagged("c")
    tagged = [ln for ln in lines if ln[:1] in b"abc"]
    assert [ln[:5] for ln in tagged] == [b"a NO ", b"b OK ", b"c OK "], lines


# --- what the backend learns about the client -------------------------------


def test_client_id_forwarded_before_login(gate, dovecot, fresh_user):
    user, pw = fresh_user
    name = "e2e-id-" + secrets.token_hex(4)
    c = gate.connect_greeted()
    c.command("i", 'ID ("name" "%s" "version" "1.0")' % name)
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    dovecot.wait_logins(user, 1)
    id_lines = [ln for ln in dovecot.info_log_text().splitlines() if "ID sent:" in ln and name in ln]
    assert id_lines, "Dovecot never saw the client's ID"
    (login,) = dovecot.login_lines(user)
    # Same backend session as the ID.
    session = re.search(r"session=<([^>]*)>", login).group(1)
    assert any(session in ln for ln in id_lines)


def test_originating_ip_from_trusted_webmail_forwarded(make_gate, dovecot, fresh_user):
    # A trusted webmail host's ID fields reach Dovecot before LOGIN: Dovecot
    # trusts loopback, so it takes x-originating-ip as the remote address (rip=).
    gate = make_gate(trusted_webmail="127.0.0.0/8")
    user, pw = fresh_user
    c = gate.connect_greeted()
    lines = c.command("i", 'ID ("name" "webmail" "x-originating-ip" "192.0.2.55")')
    assert lines[-1] == b"i OK Completed\r\n"
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    dovecot.wait_logins(user, 1)
    (login,) = dovecot.login_lines(user)
    assert "rip=192.0.2.55" in login, login
    gate.wait_log(r"event=login .*user=%s .*rip=192\.0\.2\.55" % user)


def test_originating_ip_from_untrusted_client_dropped(gate, dovecot, fresh_user):
    # Anyone else's address claims never reach the backend, which would
    # believe them (imapproxy passed them on verbatim).
    user, pw = fresh_user
    c = gate.connect_greeted()
    lines = c.command("i", 'ID ("name" "webmail" "x-originating-ip" "192.0.2.55")')
    assert lines[-1] == b"i OK Completed\r\n"
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    dovecot.wait_logins(user, 1)
    (login,) = dovecot.login_lines(user)
    assert "rip=127.0.0.1" in login, login
    gate.wait_log(r"event=id_ignored .*reason=untrusted_address_fields")


@pytest.mark.skipif(not can_bind("127.0.0.2"), reason="cannot bind 127.0.0.2")
def test_real_client_address_reaches_backend(make_gate, dovecot, fresh_user):
    # With forward_client_address, imapgate tells Dovecot (which trusts
    # loopback) the client's real address in its pre-login ID.
    gate = make_gate(forward_client_address=True)
    user, pw = fresh_user
    c = gate.connect_greeted(src="127.0.0.2")
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    dovecot.wait_logins(user, 1)
    (login,) = dovecot.login_lines(user)
    assert "rip=127.0.0.2" in login, login


def test_base64_helper_sanity():
    # Guards the test helpers themselves.
    assert base64.b64decode(sasl_plain("u", "p")) == b"\0u\0p"
