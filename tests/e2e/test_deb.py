"""
The Debian package (make deb, debian/): built once for this module, installed
with dpkg -i on this machine, checked, run as the imapgate user in front of
the session Dovecot, and purged. Root only; IMAPGATE_DEB_TEST=0 skips it.

The package is always purged at the end (the fixture's finally), and the
module skips when an imapgate package is installed already: the test never
touches an install it did not make. The daemon it runs listens on a free port
with a copy of the packaged configuration; the packaged paths (/etc/imapgate,
/var/lib/imapgate, /run/imapgate) are used by no other test file.
"""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import free_port, kill_group, login_raw, RawClient, wait_for, wait_listening

ROOT = Path(__file__).resolve().parents[2]
CONF = "/etc/imapgate/imapgate.conf"
POLICY = Path("/usr/sbin/policy-rc.d")


def _installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.endswith(" ok installed")


def _skip_reason():
    if os.environ.get("IMAPGATE_DEB_TEST") == "0":
        return "IMAPGATE_DEB_TEST=0"
    if os.geteuid() != 0:
        return "installs a package: root only"
    for tool in ("dpkg-buildpackage", "dh"):
        if shutil.which(tool) is None:
            return "%s missing (make deps installs debhelper and dpkg-dev)" % tool
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "imapgate"], capture_output=True, text=True)
    if r.returncode == 0 and "not-installed" not in r.stdout:
        return "an imapgate package is on this machine already (%s): not touching it" % r.stdout.strip()
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def _run(args, timeout=120, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


def _clean_env():
    # The outer "make test SANITIZE=1" must not reach the package build.
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "SANITIZE", "BUILD")}


