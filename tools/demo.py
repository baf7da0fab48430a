#!/usr/bin/python3
"""
demo — show imapgate working in front of a real Dovecot, on this machine.

    make demo                                  (builds, then runs this)
    /usr/bin/python3 tools/demo.py --build build [--no-wait]

Starts a private Dovecot (users alice/alicepw and bob/bobpw, nothing from
/etc/dovecot) and an imapgate in front of it, both on 127.0.0.1 with free
ports, plays a scripted IMAP session through imapgate showing every line on
the wire (C: client, S: server), shows a password-guessing client on
127.0.0.66 being banned by the guard (and imapgate-ctl listing the ban),
then tells you how to connect by hand and waits for Ctrl-C. With --no-wait,
or when stdin is not a terminal (CI), it stops at once. Everything it
started is stopped and removed on exit.

Sections are functions listed in SECTIONS below: the scripted session,
alice's second login reusing the parked backend connection
([XPROXYREUSE], no new Dovecot login), and the guessing client.
"""

import argparse
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from harness import Dovecot, HarnessError, Imapgate, RawClient, can_bind, make_message, wait_for  # noqa: E402

DEMO_USERS = {"alice": "alicepw", "bob": "bobpw"}
SHOW_MAX = 150  # wire lines longer than this are shortened on screen

# The guard, tuned for a demo: a ban after 3 failures (5 by default), failed
# logins answered after 100..200 ms (250..500 by default).
GUARD_CONFIG = dict(guard_maxretry=3, guard_failure_delay=200, forward_client_address=True)
GUESSER = "127.0.0.66"  # the password-guessing client's source address


# --------------------------------------------------------------------------
# output


def heading(text):
    print()
    print("== " + text)
    print()


def note(text):
    print("   " + text)


def show(direction, line):
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    if len(text) > SHOW_MAX:
        text = text[: SHOW_MAX - 3] + "..."
    print("   %s: %s" % (direction, text))


class Wire:
    """A raw IMAP client that prints every line it sends and receives."""

    def __init__(self, host, port, src=None):
        self.c = RawClient(host, port, src=src)

    def greeting(self):
        line = self.c.read_line()
        show("S", line)
        return line

    def command(self, tag, text):
        line = "%s %s" % (tag, text)
        show("C", line.encode())
        lines = self.c.command(tag, text)
        for ln in lines:
            show("S", ln)
        return lines

    def expect_close(self):
        rest = self.c.expect_closed(timeout=5)
        for ln in rest.splitlines():
            show("S", ln)
        note("(connection closed by the server)")

    def close(self):
        self.c.close()


# --------------------------------------------------------------------------
# the demo's state and sections


