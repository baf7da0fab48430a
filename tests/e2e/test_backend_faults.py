"""
Backends that misbehave in ways no real Dovecot can be made to (so a small
scripted IMAP server stands in): BYE or PREAUTH greetings, a refused ID
(imapproxy aborted on it with a double free), garbage, an endless line, a
close mid-login, LOGINDISABLED without STARTTLS, silence. Each ends that
login with "NO [UNAVAILABLE]" (or the ID's NO) and nothing else; the
daemon keeps serving; no credentials reach a server that refused them.
"""

import socket
import threading

import pytest

from harness import login_raw, register_secret

CAPS = b"IMAP4rev1 LITERAL+ ID AUTH=PLAIN"


class ScriptedServer:
    """Accepts connections; each runs behaviour(conn, rfile) in a thread and
    everything the client sent is kept in self.received."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.lock = threading.Lock()
        self.stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        conn.settimeout(10)
        rfile = conn.makefile("rb")
        try:
            self.behaviour(self, conn, rfile)
        except (OSError, ValueError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def readline(self, rfile):
        line = rfile.readline(65536)
        with self.lock:
            self.received += line
        return line

    def close(self):
        self.stop = True
        self.sock.close()


def greet_then(tail):
    """Normal greeting with capabilities, then tail(server, conn, rfile)."""
    def run(srv, conn, rfile):
        conn.sendall(b"* OK [CAPABILITY " + CAPS + b"] mock ready\r\n")
        tail(srv, conn, rfile)
    return run


def answer_until(tag_prefix, reply):
    """Answer every command OK until one whose tag starts with tag_prefix."""
    def tail(srv, conn, rfile):
        while True:
            line = srv.readline(rfile)
            if not line:
                return
            tag = line.split(b" ", 1)[0]
            if tag.startswith(tag_prefix):
                conn.sendall(reply.replace(b"TAG", tag))
                return
            conn.sendall(tag + b" OK fine\r\n")
    return tail


@pytest.fixture
def scripted(make_gate):
    servers = []

    def make(behaviour, **config):
        s = ScriptedServer(behaviour)
        servers.append(s)
        config.setdefault("backend_timeout", 2)
        config.setdefault("guard_failure_delay", 0)
        g = make_gate(backend=s.port, **config)
        return s, g

    yield make
    for s in servers:
        s.close()


PW = register_secret("faults-pw-1")


def login_fails(g, expect=b"a NO [UNAVAILABLE]"):
    c = g.connect_greeted()
    lines = login_raw(c, "bob", PW, timeout=8)
    assert lines[-1].startswith(expect), lines
    assert c.command("n", "NOOP")[-1] == b"n OK Completed\r\n"
    return c


@pytest.mark.parametrize("greeting,reason", [
    (b"* BYE Too busy\r\n", "backend_greeting"),
    (b"* PREAUTH [CAPABILITY IMAP4rev1] logged in already\r\n", "backend_preauth"),
    (b"HTTP/1.1 400 Bad Request\r\n", "backend_greeting"),
])
def test_bad_greetings(scripted, greeting, reason):
    srv, g = scripted(lambda s, conn, rfile: (conn.sendall(greeting), s.readline(rfile)))
    login_fails(g)
    g.wait_log(r"event=login_failed .*reason=%s" % reason)
    assert PW.encode() not in srv.received


def test_refused_id_fails_that_login_only(scripted):
    # imapproxy: "double free or corruption" and the whole daemon gone.
    srv, g = scripted(greet_then(answer_until(b"IG2", b"TAG NO [CLIENTBUG] bad ID\r\n")))
    c = g.connect_greeted()
    assert c.command("i", 'ID ("name" "x")')[-1] == b"i OK Completed\r\n"
    assert login_raw(c, "bob", PW)[-1] == b"a NO [UNAVAILABLE] The server refused the ID command\r\n"
    assert c.command("n", "NOOP")[-1] == b"n OK Completed\r\n"
    g.wait_log(r"event=login_failed .*reason=id_refused")
    assert PW.encode() not in srv.received
    assert g.running()


def test_garbage_reply_to_login(scripted):
    srv, g = scripted(greet_then(answer_until(b"IG4", b"what is this\r\n")))
    login_fails(g)
    g.wait_log(r"event=login_failed .*reason=backend_protocol_error")


def test_endless_line(scripted):
    def run(srv, conn, rfile):
        conn.sendall(b"* OK " + b"x" * 200000)
        srv.readline(rfile)
    srv, g = scripted(run)
    login_fails(g)
    g.wait_log(r"event=login_failed .*reason=backend_line_too_long")


def test_close_in_the_middle_of_login(scripted):
    def run(srv, conn, rfile):
        conn.sendall(b"* OK [CAPABILITY " + CAPS + b"] mock\r\n")
        srv.readline(rfile)  # the LOGIN line with the user literal
        conn.sendall(b"+ go on\r\n")
        conn.close()
    srv, g = scripted(run)
    login_fails(g)
    g.wait_log(r"event=login_failed .*reason=backend_(closed|read_error|write_error)")


def test_logindisabled_without_starttls_gets_no_credentials(scripted):
    def run(srv, conn, rfile):
        conn.sendall(b"* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] mock\r\n")
        while srv.readline(rfile):
            pass
    srv, g = scripted(run)
    login_fails(g)
    g.wait_log(r"event=login_failed .*reason=backend_logindisabled_without_starttls")
    assert b"LOGIN" not in srv.received and PW.encode() not in srv.received


def test_silent_after_login_times_out(scripted):
    def run(srv, conn, rfile):
        conn.sendall(b"* OK [CAPABILITY " + CAPS + b"] mock\r\n")
        while srv.readline(rfile):
            pass  # never answers
    srv, g = scripted(run, backend_timeout=1)
    login_fails(g)
    g.wait_log(r"event=login_failed .*reason=backend_timeout")


def test_untagged_data_during_login_is_not_relayed(scripted):
    # Whatever the server says untagged before LOGIN completes is not the
    # client's; the tagged OK's text is.
    def tail(srv, conn, rfile):
        srv.readline(rfile)  # IG4 LOGIN {3}
        conn.sendall(b"* NOTE something\r\n+ ok\r\n")
        srv.readline(rfile)  # bob {n}
        conn.sendall(b"+ ok\r\n")
        srv.readline(rfile)  # password
        conn.sendall(b"* 3 EXISTS\r\nIG4 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")
        while srv.readline(rfile):
            pass
    srv, g = scripted(greet_then(tail))
    c = g.connect_greeted()
    lines = login_raw(c, "bob", PW)
    assert lines == [b"a OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"]
    # And the credentials went as synchronising literals under imapgate's tag.
    assert b"IG4 LOGIN {3}\r\nbob {%d}\r\n%s\r\n" % (len(PW), PW.encode()) in srv.received
