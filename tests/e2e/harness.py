"""
harness — run a throwaway Dovecot and an imapgate in front of it, and talk
raw IMAP to either.

Used by the end-to-end tests (tests/e2e, through conftest.py) and by
tools/demo.py. Standard library only; nothing here reads /etc/dovecot or
touches a system service.

Every wait is bounded and most are readiness checks (a port that accepts, a
socket in LISTEN state, a log line), not sleeps.
"""

import atexit
import base64
import grp
import hashlib
import http.server
import itertools
import json
import os
import pwd
import re
import select
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0

# Users every Dovecot gets unless told otherwise. carol's password needs
# IMAP quoting: a space, a double quote and a backslash.
DEFAULT_USERS = {
    "alice": "alicepw",
    "bob": "bobpw",
    "carol": 'p@ss w"r\\d',
}

# Every password (and encoded credential) the tests use; imapgate's log must
# never contain any of them. Tests add the wrong passwords they try.
SECRETS = set()


def register_secret(*values):
    """Remember strings that must never show up in imapgate's log; returns the first."""
    for v in values:
        if v:
            SECRETS.add(v)
    return values[0] if values else None


# Strings that mean the daemon's memory checkers found something.
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


class HarnessError(RuntimeError):
    pass


class ConnectionClosed(EOFError):
    """The peer closed the connection; .data holds what was read before."""

    def __init__(self, msg, data=b""):
        super().__init__(msg)
        self.data = data


# --------------------------------------------------------------------------
# small helpers


def build_dir():
    """Directory holding the imapgate binary: $IMAPGATE_BUILD or REPO/build."""
    return Path(os.environ.get("IMAPGATE_BUILD") or (REPO / "build")).resolve()


def imapgate_binary(build=None):
    return Path(build or build_dir()).resolve() / "imapgate"


def sanitized_build(build=None):
    """True when the imapgate binary was built with AddressSanitizer (make SANITIZE=1)."""
    try:
        return b"__asan_init" in imapgate_binary(build).read_bytes()
    except OSError:
        return False


def have_ipv6():
    """True when a socket can be bound to ::1."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def can_bind(addr):
    """True when a client socket can be bound to this local address (e.g. 127.0.0.2)."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    try:
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


def free_port(host="127.0.0.1"):
    """A TCP port that is free right now on host (and, for 127.0.0.1, on ::1 too when possible)."""
    for _ in range(50):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        # The same number is used for a second family by some callers; check it.
        other = "::1" if fam == socket.AF_INET else "127.0.0.1"
        if other == "::1" and not have_ipv6():
            return port
        try:
            ofam = socket.AF_INET6 if other == "::1" else socket.AF_INET
            with socket.socket(ofam, socket.SOCK_STREAM) as s:
                s.bind((other, port))
            return port
        except OSError:
            continue
    raise HarnessError("no free port found")


def _group_alive(pgid):
    """True while a process of the group is alive (zombies awaiting reaping do not count)."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def kill_group(pgid, timeout=5.0):
    """SIGKILL a whole process group and wait (bounded) until it is gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


def stop_group(proc, ports=(), timeout=10.0, graceful=True):
    """Stop a master process started with start_new_session: SIGTERM and a bounded wait
    (unless not graceful), then SIGKILL of whatever is left of its process group; wait
    (bounded) until the ports no longer listen. Returns the exit status."""
    if graceful and proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # The master takes its children with it; make sure of it.
    kill_group(proc.pid)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    for port in ports:
        if port:
            try:
                wait_for(lambda: not _proc_net_listening(port), 5.0, what="port %d closed" % port)
            except TimeoutError:
                pass
    return proc.returncode


def remove_tree(path):
    """rmtree that tolerates a late writer (a dying child still creating files)."""
    for _ in range(5):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        time.sleep(0.05)


# Instances still running when the interpreter exits (a script that forgot
# cleanup(), an exception) are killed, so no Dovecot outlives its user.
_live = set()


@atexit.register
def _cleanup_live():
    for obj in list(_live):
        try:
            obj.cleanup()
        except Exception:
            pass


