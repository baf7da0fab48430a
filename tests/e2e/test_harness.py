"""
The test backend itself: a private Dovecot, its users, mail delivery, login
counting and restarts. No imapgate here; these prove the harness that every
other test relies on.
"""

import imaplib
import subprocess

import pytest

from harness import DEFAULT_USERS, RawClient, have_ipv6, make_message, quote


def direct(dovecot, host="127.0.0.1"):
    return imaplib.IMAP4(host, dovecot.port, timeout=10)


def test_default_users_log_in_directly(dovecot):
    for user, pw in DEFAULT_USERS.items():
        before = dovecot.count_logins(user)
        m = direct(dovecot)
        typ, data = m.login(user, pw)
        assert typ == "OK", (user, data)
        m.logout()
        assert dovecot.wait_logins(user, before + 1) == before + 1


def test_password_needing_quotes_raw(dovecot):
    # carol's password has a space, a quote and a backslash: IMAP quoting matters.
    pw = DEFAULT_USERS["carol"]
    assert " " in pw and '"' in pw and "\\" in pw
    with RawClient("127.0.0.1", dovecot.port) as c:
        assert c.read_line().startswith(b"* OK ")
        assert c.command("a", "LOGIN carol %s" % quote(pw))[-1].startswith(b"a OK ")


def test_wrong_password_is_refused_and_good_one_is_not_delayed(dovecot):
    with RawClient("127.0.0.1", dovecot.port) as c:
        c.read_line()
        assert c.command("a", "LOGIN bob wrong-harness-pw")[-1].startswith(b"a NO ")
        assert c.command("b", "LOGIN bob bobpw", timeout=3)[-1].startswith(b"b OK ")


def test_deliver_then_fetch(dovecot, fresh_user):
    user, pw = fresh_user
    msg = make_message(subject="harness-delivery")
    dovecot.deliver(user, msg)
    m = direct(dovecot)
    m.login(user, pw)
    typ, data = m.select("INBOX")
    assert (typ, data) == ("OK", [b"1"])
    typ, data = m.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK"
    assert data[0][1] == msg
    m.logout()


def test_set_password_takes_effect(dovecot, fresh_user):
    user, pw = fresh_user
    dovecot.set_password(user, pw + "-new")
    m = direct(dovecot)
    with pytest.raises(imaplib.IMAP4.error):
        m.login(user, pw)
    m = direct(dovecot)
    assert m.login(user, pw + "-new")[0] == "OK"
    m.logout()


def test_id_and_trusted_originating_ip_are_logged(dovecot, fresh_user):
    user, pw = fresh_user
    with RawClient("127.0.0.1", dovecot.port) as c:
        c.read_line()
        c.command("i", 'ID ("name" "harness-id" "x-originating-ip" "192.0.2.77")')
        assert c.command("a", "LOGIN %s %s" % (user, pw))[-1].startswith(b"a OK ")
    dovecot.wait_logins(user, 1)
    (line,) = dovecot.login_lines(user)
    assert "rip=192.0.2.77" in line
    assert "ID sent: name=harness-id" in dovecot.info_log_text()


def test_restart(own_dovecot):
    d = own_dovecot()
    port = d.port
    d.restart()
    assert d.port == port and d.running()
    m = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    assert m.login("alice", "alicepw")[0] == "OK"
    m.logout()
    d.stop()
    assert not d.running()
    with pytest.raises(OSError):
        imaplib.IMAP4("127.0.0.1", port, timeout=2)


@pytest.mark.skipif(not have_ipv6(), reason="no ::1")
def test_ipv6_listener(dovecot):
    m = imaplib.IMAP4("::1", dovecot.port, timeout=10)
    assert m.login("alice", "alicepw")[0] == "OK"
    m.logout()


def test_config_is_self_contained(dovecot):
    # doveconf parses our file without reading /etc/dovecot.
    p = subprocess.run(["doveconf", "-c", str(dovecot.conf_path), "-n"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    assert "/etc/dovecot" not in p.stdout
    assert "instance_name = %s" % dovecot.instance in p.stdout