class Demo:
    def __init__(self, build):
        self.build = Path(build)
        self.dovecot = None
        self.gate = None
        self.ctl_sock = None

    def start(self):
        heading("Starting a private Dovecot (the IMAP backend)")
        self.dovecot = Dovecot(users=DEMO_USERS)
        self.dovecot.start()
        self.dovecot.deliver("alice", make_message(
            subject="Welcome to the imapgate demo", sender="demo@imapgate.test",
            to="alice@imapgate.test", body="This message sits in alice's INBOX."))
        note("Dovecot %s listening on 127.0.0.1:%d, files in %s"
             % (self._dovecot_version(), self.dovecot.port, self.dovecot.dir))
        note("users: " + ", ".join("%s/%s" % kv for kv in DEMO_USERS.items()))

        heading("Starting imapgate in front of it")
        self.gate = Imapgate(backend_port=self.dovecot.port, build=self.build, **GUARD_CONFIG)
        # The control socket and the guard's SQLite file live in the gate's
        # temporary directory; the file is written after imapgate dropped to
        # proc_username, so that user must own its directory.
        guard_dir = self.gate.dir / "guard"
        guard_dir.mkdir(mode=0o700)
        run_user = self.gate.config.get("proc_username")
        if run_user and os.geteuid() == 0:
            pw = pwd.getpwnam(run_user)
            os.chown(guard_dir, pw.pw_uid, pw.pw_gid)
        self.ctl_sock = self.gate.dir / "ctl.sock"
        self.gate.write_config(control_socket=str(self.ctl_sock), guard_db=str(guard_dir / "guard.db"))
        self.gate.start()
        # Listening comes first; wait for the rest of the start-up lines so
        # they do not land in the first section's log excerpt.
        self.gate.wait_log(r"\bevent=start\b", timeout=10)
        self.gate.wait_log(r"\bevent=backend_(ready|unreachable)\b", timeout=10)
        note("imapgate (pid %d) listening on 127.0.0.1:%d%s"
             % (self.gate.pid(), self.gate.port,
                " and [::1]:%d" % self.gate.port6 if self.gate.port6 else ""))
        note("config %s" % self.gate.conf_path)
        for line in self.gate.config_text().splitlines():
            note("    " + line)

    def _dovecot_version(self):
        import subprocess
        try:
            return subprocess.run([self.dovecot.binary, "--version"], capture_output=True,
                                  text=True, timeout=5).stdout.split()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    def stop(self):
        if self.gate is not None:
            self.gate.close_clients()
            try:
                rc = self.gate.stop(timeout=15)
                if rc not in (0, None):
                    print("imapgate exited with status %s" % rc, file=sys.stderr)
            except TimeoutError as e:
                print(str(e), file=sys.stderr)
            self.gate.cleanup()
            self.gate = None
        if self.dovecot is not None:
            self.dovecot.cleanup()
            self.dovecot = None

    def log_since(self, mark):
        """imapgate's log lines written after mark (see Imapgate.log_mark)."""
        return self.gate.log_text()[mark:].splitlines()

    def ctl(self, *args):
        """Run imapgate-ctl against the demo's control socket; show and return its output."""
        cmd = [str(self.build / "imapgate-ctl"), "-s", str(self.ctl_sock)] + list(args)
        note("$ imapgate-ctl -s %s %s" % (self.ctl_sock, " ".join(args)))
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        for line in (p.stdout + p.stderr).splitlines():
            note("  " + line)
        if p.returncode != 0:
            raise AssertionError("imapgate-ctl %s exited with %d" % (" ".join(args), p.returncode))
        return p.stdout


def section_scripted_session(demo):
    """A whole client session through imapgate, line by line."""
    heading("A client session through imapgate (C: client, S: server)")
    mark = demo.gate.log_mark()
    before = demo.dovecot.count_logins("alice")
    w = Wire("127.0.0.1", demo.gate.port)
    try:
        w.greeting()
        w.command("a1", "CAPABILITY")
        w.command("a2", "LOGIN alice alicepw")
        w.command("a3", "SELECT INBOX")
        w.command("a4", "FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])")
        w.command("a5", "LOGOUT")
        w.expect_close()
    finally:
        w.close()
    try:
        demo.dovecot.wait_logins("alice", before + 1, timeout=3)
    except TimeoutError:
        pass
    print()
    note("Dovecot logged %d login(s) of alice for this session: the LOGIN went to the backend."
         % (demo.dovecot.count_logins("alice") - before))
    note("imapgate's log for it (key=value lines, never a password):")
    try:  # the disconnect line comes just after the server closed
        demo.gate.wait_log(r"\bevent=disconnect\b", timeout=2, since=mark)
    except TimeoutError:
        pass
    for line in demo.log_since(mark):
        note("    " + line)


def section_reused_connection(demo):
    """A second login of alice, served from the backend connection imapgate parked
    after the first session's LOGOUT: [XPROXYREUSE], and no new login in Dovecot."""
    heading("A reused backend connection (the connection cache)")
    note("After alice's LOGOUT above, imapgate answered BYE itself, deselected the")
    note("mailbox on the backend connection and parked it. Her next login with the")
    note("same password takes it over:")
    print()
    try:
        demo.gate.wait_log(r"event=pool_park user=alice\b", timeout=5)
    except TimeoutError:
        pass
    demo.ctl("pool")
    print()
    mark = demo.gate.log_mark()
    before = demo.dovecot.count_logins("alice")
    w = Wire("127.0.0.1", demo.gate.port)
    try:
        w.greeting()
        w.command("b1", "LOGIN alice alicepw")
        w.command("b2", "FETCH 1 FLAGS")
        w.command("b3", "SELECT INBOX")
        w.command("b4", "LOGOUT")
        w.expect_close()
    finally:
        w.close()
    print()
    note("The FETCH before SELECT gets BAD: the reused connection starts with no mailbox")
    note("selected, as a fresh login would. Dovecot saw %d new login(s) of alice;"
         % (demo.dovecot.count_logins("alice") - before))
    note("imapgate's log:")
    try:
        demo.gate.wait_log(r"event=pool_park\b", timeout=3, since=mark)
    except TimeoutError:
        pass
    show_log_lines(demo, mark, ["login", "disconnect", "pool_park"])