def wait_for(pred, timeout, *, interval=0.02, what="condition"):
    """Poll pred() until it returns something true, for at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def wait_port(host, port, timeout=10.0, proc=None):
    """Wait until host:port accepts a TCP connection. If proc (a Popen) exits first, raise."""
    deadline = time.monotonic() + timeout
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        if proc is not None and proc.poll() is not None:
            raise HarnessError("process exited with %s before %s:%d was ready" % (proc.returncode, host, port))
        try:
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
                s.connect((host, port))
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError("%s:%d not accepting connections after %.1fs" % (host, port, timeout))
        time.sleep(0.02)


def _proc_net_listening(port):
    """Set of families ('4', '6') that have a socket in LISTEN state on port, from /proc/net."""
    found = set()
    for fam, path in (("4", "/proc/net/tcp"), ("6", "/proc/net/tcp6")):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state = parts[1], parts[3]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        found.add(fam)
        except OSError:
            pass
    return found


def is_listening(port, family="4"):
    """True when some socket listens on the port (family '4' or '6'), without connecting to it."""
    if os.path.exists("/proc/net/tcp"):
        return family in _proc_net_listening(port)
    host = "::1" if family == "6" else "127.0.0.1"
    try:
        wait_port(host, port, timeout=0.2)
        return True
    except (TimeoutError, HarnessError):
        return False


def wait_listening(port, family="4", timeout=10.0, proc=None):
    """Wait until a socket listens on port without opening a connection to it (no side effect
    on the daemon's per-IP counters). If proc exits first, raise."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise HarnessError("process exited with %s before port %d listened" % (proc.returncode, port))
        if is_listening(port, family):
            return True
        if time.monotonic() >= deadline:
            raise TimeoutError("port %d (IPv%s) not listening after %.1fs" % (port, family, timeout))
        time.sleep(0.02)


def quote(s):
    """IMAP quoted string of s (str), with \\ and \" escaped."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sasl_plain(user, password, authzid=""):
    """Base64 of a SASL PLAIN response, as str."""
    raw = ("%s\0%s\0%s" % (authzid, user, password)).encode()
    return base64.b64encode(raw).decode()


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def make_message(subject="test", body="hello", sender="sender@example.org", to="user@example.org"):
    """A small RFC 5322 message with CRLF line ends, as bytes."""
    text = (
        "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        "Message-ID: <%s.%d@imapgate.test>\r\n\r\n%s\r\n"
    ) % (sender, to, subject, time.monotonic_ns(), os.getpid(), body)
    return text.encode()


# --------------------------------------------------------------------------
# raw client


class RawClient:
    """A blocking TCP client that reads IMAP lines with timeouts; no IMAP logic."""

    def __init__(self, host, port, src=None, timeout=10.0):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if src:
            self.sock.bind((src, 0))
        self.sock.connect((host, port))
        self.buf = b""
        self.closed = False
        self.default_timeout = timeout

    # -- low level
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def sendline(self, line):
        """Send line plus CRLF."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")

    def _fill(self, deadline):
        """Read more bytes into buf. Raises TimeoutError at deadline, ConnectionClosed at EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data before timeout; buffered: %r" % self.buf[:200])
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data before timeout; buffered: %r" % self.buf[:200]) from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            raise ConnectionClosed("connection closed by peer", self.buf)
        self.buf += chunk

    def read_line(self, timeout=None):
        """One line, CRLF included (as bytes)."""
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        while b"\n" not in self.buf:
            self._fill(deadline)
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def read_bytes(self, n, timeout=None):
        """Exactly n bytes (e.g. a literal's body)."""
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        while len(self.buf) < n:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_until(self, regex, timeout=None):
        """Lines up to and including the first one matching regex (bytes or str, re.search).
        Returns the list of lines. Literal bodies are read as lines; fine for tests."""
        if isinstance(regex, str):
            regex = regex.encode()
        pat = re.compile(regex)
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        lines = []
        while True:
            try:
                line = self.read_line(timeout=max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                raise TimeoutError("no line matching %r; lines so far: %r; buffered: %r"
                                   % (regex, lines, self.buf[:200])) from None
            except ConnectionClosed as e:
                raise ConnectionClosed("closed before a line matching %r; lines so far: %r"
                                       % (regex, lines), e.data) from None
            lines.append(line)
            if pat.search(line):
                return lines

    def read_tagged(self, tag, timeout=None):
        """Lines up to and including the tagged completion for tag."""
        t = tag.encode() if isinstance(tag, str) else tag
        return self.read_until(b"^" + re.escape(t) + b" (OK|NO|BAD)( |\r?$)", timeout)

    def command(self, tag, text, timeout=None):
        """Send 'tag text' and return all lines up to the tagged reply."""
        self.sendline("%s %s" % (tag, text))
        return self.read_tagged(tag, timeout)

    def read_available(self, wait=0.2):
        """Whatever arrives within wait seconds (b'' if nothing). EOF is not an error here."""
        end = time.monotonic() + wait
        try:
            while time.monotonic() < end:
                self._fill(end)
        except (TimeoutError, ConnectionClosed):
            pass
        data, self.buf = self.buf, b""
        return data

    def expect_closed(self, timeout=5.0):
        """Wait for EOF (or reset) from the peer; return the bytes received before it.
        AssertionError if the connection is still open after timeout."""
        deadline = time.monotonic() + timeout
        if self.closed:
            data, self.buf = self.buf, b""
            return data
        try:
            while True:
                self._fill(deadline)
        except ConnectionClosed:
            data, self.buf = self.buf, b""
            return data
        except TimeoutError:
            raise AssertionError(
                "connection still open after %.1fs; received %r" % (timeout, self.buf[:300])
            ) from None

    def is_open(self, wait=0.1):
        """False when the peer has closed (EOF readable within wait)."""
        if self.closed:
            return False
        r, _, _ = select.select([self.sock], [], [], wait)
        if not r:
            return True
        try:
            chunk = self.sock.recv(65536, socket.MSG_PEEK)
        except OSError:
            return False
        return bool(chunk)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_greeting(host, port, prefix, goodbye, timeout, who):
    """Connect until the server's first line starts with prefix (bytes), then send goodbye;
    proves the service answers, not just that its port listens."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with RawClient(host, port, timeout=max(0.1, deadline - time.monotonic())) as c:
                line = c.read_line()
                if line.startswith(prefix):
                    c.sendline(goodbye)
                    return
                last = line
        except (OSError, EOFError, TimeoutError) as e:
            last = e
        time.sleep(0.02)
    raise TimeoutError("no %s greeting: %r" % (who, last))


# --------------------------------------------------------------------------
# Dovecot


def _mail_owner():
    """(uid, gid, username) the mail files belong to. As root: 'nobody' (an unprivileged
    system uid Dovecot accepts for mail given first/last_valid_uid); otherwise ourselves."""
    if IS_ROOT:
        for name in ("nobody", "dovecot"):
            try:
                pw = pwd.getpwnam(name)
                return pw.pw_uid, pw.pw_gid, name
            except KeyError:
                continue
        raise HarnessError("no 'nobody' or 'dovecot' user for mail files")
    pw = pwd.getpwuid(os.geteuid())
    return pw.pw_uid, os.getegid(), pw.pw_name


def _find_dovecot():
    for p in (shutil.which("dovecot"), "/usr/sbin/dovecot"):
        if p and os.access(p, os.X_OK):
            return p
    return None


_instance_counter = 0


class Dovecot:
    """A private Dovecot 2.3 on 127.0.0.1 (and ::1 when ipv6=True) with passwd-file users.

    d = Dovecot(); d.start(); ... d.stop()   (or use as a context manager)
    """

    def __init__(self, users=None, ipv6=False, port=None, tmpdir=None, extra_conf="", *,
                 pop3=False, sasl_socket=False, policy_url=None, policy_api_header=None,
                 policy_nonce="imapgate-test-nonce", policy_reject_on_fail=False,
                 policy_check_after_auth=True):
        """pop3: POP3 too, on self.pop3_port. sasl_socket: an auth-client socket at
        self.sasl_path for a Postfix with smtpd_sasl_type = dovecot. policy_url: ask this
        auth policy server before and after every authentication and report the result
        (policy_api_header: auth_policy_server_api_header; policy_reject_on_fail:
        auth_policy_reject_on_fail)."""
        global _instance_counter
        self.binary = _find_dovecot()
        if not self.binary:
            raise HarnessError("dovecot not installed (scripts/deps.sh installs dovecot-core dovecot-imapd)")
        _instance_counter += 1
        self.dir = Path(tmpdir or tempfile.mkdtemp(prefix="imapgate-dovecot-"))
        # Mail is owned by an unprivileged uid that must reach its home below here.
        os.chmod(self.dir, 0o755)
        self.host = "127.0.0.1"
        self.ipv6 = bool(ipv6) and have_ipv6()
        self.port = port or free_port()
        self.port6 = self.port if self.ipv6 else None
        self.instance = "imapgate-test-%d-%d-%d" % (os.getpid(), _instance_counter, self.port)
        self.uid, self.gid, self.mail_user = _mail_owner()
        self.extra_conf = extra_conf
        self.pop3_port = free_port() if pop3 else None
        # Straight in the temp dir (0755), not in base_dir, so Postfix's smtpd can reach it.
        self.sasl_path = self.dir / "sasl-auth" if sasl_socket else None
        self.policy_url = policy_url
        self.policy_api_header = policy_api_header
        self.policy_nonce = policy_nonce
        self.policy_reject_on_fail = policy_reject_on_fail
        self.policy_check_after_auth = policy_check_after_auth
        self.users = {}
        self.proc = None
        self._pw_mtime = 0
        self._deliver_n = 0
        for sub in ("base", "state", "home"):
            (self.dir / sub).mkdir(exist_ok=True)
        os.chmod(self.dir / "home", 0o755)
        self.conf_path = self.dir / "dovecot.conf"
        self.passwd_path = self.dir / "passwd"
        self.log_path = self.dir / "dovecot.log"
        self.info_log_path = self.dir / "dovecot-info.log"
        for name, pw in (users if users is not None else DEFAULT_USERS).items():
            register_secret(pw, sasl_plain(name, pw), b64(pw))
            self.users[name] = pw
            self._make_home(name)
        self._write_passwd()
        self._write_conf()

    # -- files
    def home(self, user):
        return self.dir / "home" / user

    def maildir(self, user):
        return self.home(user) / "Maildir"

    def imap_pids(self, user):
        """PIDs of the imap processes serving user (their working directory is the home)."""
        home = os.path.realpath(str(self.home(user)))
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink("/proc/%s/cwd" % entry) != home:
                    continue
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if cmd.split(b"\0")[0].endswith(b"/imap"):
                pids.append(int(entry))
        return pids

    def _chown(self, path):
        if IS_ROOT:
            os.chown(path, self.uid, self.gid)

    def _make_home(self, user):
        h = self.home(user)
        for d in (h, h / "Maildir", h / "Maildir" / "cur", h / "Maildir" / "new", h / "Maildir" / "tmp"):
            d.mkdir(mode=0o700, exist_ok=True)
            self._chown(d)

    def _write_passwd(self):
        lines = []
        for name, pw in self.users.items():
            if ":" in pw or "\n" in pw or ":" in name:
                raise HarnessError("passwd-file cannot hold ':' or newline in user/password")
            lines.append("%s:{PLAIN}%s::::::\n" % (name, pw))
        tmp = self.passwd_path.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        os.chmod(tmp, 0o644)
        # Dovecot re-reads passwd-file when its mtime or size changes; make the
        # mtime strictly increase so a same-length change within a second is seen.
        t = max(int(time.time()), self._pw_mtime + 1)
        self._pw_mtime = t
        os.utime(tmp, (t, t))
        os.replace(tmp, self.passwd_path)

    def _write_conf(self):
        listen = "127.0.0.1" + (", ::1" if self.ipv6 else "")
        if IS_ROOT:
            users_conf = ""
            login_chroot = ""
        else:
            me = pwd.getpwuid(os.geteuid()).pw_name
            grp_name = grp.getgrgid(os.getegid()).gr_name
            users_conf = ("default_internal_user = %s\ndefault_internal_group = %s\ndefault_login_user = %s\n"
                          % (me, grp_name, me))
            login_chroot = "  chroot =\n"
        imap_login = self._login_conf("imap", self.port, login_chroot, "  client_limit = 900\n")
        conf = f"""# generated by imapgate tests/e2e/harness.py — self-contained, never reads /etc/dovecot
instance_name = {self.instance}
base_dir = {self.dir}/base
state_dir = {self.dir}/state
log_path = {self.log_path}
info_log_path = {self.info_log_path}
debug_log_path = {self.log_path}
protocols = imap{" pop3" if self.pop3_port else ""}
listen = {listen}
ssl = no
{users_conf}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_cache_size = 0
login_trusted_networks = 127.0.0.0/8 ::1
login_log_format_elements = user=<%u> method=%m rip=%r lip=%l session=<%{{session}}>
login_greeting = Dovecot ready.
imap_id_log = *
first_valid_uid = {self.uid}
last_valid_uid = {self.uid}
first_valid_gid = 0
mail_location = maildir:~/Maildir
mailbox_idle_check_interval = 1 secs
default_process_limit = 200
default_client_limit = 1000
shutdown_clients = yes

passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.passwd_path}
}}
userdb {{
  driver = static
  args = uid={self.uid} gid={self.gid} home={self.dir}/home/%u
}}

