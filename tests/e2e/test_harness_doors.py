"""
The doors an auth policy server has to watch, without imapgate: a private Dovecot
with IMAP, POP3 and a SASL socket for a private Postfix (SMTP AUTH), asking a
PolicyRecorder before and after every authentication. These prove the harness
pieces the issue 11 tests build on, and pin what Dovecot 2.3 sends a policy server.
"""

import imaplib
import poplib
import time
from types import SimpleNamespace

import pytest

from harness import RawClient, policy_pwhash, register_secret

API_KEY = "imapgate-test-api-key"
NONCE = "imapgate-test-nonce"
WRONG = register_secret("wrong-doors-pw")
PROTOCOLS = ("imap", "pop3", "smtp")

ALLOW_KEYS = ["device_id", "login", "protocol", "pwhash", "remote", "session_id", "tls"]
REPORT_KEYS = ["device_id", "login", "protocol", "pwhash", "remote", "session_id",
               "success", "policy_reject", "tls"]


@pytest.fixture
def make_doors(own_dovecot, make_postfix, policy_server):
    """Factory: a Dovecot (IMAP, POP3, SASL socket) asking policy_server, and a Postfix
    in front of its SASL socket (None when Postfix cannot run here)."""

    def factory(**dovecot_kw):
        kw = dict(pop3=True, sasl_socket=True, policy_url=policy_server.url, policy_api_header=API_KEY)
        kw.update(dovecot_kw)
        d = own_dovecot(**kw)
        try:
            pf = make_postfix(d)
        except pytest.skip.Exception:
            pf = None
        return SimpleNamespace(dovecot=d, postfix=pf, rec=policy_server)

    return factory


@pytest.fixture
def doors(make_doors):
    return make_doors()


def login(doors, protocol, user, password):
    """Log in through one door; (succeeded, server's answer as text)."""
    d = doors.dovecot
    if protocol == "imap":
        m = imaplib.IMAP4("127.0.0.1", d.port, timeout=10)
        try:
            typ, data = m.login(user, password)
            m.logout()
            return True, "%s %r" % (typ, data)
        except imaplib.IMAP4.error as e:
            return False, str(e)
    if protocol == "pop3":
        p = poplib.POP3("127.0.0.1", d.pop3_port, timeout=10)
        try:
            p.user(user)
            answer = p.pass_(password).decode()
            p.quit()
            return True, answer
        except poplib.error_proto as e:
            return False, str(e)
    if protocol == "smtp":
        if doors.postfix is None:
            pytest.skip("Postfix cannot run here (needs root and the postfix package)")
        code, text = doors.postfix.auth(user, password)
        return code == 235, "%d %s" % (code, text)
    raise ValueError(protocol)


def test_pop3_login_good_and_bad(doors):
    assert login(doors, "pop3", "alice", "alicepw")[0]
    ok, answer = login(doors, "pop3", "alice", WRONG)
    assert not ok and "-ERR" in answer
    assert doors.dovecot.wait_logins("alice", 1, protocol="pop3") == 1
    assert doors.dovecot.count_logins("alice") == 0          # IMAP count unaffected


def test_smtp_auth_good_and_bad(doors):
    ok, answer = login(doors, "smtp", "bob", "bobpw")
    assert ok and answer.startswith("235 "), answer
    ok, answer = login(doors, "smtp", "bob", WRONG)
    assert not ok and answer.startswith("535 "), answer
    doors.postfix.wait_log(r"SASL PLAIN authentication failed.*sasl_username=bob")
    # smtpd offers AUTH only because it reached Dovecot's socket.
    s = doors.postfix.smtp()
    try:
        assert "PLAIN" in s.esmtp_features.get("auth", "")
    finally:
        s.quit()


