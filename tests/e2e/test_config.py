"""
Configuration: imapgate -t reports every error as FILE:LINE: KEY: ...,
accepts imapproxy's stock file, refuses to start on a bad file, and SIGHUP
reloads all-or-nothing.
"""

import os
import re
import subprocess

import pytest

from harness import Imapgate, imapgate_binary, is_listening, render_config, run_check

GOOD = {
    "server_hostname": "127.0.0.1",
    "server_port": 143,
    "listen_port": 1143,
    "connect_retries": 1,
    "connect_delay": 1,
    "cache_size": 100,
    "cache_expiration_time": 300,
    "send_tcp_keepalives": False,
    "enable_admin_commands": False,
    # -t checks what the start needs: as root a user to run as, and a
    # guard_db that user can write (test_state.py); none keeps this file
    # independent of the machine's /var/lib/imapgate.
    "guard_db": "none",
}
if os.geteuid() == 0:
    GOOD["proc_username"] = "nobody"


def lines_of(text):
    return text.splitlines()


def error_line(out, path, line, key):
    """The message for KEY at LINE, or None."""
    pat = re.compile(r"^.*%s:%d: %s: .+$" % (re.escape(str(path)), line, re.escape(key)), re.M)
    m = pat.search(out)
    return m.group(0) if m else None


def test_check_good_file():
    rc, out = run_check(render_config(GOOD))
    assert rc == 0, out


def test_check_comments_and_blank_lines():
    text = "# a comment\n\n" + render_config(GOOD).replace("\n", "  # trailing\n", 1) + "\t\n"
    rc, out = run_check(text)
    assert rc == 0, out


BAD_CASES = {
    "unknown_key": ("no_such_keyword 1", "no_such_keyword"),
    "bad_bool": ("send_tcp_keepalives maybe", "send_tcp_keepalives"),
    "out_of_range": ("cache_size 99999999999999999999", "cache_size"),
    "not_a_number": ("connect_delay soon", "connect_delay"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_check_single_error(tmp_path, case):
    bad, key = BAD_CASES[case]
    text = render_config(GOOD) + bad + "\n"
    line = len(lines_of(text))
    path = tmp_path / "imapgate.conf"
    rc, out = run_check(text, path)
    assert rc == 1, out
    assert error_line(out, path, line, key), out


def test_check_missing_server_hostname(tmp_path):
    cfg = dict(GOOD)
    del cfg["server_hostname"]
    path = tmp_path / "imapgate.conf"
    rc, out = run_check(render_config(cfg), path)
    assert rc == 1, out
    assert re.search(r"%s(:\d+)?: server_hostname: " % re.escape(str(path)), out), out


def test_check_reports_every_error(tmp_path):
    text = (
        "no_such_keyword 1\n"  # 1
        "server_hostname 127.0.0.1\n"  # 2
        "send_tcp_keepalives maybe\n"  # 3
        "listen_port 1143\n"  # 4
        "cache_size 99999999999999999999\n"  # 5
        "\n"  # 6
        "another_unknown yes\n"  # 7
    )
    path = tmp_path / "imapgate.conf"
    rc, out = run_check(text, path)
    assert rc == 1, out
    for line, key in ((1, "no_such_keyword"), (3, "send_tcp_keepalives"), (5, "cache_size"), (7, "another_unknown")):
        assert error_line(out, path, line, key), "line %d (%s) not reported:\n%s" % (line, key, out)


@pytest.mark.skipif(not os.path.exists("/etc/imapproxy.conf"), reason="imapproxy package not installed")
def test_check_debian_stock_imapproxy_conf():
    p = subprocess.run([str(imapgate_binary()), "-t", "-f", "/etc/imapproxy.conf"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stdout + p.stderr


def test_start_with_bad_config_fails(tmp_path, dovecot):
    g = Imapgate(backend_port=dovecot.port, tmpdir=tmp_path)
    g.write_config_text(g.config_text() + "no_such_keyword 1\n")
    try:
        g.launch()
        rc = g.wait_exit(timeout=10)
        assert rc != 0
        assert not is_listening(g.port)
        assert "no_such_keyword" in g.log_text()
    finally:
        g.kill()


# --- SIGHUP ------------------------------------------------------------------


def bad_commands_until_bye(g, limit=5):
    """Number of bad commands a new connection can send before it gets BYE."""
    c = g.connect_greeted()
    for i in range(1, limit + 1):
        c.sendline("b%d FOO" % i)
        line = c.read_line()
        if line.startswith(b"* BYE "):
            return i
        assert line.startswith(b"b%d BAD " % i), line
        if not c.is_open(0.05):
            return i
        # The limit may be answered with BAD then BYE.
        extra = c.read_available(0.05)
        if extra.startswith(b"* BYE "):
            return i
    return None


def test_reload_applies_new_value(make_gate):
    g = make_gate(max_bad_commands=3)
    old = g.connect_greeted()  # opened before the reload
    assert bad_commands_until_bye(g) == 3
    mark = g.log_mark()
    g.write_config(max_bad_commands=1)
    g.reload()
    line = g.wait_log(r"^.*\bevent=reload\b.*$", since=mark).group(0)
    assert "status=ok" in line, line
    assert bad_commands_until_bye(g) == 1
    assert old.command("n", "NOOP") == [b"n OK Completed\r\n"]
    assert g.running()


def test_reload_enables_admin_capability(make_gate):
    g = make_gate()
    assert b"XIMAPPROXY" not in g.connect_greeted().command("a", "CAPABILITY")[0]
    mark = g.log_mark()
    g.write_config(enable_admin_commands=True)
    g.reload()
    g.wait_log(r"\bevent=reload\b.*\bstatus=ok\b", since=mark)
    assert b"XIMAPPROXY" in g.connect_greeted().command("a", "CAPABILITY")[0].split()


def test_reload_with_broken_file_keeps_old_config(make_gate):
    g = make_gate(max_bad_commands=1)
    mark = g.log_mark()
    g.write_config_text(g.config_text() + "max_bad_commands 5\nno_such_keyword 1\n")
    g.reload()
    g.wait_log(r"\bevent=reload\b.*\bstatus=failed\b", since=mark)
    assert g.running()
    # All or nothing: the valid max_bad_commands 5 in the broken file is not applied.
    assert bad_commands_until_bye(g) == 1
    c = g.connect_greeted()
    assert c.command("a", "LOGIN bob bobpw")[-1].startswith(b"a OK ")
    # A fixed file is picked up by the next SIGHUP.
    mark = g.log_mark()
    g.write_config(max_bad_commands=2)
    g.reload()
    g.wait_log(r"\bevent=reload\b.*\bstatus=ok\b", since=mark)
    assert bad_commands_until_bye(g) == 2


def test_reload_keeps_logged_in_sessions(make_gate, fresh_user):
    user, pw = fresh_user
    g = make_gate()
    c = g.connect_greeted()
    assert c.command("a", "LOGIN %s %s" % (user, pw))[-1].startswith(b"a OK ")
    mark = g.log_mark()
    g.write_config(max_bad_commands=2)
    g.reload()
    g.wait_log(r"\bevent=reload\b.*\bstatus=ok\b", since=mark)
    assert c.command("s", "SELECT INBOX")[-1].startswith(b"s OK ")