namespace inbox {{
  inbox = yes
  separator = /
}}

{imap_login}
service imap {{
  process_limit = 500
}}

# The anvil auth penalty delays every login from an IP after a few failures
# (login_trusted_networks does not exempt it in 2.3): off for tests.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{login_chroot}}}

{self._pop3_conf(login_chroot)}{self._sasl_conf()}{self._policy_conf()}
{self.extra_conf}
"""
        self.conf_path.write_text(conf)

    @staticmethod
    def _login_conf(proto, port, login_chroot, extra=""):
        """A protocol's limits and its login service: plain listener on port, no TLS one."""
        return f"""protocol {proto} {{
  mail_max_userip_connections = 1000
}}

service {proto}-login {{
  inet_listener {proto} {{
    port = {port}
  }}
  inet_listener {proto}s {{
    port = 0
  }}
  service_count = 0
  process_min_avail = 1
{extra}{login_chroot}}}
"""

    def _pop3_conf(self, login_chroot):
        if not self.pop3_port:
            return ""
        return "\n" + self._login_conf("pop3", self.pop3_port, login_chroot)

    def _sasl_conf(self):
        if not self.sasl_path:
            return ""
        # Postfix's smtpd runs as mail_owner (postfix); as root the socket is given to it,
        # otherwise (no Postfix can run then anyway) it is left to the current user.
        owner = ""
        if IS_ROOT:
            try:
                pw = pwd.getpwnam("postfix")
                owner = "    user = %s\n    group = %s\n" % (pw.pw_name, grp.getgrgid(pw.pw_gid).gr_name)
            except KeyError:
                pass
        return f"""
service auth {{
  unix_listener {self.sasl_path} {{
    mode = 0660
{owner}  }}
}}
"""

    def _policy_conf(self):
        if not self.policy_url:
            return ""
        lines = [
            "auth_policy_server_url = %s" % self.policy_url,
            "auth_policy_hash_nonce = %s" % self.policy_nonce,
            "auth_policy_check_before_auth = yes",
            "auth_policy_check_after_auth = %s" % ("yes" if self.policy_check_after_auth else "no"),
            "auth_policy_report_after_auth = yes",
            "auth_policy_reject_on_fail = %s" % ("yes" if self.policy_reject_on_fail else "no"),
            "auth_policy_server_timeout_msecs = 2000",
        ]
        if self.policy_api_header is not None:
            lines.append("auth_policy_server_api_header = %s" % self.policy_api_header)
        return "\n" + "\n".join(lines) + "\n"

    # -- users and mail
    def add_user(self, name, password, wait=True):
        """Add a user (home and Maildir created). With wait (and Dovecot running), return
        only once Dovecot's passdb knows the user."""
        register_secret(password, sasl_plain(name, password), b64(password))
        self.users[name] = password
        self._make_home(name)
        self._write_passwd()
        if wait and self.running():
            self.wait_auth(name, password)

    def set_password(self, name, password, wait=True):
        """Change a password. With wait (and Dovecot running), return only once Dovecot's
        passdb answers with the new one (passwd-file is re-read at most about once a second)."""
        if name not in self.users:
            raise KeyError(name)
        register_secret(password, sasl_plain(name, password), b64(password))
        self.users[name] = password
        self._write_passwd()
        if wait and self.running():
            self.wait_auth(name, password)

    def auth_test(self, user, password):
        """True when Dovecot's passdb accepts user/password (doveadm auth test: no IMAP
        login, so count_logins is not affected; a failure costs ~0.5 s)."""
        doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"
        p = subprocess.run([doveadm, "-c", str(self.conf_path), "auth", "test", user, password],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=10)
        return p.returncode == 0

    def wait_auth(self, user, password, timeout=8.0):
        wait_for(lambda: self.auth_test(user, password), timeout, interval=0.05,
                 what="Dovecot to accept the new password of %s" % user)

    def deliver(self, user, message=None, subject="test", body="hello"):
        """Put a message into user's INBOX (maildir new/), written in tmp/ and renamed so a
        reader never sees a partial file. Returns the file's path."""
        if message is None:
            message = make_message(subject=subject, body=body, to="%s@example.org" % user)
        if isinstance(message, str):
            message = message.encode()
        md = self.maildir(user)
        self._make_home(user)
        self._deliver_n += 1
        name = "%d.M%dP%dQ%d.imapgate-test" % (time.time(), time.monotonic_ns() % 1000000, os.getpid(), self._deliver_n)
        tmp = md / "tmp" / name
        with open(tmp, "wb") as f:
            f.write(message)
        os.chmod(tmp, 0o600)
        self._chown(tmp)
        dst = md / "new" / name
        os.rename(tmp, dst)
        return dst

    # -- logs
    def log_text(self):
        """Error/warning log (log_path) plus the info log."""
        out = []
        for p in (self.log_path, self.info_log_path):
            try:
                out.append(p.read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "".join(out)

    def info_log_text(self):
        try:
            return self.info_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def login_lines(self, user=None, protocol="imap"):
        """Info-log lines of successful IMAP (or protocol="pop3") logins, optionally of one user."""
        pat = re.compile(r"%s-login: (?:Info: )?Login: user=<%s>"
                         % (re.escape(protocol), re.escape(user) if user else "[^>]*"))
        return [ln for ln in self.info_log_text().splitlines() if pat.search(ln)]

    def count_logins(self, user=None, protocol="imap"):
        """Number of successful IMAP (or protocol="pop3") logins so far (of user, or of everyone)."""
        return len(self.login_lines(user, protocol))

    def wait_logins(self, user, n, timeout=5.0, protocol="imap"):
        """Wait until at least n logins of user are logged (the log process writes
        asynchronously); return the count."""
        wait_for(lambda: self.count_logins(user, protocol) >= n, timeout,
                 what="%d Dovecot %s logins of %s" % (n, protocol, user))
        return self.count_logins(user, protocol)

    # -- process
    def start(self, timeout=15.0):
        if self.proc and self.proc.poll() is None:
            return self
        _live.add(self)
        stdout = open(self.dir / "dovecot.stdout", "ab")
        try:
            self.proc = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            stdout.close()
        try:
            wait_listening(self.port, "4", timeout=timeout, proc=self.proc)
            if self.pop3_port:
                wait_listening(self.pop3_port, "4", timeout=timeout, proc=self.proc)
            if self.sasl_path:
                wait_for(self.sasl_path.exists, timeout, what="Dovecot's SASL socket")
            if self.ipv6:
                wait_listening(self.port6, "6", timeout=timeout, proc=self.proc)
            # LISTEN is not enough: the greeting proves imap-login is serving.
            self._wait_greeting(timeout)
        except Exception as e:
            out = (self.dir / "dovecot.stdout").read_text(errors="replace")
            self.stop()
            raise HarnessError("dovecot did not start: %s\n%s\n%s" % (e, out, self.log_text()[-3000:])) from e
        return self

    def _wait_greeting(self, timeout):
        wait_greeting(self.host, self.port, b"* OK", "z LOGOUT", timeout, "Dovecot")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0, graceful=True):
        """Stop the master: SIGTERM (Dovecot says BYE to its clients; takes ~1 s), then
        SIGKILL of the whole process group. graceful=False: SIGKILL at once, like a crash."""
        if not self.proc:
            return None
        # Ports must be free again before a restart.
        rc = stop_group(self.proc, (self.port, self.pop3_port), timeout, graceful)
        # A stale socket file would pass start()'s readiness check after a restart.
        if self.sasl_path:
            try:
                self.sasl_path.unlink()
            except FileNotFoundError:
                pass
        return rc

    def restart(self, timeout=15.0):
        self.stop()
        return self.start(timeout=timeout)

    def cleanup(self):
        self.stop(graceful=False)
        remove_tree(self.dir)
        _live.discard(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


# --------------------------------------------------------------------------
# A private Redis (the shared guard's)

REDIS_SERVER = "/usr/bin/redis-server"


class RedisError(HarnessError):
    """An error reply from Redis (its text in args[0])."""


class RespClient:
    """A tiny blocking RESP2 client: command(*args) -> str/int/list/None, an error reply
    raises RedisError. Enough for tests (no pipelining beyond send()/read_reply())."""

    def __init__(self, host, port, user=None, password=None, timeout=5.0, unix_path=None):
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(str(unix_path))
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        if password is not None:
            self.command("AUTH", *([user] if user else []), password)

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def _line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionClosed("redis closed the connection", self.buf)
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionClosed("redis closed the connection", self.buf)
            self.buf += data
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read_reply(self, timeout=None, decode=True):
        if timeout is not None:
            self.sock.settimeout(timeout)
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self._bytes(n)
            return data.decode(errors="surrogateescape") if decode else data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply(decode=decode) for _ in range(n)]
        raise HarnessError("bad RESP line from redis: %r" % line)

    def command(self, *args, decode=True):
        self.send(*args)
        return self.read_reply(decode=decode)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def redis_unavailable():
    """Why a test cannot run a private Redis here, or None."""
    if not os.access(REDIS_SERVER, os.X_OK):
        return "%s not installed (scripts/deps.sh installs redis-server)" % REDIS_SERVER
    return None


