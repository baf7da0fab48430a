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


# --- Debian's Roundcube, served by php -S, with the plugin ---------------------

def roundcube_missing():
    if not shutil.which("php"):
        return "php (php-cli) is not installed (scripts/deps.sh installs it)"
    if not os.path.exists(os.path.join("/var/lib/roundcube", "index.php")):
        return "Debian's roundcube-core is not installed (scripts/deps.sh installs it)"
    if subprocess.run(["php", "-r", "exit(extension_loaded('pdo_sqlite') ? 0 : 1);"]).returncode:
        return "php's pdo_sqlite is not installed (roundcube-sqlite3)"
    return None


class Roundcube:
    """Debian's Roundcube from /var/lib/roundcube with a private config dir,
    plugin dir, sqlite DB, logs and temp in a temp dir; /etc/roundcube is not read."""

    def __init__(self, imap_port, extra_config=""):
        import sqlite3

        self.dir = tempfile.mkdtemp(prefix="imapgate-rc-")
        d = self.dir
        for sub in ("config", "plugins", "logs", "temp"):
            os.mkdir(os.path.join(d, sub))
        # Roundcube reads defaults.inc.php and mimetypes.php from its config dir too.
        for f in ("defaults.inc.php", "mimetypes.php"):
            os.symlink(os.path.join("/etc/roundcube", f), os.path.join(d, "config", f))
        # Required plugins (filesystem_attachments, jqueryui) from Debian's dir, plus ours.
        for name in os.listdir("/var/lib/roundcube/plugins"):
            os.symlink(os.path.join("/var/lib/roundcube/plugins", name), os.path.join(d, "plugins", name))
        os.symlink(PLUGIN, os.path.join(d, "plugins", "imapgate_origin"))
        db = os.path.join(d, "rc.db")
        with open(os.path.join(RC_DIR, "SQL", "sqlite.initial.sql")) as f:
            con = sqlite3.connect(db)
            con.executescript(f.read())
            con.close()
        with open(os.path.join(d, "config", "config.inc.php"), "w") as f:
            f.write("""<?php
$config = [];
$config['db_dsnw'] = 'sqlite:///%(db)s?mode=0600';
$config['imap_host'] = '127.0.0.1:%(port)d';
$config['smtp_host'] = '';
$config['des_key'] = '%(key)s';
$config['plugins'] = ['imapgate_origin'];
$config['skin'] = 'elastic';
$config['log_dir'] = '%(d)s/logs/';
$config['temp_dir'] = '%(d)s/temp/';
$config['enable_installer'] = false;
$config['login_rate_limit'] = 0;
%(extra)s
""" % dict(db=db, port=imap_port, key=secrets.token_hex(12), d=d, extra=extra_config))
        router = os.path.join(d, "router.php")
        with open(router, "w") as f:
            f.write("""<?php
define('RCMAIL_CONFIG_DIR', '%(d)s/config');
define('RCUBE_PLUGINS_DIR', '%(d)s/plugins/');
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($path !== '/' && $path !== '/index.php')
    return false;
chdir('/var/lib/roundcube');
require '/var/lib/roundcube/index.php';
""" % dict(d=d))
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.out = open(os.path.join(d, "php.log"), "wb")
        self.proc = subprocess.Popen(["php", "-S", "127.0.0.1:%d" % self.port, "-t", "/var/lib/roundcube", router],
                                     stdout=self.out, stderr=subprocess.STDOUT, cwd=d)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError("php -S exited: " + self.log())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(up, 10, what="php -S listening")

    def log(self):
        out = []
        for p in [os.path.join(self.dir, "php.log")] + [os.path.join(self.dir, "logs", f)
                                                        for f in sorted(os.listdir(os.path.join(self.dir, "logs")))]:
            with open(p, errors="replace") as f:
                out.append("--- %s ---\n%s" % (p, f.read()[-4000:]))
        return "\n".join(out)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Browser:
    """An HTTP client with cookies whose socket comes from src (php -S sees it as REMOTE_ADDR)."""

    def __init__(self, rc, src, headers=None):
        self.rc, self.src, self.cookies, self.headers = rc, src, {}, dict(headers or {})

    def request(self, method, url, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.rc.port, timeout=20, source_address=(self.src, 0))
        h = dict(self.headers)
        if self.cookies:
            h["Cookie"] = "; ".join("%s=%s" % kv for kv in self.cookies.items())
        if body is not None:
            body = urllib.parse.urlencode(body)
            h["Content-Type"] = "application/x-www-form-urlencoded"
        c.request(method, url, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        for v in r.msg.get_all("Set-Cookie") or []:
            name, _, value = v.split(";", 1)[0].partition("=")
            if value in ("", "deleted"):
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value
        c.close()
        return r.status, r.getheader("Location"), data.decode("utf-8", "replace")

    def login(self, user, password):
        """Roundcube's login form; returns (ok, page after login)."""
        status, _, page = self.request("GET", "/?_task=login")
        m = re.search(r'name="_token" value="([A-Za-z0-9]+)"', page)
        assert status == 200 and m, "no login form (%d): %s\n%s" % (status, page[:500], self.rc.log())
        status, loc, page = self.request("POST", "/?_task=login", {
            "_token": m.group(1), "_task": "login", "_action": "login", "_timezone": "UTC",
            "_url": "", "_user": user, "_pass": password})
        if status != 302:
            return False, page
        assert loc and "_task=mail" in loc, loc
        status, _, page = self.request("GET", "/" + loc.lstrip("./"))
        return status == 200, page


@pytest.fixture
def roundcube():
    why = roundcube_missing()
    if why:
        pytest.skip(why)
    rcs = []

    def factory(imap_port, extra_config=""):
        rc = Roundcube(imap_port, extra_config)
        rcs.append(rc)
        return rc

    yield factory
    for rc in rcs:
        rc.stop()


def test_roundcube_plugin_sends_the_browser_address(make_gate, dovecot, fresh_user, roundcube):
    # Roundcube on the same host as imapgate: 127.0.0.1 is trusted webmail
    # and in the default guard_ignore; its browsers' addresses count.
    g = make_gate(trusted_webmail="127.0.0.1/32", **FAST)
    rc = roundcube(g.port, "$config['imapgate_origin_trusted_proxies'] = ['127.0.0.4/32'];")
    victim, victim_pw = fresh_user
    other, other_pw = "rc%d_%s" % (os.getpid(), secrets.token_hex(3)), "pw-" + secrets.token_hex(6)
    dovecot.add_user(other, other_pw)

    # The guesser claims another address in X-Forwarded-For: not from a trusted proxy, ignored.
    guesser = Browser(rc, "127.0.0.2", {"X-Forwarded-For": "192.0.2.1"})
    for i in range(3):
        ok, page = guesser.login(victim, wrong())
        assert not ok
        g.wait_log(r"event=login_failed .*client=127\.0\.0\.1:\d+ rip=127\.0\.0\.2 .*guard=counted failures=%d/3"
                   % (i + 1) if i < 2 else r"event=ban prefix=127\.0\.0\.2/32")
    # Banned: even the right password from that browser is refused before Dovecot.
    ok, _ = guesser.login(victim, victim_pw)
    assert not ok
    g.wait_log(r"event=login_refused .*rip=127\.0\.0\.2 reason=banned")

    # Another browser logs in and sees its mailbox; the webmail host is not banned.
    ok, page = Browser(rc, "127.0.0.3").login(other, other_pw)
    assert ok, page[:2000] + rc.log()
    assert '"mailbox":"INBOX"' in page and other in page
    g.wait_log(r"event=login .*user=%s client=127\.0\.0\.1:\d+ rip=127\.0\.0\.3 " % other)
    # Behind a trusted proxy, the right-most untrusted X-Forwarded-For hop is the browser.
    ok, _ = Browser(rc, "127.0.0.4", {"X-Forwarded-For": "198.51.100.9, 192.0.2.77"}).login(other, other_pw)
    assert ok
    g.wait_log(r"event=login .*user=%s client=127\.0\.0\.1:\d+ rip=192\.0\.2\.77 " % other)
    # IPv6 too, past a trusted proxy given as a bracketed hop; canonicalised.
    ok, _ = Browser(rc, "127.0.0.4", {"X-Forwarded-For": "2001:DB8:0::5, [127.0.0.4]"}).login(other, other_pw)
    assert ok
    g.wait_log(r"event=login .*user=%s client=127\.0\.0\.1:\d+ rip=2001:db8::5 " % other)
    log = g.log_text()
    assert "prefix=127.0.0.1/32" not in log and "192.0.2.1 " not in log
    assert "webmail_no_origin" not in log