def _one_login_requests(rec, protocol, n):
    """The n requests of one login (the recorder is cleared before each)."""
    reqs = rec.wait_requests(n, protocol=protocol)
    # Nothing more is on its way: the report is the last call of a login.
    assert reqs[-1].command == "report", reqs
    assert len(rec.requests) == n, rec.requests
    return reqs


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_policy_requests_of_good_and_bad_logins(doors, protocol):
    rec = doors.rec
    user, pw = "alice", "alicepw"

    rec.clear()
    assert login(doors, protocol, user, pw)[0]
    good = _one_login_requests(rec, protocol, 3)
    assert [r.command for r in good] == ["allow", "allow", "report"]

    rec.clear()
    assert not login(doors, protocol, user, WRONG)[0]
    bad = _one_login_requests(rec, protocol, 2)
    # No after-auth check when the password is wrong.
    assert [r.command for r in bad] == ["allow", "report"]

    for reqs, password, success in ((good, pw, True), (bad, WRONG, False)):
        for r in reqs:
            assert r.method == "POST" and r.path == "/policy" and r.query == {"command": r.command}
            assert r.header("X-API-Key") == API_KEY
            assert r.header("Content-Type") == "application/json"
            assert r.header("User-Agent") == "dovecot/auth-policy-client"
            assert list(r.json) == (REPORT_KEYS if r.command == "report" else ALLOW_KEYS)
            assert r["login"] == user and r["protocol"] == protocol
            assert r["remote"] == "127.0.0.1"
            assert r["pwhash"] == policy_pwhash(NONCE, user, password)
            assert r["device_id"] == "" and r["tls"] is False
            # Postfix passes no session to Dovecot; the login processes do.
            if protocol == "smtp":
                assert r["session_id"] == ""
            else:
                assert r["session_id"] and r["session_id"] == reqs[0]["session_id"]
        assert reqs[-1]["success"] is success and reqs[-1]["policy_reject"] is False


def test_forwarded_address_is_the_remote(doors):
    # 127.0.0.0/8 is in login_trusted_networks: the ID's x-originating-ip (what imapgate
    # sends) is the remote Dovecot reports.
    with RawClient("127.0.0.1", doors.dovecot.port) as c:
        c.read_line()
        c.command("i", 'ID ("x-originating-ip" "192.0.2.55")')
        assert c.command("a", "LOGIN bob bobpw")[-1].startswith(b"a OK ")
    reqs = doors.rec.wait_requests(3, login="bob")
    assert {r["remote"] for r in reqs} == {"192.0.2.55"}


def test_one_keep_alive_connection_carries_the_requests(doors):
    for n, protocol in ((3, "imap"), (6, "pop3")):
        assert login(doors, protocol, "carol", 'p@ss w"r\\d')[0]
        # The report may still be in flight when the client is logged in; a request
        # made meanwhile could take a second connection.
        reqs = doors.rec.wait_requests(n)
    assert len({r.conn for r in reqs}) == 1
    assert [r.seq for r in reqs] == list(range(1, 7))
    assert all(r.header("Connection") == "Keep-Alive" for r in reqs)
    assert all(r.raw.startswith(b"POST /policy?command=%s HTTP/1.1\r\n" % r.command.encode()) for r in reqs)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_policy_refusal_closes_every_door(doors, protocol):
    rec = doors.rec
    rec.respond("allow", {"status": -1, "msg": "banned"})
    ok, answer = login(doors, protocol, "alice", "alicepw")
    assert not ok, answer
    # Dovecot hands the policy server's msg on to the client, on every door.
    assert "banned" in answer
    reqs = rec.wait_requests(2, protocol=protocol)
    assert [r.command for r in reqs] == ["allow", "report"]
    assert reqs[-1]["success"] is False and reqs[-1]["policy_reject"] is True
    # The right password is still right once the policy server allows again.
    rec.respond("allow", None)
    assert login(doors, protocol, "alice", "alicepw")[0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_policy_server_down_allows_by_default(doors, protocol):
    doors.rec.stop()
    t = time.monotonic()
    ok, answer = login(doors, protocol, "alice", "alicepw")
    assert ok, answer
    assert time.monotonic() - t < 2, "a refused connection should not wait for the timeout"
    assert not login(doors, protocol, "alice", WRONG)[0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_policy_server_down_rejects_with_reject_on_fail(make_doors, protocol):
    doors = make_doors(policy_reject_on_fail=True)
    assert login(doors, protocol, "alice", "alicepw")[0]
    doors.rec.stop()
    ok, answer = login(doors, protocol, "alice", "alicepw")
    assert not ok, answer
    assert "Policy server HTTP error" in doors.dovecot.log_text()
