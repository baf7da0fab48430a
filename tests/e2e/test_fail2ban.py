"""
contrib/fail2ban against a log imapgate really wrote, judged by Debian's
real fail2ban-regex: exactly the failed logins match, each with the real
client address (socket, PROXY source or trusted webmail origin).
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import RawClient, can_bind, login_raw, register_secret

FILTER = Path(__file__).resolve().parents[2] / "contrib" / "fail2ban" / "filter.d" / "imapgate.conf"

pytestmark = [
    pytest.mark.skipif(shutil.which("fail2ban-regex") is None, reason="fail2ban not installed (scripts/deps.sh)"),
    pytest.mark.skipif(not can_bind("127.0.0.2"), reason="needs 127.0.0.0/8 source addresses"),
]


def test_fail2ban_regex_matches_exactly_the_failures(make_gate, dovecot, fresh_user):
    g = make_gate(start=False, guard_maxretry=10, guard_failure_delay=0, guard_db="none",
                  trusted_webmail="127.0.0.20/32", trusted_proxies="127.0.0.1/32")
    pport = g.add_listener("proxy_protocol")
    g.start()
    user, pw = fresh_user
    bad = register_secret("f2b-wrong-pw")
    expected = []

    def fail(c):
        assert login_raw(c, user, bad)[-1].startswith(b"a NO ")

    # Direct clients.
    for src in ["127.0.0.2", "127.0.0.2", "127.0.0.3"]:
        fail(g.connect_greeted(src=src))
        expected.append(src)
    # Behind a trusted webmail host: the origin, not the host.
    c = g.connect_greeted(src="127.0.0.20")
    c.command("i", 'ID ("x-originating-ip" "192.0.2.80")')
    fail(c)
    expected.append("192.0.2.80")
    # The same host without an origin: counted per user, never the host's address.
    fail(g.connect_greeted(src="127.0.0.20"))
    g.wait_log(r"event=login_failed .*rip=127\.0\.0\.20 reason=auth_failed guard=user_only")
    # Behind a balancer: the PROXY source, IPv6 too.
    c = RawClient("127.0.0.1", pport)
    g.clients.append(c)
    c.send(b"PROXY TCP6 2001:db8::44 ::1 5000 143\r\n")
    assert c.read_line().startswith(b"* OK")
    fail(c)
    expected.append("2001:db8::44")
    # Things that must not match: a success, a backend outage, protocol noise.
    ok = g.connect_greeted(src="127.0.0.4")
    assert login_raw(ok, user, pw)[-1].startswith(b"a OK ")
    noisy = g.connect_greeted(src="127.0.0.5")
    noisy.command("z", "FOO")
    g.wait_log(r"event=login_failed .*rip=2001:db8::44 reason=auth_failed")
    g.close_clients()
    assert g.stop() == 0

    log = g.log_path
    out = subprocess.run(["fail2ban-regex", "-o", "ip", str(log), str(FILTER)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == expected
    summary = subprocess.run(["fail2ban-regex", str(log), str(FILTER)],
                             capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"^Lines: (\d+) lines, 0 ignored, (\d+) matched, (\d+) missed", summary, re.M)
    assert m, summary
    total = len(log.read_text().splitlines())
    assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == (total, 5, total - 5)
