"""
Before login: greeting, CAPABILITY, NOOP, LOGOUT, ID, and the hard bounds on
what an unauthenticated client may send (invalid tags, unknown commands, long
lines, big literals, idling).
"""

import re
import time

import pytest

from harness import wait_for


def tagged(lines, tag):
    t = tag.encode() + b" "
    return [ln for ln in lines if ln.startswith(t)]


def test_greeting(gate):
    c = gate.connect_raw()
    line = c.read_line()
    assert line.startswith(b"* OK "), line
    assert line.endswith(b"\r\n")
    assert b"imapgate" in line.lower()


def test_capability_before_login(gate):
    c = gate.connect_greeted()
    lines = c.command("a", "CAPABILITY")
    assert len(lines) == 2, lines
    cap, done = lines
    assert cap.startswith(b"* CAPABILITY "), cap
    words = cap.split()
    assert b"IMAP4rev1" in words  # taken from the backend
    assert b"XIMAPPROXY" not in words  # admin commands are off by default
    auth = {w.upper() for w in words if w.upper().startswith(b"AUTH=")}
    assert auth <= {b"AUTH=PLAIN", b"AUTH=LOGIN"}, auth
    assert done == b"a OK Completed\r\n"


def test_capability_with_admin_commands(make_gate):
    g = make_gate(enable_admin_commands=True)
    c = g.connect_greeted()
    cap = c.command("a", "CAPABILITY")[0]
    assert cap.startswith(b"* CAPABILITY ")
    assert b"XIMAPPROXY" in cap.split()


def test_noop(gate):
    c = gate.connect_greeted()
    assert c.command("n1", "NOOP") == [b"n1 OK Completed\r\n"]
    # Command names are case-insensitive.
    assert c.command("n2", "noop") == [b"n2 OK Completed\r\n"]


def test_logout_before_login(gate):
    c = gate.connect_greeted()
    c.sendline("z LOGOUT")
    assert c.read_line() == b"* BYE LOGOUT received\r\n"
    assert c.read_line() == b"z OK Completed\r\n"
    assert c.expect_closed(timeout=3) == b""


def test_id(gate):
    c = gate.connect_greeted()
    lines = c.command("i", 'ID ("name" "x")')
    assert len(lines) == 2, lines
    assert lines[0].startswith(b"* ID "), lines
    assert lines[1] == b"i OK Completed\r\n"
    # ID NIL is valid too, and the session goes on.
    lines = c.command("j", "ID NIL")
    assert lines[0].startswith(b"* ID ") and lines[-1] == b"j OK Completed\r\n"
    assert c.command("n", "NOOP") == [b"n OK Completed\r\n"]


@pytest.mark.parametrize("bad", [b"***", b"a{b", b"a%b", b"a\"b"], ids=["stars", "brace", "percent", "quote"])
def test_invalid_tag_is_not_echoed(gate, bad):
    c = gate.connect_greeted()
    c.send(bad + b" NOOP\r\n")
    line = c.read_line()
    assert line.startswith(b"* BAD Invalid tag"), line
    assert bad not in line
    # One bad command does not end the session.
    assert c.command("n", "NOOP") == [b"n OK Completed\r\n"]


def test_unknown_command(gate):
    c = gate.connect_greeted()
    line = c.command("a", "FROBNICATE now")[-1]
    assert line.startswith(b"a BAD "), line
    assert c.command("n", "NOOP") == [b"n OK Completed\r\n"]


def test_commands_needing_login_are_refused(gate):
    c = gate.connect_greeted()
    line = c.command("a", "SELECT INBOX")[-1]
    assert line.startswith((b"a BAD ", b"a NO ")), line


def test_too_many_bad_commands(gate):
    # Default max_bad_commands 3: two are answered, the third ends the session.
    c = gate.connect_greeted()
    assert c.command("b1", "FOO")[-1].startswith(b"b1 BAD ")
    assert c.command("b2", "FOO")[-1].startswith(b"b2 BAD ")
    assert c.is_open()
    c.sendline("b3 FOO")
    lines = c.read_until(rb"^\* BYE ", timeout=5)
    assert all(ln.startswith(b"b3 BAD ") for ln in lines[:-1]), lines
    c.expect_closed(timeout=3)


def test_max_bad_commands_setting(make_gate):
    g = make_gate(max_bad_commands=5)
    c = g.connect_greeted()
    for i in range(4):
        assert c.command("b%d" % i, "FOO")[-1].startswith(b"b%d BAD " % i)
    assert c.is_open()
    c.sendline("b5 FOO")
    c.read_until(rb"^\* BYE ", timeout=5)
    c.expect_closed(timeout=3)


def _send_ignoring_close(c, data):
    try:
        c.send(data)
    except OSError:
        pass  # the server may close while we are still writing


