"""
Webmail and the guard: a trusted_webmail host that sends no
x-originating-ip is never counted nor banned, its failures count per user,
and imapgate warns once per host; Debian's real Roundcube with
contrib/roundcube/imapgate_origin sends the browser's address, so a
guessing browser is banned and the webmail host and other browsers are not.
"""

import http.client
import http.cookiejar
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse

import pytest

from harness import can_bind, login_raw, register_secret, wait_for

pytestmark = pytest.mark.skipif(not can_bind("127.0.0.2"), reason="needs 127.0.0.0/8 source addresses")

FAST = dict(guard_maxretry=3, guard_failure_delay=0, guard_db="none", guard_user_delay_max=0)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RC_DIR = "/usr/share/roundcube"
PLUGIN = os.path.join(REPO, "contrib", "roundcube", "imapgate_origin")


def wrong():
    return register_secret("wrong-" + secrets.token_hex(4))


def no_origin_fail(g, src, user):
    """A webmail-like login without ID from src; returns the tagged reply."""
    c = g.connect_greeted(src=src)
    lines = login_raw(c, user, wrong())
    c.close()
    return lines[-1]


def test_webmail_without_origin_is_counted_per_user_never_banned(make_gate, fresh_user):
    # 127.0.0.12 is not in guard_ignore, 127.0.0.1 is (the default): both
    # are trusted webmail hosts and count per user, never per host.
    g = make_gate(trusted_webmail="127.0.0.12/32 127.0.0.1/32", **FAST)
    user, pw = fresh_user
    for i in range(5):
        assert no_origin_fail(g, "127.0.0.12", user).startswith(b"a NO [AUTHENTICATIONFAILED]")
        g.wait_log(r"event=login_failed .*client=127\.0\.0\.12:\d+ rip=127\.0\.0\.12 .*"
                   r"guard=user_only .*user_failures=%d\b" % (i + 1))
    for i in range(2):
        assert no_origin_fail(g, "127.0.0.1", user).startswith(b"a NO [AUTHENTICATIONFAILED]")
        g.wait_log(r"event=login_failed .*client=127\.0\.0\.1:\d+ .*guard=user_only .*user_failures=%d\b" % (i + 6))
    # The host is not banned: its users still log in.
    c = g.connect_greeted(src="127.0.0.12")
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    c.close()
    log = g.log_text()
    assert "event=ban " not in log
    assert len(re.findall(r"event=webmail_no_origin host=127\.0\.0\.12 hint=\".*imapgate_origin", log)) == 1
    assert len(re.findall(r"event=webmail_no_origin host=127\.0\.0\.1 ", log)) == 1


def test_guard_ignore_alone_still_counts_nothing(make_gate, fresh_user):
    g = make_gate(**FAST)
    user, _ = fresh_user
    for _ in range(4):
        assert no_origin_fail(g, "127.0.0.1", user).startswith(b"a NO ")
    g.wait_log(r"event=login_failed .*client=127\.0\.0\.1:\d+ .*guard=ignored")
    assert "event=ban " not in g.log_text()
    assert "webmail_no_origin" not in g.log_text()
