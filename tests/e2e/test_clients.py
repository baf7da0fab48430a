"""
Real client programs through imapgate: curl's IMAP client (LOGIN, SELECT,
FETCH by UID, its own pipelining and LOGOUT) against the same bytes direct.
"""

import shutil
import subprocess

import pytest

from harness import make_message

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed (scripts/deps.sh)")


def curl(port, user, pw, path, *extra):
    p = subprocess.run(["curl", "-sS", "--max-time", "10", "--user", "%s:%s" % (user, pw)] + list(extra)
                       + ["imap://127.0.0.1:%d/%s" % (port, path)], capture_output=True, timeout=20)
    return p.returncode, p.stdout, p.stderr


def test_curl_fetches_a_message(gate, dovecot, fresh_user):
    user, pw = fresh_user
    msg = make_message(subject="via curl", body="hello from curl")
    dovecot.deliver(user, msg)
    rc, out, err = curl(gate.port, user, pw, "INBOX;UID=1")
    assert rc == 0, err
    assert out == msg
    rc, direct, _ = curl(dovecot.port, user, pw, "INBOX;UID=1")
    assert out == direct


def test_curl_custom_command_and_wrong_password(gate, dovecot, fresh_user):
    user, pw = fresh_user
    rc, out, err = curl(gate.port, user, pw, "", "-X", "STATUS INBOX (MESSAGES)")
    assert rc == 0, err
    assert out.startswith(b"* STATUS INBOX (MESSAGES ")
    rc, out, err = curl(gate.port, user, "not-" + pw, "INBOX;UID=1")
    assert rc == 67, (rc, err)  # CURLE_LOGIN_DENIED