def dovecot_lines_from(demo, ip, what=""):
    """Dovecot log lines naming ip as the remote address (rip=) and containing what."""
    pat = re.compile(r"\brip=%s\b" % re.escape(ip))
    return [ln for ln in demo.dovecot.log_text().splitlines() if pat.search(ln) and what in ln]


def show_log_lines(demo, mark, events):
    """imapgate's log lines since mark with one of the given events."""
    pat = re.compile(r"\bevent=(%s)\b" % "|".join(events))
    for line in demo.log_since(mark):
        if pat.search(line):
            note("    " + line)


def section_guessing_client_banned(demo):
    """A client guessing alice's password is banned at the third failure; its next
    connection is refused before the backend is touched; alice is not affected."""
    heading("A password-guessing client is banned (the guard)")
    if not can_bind(GUESSER):
        note("Skipped: cannot use %s as a source address on this machine." % GUESSER)
        return
    maxretry = demo.gate.config["guard_maxretry"]
    note("A client on %s guesses alice's password. This demo bans after %d failures"
         % (GUESSER, maxretry))
    note("(guard_maxretry; 5 by default). 127.0.0.1 is in guard_ignore by default, so")
    note("the other sections' logins are never counted.")
    mark = demo.gate.log_mark()
    for i in range(1, maxretry + 1):
        print()
        note("-- connection %d from %s" % (i, GUESSER))
        w = Wire("127.0.0.1", demo.gate.port, src=GUESSER)
        try:
            w.greeting()
            lines = w.command("g%d" % i, "LOGIN alice guess%d" % i)
            if not lines[-1].startswith(b"g%d NO " % i):
                raise AssertionError("a wrong password was not refused: %r" % lines[-1])
            if i == maxretry:
                w.expect_close()  # the failure that bans: NO, then BYE
        finally:
            w.close()
    demo.gate.wait_log(r"\bevent=ban prefix=%s/32\b" % re.escape(GUESSER), timeout=5, since=mark)
    # Dovecot logs asynchronously: wait until it has written all three failures.
    wait_for(lambda: len(dovecot_lines_from(demo, GUESSER, "auth failed")) >= maxretry, 5,
             what="Dovecot's log of the failed logins")
    failed = dovecot_lines_from(demo, GUESSER, "auth failed")
    seen = len(dovecot_lines_from(demo, GUESSER))

    print()
    note("-- connection %d from %s: refused in the greeting" % (maxretry + 1, GUESSER))
    w = Wire("127.0.0.1", demo.gate.port, src=GUESSER)
    try:
        greeting = w.greeting()
        if not greeting.startswith(b"* BYE "):
            raise AssertionError("a banned client was greeted: %r" % greeting)
        w.expect_close()
    finally:
        w.close()
    demo.gate.wait_log(r"\bevent=refused session=\d+ client=%s:" % re.escape(GUESSER), timeout=5, since=mark)
    time.sleep(0.3)  # give a stray attempt time to show in Dovecot's log
    after = len(dovecot_lines_from(demo, GUESSER))
    if after != seen:
        raise AssertionError("the banned client reached Dovecot")
    print()
    note("Dovecot saw the %d failed logins, with the real client as rip= (imapgate passes"
         % len(failed))
    note("it on in ID: forward_client_address), and nothing of connection %d:" % (maxretry + 1))
    for line in failed:
        note("    " + line)

    print()
    note("imapgate's log (login failures with the guard's count, the ban, the refusal):")
    show_log_lines(demo, mark, ("login_failed", "ban", "refused", "login_refused"))

    print()
    note("The ban, as the operator sees it (imapgate-ctl over control_socket):")
    out = demo.ctl("bans")
    if GUESSER not in out:
        raise AssertionError("imapgate-ctl bans does not list %s" % GUESSER)
    note("'imapgate-ctl unban %s' would lift it. The ban is also kept in guard_db" % GUESSER)
    note("(SQLite), so it survives a restart of imapgate.")

    print()
    note("-- alice from 127.0.0.1 is not affected")
    w = Wire("127.0.0.1", demo.gate.port, src="127.0.0.1")
    try:
        w.greeting()
        lines = w.command("h1", "LOGIN alice alicepw")
        if not lines[-1].startswith(b"h1 OK "):
            raise AssertionError("alice could not log in: %r" % lines[-1])
        w.command("h2", "LOGOUT")
        w.expect_close()
    finally:
        w.close()


