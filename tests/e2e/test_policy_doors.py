"""
One guard for every door, with the real parts: a private Dovecot whose
auth_policy_server_url points at imapgate's policy_listen, serving IMAP and
POP3 directly and SMTP AUTH for a private Postfix (smtpd_sasl_type =
dovecot); imapgate's own IMAP front in front of the same Dovecot. Real
clients: imaplib, poplib and smtplib, from distinct loopback addresses
(127.0.0.1 is in guard_ignore by default).
"""

import imaplib
import json
import os
import poplib
import pwd
import shutil
import smtplib
import socket
import tempfile

import pytest

from harness import (can_bind, ctl, free_port, login_raw, register_secret, sasl_plain, wait_for,
                     wait_listening)

KEY = "door-key-0123456789abcdef"
NONCE = "imapgate-test-nonce"
register_secret(KEY)

pytestmark = pytest.mark.skipif(not can_bind("127.0.0.9"), reason="needs 127.0.0.0/8 source addresses")


class SrcIMAP(imaplib.IMAP4):
    def __init__(self, host, port, src):
        self._src = src
        super().__init__(host, port, timeout=10)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._src, 0))


class SrcPOP3(poplib.POP3):
    def __init__(self, host, port, src):
        self._src = src
        super().__init__(host, port, timeout=10)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._src, 0))


def imap_login(port, src, user, pw):
    """Direct IMAP LOGIN; True when logged in. A refused login (NO) is False."""
    m = SrcIMAP("127.0.0.1", port, src)
    try:
        m.login(user, pw)
        m.logout()
        return True
    except imaplib.IMAP4.error:
        return False
    finally:
        try:
            m.shutdown()
        except OSError:
            pass


def pop3_login(port, src, user, pw):
    p = SrcPOP3("127.0.0.1", port, src)
    try:
        p.user(user)
        p.pass_(pw)
        p.quit()
        return True
    except poplib.error_proto:
        return False
    finally:
        p.close()


def smtp_auth(port, src, user, pw):
    """SMTP AUTH PLAIN through Postfix; the reply code (235 ok, 535 refused)."""
    register_secret(sasl_plain(user, pw))
    s = smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(src, 0))
    try:
        s.ehlo("client.example")
        code, _ = s.docmd("AUTH", "PLAIN " + sasl_plain(user, pw))
        return code
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            s.close()


@pytest.fixture
def doors(own_dovecot, make_gate, make_postfix):
    """(dovecot, postfix, gate, user, password) wired together."""
    made = {}

    def factory(api_header="X-API-Key: " + KEY, gate_nonce=NONCE, **gate_cfg):
        for _ in range(20):  # a policy port none of Dovecot's own ports took
            pport = free_port()
            d = own_dovecot(start=False, pop3=True, sasl_socket=True,
                            policy_url="http://127.0.0.1:%d/" % pport, policy_api_header=api_header,
                            policy_nonce=NONCE)
            if pport not in (d.port, d.pop3_port):
                break
        d.start()
        user, pw = "door%d" % pport, "right-pw-%d" % pport
        register_secret(pw)
        d.add_user(user, pw)
        cfg = dict(guard_maxretry=3, guard_failure_delay=0, guard_db="none", control_socket="ctl.sock",
                   policy_listen="127.0.0.1:%d" % pport, policy_api_key=KEY, policy_hash_nonce=gate_nonce,
                   forward_client_address=True)
        cfg.update(gate_cfg)
        g = make_gate(backend=d, **cfg)
        wait_listening(pport, "4", timeout=10, proc=g.proc)
        g.pport = pport
        pf = make_postfix(d)
        made.update(d=d, pf=pf, g=g)
        return d, pf, g, user, pw
    return factory


def why(g, addr):
    return ctl(g, "why", addr)[1]


def test_failures_on_three_doors_add_up_to_one_ban_that_closes_every_door(doors):
    d, pf, g, user, pw = doors()
    src = "127.0.0.21"
    assert smtp_auth(pf.port, src, user, "wrong-1") == 535
    assert not pop3_login(d.pop3_port, src, user, "wrong-2")
    assert "not banned, 2 failure(s) counted" in why(g, src)
    mark = g.log_mark()
    assert not imap_login(d.port, src, user, "wrong-3")
    g.wait_log(r"event=ban prefix=127\.0\.0\.21/32 ", since=mark)
    out = why(g, src)
    for proto in ("smtp", "pop3", "imap"):
        assert "proto=%s reason=auth_failed status=counted" % proto in out, out
    assert "event=login_failed user=%s rip=%s proto=smtp source=policy" % (user, src) in g.log_text()
    # Every door refuses the right password now, imapgate's own listener first.
    c = g.connect_raw(src=src)
    assert c.read_line().startswith(b"* BYE ")
    c.close()
    assert smtp_auth(pf.port, src, user, pw) == 535
    assert not pop3_login(d.pop3_port, src, user, pw)
    assert not imap_login(d.port, src, user, pw)
    # Another address is not touched.
    assert smtp_auth(pf.port, "127.0.0.22", user, pw) == 235
    # Unban reopens every door.
    rc, out, _ = ctl(g, "unban", src)
    assert rc == 0 and out == "lifted 1 ban(s)\n"
    assert smtp_auth(pf.port, src, user, pw) == 235
    assert pop3_login(d.pop3_port, src, user, pw)
    assert imap_login(d.port, src, user, pw)
    c = g.connect_greeted(src=src)
    assert login_raw(c, user, pw)[-1].startswith(b"a OK")
    c.close()