class Redis:
    """A private redis-server on a free 127.0.0.1 port, its config and dir in a temp dir,
    no persistence. Never the system Redis.

    password None: no AUTH. Otherwise acl=True (default) makes an ACL user `user` limited
    to keys and channels under `prefix`, and turns the default user off; acl=False sets
    requirepass (AUTH with the password alone). An `admin` ACL user (all keys, all
    commands) is always there for cli(). unix=True also listens on a Unix socket
    (self.unix_path).

    r = Redis(password="pw"); r.start(); r.url() -> "redis://imapgate:pw@127.0.0.1:PORT/0"
    r.cli("GET", "imapgate:x"); r.kill(); r.restart(); r.cleanup()
    """

    def __init__(self, password=None, *, user="imapgate", acl=True, prefix="imapgate:", port=None,
                 unix=False, tmpdir=None, extra_conf=""):
        if redis_unavailable():
            raise HarnessError(redis_unavailable())
        self.dir = Path(tmpdir or tempfile.mkdtemp(prefix="imapgate-redis-"))
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.password = password
        self.user = user if (password is not None and acl) else None
        self.acl = acl
        self.prefix = prefix
        self.admin_password = "admin-" + os.urandom(8).hex()
        register_secret(password, self.admin_password)
        self.unix_path = self.dir / "redis.sock" if unix else None
        self.conf_path = self.dir / "redis.conf"
        self.log_path = self.dir / "redis.log"
        self.extra_conf = extra_conf
        self.proc = None
        self._write_conf()

    def _write_conf(self):
        lines = [
            "port %d" % self.port,
            "bind 127.0.0.1",
            "dir %s" % self.dir,
            "logfile %s" % self.log_path,
            'save ""',
            "appendonly no",
            "daemonize no",
            "supervised no",
            "databases 16",
        ]
        if self.unix_path:
            lines += ["unixsocket %s" % self.unix_path, "unixsocketperm 700"]
        lines.append("user admin on >%s ~* &* +@all" % self.admin_password)
        if self.password is not None and self.acl:
            lines.append("user %s on >%s ~%s* &%s* +@all" % (self.user, self.password, self.prefix, self.prefix))
            lines.append("user default off")
        elif self.password is not None:
            lines.append("requirepass %s" % self.password)
        self.conf_path.write_text("\n".join(lines) + "\n" + self.extra_conf)
        os.chmod(self.conf_path, 0o600)

    def url(self, db=0, password=None, user=None):
        """guard_redis's value for this server (password/user override the configured ones,
        e.g. a wrong password)."""
        pw = self.password if password is None else password
        u = self.user if user is None else user
        auth = ""
        if pw is not None:
            auth = "%s:%s@" % (urllib.parse.quote(u or "", safe=""), urllib.parse.quote(pw, safe=""))
        return "redis://%s%s:%d/%d" % (auth, self.host, self.port, db)

    def unix_url(self, db=0):
        return "unix:%s?db=%d" % (self.unix_path, db)

    def client(self, timeout=5.0):
        """A RespClient authenticated as the admin user (every key and command)."""
        return RespClient(self.host, self.port, "admin", self.admin_password, timeout=timeout)

    def cli(self, *args, decode=True):
        """One command as the admin user; returns the reply (RedisError on an error reply)."""
        with self.client() as c:
            return c.command(*args, decode=decode)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _ready(self):
        try:
            return self.cli("PING") == "PONG"
        except (OSError, EOFError, HarnessError):
            return False

    def start(self, timeout=10.0):
        """Start and wait (bounded) until PING is answered."""
        if self.running():
            return self
        _live.add(self)
        out = open(self.dir / "redis.stdout", "ab")
        try:
            self.proc = subprocess.Popen([REDIS_SERVER, str(self.conf_path)], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() >= deadline:
                why = "exited with %s" % self.proc.returncode if self.proc.poll() is not None else "timed out"
                self.kill()
                raise HarnessError("redis-server did not start (%s):\n%s" % (why, self.log_text()[-3000:]))
            time.sleep(0.02)
        return self

    def stop(self, timeout=10.0, graceful=True):
        """SIGTERM (nothing to save) and a bounded wait, then SIGKILL of what is left; the
        port is free again afterwards. graceful=False: kill()."""
        if not self.proc:
            return None
        return stop_group(self.proc, (self.port,), timeout, graceful)

    def kill(self):
        """SIGKILL, like a crash; bounded wait until the port is closed."""
        return self.stop(graceful=False)

    def restart(self, timeout=10.0):
        """Stop (if running) and start again on the same port (empty: no persistence)."""
        self.stop()
        return self.start(timeout=timeout)

    def cleanup(self):
        self.kill()
        remove_tree(self.dir)
        _live.discard(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


# --------------------------------------------------------------------------
# Dovecot auth policy server stand-in


class _TeeReader:
    """Wraps a handler's rfile and keeps a copy of every byte read, so the recorder can
    show a request exactly as it arrived."""

    def __init__(self, f):
        self.f = f
        self.buf = bytearray()

    def readline(self, *args):
        data = self.f.readline(*args)
        self.buf += data
        return data

    def read(self, *args):
        data = self.f.read(*args)
        self.buf += data
        return data

    def take(self):
        data, self.buf = bytes(self.buf), bytearray()
        return data

    def __getattr__(self, name):
        return getattr(self.f, name)


def policy_pwhash(nonce, login, password, bits=12, mech="sha256"):
    """The pwhash Dovecot 2.3 sends a policy server: H(nonce || login || NUL || password),
    its first `bits` bits right-aligned in ceil(bits/8) bytes, in hex (bits=0: all of it)."""
    digest = hashlib.new(mech, nonce.encode() + login.encode() + b"\0" + password.encode()).digest()
    if not bits:
        return digest.hex()
    nbytes = (bits + 7) // 8
    value = int.from_bytes(digest[:nbytes], "big") >> (nbytes * 8 - bits)
    return "%0*x" % (nbytes * 2, value)


class PolicyRequest:
    """One request as the recorder saw it: method, path, query (dict), command,
    headers (list of (name, value) in arrival order), body (bytes), json (parsed body or
    None), raw (the request's bytes as received), conn (a number per TCP connection) and
    seq (its place on that connection, from 1)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def header(self, name):
        """The first value of a header (case-insensitive), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __getitem__(self, key):
        """A field of the JSON body: req["login"]."""
        return (self.json or {})[key]

    def get(self, key, default=None):
        return (self.json or {}).get(key, default)

    def __repr__(self):
        return "<PolicyRequest %s %s %r>" % (self.method, self.path, self.json)


class PolicyRecorder:
    """A tiny threaded HTTP/1.1 server standing in for a Dovecot auth policy server.

    Records every request (self.requests, a list of PolicyRequest) and answers with a
    JSON body chosen per command (?command=allow|report): respond("allow", {"status": -1,
    "msg": "banned"}); the default is {"status":0}. A body may also be bytes (sent as is)
    or a function of the PolicyRequest returning either. stop() closes the listener and
    every kept-alive connection, so Dovecot then finds nobody there.
    """

    def __init__(self, host="127.0.0.1", port=None, path="/policy"):
        self.host = host
        self.port = port or free_port()
        self.path = path
        self.url = "http://%s:%d%s" % (host, self.port, path)
        self.requests = []
        self.responses = {}
        self._lock = threading.Lock()
        self._conns = set()
        self._conn_ids = itertools.count(1)
        self.server = None
        self.thread = None

    def respond(self, command, body=None, status=200):
        """Answer command with body (dict, bytes or function of the request) and HTTP status;
        body None restores the default {"status":0}."""
        if body is None and status == 200:
            self.responses.pop(command, None)
        else:
            self.responses[command] = (status, {"status": 0} if body is None else body)

    def _answer(self, req):
        status, body = self.responses.get(req.command, (200, {"status": 0}))
        if callable(body):
            body = body(req)
        if not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body, separators=(",", ":")).encode()
        return status, bytes(body)

    def _handler_class(self):
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                self.rfile = _TeeReader(self.rfile)
                self.conn_id = next(rec._conn_ids)
                self.seq = 0

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                raw = self.rfile.take()
                self.seq += 1
                path, _, qs = self.path.partition("?")
                query = {k: v[-1] for k, v in urllib.parse.parse_qs(qs, keep_blank_values=True).items()}
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    parsed = None
                req = PolicyRequest(method=self.command, path=path, query=query, command=query.get("command"),
                                    headers=list(self.headers.items()), body=body, json=parsed, raw=raw,
                                    conn=self.conn_id, seq=self.seq, time=time.monotonic())
                status, out = rec._answer(req)
                with rec._lock:
                    rec.requests.append(req)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_POST = do_GET = do_PUT = _handle

            def log_message(self, *args):
                pass

        return Handler

    def start(self):
        if self.server:
            return self
        rec = self

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def process_request(self, request, client_address):
                with rec._lock:
                    rec._conns.add(request)
                super().process_request(request, client_address)

            def shutdown_request(self, request):
                with rec._lock:
                    rec._conns.discard(request)
                super().shutdown_request(request)

        self.server = Server((self.host, self.port), self._handler_class())
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="policy-recorder", daemon=True)
        self.thread.start()
        _live.add(self)
        return self

    def running(self):
        return self.server is not None

    def stop(self):
        """Stop listening and drop every open connection (kept-alive ones too)."""
        if not self.server:
            return
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(timeout=5)
        self.server = None

    def cleanup(self):
        self.stop()
        _live.discard(self)

    def clear(self):
        with self._lock:
            self.requests.clear()

    def select(self, command=None, **fields):
        """Recorded requests with this command whose JSON body has these field values."""
        with self._lock:
            reqs = list(self.requests)
        return [r for r in reqs if (command is None or r.command == command)
                and all(r.get(k) == v for k, v in fields.items())]

    def wait_requests(self, n, timeout=5.0, command=None, **fields):
        """Wait until at least n matching requests (see select) are recorded; return them all."""
        wait_for(lambda: len(self.select(command, **fields)) >= n, timeout,
                 what="%d policy requests (%s %r)" % (n, command, fields))
        return self.select(command, **fields)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