# Run in this order. New demo sections are functions taking the Demo.
SECTIONS = [
    section_scripted_session,
    section_reused_connection,
    section_guessing_client_banned,
]


def print_by_hand(demo):
    heading("Try it yourself")
    port = demo.gate.port
    note("Read alice's first message with curl's IMAP client:")
    note("    curl --user alice:alicepw 'imap://127.0.0.1:%d/INBOX;UID=1'" % port)
    note("or type IMAP commands by hand (netcat, if installed; -C sends CRLF):")
    note("    nc -C 127.0.0.1 %d" % port)
    note("    a LOGIN alice alicepw")
    note("    b SELECT INBOX")
    note("    c FETCH 1 BODY[]")
    note("    d LOGOUT")
    note("or from Python:")
    note("    python3 -c \"import imaplib; m = imaplib.IMAP4('127.0.0.1', %d); "
         "print(m.login('bob', 'bobpw')); print(m.select('INBOX')); m.logout()\"" % port)
    note("users: " + ", ".join("%s/%s" % kv for kv in DEMO_USERS.items()))
    note("Ask the running imapgate (bans, why ADDRESS, unban ADDRESS, status):")
    note("    %s -s %s bans" % (demo.build / "imapgate-ctl", demo.ctl_sock))
    note("imapgate's log: %s" % demo.gate.log_path)
    note("Dovecot's log:  %s" % demo.dovecot.info_log_path)


def wait_for_ctrl_c(demo):
    print()
    note("Running. Press Ctrl-C to stop everything.")
    try:
        while demo.gate.running() and demo.dovecot.running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        print()
        return
    if not demo.gate.running():
        print("imapgate stopped unexpectedly (status %s)" % demo.gate.proc.returncode, file=sys.stderr)
    else:
        print("Dovecot stopped unexpectedly", file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Show imapgate in front of a private Dovecot.")
    ap.add_argument("--build", default=str(REPO / "build"), help="directory with the imapgate binary")
    ap.add_argument("--no-wait", action="store_true", help="exit after the scripted part")
    args = ap.parse_args(argv)

    binary = Path(args.build) / "imapgate"
    if not binary.exists():
        print("demo: %s not found; build it with make" % binary, file=sys.stderr)
        return 1

    # SIGTERM (e.g. from a CI timeout) cleans up like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    demo = Demo(args.build)
    status = 0
    try:
        demo.start()
        for section in SECTIONS:
            section(demo)
        print_by_hand(demo)
        if args.no_wait or not sys.stdin.isatty():
            print()
            note("Not waiting (%s); stopping." % ("--no-wait" if args.no_wait else "stdin is not a terminal"))
        else:
            wait_for_ctrl_c(demo)
    except KeyboardInterrupt:
        print()
    except (HarnessError, OSError, EOFError, TimeoutError, AssertionError) as e:
        print("demo failed: %s" % e, file=sys.stderr)
        if demo.gate is not None:
            print("--- imapgate log ---\n" + demo.gate.log_text()[-3000:], file=sys.stderr)
        status = 1
    finally:
        heading("Stopping")
        demo.stop()
        note("imapgate and Dovecot stopped, temporary files removed.")
    return status


if __name__ == "__main__":
    sys.exit(main())
