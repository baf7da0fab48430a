#!/usr/bin/python3
"""
demo — show imapgate working in front of a real Dovecot, on this machine.

    make demo                                  (builds, then runs this)
    /usr/bin/python3 tools/demo.py --build build [--no-wait]

Starts a private Dovecot (users alice/alicepw and bob/bobpw, nothing from
/etc/dovecot) and an imapgate in front of it, both on 127.0.0.1 with free
ports, plays a scripted IMAP session through imapgate showing every line on
the wire (C: client, S: server), then tells you how to connect by hand and
waits for Ctrl-C. With --no-wait, or when stdin is not a terminal (CI), it
stops at once. Everything it started is stopped and removed on exit.

Later sections (a reused backend connection, a password-guessing client
being banned) plug in as functions listed in SECTIONS below.
"""

import argparse
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from harness import Dovecot, HarnessError, Imapgate, RawClient, make_message  # noqa: E402

DEMO_USERS = {"alice": "alicepw", "bob": "bobpw"}
SHOW_MAX = 150  # wire lines longer than this are shortened on screen


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
        self.gate = Imapgate(backend_port=self.dovecot.port, build=self.build)
        self.gate.start()
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
    """Hook: a second login of the same user served from imapgate's connection cache
    (added with the connection pool). Returns without output until then."""
    return None


def section_guessing_client_banned(demo):
    """Hook: a client guessing passwords is banned and refused before the backend is
    touched (added with the guard). Returns without output until then."""
    return None


# Run in this order. New demo sections are functions taking the Demo.
SECTIONS = [
    section_scripted_session,
    section_reused_connection,
    section_guessing_client_banned,
]


def print_by_hand(demo):
    heading("Try it yourself")
    port = demo.gate.port
    note("Connect with netcat (-C sends CRLF line ends) and type IMAP commands:")
    note("    nc -C 127.0.0.1 %d" % port)
    note("    a LOGIN alice alicepw")
    note("    b SELECT INBOX")
    note("    c FETCH 1 BODY[]")
    note("    d LOGOUT")
    note("or from Python:")
    note("    python3 -c \"import imaplib; m = imaplib.IMAP4('127.0.0.1', %d); "
         "print(m.login('bob', 'bobpw')); print(m.select('INBOX')); m.logout()\"" % port)
    note("users: " + ", ".join("%s/%s" % kv for kv in DEMO_USERS.items()))
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