def test_failure_through_imapgate_is_counted_once_and_its_ban_closes_smtp(doors):
    d, pf, g, user, pw = doors()
    src = "127.0.0.23"
    for i in range(2):
        c = g.connect_greeted(src=src)
        assert b" NO " in login_raw(c, user, "wrong-%d" % i)[-1]
        c.close()
    # imapgate counted each; Dovecot's report of the same login (same client
    # through x-originating-ip, same pwhash through the shared nonce) folded in.
    wait_for(lambda: why(g, src).count("repeats=1") == 2, 10, what="Dovecot's reports folded in")
    assert "not banned, 2 failure(s) counted" in why(g, src)
    c = g.connect_greeted(src=src)
    login_raw(c, user, "wrong-2")
    c.close()
    wait_for(lambda: "banned" in why(g, src) and "not banned" not in why(g, src), 10, what="ban")
    assert smtp_auth(pf.port, src, user, pw) == 535


def test_without_the_shared_nonce_the_same_failure_counts_twice(doors):
    """The control for the test above: it can fail."""
    d, pf, g, user, pw = doors(gate_nonce="another-nonce", guard_maxretry=10)
    src = "127.0.0.24"
    c = g.connect_greeted(src=src)
    login_raw(c, user, "wrong-x")
    c.close()
    wait_for(lambda: "2 failure(s) counted" in why(g, src), 10, what="two counted")


def test_same_wrong_password_repeated_then_right_one_is_not_banned(doors):
    d, pf, g, user, pw = doors()
    src = "127.0.0.25"
    for _ in range(6):  # a phone with an old password, over SMTP and POP3
        assert smtp_auth(pf.port, src, user, "old-password") == 535
        assert not pop3_login(d.pop3_port, src, user, "old-password")
    out = why(g, src)
    assert "not banned, 1 failure(s) counted" in out, out
    assert smtp_auth(pf.port, src, user, pw) == 235
    assert pop3_login(d.pop3_port, src, user, pw)


def test_good_logins_count_nothing(doors):
    d, pf, g, user, pw = doors()
    src = "127.0.0.26"
    for _ in range(3):
        assert smtp_auth(pf.port, src, user, pw) == 235
        assert pop3_login(d.pop3_port, src, user, pw)
        assert imap_login(d.port, src, user, pw)
    assert why(g, src) == "%s: nothing recorded\n" % src
    st = json.loads(ctl(g, "status", "--json")[1])
    assert st["policy_port"] == g.pport
    # Each login asked (allow, allow after the password, report): 27 or so.
    out = ctl(g, "status")[1]
    n = int(out.split("policy_requests_total ")[1].split()[0])
    assert n >= 27 and "guard_failures_total 0\n" in out, out


def test_wrong_key_is_refused_and_dovecot_goes_on(doors):
    d, pf, g, user, pw = doors(api_header="X-API-Key: not-the-right-key-000000")
    src = "127.0.0.27"
    mark = g.log_mark()
    assert smtp_auth(pf.port, src, user, "wrong") == 535
    assert smtp_auth(pf.port, src, user, pw) == 235  # reject_on_fail = no
    g.wait_log(r"event=policy_bad_request client=127\.0\.0\.1 status=401 ", since=mark)
    assert why(g, src) == "%s: nothing recorded\n" % src


@pytest.fixture
def state_dir():
    """A directory the daemon's run user (nobody, as root) can write."""
    path = tempfile.mkdtemp(prefix="imapgate-policy-state-")
    os.chmod(path, 0o755)
    if os.geteuid() == 0:
        nb = pwd.getpwnam("nobody")
        os.chown(path, nb.pw_uid, nb.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_policy_server_down_logins_go_on_and_bans_survive_restart(doors, state_dir):
    d, pf, g, user, pw = doors(guard_db=os.path.join(state_dir, "guard.db"))
    src = "127.0.0.28"
    for i in range(3):
        smtp_auth(pf.port, src, user, "wrong-%d" % i)
    assert smtp_auth(pf.port, src, user, pw) == 535
    assert g.stop() == 0
    # Dovecot cannot reach the policy server: auth_policy_reject_on_fail = no.
    assert smtp_auth(pf.port, "127.0.0.29", user, pw) == 235
    assert pop3_login(d.pop3_port, src, user, pw)
    g.start()
    wait_listening(g.pport, "4", timeout=10, proc=g.proc)
    assert smtp_auth(pf.port, src, user, pw) == 535
    assert "banned" in why(g, src)
