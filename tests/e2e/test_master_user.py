"""
imapproxy's master-user mode (auth_sasl_plain_username, auth_sasl_plain_password,
auth_shared_secret): clients log in with any user and the shared secret;
imapgate logs in as the master user for them (AUTHENTICATE PLAIN with the
client's user as authorization identity). Fixes imapproxy's bypass: the
secret is compared whole, in constant time ("" and prefixes fail), and a
wrong secret never reaches the backend.
"""

import base64

import pytest

from harness import login_raw, register_secret

SECRET = register_secret("the-shared-secret-42")
MASTER_PW = register_secret("master-pw-9")


@pytest.fixture
def master_dovecot(own_dovecot, tmp_path):
    d = own_dovecot(start=False)
    masters = d.dir / "masters"
    masters.write_text("webmaster:{PLAIN}%s::::::\n" % MASTER_PW)
    masters.chmod(0o644)
    d.extra_conf = """
passdb {
  driver = passwd-file
  master = yes
  pass = yes
  args = scheme=PLAIN %s
}
""" % masters
    d._write_conf()  # the config was written at construction
    register_secret(base64.b64encode(b"alice\0webmaster\0" + MASTER_PW.encode()).decode())
    d.start()
    return d


@pytest.fixture
def master_gate(make_gate, master_dovecot):
    return make_gate(backend=master_dovecot, auth_sasl_plain_username="webmaster",
                     auth_sasl_plain_password=MASTER_PW, auth_shared_secret=SECRET, guard_db="none")


def test_shared_secret_logs_in_as_the_user(master_gate, master_dovecot):
    c = master_gate.connect_greeted()
    assert login_raw(c, "alice", SECRET)[-1].startswith(b"a OK ")
    # The session is alice's own.
    lines = c.command("n", "NAMESPACE")
    assert lines[-1].startswith(b"n OK")
    master_dovecot.wait_logins("alice", 1)
    (line,) = master_dovecot.login_lines("alice")
    assert "method=PLAIN" in line


@pytest.mark.parametrize("attempt", ["", "the-shared", "the-shared-secret-42x", "alicepw"])
def test_wrong_or_partial_secret_never_reaches_the_backend(master_gate, master_dovecot, attempt):
    register_secret(attempt)
    c = master_gate.connect_greeted()
    assert login_raw(c, "alice", attempt)[-1] == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    master_gate.wait_log(r"event=login_failed .*user=alice .*reason=auth_failed")
    # Dovecot saw no login attempt at all for it.
    assert "alice" not in master_dovecot.log_text()


def test_master_mode_needs_all_three_keys(make_gate, dovecot):
    from harness import run_check
    rc, out = run_check("server_hostname 127.0.0.1\nlisten 127.0.0.1:1\nauth_shared_secret x\n")
    assert rc == 1
    assert "auth_sasl_plain_username" in out or "auth_sasl_plain_password" in out
