"""
Running under systemd: the notify protocol on $NOTIFY_SOCKET (READY,
STATUS, RELOADING/MONOTONIC_USEC, STOPPING, WATCHDOG) and the unit file
contrib/systemd/imapgate.service.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import REPO, build_dir, imapgate_binary, remove_tree, wait_for


class NotifySocket:
    """The manager's end: an AF_UNIX datagram socket, a path or @abstract."""

    def __init__(self, abstract=False):
        self.dir = tempfile.mkdtemp(prefix="imapgate-notify-")
        os.chmod(self.dir, 0o755)  # the daemon may run as nobody
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "imapgate-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            path = os.path.join(self.dir, "notify")
            self.sock.bind(path)
            os.chmod(path, 0o777)
            self.address = path
        self.messages = []  # (time.monotonic(), {key: value})

    def recv(self, timeout):
        """The next message as a dict, or None after timeout seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        fields = dict(ln.split("=", 1) for ln in data.decode().split("\n") if ln)
        self.messages.append((time.monotonic(), fields))
        return fields

    def wait(self, key, timeout=10.0):
        """Messages until one has key; return that one (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            m = self.recv(max(left, 0.001)) if left > 0 else None
            if m is None:
                raise AssertionError("no %s= within %.1fs; got %r" % (key, timeout, self.messages))
            if key in m:
                return m

    def close(self):
        self.sock.close()
        remove_tree(Path(self.dir))


@pytest.fixture
def notify():
    made = []

    def factory(abstract=False):
        n = NotifySocket(abstract)
        made.append(n)
        return n

    yield factory
    for n in made:
        n.close()


def listening(port):
    """Is 127.0.0.1:port in LISTEN state (/proc/net/tcp)?"""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        return any(ln.split()[1] == want and ln.split()[3] == "0A" for ln in f.readlines()[1:])


def status_numbers(m):
    st = re.fullmatch(r"sessions=(\d+) parked=(\d+) bans=(\d+)", m["STATUS"])
    assert st, m
    return tuple(int(x) for x in st.groups())


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_after_listening_then_status_reload_stop(make_gate, notify, abstract):
    n = notify(abstract)
    g = make_gate(start=False, env={"NOTIFY_SOCKET": n.address})
    g.launch()
    m = n.wait("READY", timeout=10)
    # At READY the listener exists and a client gets its greeting at once.
    assert listening(g.port)
    c = g.connect_greeted(timeout=3)
    assert m["READY"] == "1"
    assert status_numbers(m) == (0, 0, 0)
    assert [x for _, x in n.messages if "READY" in x] == [m], "READY=1 only once at start"

    # SIGHUP: RELOADING=1 with the monotonic time of the reload, then READY=1.
    before = time.monotonic_ns() // 1000
    g.reload()
    r = n.wait("RELOADING")
    after = time.monotonic_ns() // 1000
    assert r["RELOADING"] == "1"
    assert before <= int(r["MONOTONIC_USEC"]) <= after
    m = n.wait("READY")
    assert m["READY"] == "1"
    assert status_numbers(m)[0] == 1  # the greeted client is a session
    g.wait_log(r"event=reload status=ok")

    # A broken config: the old one stays, and READY=1 still follows.
    g.write_config_text(g.config_text() + "no_such_key yes\n")
    mark = g.log_mark()
    g.reload()
    assert n.wait("RELOADING")["RELOADING"] == "1"
    assert n.wait("READY")["READY"] == "1"
    g.wait_log(r"event=reload status=failed", since=mark)
    assert c.command("n", "NOOP") == [b"n OK Completed\r\n"]

    c.close()
    g.close_clients()
    g.signal(signal.SIGTERM)
    assert n.wait("STOPPING")["STOPPING"] == "1"
    assert g.wait_exit(timeout=10) == 0


def test_no_ready_before_listening(make_gate, notify):
    """Every message seen while the listener was not yet up is checked."""
    n = notify()
    g = make_gate(start=False, env={"NOTIFY_SOCKET": n.address})
    g.launch()
    while True:
        m = n.recv(10)
        assert m is not None, "no READY=1 within 10 s"
        if "READY" in m:
            assert listening(g.port)
            break
    g.connect_greeted(timeout=3)


def test_watchdog_interval(make_gate, notify):
    n = notify()
    g = make_gate(start=False, env={"NOTIFY_SOCKET": n.address, "WATCHDOG_USEC": "400000"})
    g.launch()
    n.wait("READY")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        n.recv(0.1)
    dogs = [t for t, m in n.messages if "WATCHDOG" in m and t >= t0]
    # Every 200 ms: 7 in 1.5 s; a loose window for a loaded machine.
    assert 4 <= len(dogs) <= 10, dogs
    assert all(m.get("WATCHDOG") == "1" for _, m in n.messages if "WATCHDOG" in m)


def test_watchdog_for_another_pid_or_unset(make_gate, notify):
    for env in ({}, {"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}):
        n = notify()
        g = make_gate(start=False, env=dict(env, NOTIFY_SOCKET=n.address))
        g.launch()
        n.wait("READY")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            n.recv(0.1)
        assert not [m for _, m in n.messages if "WATCHDOG" in m], (env, n.messages)
        assert g.stop() == 0


def test_unit_file_verifies(tmp_path):
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (REPO / "contrib/systemd/imapgate.service").read_text()
    for key in ("Type=notify", "WatchdogSec=", "ExecReload=", "User=imapgate", "StateDirectory=imapgate",
                "RuntimeDirectory=imapgate", "AmbientCapabilities=CAP_NET_BIND_SERVICE"):
        assert key in unit, key
    assert "notify-reload" not in unit  # not in systemd 252 (Debian 12)
    # verify wants the ExecStart binaries to exist: point them to the build.
    copy = tmp_path / "imapgate.service"
    copy.write_text(unit.replace("/usr/sbin/imapgate", str(imapgate_binary(build_dir()))))
    r = subprocess.run([exe, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start imapgate as nobody")
def test_started_as_proc_username_has_nothing_to_drop(make_gate, notify):
    """As systemd's User=: an info line, no warning, and the service works."""
    n = notify()
    g = make_gate(start=False, proc_username="nobody", proc_groupname="nogroup")
    with open(g.log_path, "ab") as logf:
        g.proc = subprocess.Popen(
            [str(g.binary), "-F", "-f", str(g.conf_path)], stdin=subprocess.DEVNULL, stdout=logf,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=str(g.dir), user="nobody", group="nogroup",
            extra_groups=[], env=dict(os.environ, NOTIFY_SOCKET=n.address),
        )
    g.wait_log(r"event=start ")
    (line,) = g.log_lines("privileges")
    assert re.search(r"user=nobody uid=\d+ gid=\d+ privileges=none_to_drop$", line), line
    assert "warning" not in g.log_text()
    n.wait("READY")
    g.connect_greeted(timeout=3)
    assert g.stop() == 0


def test_journal_stream_lines(make_gate, dovecot):
    """stderr is the journal (JOURNAL_STREAM names it): "<prio>event=..." lines,
    the journal adds time and pid; a JOURNAL_STREAM naming another file changes nothing."""
    g = make_gate(start=False)
    g.log_path.touch()
    st = os.stat(g.log_path)
    g.env = {"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)}
    g.start()
    c = g.connect_greeted()
    c.command("a", "LOGIN nosuchuser wrongpw")
    g.wait_log(r"^<\d>event=login_failed ")
    lines = g.log_text().splitlines()
    assert any(re.fullmatch(r"<6>event=start version=\S+ config=\S+ backend=\S+", ln) for ln in lines), lines
    assert all(re.match(r"<[0-7]>event=", ln) for ln in lines), lines
    (failed,) = [ln for ln in lines if "event=login_failed" in ln]
    # contrib/fail2ban matches what its systemd backend makes of the entry
    # ("HOST IDENT[PID]: MESSAGE"); the -F form with its own prefix did not.
    if shutil.which("fail2ban-regex"):
        entry = "mx imapgate[%d]: %s" % (g.pid(), failed[3:])
        out = subprocess.run(["fail2ban-regex", "-o", "ip", entry,
                              str(REPO / "contrib/fail2ban/filter.d/imapgate.conf")],
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.split() == ["127.0.0.1"], (entry, out.stdout, out.stderr)
    g.stop()

    other = make_gate(start=False, env={"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino + 1)})
    other.start()
    other.wait_log(r"^\S+ imapgate\[\d+\]: event=start ")