@pytest.fixture(scope="module")
def deb_file():
    out = Path(tempfile.mkdtemp(prefix="imapgate-deb-"))
    try:
        r = _run(["make", "-C", str(ROOT), "deb", "DEB_DIR=%s" % out], timeout=600, env=_clean_env())
        assert r.returncode == 0, "make deb failed:\n" + (r.stdout + r.stderr)[-4000:]
        debs = sorted(out.glob("imapgate_*_*.deb"))
        assert len(debs) == 1, list(out.iterdir())
        yield debs[0]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _listening_on(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def installed(deb_file):
    """dpkg -i the package (no service started: policy-rc.d), yield its dpkg -L; purge at the end."""
    own_policy = not POLICY.exists()
    if own_policy:
        POLICY.write_text("#!/bin/sh\n# written by imapgate tests/e2e/test_deb.py\nexit 101\n")
        POLICY.chmod(0o755)
    state = {"backend_up": _listening_on(143)}
    try:
        r = _run(["dpkg", "-i", str(deb_file)], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        state["install"] = r
        assert r.returncode == 0, "dpkg -i failed:\n" + r.stdout + r.stderr
        state["files"] = _run(["dpkg", "-L", "imapgate"]).stdout.split("\n")
        yield state
    finally:
        try:
            if _installed("imapgate") or os.path.exists("/var/lib/dpkg/info/imapgate.list"):
                _run(["dpkg", "--purge", "imapgate"])
        finally:
            if own_policy:
                POLICY.unlink()


def test_deb_contents(installed):
    files = set(installed["files"])
    for path in ("/usr/sbin/imapgate", "/usr/bin/imapgate-ctl", "/usr/bin/imapgate-stat", CONF,
                 "/usr/share/man/man8/imapgate.8.gz", "/usr/share/man/man5/imapgate.conf.5.gz",
                 "/usr/share/doc/imapgate/examples/fail2ban/filter.d/imapgate.conf",
                 "/usr/share/doc/imapgate/examples/fail2ban/jail.d/imapgate.conf",
                 "/usr/lib/tmpfiles.d/imapgate.conf", "/var/lib/imapgate"):
        assert path in files, path
    if (ROOT / "contrib/systemd/imapgate.service").exists():
        assert "/lib/systemd/system/imapgate.service" in files
    conffiles = Path("/var/lib/dpkg/info/imapgate.conffiles").read_text().split()
    assert conffiles == [CONF]
    pw = pwd.getpwnam("imapgate")
    st = os.stat("/var/lib/imapgate")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (pw.pw_uid, pw.pw_gid, 0o750)
    # Made by the tmpfiles snippet, for the packaged control socket and counters.
    st = os.stat("/run/imapgate")
    assert (st.st_uid, st.st_mode & 0o7777) == (pw.pw_uid, 0o750)
    # Hardening: full RELRO and PIE.
    r = _run(["readelf", "-d", "-h", "/usr/sbin/imapgate"])
    assert "BIND_NOW" in r.stdout and "PIE" in r.stdout, r.stdout
    assert "GNU_RELRO" in _run(["readelf", "-lW", "/usr/sbin/imapgate"]).stdout
    r = _run(["/usr/sbin/imapgate", "-V"])
    version = re.search(r'IMAPGATE_VERSION "([^"]+)"', (ROOT / "src/version.h").read_text()).group(1)
    assert version in r.stdout + r.stderr
    assert _run(["dpkg-query", "-W", "-f=${Version}", "imapgate"]).stdout == version


def test_deb_installs_without_a_backend(installed):
    # The packaged backend is 127.0.0.1:143: dpkg -i succeeded without it.
    if installed["backend_up"]:
        pytest.skip("something listens on 127.0.0.1:143 on this machine")
    assert installed["install"].returncode == 0


def test_deb_config_checks(installed):
    r = _run(["/usr/sbin/imapgate", "-t", "-f", CONF])
    assert r.returncode == 0, r.stdout + r.stderr
    # The packaged binary's default file is the conffile.
    r = _run(["/usr/sbin/imapgate", "-t"])
    assert r.returncode == 0 and CONF in r.stdout + r.stderr, r.stdout + r.stderr
    # As systemd starts it: User=imapgate.
    r = _run(["setpriv", "--reuid", "imapgate", "--regid", "imapgate", "--init-groups",
              "/usr/sbin/imapgate", "-t", "-f", CONF])
    assert r.returncode == 0, r.stdout + r.stderr


def test_deb_serves_as_imapgate_user(installed, dovecot, fresh_user):
    user, pw = fresh_user
    port = free_port()
    text = Path(CONF).read_text()
    text = re.sub(r"(?m)^server_port 143$", "server_port %d" % dovecot.port, text)
    text = re.sub(r"(?m)^listen 127\.0\.0\.1:1143$", "listen 127.0.0.1:%d" % port, text)
    assert ("server_port %d" % dovecot.port) in text and ("listen 127.0.0.1:%d" % port) in text
    text += "\nguard_failure_delay 0\n"
    # Readable by the imapgate user (pytest's tmp_path is under a 0700 directory).
    tmp_path = Path(tempfile.mkdtemp(prefix="imapgate-deb-run-"))
    os.chmod(tmp_path, 0o755)
    conf = tmp_path / "imapgate.conf"
    conf.write_text(text)
    log = open(tmp_path / "imapgate.log", "wb")
    proc = subprocess.Popen(["setpriv", "--reuid", "imapgate", "--regid", "imapgate", "--init-groups",
                             "/usr/sbin/imapgate", "-F", "-f", str(conf)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=str(tmp_path))
    log.close()
    try:
        wait_listening(port, "4", timeout=10, proc=proc)
        with RawClient("127.0.0.1", port) as c:
            assert c.read_line().startswith(b"* OK")
            assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
            assert c.command("b", "LOGOUT")[-1].startswith(b"b OK")
        dovecot.wait_logins(user, 1)
        uid = pwd.getpwnam("imapgate").pw_uid
        # The packaged state, counters and control socket, all the user's.
        for path in ("/var/lib/imapgate/guard.db", "/run/imapgate/stats", "/run/imapgate/ctl.sock"):
            wait_for(lambda p=path: os.path.exists(p), 5, what=path)
            assert os.stat(path).st_uid == uid, path
        # Without -f the tools read the conffile, which names the same socket and counters.
        r = _run(["/usr/bin/imapgate-ctl", "status"])
        assert r.returncode == 0, r.stdout + r.stderr
        r = _run(["/usr/bin/imapgate-stat", "-c"])
        assert r.returncode == 0 and r.stdout, r.stdout + r.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    except BaseException:
        print((tmp_path / "imapgate.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        if proc.poll() is None:
            kill_group(proc.pid)
            proc.wait(timeout=5)
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_deb_purge_leaves_nothing(installed):
    files = [f for f in installed["files"] if f and f != "/."]
    r = _run(["dpkg", "--purge", "imapgate"])
    assert r.returncode == 0, r.stdout + r.stderr
    left = []
    for f in files:
        if not os.path.lexists(f):
            continue
        # Directories other packages own too (/usr/sbin, /etc, ...) stay.
        if os.path.isdir(f) and _run(["dpkg-query", "-S", f]).returncode == 0:
            continue
        left.append(f)
    assert left == []
    for path in ("/etc/imapgate", "/var/lib/imapgate", "/run/imapgate"):
        assert not os.path.lexists(path), path
    # The system user stays, as Debian does (files elsewhere may carry its uid).
    assert pwd.getpwnam("imapgate")
