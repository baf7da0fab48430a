"""
imapproxy's admin commands (XPROXY_DUMPICC, XPROXY_TRACE, XPROXY_NEWLOG,
XPROXY_RESETCOUNTERS, XPROXY_VERSION) and the protocol trace: off by default,
answered only before login and only to admin_allow, imapproxy's replies, the
trace file's records (never a password), and "imapgate-ctl trace".
"""

import json
import os
import re
import stat
import subprocess

import pytest

from harness import DEFAULT_USERS, can_bind, imapgate_binary, login_raw, wait_for

COMMANDS = ["XPROXY_DUMPICC", "XPROXY_TRACE alice", "XPROXY_NEWLOG", "XPROXY_RESETCOUNTERS", "XPROXY_VERSION"]
RECORD = re.compile(rb"\n\n-----> C= (\d+) (\S+) (CLIENT|SERVER|PROXY): ([^\n]*)\n")


def admin_gate(make_gate, **config):
    """A gate with the admin commands on, a trace file and a control socket in its directory."""
    g = make_gate(start=False, enable_admin_commands=True, **config)
    changes = {"control_socket": str(g.dir / "ctl.sock")}
    if "protocol_log_filename" not in config:
        changes["protocol_log_filename"] = str(g.dir / "protocol.log")
    g.write_config(**changes)
    g.start()
    return g


def trace_path(g):
    return g.dir / "protocol.log"


def records(data):
    """[(user, side, what, body)] of a trace file's bytes."""
    out = []
    heads = list(RECORD.finditer(data))
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(data)
        out.append((m.group(2).decode(), m.group(3).decode(), m.group(4).decode(), data[m.end():end]))
    return out


def ctl(g, *args):
    p = subprocess.run([str(g.build / "imapgate-ctl"), "-s", str(g.dir / "ctl.sock")] + list(args),
                       capture_output=True, text=True, timeout=10)
    return p.returncode, p.stdout, p.stderr