def test_oversized_line_with_crlf(gate):
    c = gate.connect_greeted()
    _send_ignoring_close(c, b"a NOOP " + b"x" * 9000 + b"\r\n")
    data = c.expect_closed(timeout=5)
    assert b"* BYE " in data, data[:200]
    assert b"OK" not in data.split(b"* BYE ")[0]


def test_oversized_line_without_crlf(gate):
    # The bound applies while the line is still incomplete.
    c = gate.connect_greeted()
    _send_ignoring_close(c, b"a LOGIN bob " + b"y" * 9000)
    data = c.expect_closed(timeout=5)
    assert data.startswith(b"* BYE "), data[:200]


def test_long_line_under_the_limit_is_not_fatal(gate):
    c = gate.connect_greeted()
    line = c.command("a", "X" + "x" * 8000)[-1]
    assert line.startswith(b"a BAD "), line[:100]
    assert c.command("n", "NOOP") == [b"n OK Completed\r\n"]


def test_max_line_length_setting(make_gate):
    g = make_gate(max_line_length=1024)
    c = g.connect_greeted()
    assert c.command("a", "X" + "x" * 900)[-1].startswith(b"a BAD ")
    _send_ignoring_close(c, b"b " + b"x" * 2000 + b"\r\n")
    data = c.expect_closed(timeout=5)
    assert b"* BYE " in data, data[:200]


def test_literal_over_preauth_limit_gets_no_continuation(gate):
    c = gate.connect_greeted()
    c.send(b"a LOGIN bob {100000}\r\n")
    line = c.read_line()
    assert line.startswith(b"a BAD "), line
    assert not line.startswith(b"+")
    # Nothing else was sent (in particular no "+" continuation).
    assert not c.read_available(0.3).startswith(b"+")


def test_nonsync_literal_over_preauth_limit(gate, dovecot):
    before = dovecot.count_logins("bob")
    c = gate.connect_greeted()
    c.send(b"a LOGIN bob {100000+}\r\n")
    _send_ignoring_close(c, b"z" * 100000 + b"\r\n")
    try:
        line = c.read_line(timeout=5)
    except EOFError as e:
        line = e.data
    assert line.startswith((b"a BAD ", b"* BYE ")), line[:200]
    assert dovecot.count_logins("bob") == before


def test_literal_within_limit_gets_continuation(gate):
    c = gate.connect_greeted()
    c.send(b"a LOGIN {3}\r\n")
    line = c.read_line()
    assert line.startswith(b"+ "), line
    c.send(b"bob {5}\r\n")
    assert c.read_line().startswith(b"+ ")
    c.send(b"bobpw\r\n")
    assert c.read_tagged("a")[-1].startswith(b"a OK ")


def test_auth_timeout(make_gate):
    g = make_gate(auth_timeout=1)
    c = g.connect_greeted()
    t0 = time.monotonic()
    line = c.read_line(timeout=4)
    assert line.startswith(b"* BYE "), line
    c.expect_closed(timeout=4 - (time.monotonic() - t0))
    assert time.monotonic() - t0 < 3.5


def test_auth_timeout_not_reset_by_noop(make_gate):
    # Chatting without logging in does not buy time.
    g = make_gate(auth_timeout=2)
    c = g.connect_greeted()
    t0 = time.monotonic()
    got_bye = False
    while time.monotonic() - t0 < 5:
        try:
            c.sendline("n NOOP")
            lines = c.read_until(rb"^(n OK|\* BYE )", timeout=1)
        except (EOFError, OSError):
            break
        if lines[-1].startswith(b"* BYE "):
            got_bye = True
            break
        time.sleep(0.25)
    assert got_bye or not c.is_open(), "session outlived auth_timeout"
    assert time.monotonic() - t0 < 4.5


def test_many_short_commands_in_one_packet(gate):
    c = gate.connect_greeted()
    c.send(b"".join(b"n%d NOOP\r\n" % i for i in range(50)))
    lines = c.read_tagged("n49")
    assert [ln for ln in lines if re.match(rb"^n\d+ ", ln)] == [b"n%d OK Completed\r\n" % i for i in range(50)]


# RFC 2971 section 3.3: fields at most 30 octets, values at most 1024, at
# most 30 pairs. Dovecot's imaptest "id" test sends exactly that before
# login (about 32 KB on one line, four times max_line_length).
ID_FIELD_MAX, ID_VALUE_MAX, ID_PAIRS_MAX = 30, 1024, 30