# --------------------------------------------------------------------------
# Postfix (smtpd only, for SMTP AUTH through Dovecot)


def postfix_unavailable():
    """None when a private Postfix can run here, else the reason (for pytest.skip)."""
    if not IS_ROOT:
        return "Postfix's master runs only as root"
    if not os.access(Postfix.MASTER, os.X_OK):
        return "postfix not installed (scripts/deps.sh installs it)"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "no postfix user or postdrop group"
    return None


class Postfix:
    """A private Postfix 3.x whose only job is SMTP AUTH: smtpd on a free 127.0.0.1 port,
    smtpd_sasl_type = dovecot through sasl_path (Dovecot(sasl_socket=True).sasl_path),
    plus anvil and postlogd. Config, queue and data directories live in a temp dir;
    the master runs in the foreground ('master -c DIR -d -s'), in its own process group,
    so stop() can always take it and its children down. Nothing reads or writes
    /etc/postfix or the system queue; no mail is accepted (no destinations, no relay).
    Needs root. Log (maillog_file through postlogd): log_text(), wait_log().
    """

    MASTER = "/usr/lib/postfix/sbin/master"

    def __init__(self, sasl_path, tmpdir=None, port=None, main=None):
        reason = postfix_unavailable()
        if reason:
            raise HarnessError(reason)
        self.dir = Path(tmpdir or tempfile.mkdtemp(prefix="imapgate-postfix-"))
        os.chmod(self.dir, 0o755)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.sasl_path = Path(sasl_path)
        self.conf_dir = self.dir / "conf"
        self.queue_dir = self.dir / "queue"
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "maillog"
        self.stdout_path = self.dir / "master.stdout"
        self.main = main or {}
        self.proc = None
        self._make_dirs()
        self._write_conf()

    def _make_dirs(self):
        pf = pwd.getpwnam("postfix")
        postdrop = grp.getgrnam("postdrop").gr_gid
        # Owners and modes as Postfix's post-install would set them for the parts used.
        for path, uid, gid, mode in (
            (self.conf_dir, 0, 0, 0o755),
            (self.queue_dir, 0, 0, 0o755),
            (self.queue_dir / "pid", 0, 0, 0o755),
            (self.queue_dir / "private", pf.pw_uid, 0, 0o700),
            (self.queue_dir / "public", pf.pw_uid, postdrop, 0o710),
            (self.data_dir, pf.pw_uid, 0, 0o700),
        ):
            path.mkdir(exist_ok=True)
            os.chown(path, uid, gid)
            os.chmod(path, mode)

    def _write_conf(self):
        main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "syslog_name": "postfix-imapgate-test",
            "maillog_file_prefixes": self.dir,
            "maillog_file": self.log_path,
            "myhostname": "imapgate-test.localdomain",
            "mydomain": "localdomain",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mydestination": "",
            "mynetworks": "",
            "relay_domains": "",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
            "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject",
            "smtpd_peername_lookup": "no",
            "smtpd_tls_security_level": "none",
            "smtpd_tls_auth_only": "no",
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": self.sasl_path,
            "smtpd_sasl_security_options": "noanonymous",
        }
        main.update(self.main)
        (self.conf_dir / "main.cf").write_text(
            "# generated by imapgate tests/e2e/harness.py — a private instance, not /etc/postfix\n"
            + "".join("%s = %s\n" % (k, v) for k, v in main.items() if v is not None))
        # No chroot: smtpd reaches the Dovecot socket by its absolute path.
        (self.conf_dir / "master.cf").write_text(
            "# service type private unpriv chroot wakeup maxproc command\n"
            "%s:%d inet n - n - - smtpd\n"
            "anvil unix - - n - 1 anvil\n"
            "postlog unix-dgram n - n - 1 postlogd\n" % (self.host, self.port))
        # Postfix waits (in 300 ms steps) while main.cf looks freshly edited: backdate it.
        old = time.time() - 10
        for name in ("main.cf", "master.cf"):
            os.utime(self.conf_dir / name, (old, old))

    def start(self, timeout=15.0):
        if self.running():
            return self
        _live.add(self)
        out = open(self.stdout_path, "ab")
        try:
            self.proc = subprocess.Popen([self.MASTER, "-c", str(self.conf_dir), "-d", "-s"],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        finally:
            out.close()
        try:
            wait_listening(self.port, "4", timeout=timeout, proc=self.proc)
            self._wait_greeting(timeout)
        except Exception as e:
            self.stop()
            raise HarnessError("postfix did not start: %s\n%s\n%s" % (
                e, self.stdout_path.read_text(errors="replace")[-3000:], self.log_text()[-3000:])) from e
        return self

    def _wait_greeting(self, timeout):
        wait_greeting(self.host, self.port, b"220 ", "QUIT", timeout, "smtpd")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM to the master (it stops its children), then SIGKILL of whatever is left
        of the process group; returns the master's exit status."""
        if not self.proc:
            return None
        return stop_group(self.proc, (self.port,), timeout)

    def cleanup(self):
        self.stop()
        remove_tree(self.dir)
        _live.discard(self)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, regex, timeout=5.0):
        """Wait for a maillog line matching regex (re.search); return the match."""
        pat = re.compile(regex)
        return wait_for(lambda: pat.search(self.log_text()), timeout, what="postfix log %r" % regex)

    def smtp(self, timeout=10.0):
        """An smtplib.SMTP connected to smtpd, EHLO done."""
        s = smtplib.SMTP(self.host, self.port, timeout=timeout)
        s.ehlo("client.imapgate.test")
        return s

    def auth(self, user, password, timeout=10.0):
        """AUTH PLAIN with an initial response; returns (reply code, reply text)."""
        register_secret(password, sasl_plain(user, password))
        s = self.smtp(timeout)
        try:
            code, text = s.docmd("AUTH", "PLAIN " + sasl_plain(user, password))
        finally:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                s.close()
        return code, text.decode(errors="replace")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