def stat_values(g):
    p = subprocess.run([str(g.build / "imapgate-stat"), "-f", str(g.conf_path), "-c"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    return {k: int(v) for k, v in (ln.split() for ln in p.stdout.splitlines() if ln.strip())}


def version():
    out = subprocess.run([str(imapgate_binary()), "-V"], capture_output=True, text=True, timeout=10).stdout
    return out.split()[1]


def test_off_by_default(make_gate):
    gate = make_gate(max_bad_commands=20)
    c = gate.connect_greeted()
    assert b"XIMAPPROXY" not in c.greeting
    assert b"XIMAPPROXY" not in c.command("c", "CAPABILITY")[0].split()
    for i, cmd in enumerate(COMMANDS):
        assert c.command("x%d" % i, cmd) == [b"x%d BAD Unrecognized command\r\n" % i]
    # Not one of imapproxy's five: the ordinary pre-login answer.
    assert c.command("y", "XPROXY_FOO") == [b"y BAD Please login first\r\n"]
    assert len(gate.log_lines("admin_refused")) == len(COMMANDS)
    assert "reason=disabled" in gate.log_lines("admin_refused")[0]
    assert not gate.log_lines("admin")


def test_replies(make_gate):
    g = admin_gate(make_gate)
    c = g.connect_greeted()
    assert b"XIMAPPROXY" in c.greeting
    assert b"XIMAPPROXY" in c.command("c", "CAPABILITY")[0].split()
    assert c.command("v", "XPROXY_VERSION") == [b"* XPROXY_VERSION imapgate %s\r\n" % version().encode(),
                                                b"v OK Completed\r\n"]
    assert c.command("d", "xproxy_dumpicc") == [b"d OK Completed\r\n"]
    assert c.command("t1", "XPROXY_TRACE alice") == [b"t1 OK Tracing enabled for user alice.\r\n"]
    assert c.command("t2", "XPROXY_TRACE alice") == [b"t2 OK Tracing enabled for user alice.\r\n"]
    assert c.command("t3", 'XPROXY_TRACE "bob"') == [b"t3 BAD Tracing already enabled for user alice\r\n"]
    assert c.command("t4", "XPROXY_TRACE") == [b"t4 OK Tracing disabled\r\n"]
    # The user as a literal.
    c.sendline("t5 XPROXY_TRACE {3}")
    assert c.read_line().startswith(b"+ ")
    c.send(b"bob\r\n")
    assert c.read_tagged("t5") == [b"t5 OK Tracing enabled for user bob.\r\n"]
    assert c.command("t6", "XPROXY_TRACE") == [b"t6 OK Tracing disabled\r\n"]
    assert c.command("t7", "XPROXY_TRACE a b") == [b"t7 BAD Invalid arguments to XPROXY_TRACE\r\n"]
    assert c.command("n", "XPROXY_NEWLOG") == [b"n OK Logfile cleared\r\n"]
    assert c.command("r", "XPROXY_RESETCOUNTERS") == [b"r OK Counters reset\r\n"]
    assert c.command("e", "XPROXY_VERSION now") == [b"e BAD XPROXY_VERSION takes no arguments\r\n"]
    # Still a working pre-login session.
    assert c.command("z", "NOOP") == [b"z OK Completed\r\n"]
    logged = g.log_lines("admin")
    assert any("client=127.0.0.1:" in ln and "command=XPROXY_VERSION" in ln for ln in logged), logged
    assert any("command=XPROXY_TRACE" in ln and "result=enabled user=alice" in ln for ln in logged), logged
    assert any("command=XPROXY_RESETCOUNTERS" in ln for ln in logged), logged
    assert not g.log_lines("admin_refused")


def test_refused_outside_admin_allow(make_gate):
    g = admin_gate(make_gate, admin_allow="10.0.0.0/8", max_bad_commands=20)
    c = g.connect_greeted()
    for i, cmd in enumerate(COMMANDS):
        assert c.command("x%d" % i, cmd) == [b"x%d BAD Unrecognized command\r\n" % i]
    refused = g.log_lines("admin_refused")
    assert len(refused) == len(COMMANDS)
    assert "client=127.0.0.1:" in refused[0] and "reason=not_allowed" in refused[0], refused
    assert not g.log_lines("admin")


@pytest.mark.skipif(not can_bind("127.0.0.2"), reason="needs 127.0.0.0/8 source addresses")
def test_refused_from_other_address(make_gate):
    g = admin_gate(make_gate, admin_allow="127.0.0.1/32")
    other = g.connect_greeted(src="127.0.0.2")
    # Not advertised to a client the commands are not answered to.
    assert b"XIMAPPROXY" not in other.greeting
    assert b"XIMAPPROXY" not in other.command("c", "CAPABILITY")[0].split()
    assert other.command("a", "XPROXY_VERSION") == [b"a BAD Unrecognized command\r\n"]
    assert "client=127.0.0.2:" in g.log_lines("admin_refused")[0]
    mine = g.connect_greeted(src="127.0.0.1")
    assert b"XIMAPPROXY" in mine.greeting
    assert mine.command("b", "XPROXY_VERSION")[-1] == b"b OK Completed\r\n"


def test_refusals_count_as_bad_commands(make_gate):
    g = make_gate(max_bad_commands=2)
    c = g.connect_greeted()
    assert c.command("a", "XPROXY_VERSION") == [b"a BAD Unrecognized command\r\n"]
    c.sendline("b XPROXY_DUMPICC")
    data = c.expect_closed()
    assert data.startswith(b"b BAD Unrecognized command\r\n* BYE "), data


def test_no_trace_file(make_gate):
    g = admin_gate(make_gate, protocol_log_filename=None)
    c = g.connect_greeted()
    assert c.command("a", "XPROXY_TRACE alice") == [b"a NO No protocol_log_filename configured\r\n"]
    assert c.command("b", "XPROXY_NEWLOG") == [b"b NO No protocol_log_filename configured\r\n"]
    assert c.command("c", "XPROXY_TRACE") == [b"c OK Tracing disabled\r\n"]


def test_after_login_commands_go_to_the_server(make_gate, fresh_user):
    user, pw = fresh_user
    g = admin_gate(make_gate)
    c = g.connect_greeted()
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    lines = c.command("x", "XPROXY_VERSION")
    # Dovecot's own BAD ("Unknown command"), not imapgate's answer.
    assert lines[-1].startswith(b"x BAD "), lines
    assert b"Unrecognized command" not in lines[-1]
    assert not any(ln.startswith(b"* XPROXY_VERSION") for ln in lines)
    assert not g.log_lines("admin") and not g.log_lines("admin_refused")


def dump(c, tag):
    lines = c.command(tag, "XPROXY_DUMPICC")
    assert lines[-1] == b"%s OK Completed\r\n" % tag.encode()
    out = []
    for ln in lines[:-1]:
        m = re.match(rb"\* XPROXY_DUMPICC (\d+) (\S+) (Active|Cached|Cleaning)\r\n$", ln)
        assert m, ln
        out.append((int(m.group(1)), m.group(2).decode(), m.group(3).decode()))
    return out


def test_dumpicc_active_then_cached(make_gate, fresh_user):
    user, pw = fresh_user
    g = admin_gate(make_gate)
    admin = g.connect_greeted()
    c = g.connect_greeted()
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    active = dump(admin, "d1")
    assert [(u, w) for _, u, w in active] == [(user, "Active")], active
    assert active[0][0] > 2
    assert c.command("z", "LOGOUT")[-1].startswith(b"z OK ")
    # The pool parks the connection once it is clean, asynchronously.
    n = iter(range(1000))
    cached = wait_for(lambda: [e for e in dump(admin, "d%d" % next(n)) if e[2] == "Cached"] or None,
                      5, interval=0.05, what="a Cached entry")
    assert [(u, w) for _, u, w in cached] == [(user, "Cached")], cached
    assert cached[0][0] == active[0][0]  # the same backend socket


def imap_session(g, user, password, tag_prefix):
    c = g.connect_greeted()
    assert login_raw(c, user, password, tag=tag_prefix + "1")[-1].startswith(tag_prefix.encode() + b"1 OK ")
    sel = c.command(tag_prefix + "2", "SELECT INBOX")
    assert sel[-1].startswith(tag_prefix.encode() + b"2 OK "), sel
    assert c.command(tag_prefix + "3", "LOGOUT")[-1].startswith(tag_prefix.encode() + b"3 OK ")
    c.close()
    return sel


def test_trace_one_user(make_gate):
    g = admin_gate(make_gate)
    path = trace_path(g)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    admin = g.connect_greeted()
    assert admin.command("t", "XPROXY_TRACE alice")[-1] == b"t OK Tracing enabled for user alice.\r\n"
    sel = imap_session(g, "alice", DEFAULT_USERS["alice"], "a")
    imap_session(g, "bob", DEFAULT_USERS["bob"], "b")
    data = path.read_bytes()
    recs = records(data)
    assert recs and data.startswith(b"\n\n-----> C= "), data[:200]
    assert {u for u, _, _, _ in recs} == {"alice"}, recs
    sides = [s for _, s, _, _ in recs]
    assert sides[0] == "PROXY" and recs[0][2] == "user tracing enabled."
    assert "CLIENT" in sides and "SERVER" in sides
    assert all(re.match(r"sd \[\d+\]$", w) for _, s, w, _ in recs if s != "PROXY"), recs
    client = b"".join(b for _, s, _, b in recs if s == "CLIENT")
    server = b"".join(b for _, s, _, b in recs if s == "SERVER")
    assert b"a2 SELECT INBOX\r\n" in client, client
    assert sel[-1] in server, (sel, server)
    # Tracing starts after login: no LOGIN line, no password.
    assert b"LOGIN" not in data.upper() and DEFAULT_USERS["alice"].encode() not in data
    assert b"b2 SELECT" not in data
    # NEWLOG empties the file; later records start at its beginning.
    assert admin.command("n", "XPROXY_NEWLOG") == [b"n OK Logfile cleared\r\n"]
    assert path.stat().st_size == 0
    imap_session(g, "alice", DEFAULT_USERS["alice"], "c")
    data = path.read_bytes()
    assert data.startswith(b"\n\n-----> C= ") and b"c2 SELECT INBOX" in data and b"a2 SELECT" not in data
    # Disabled: a PROXY record, and new sessions are not traced.
    assert admin.command("u", "XPROXY_TRACE") == [b"u OK Tracing disabled\r\n"]
    size = path.stat().st_size
    imap_session(g, "alice", DEFAULT_USERS["alice"], "d")
    data = path.read_bytes()
    assert len(data) == size and data.endswith(b" alice PROXY: user tracing disabled. "
                                               b"Expect further output until client logout.\n")


def test_trace_survives_reload(make_gate):
    g = admin_gate(make_gate)
    admin = g.connect_greeted()
    assert admin.command("t", "XPROXY_TRACE alice")[-1].startswith(b"t OK ")
    mark = g.log_mark()
    g.reload()
    g.wait_log(r"event=reload status=ok", since=mark)
    c = g.connect_greeted()
    assert c.command("u", "XPROXY_TRACE bob") == [b"u BAD Tracing already enabled for user alice\r\n"]
    imap_session(g, "alice", DEFAULT_USERS["alice"], "a")
    assert b"a2 SELECT INBOX" in trace_path(g).read_bytes()


def test_ctl_trace(make_gate):
    g = admin_gate(make_gate)
    path = str(trace_path(g))
    assert ctl(g, "trace") == (0, "tracing nobody\n", "")
    rc, out, err = ctl(g, "trace", "alice")
    assert (rc, out) == (0, "tracing alice to %s\n" % path), err
    assert json.loads(ctl(g, "trace", "--json")[1]) == {"user": "alice", "file": path}
    rc, out, err = ctl(g, "trace", "bob")
    assert rc == 1 and "tracing already enabled for user alice" in err, (out, err)
    c = g.connect_greeted()
    assert c.command("a", "XPROXY_TRACE bob") == [b"a BAD Tracing already enabled for user alice\r\n"]
    assert ctl(g, "trace", "--clear") == (0, "tracing nobody\n", "")
    assert c.command("b", "XPROXY_TRACE bob") == [b"b OK Tracing enabled for user bob.\r\n"]
    assert ctl(g, "trace")[1] == "tracing bob to %s\n" % path
    assert "trace" in ctl(g, "help")[1]
    assert g.log_lines("trace")


def test_ctl_trace_without_file(make_gate):
    g = admin_gate(make_gate, protocol_log_filename=None)
    rc, out, err = ctl(g, "trace", "alice")
    assert rc == 1 and "no protocol_log_filename configured" in err, (out, err)
    assert json.loads(ctl(g, "trace", "--json")[1]) == {"user": None, "file": None}


def test_resetcounters(make_gate, fresh_user):
    user, pw = fresh_user
    g = admin_gate(make_gate)
    g.stop()
    g.write_config(stat_filename=str(g.dir / "stats"))
    g.start()
    c = g.connect_greeted()
    assert login_raw(c, user, pw)[-1].startswith(b"a OK ")
    before = stat_values(g)
    assert before["client_logins_total"] == 1 and before["client_connections_total"] == 1, before
    assert before["server_connections_in_use_current"] == 1, before
    admin = g.connect_greeted()
    assert admin.command("r", "XPROXY_RESETCOUNTERS") == [b"r OK Counters reset\r\n"]
    after = stat_values(g)
    assert after["client_logins_total"] == 0 and after["client_connections_total"] == 0, after
    # Gauges are kept, peaks follow them.
    assert after["client_connections_current"] == 2, after
    assert after["server_connections_in_use_current"] == 1, after
    assert after["client_connections_peak"] == 2, after
    assert after["count_time"] >= before["count_time"], (before, after)
