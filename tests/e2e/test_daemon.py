"""
Running as a real daemon: detached with a pidfile, logging to syslog with
imapproxy's syslog_facility / syslog_prioritymask, chrooted; and
imapproxy's preauth_command sent before each backend LOGIN.
"""

import os
import pwd
import signal
import socket
import subprocess
import time

import pytest

from harness import free_port, imapgate_binary, login_raw, sanitized_build, wait_for, wait_port


@pytest.fixture
def devlog():
    """A datagram socket at /dev/log (only where none exists: we never steal
    a real syslog daemon's socket)."""
    if os.path.exists("/dev/log") or os.geteuid() != 0:
        pytest.skip("needs root and no syslog daemon at /dev/log")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("/dev/log")
    os.chmod("/dev/log", 0o666)
    s.settimeout(0.2)
    try:
        yield s
    finally:
        s.close()
        os.unlink("/dev/log")


def drain(sock, until, timeout=5.0):
    """Datagrams received until one contains `until` (bytes); returns all."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(65536))
        except socket.timeout:
            continue
        if until in got[-1]:
            return got
    raise TimeoutError("no syslog line with %r; got %r" % (until, got[-5:]))


def test_daemon_pidfile_and_syslog(dovecot, devlog, tmp_path):
    port = free_port()
    os.chmod(tmp_path, 0o755)
    conf = tmp_path / "imapgate.conf"
    pidfile = tmp_path / "imapgate.pid"
    sock = tmp_path / "ctl.sock"
    conf.write_text(
        "server_hostname 127.0.0.1\nserver_port %d\nlisten 127.0.0.1:%d\nproc_username nobody\n"
        "connect_retries 1\nsyslog_facility LOG_LOCAL3\nsyslog_prioritymask LOG_NOTICE\n"
        "guard_db none\ncontrol_socket %s\n" % (dovecot.port, port, sock))
    p = subprocess.run([str(imapgate_binary()), "-f", str(conf), "-p", str(pidfile)],
                       capture_output=True, timeout=10)
    # The parent returns at once; the daemon lives on, detached.
    assert p.returncode == 0, p.stderr
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 5, what="pidfile")
    pid = int(pidfile.read_text())
    try:
        wait_port("127.0.0.1", port, 5)
        # Detached: a session of its own (not ours), and not its leader, so
        # it can never take a controlling terminal again.
        assert os.getsid(pid) not in (os.getsid(0), pid)
        # A notice (the ban) reaches syslog as local3.notice = <157>, an info
        # line (the connection) is masked out.
        ctl = str(imapgate_binary().parent / "imapgate-ctl")
        assert subprocess.run([ctl, "-s", str(sock), "ban", "192.0.2.1"], capture_output=True).returncode == 0
        got = drain(devlog, b"event=ban ")
        ban = [g for g in got if b"event=ban " in g][0]
        assert ban.startswith(b"<157>"), ban
        assert b"imapgate[%d]: event=ban prefix=192.0.2.1/32" % pid in ban
        assert not any(b"event=connect" in g for g in got)
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists("/proc/%d" % pid), 10, what="daemon exit")


@pytest.mark.skipif(sanitized_build(), reason="LeakSanitizer needs /proc, which a chroot hides")
def test_chroot(make_gate, dovecot, fresh_user):
    g = make_gate(start=False)
    jail = g.dir / "jail"
    jail.mkdir()
    g.write_config(chroot_directory=str(jail))
    g.start()
    user, pw = fresh_user
    assert os.readlink("/proc/%d/root" % g.pid()) == str(jail)
    c = g.connect_greeted()
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    g.wait_log(r"event=privileges user=nobody .*chroot=%s" % jail)


def test_preauth_command_sent_before_login(make_gate, dovecot, fresh_user):
    marker = "preauth-%d" % os.getpid()
    g = make_gate(preauth_command='ID ("name" "%s")' % marker)
    user, pw = fresh_user
    c = g.connect_greeted()
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    dovecot.wait_logins(user, 1)
    assert marker in dovecot.info_log_text()


def test_preauth_command_refused_fails_that_login(make_gate, dovecot, fresh_user):
    g = make_gate(preauth_command="XNOSUCHCOMMAND")
    user, pw = fresh_user
    c = g.connect_greeted()
    assert login_raw(c, user, pw)[-1] == b"a NO [UNAVAILABLE] The server refused preauth_command\r\n"
    g.wait_log(r"event=login_failed .*reason=preauth_command_failed")
    # The session is still usable.
    assert c.command("n", "NOOP")[-1] == b"n OK Completed\r\n"