# --------------------------------------------------------------------------
# imapgate


def _format_value(v):
    if v is True:
        return "yes"
    if v is False:
        return "no"
    return str(v)


def render_config(cfg):
    """Config text from a dict. A list value gives one line per item (e.g. several
    'listen' lines); None drops the key."""
    lines = []
    for k, v in cfg.items():
        if v is None:
            continue
        for item in v if isinstance(v, (list, tuple)) else [v]:
            lines.append("%s %s\n" % (k, _format_value(item)))
    return "".join(lines)


def run_check(conf_text, path=None, build=None, timeout=10.0):
    """Write conf_text to path (default: a temporary file, removed afterwards), run
    'imapgate -t -f PATH' and return (exit code, stdout+stderr as text)."""
    tmpdir = None
    if path is None:
        tmpdir = tempfile.mkdtemp(prefix="imapgate-check-")
        path = Path(tmpdir) / "imapgate.conf"
    try:
        Path(path).write_text(conf_text)
        p = subprocess.run(
            [str(imapgate_binary(build)), "-t", "-f", str(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
        )
        return p.returncode, p.stdout.decode(errors="replace")
    finally:
        if tmpdir:
            remove_tree(tmpdir)


class Imapgate:
    """One imapgate process in the foreground (-F) with a generated config.

    g = Imapgate(backend_port=dovecot.port, max_bad_commands=1); g.start(); ... g.stop()
    """

    def __init__(self, backend_port=None, text=None, build=None, ipv6=None, tmpdir=None, env=None, **config):
        self.build = Path(build or build_dir()).resolve()
        # Extra environment variables for the process (e.g. NOTIFY_SOCKET).
        self.env = env
        self.binary = imapgate_binary(self.build)
        self.dir = Path(tmpdir or tempfile.mkdtemp(prefix="imapgate-gate-"))
        # The daemon drops to proc_username and re-reads its config on SIGHUP.
        os.chmod(self.dir, 0o755)
        self.conf_path = self.dir / "imapgate.conf"
        self.log_path = self.dir / "imapgate.log"
        self.proc = None
        self.returncode = None
        self.clients = []
        self.host = "127.0.0.1"
        self.ipv6 = have_ipv6() if ipv6 is None else (bool(ipv6) and have_ipv6())
        self.port = free_port()
        self.port6 = free_port("::1") if self.ipv6 else None
        if text is not None:
            self.config = None
            self.write_config_text(text)
        else:
            self.config = self.default_config(backend_port)
            self.config.update(config)
            self.write_config()

    def default_config(self, backend_port):
        cfg = {
            "server_hostname": "127.0.0.1",
            "server_port": backend_port if backend_port is not None else 143,
            "listen": ["127.0.0.1:%d" % self.port] + (["[::1]:%d" % self.port6] if self.ipv6 else []),
            "connect_retries": 1,
            "connect_delay": 1,
            # The default /var/lib/imapgate may not exist here; tests that
            # want persistence give a path of their own.
            "guard_db": "none",
        }
        if IS_ROOT:
            cfg["proc_username"] = "nobody"
        return cfg

    # -- config
    def write_config_text(self, text):
        # Written then renamed, so a SIGHUP never sees half a file.
        tmp = self.conf_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.conf_path)

    def add_listener(self, options):
        """Before start: one more listener on 127.0.0.1 with these options
        ("tls", "proxy_protocol"); returns its port."""
        port = free_port()
        self.write_config(listen=list(self.config["listen"]) + ["127.0.0.1:%d %s" % (port, options)])
        return port

    def write_config(self, **changes):
        """Apply changes to the dict config (None removes a key) and rewrite the file."""
        if self.config is None:
            raise HarnessError("this Imapgate was built from raw text; use write_config_text")
        for k, v in changes.items():
            if v is None:
                self.config.pop(k, None)
            else:
                self.config[k] = v
        self.write_config_text(render_config(self.config))

    def config_text(self):
        return self.conf_path.read_text()

    # -- process
    def launch(self):
        """Start the process without waiting for readiness (for tests that expect failure)."""
        if not self.binary.exists():
            raise HarnessError("imapgate binary not built: %s (run make)" % self.binary)
        _live.add(self)
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [str(self.binary), "-F", "-f", str(self.conf_path)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=str(self.dir),
                env=dict(os.environ, **self.env) if self.env else None,
            )
        finally:
            logf.close()
        self.returncode = None
        return self

    def start(self, timeout=10.0):
        """Start and wait until every listener is in LISTEN state."""
        self.launch()
        try:
            wait_listening(self.port, "4", timeout=timeout, proc=self.proc)
            if self.port6:
                wait_listening(self.port6, "6", timeout=timeout, proc=self.proc)
        except Exception as e:
            if self.proc.poll() is None:
                self.kill()
            else:
                self.returncode = self.proc.returncode
            raise HarnessError("imapgate did not start: %s\n--- log ---\n%s" % (e, self.log_text()[-4000:])) from e
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def pid(self):
        return self.proc.pid if self.proc else None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self):
        self.signal(signal.SIGHUP)

    def wait_exit(self, timeout=10.0):
        """Wait for the process to exit by itself; return its exit code (TimeoutError if not)."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError("imapgate still running after %.1fs" % timeout) from None
        return self.returncode

    def stop(self, timeout=15.0):
        """SIGTERM, wait (bounded), return the exit code. Kills it (and raises) if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            self.returncode = self.proc.returncode
            return self.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError("imapgate did not exit within %.1fs of SIGTERM" % timeout) from None
        return self.returncode

    def kill(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            kill_group(self.proc.pid)
            self.proc.wait(timeout=5)
        self.returncode = self.proc.returncode
        return self.returncode

    def cleanup(self):
        self.close_clients()
        self.kill()
        remove_tree(self.dir)
        _live.discard(self)

    # -- log
    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self):
        """Position in the log; pass as since= to wait_log to see only later lines."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_lines(self, event=None, since=0):
        """Log lines (after since), optionally only those with event=EVENT."""
        text = self.log_text()[since:]
        lines = text.splitlines()
        if event:
            pat = re.compile(r"(^|\s)event=%s(\s|$)" % re.escape(event))
            lines = [ln for ln in lines if pat.search(ln)]
        return lines

    def wait_log(self, regex, timeout=5.0, since=0):
        """Poll the log until regex matches a line written after offset since; return the match."""
        pat = re.compile(regex, re.M)

        def probe():
            return pat.search(self.log_text()[since:])

        try:
            return wait_for(probe, timeout, interval=0.02, what="log line /%s/" % regex)
        except TimeoutError as e:
            raise TimeoutError("%s\n--- log ---\n%s" % (e, self.log_text()[-3000:])) from None

    def sanitizer_report(self):
        """The first sanitizer/UB report in the log, or None."""
        text = self.log_text()
        for m in SANITIZER_MARKERS:
            i = text.find(m)
            if i != -1:
                return text[max(0, i - 200): i + 2000]
        return None

    # -- clients
    def connect_raw(self, src="127.0.0.1", ipv6=False, timeout=10.0):
        """A RawClient to the IPv4 listener (bound to src) or, with ipv6=True, to [::1]."""
        if ipv6:
            if not self.port6:
                raise HarnessError("no IPv6 listener")
            c = RawClient("::1", self.port6, src=None if src == "127.0.0.1" else src, timeout=timeout)
        else:
            c = RawClient(self.host, self.port, src=src, timeout=timeout)
        self.clients.append(c)
        return c

    def close_clients(self):
        """Close every RawClient made by connect_raw (so a stop does not wait for them)."""
        for c in self.clients:
            c.close()
        self.clients = []

    def connect_greeted(self, src="127.0.0.1", ipv6=False, timeout=10.0):
        """connect_raw, then read and check the '* OK' greeting."""
        c = self.connect_raw(src=src, ipv6=ipv6, timeout=timeout)
        line = c.read_line()
        if not line.startswith(b"* OK "):
            c.close()
            raise AssertionError("bad greeting: %r" % line)
        c.greeting = line
        return c

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


# --------------------------------------------------------------------------
# IMAP helpers shared by tests and the demo


def ctl(gate, *args):
    """imapgate-ctl against a gate whose control_socket is "ctl.sock" (in its dir):
    (exit code, stdout, stderr)."""
    sock = str(gate.dir / "ctl.sock")
    p = subprocess.run([str(gate.build / "imapgate-ctl"), "-s", sock] + list(args),
                       capture_output=True, text=True, timeout=10)
    return p.returncode, p.stdout, p.stderr


def login_raw(c, user, password, tag="a", timeout=None):
    """LOGIN with both arguments quoted; return the lines up to the tagged reply."""
    return c.command(tag, "LOGIN %s %s" % (quote(user), quote(password)), timeout=timeout)


def normalize_timing(line):
    """Drop Dovecot's '(0.001 + 0.000 secs)' timing from a tagged reply."""
    return re.sub(rb" \([0-9.]+(?: \+ [0-9.]+)* secs\)", b"", line)