def _id_pairs(n_pairs, field_len=ID_FIELD_MAX, value_len=ID_VALUE_MAX, salt=""):
    """[(field, value)], each field unique, each value recognisable."""
    pairs = []
    for i in range(n_pairs):
        field = ("f%02d-" % i).ljust(field_len, "k")
        value = ("v%02d:%s:" % (i, salt) + "0123456789abcdef" * (value_len // 16 + 1))[:value_len]
        pairs.append((field, value))
    return pairs


def _send_id(c, tag, pairs, forms=("quoted",)):
    """Send ID with each string in the next form: quoted, sync ({n}, waiting
    for the '+') or nonsync ({n+}). Returns the lines up to the tagged reply."""
    strings = [s for p in pairs for s in p]
    out = b"%s ID (" % tag.encode()
    for i, s in enumerate(strings):
        form = forms[i % len(forms)]
        sep = b" " if i else b""
        if form == "quoted":
            out += sep + b'"' + s.encode() + b'"'
        elif form == "nonsync":
            out += sep + b"{%d+}\r\n" % len(s) + s.encode()
        else:
            c.send(out + sep + b"{%d}\r\n" % len(s))
            assert c.read_line().startswith(b"+ ")
            out = s.encode()
    c.send(out + b")\r\n")
    return c.read_tagged(tag)


@pytest.mark.parametrize("forms", [("quoted",), ("sync", "nonsync", "quoted")], ids=["quoted", "literals"])
def test_id_rfc_maxima_accepted_and_forwarded(gate, dovecot, fresh_user, forms):
    user, pw = fresh_user
    pairs = _id_pairs(ID_PAIRS_MAX, salt=user)
    c = gate.connect_greeted()
    lines = _send_id(c, "i", pairs, forms)
    assert len(lines) == 2, lines
    assert lines[0].startswith(b"* ID ("), lines
    assert lines[1] == b"i OK Completed\r\n"
    assert c.command("a", "LOGIN %s %s" % (user, pw))[-1].startswith(b"a OK ")
    dovecot.wait_logins(user, 1)
    # Dovecot (imap_id_log = *) logs the ID it got, each value cut at 80
    # octets: every pair arrived, in order.
    sent = "ID sent: " + ", ".join("%s=%s" % (f, v[:60]) for f, v in pairs[:1])
    wait_for(lambda: sent in dovecot.info_log_text(), 5, what="Dovecot's ID log line")
    (line,) = [ln for ln in dovecot.info_log_text().splitlines() if sent in ln]
    pos = [line.find("%s=%s" % (f, v[:60])) for f, v in pairs]
    assert -1 not in pos and pos == sorted(pos), pos
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")


@pytest.mark.parametrize(
    "pairs, text",
    [
        (_id_pairs(ID_PAIRS_MAX + 1), b"Too many ID fields"),
        (_id_pairs(ID_PAIRS_MAX + 1, 8, 8), b"Too many ID fields"),
        (_id_pairs(2, value_len=ID_VALUE_MAX + 1), b"ID value too long"),
        (_id_pairs(2, field_len=ID_FIELD_MAX + 1), b"ID field name too long"),
    ],
    ids=["31_pairs", "31_short_pairs", "1025_octet_value", "31_octet_field"],
)
def test_id_over_rfc_maxima_is_bad_not_fatal(gate, pairs, text):
    c = gate.connect_greeted()
    lines = _send_id(c, "i", pairs)
    assert len(lines) == 1, lines
    assert lines[0].startswith(b"i BAD " + text), lines
    assert b"RFC 2971" in lines[0]
    assert c.command("n", "NOOP") == [b"n OK Completed\r\n"]


def test_id_value_literal_over_maximum_gets_no_continuation(gate):
    c = gate.connect_greeted()
    c.send(b'i ID ("name" {1025}\r\n')
    line = c.read_line()
    assert line.startswith(b"i BAD ID value too long"), line
    assert c.command("n", "NOOP") == [b"n OK Completed\r\n"]


def test_endless_line_closed_before_auth_timeout(make_gate):
    # An invalid tag, then 1 MiB without CRLF: once over every bound a
    # command line may have, the session ends (not at auth_timeout).
    g = make_gate(auth_timeout=600)
    mark = g.log_mark()
    c = g.connect_greeted()
    t0 = time.monotonic()
    chunk = b"x" * 65536
    for _ in range(16):
        try:
            c.send(chunk)
        except OSError:
            break  # closed while we were still writing
    data = c.expect_closed(timeout=5)
    assert time.monotonic() - t0 < 5
    assert data == b"* BAD Invalid tag\r\n* BYE Line too long\r\n", data[:200]
    g.wait_log(r"event=protocol_error .*reason=line_too_long", since=mark)


def test_endless_id_line_closed(make_gate):
    # An ID is bounded by RFC 2971's maxima, not max_line_length: a line
    # that goes on past them is closed too.
    g = make_gate(auth_timeout=600)
    c = g.connect_greeted()
    _send_ignoring_close(c, b"i ID (" + b" " * (1 << 20))
    data = c.expect_closed(timeout=5)
    assert data == b"* BYE Line too long\r\n", data[:200]
