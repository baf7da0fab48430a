"""
The guard's database (guard_db) as the daemon's user sees it: a start that
asked for persistence and cannot have it refuses, naming the file, the user
and the fix, and imapgate -t says the same; guard_db none asks for memory
only. The default state directory is created for proc_username, and one
that exists is never taken over. -t reports every problem the start would
hit that it can see without binding, all of them at once.
"""

import os
import pwd
import stat
import subprocess

import pytest

from harness import is_listening, sanitized_build

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: starts as root with proc_username nobody")

NOBODY = pwd.getpwnam("nobody") if os.geteuid() == 0 else None


def check(g):
    """imapgate -t on the gate's config: (exit code, stdout+stderr)."""
    p = subprocess.run([str(g.binary), "-t", "-f", str(g.conf_path)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=10)
    return p.returncode, p.stdout + p.stderr


def refused(g):
    """Start the gate; it must exit non-zero without listening. Its log."""
    g.launch()
    assert g.wait_exit(timeout=10) != 0, g.log_text()
    assert not is_listening(g.port)
    return g.log_text()


def root_dir(path):
    """What make install makes: root's, 0755 (nobody may not write)."""
    os.makedirs(path)
    os.chmod(path, 0o755)
    return str(path)


def nobody_dir(path):
    os.makedirs(path)
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    return str(path)


def test_guard_db_nobody_cannot_write_refuses_start_and_check(make_gate):
    g = make_gate(start=False, check_exit=False)
    d = root_dir(g.dir / "state")
    db = d + "/guard.db"
    g.write_config(guard_db=db)
    want = ("%s: guard_db %s: directory %s is not writable by nobody: Permission denied (fix: chown nobody %s);"
            " or set guard_db none to keep bans in memory only" % (g.conf_path, db, d, d))
    rc, out = check(g)
    assert rc == 1, out
    assert want in out.splitlines(), out
    assert "configuration OK" not in out
    log = refused(g)
    assert want in log.splitlines(), log
    assert "%s: 1 error, imapgate not started" % g.conf_path in log
    assert "event=start" not in log and not os.path.exists(db)
    # Memory only, asked for: starts.
    g.write_config(guard_db="none")
    assert check(g) == (0, "%s: configuration OK\n" % g.conf_path)
    g.start()
    g.connect_greeted()


def test_guard_db_not_sqlite_refuses(make_gate):
    g = make_gate(start=False, check_exit=False)
    db = nobody_dir(g.dir / "state") + "/guard.db"
    with open(db, "w") as f:
        f.write("bans go here\n")
    os.chown(db, NOBODY.pw_uid, NOBODY.pw_gid)
    g.write_config(guard_db=db)
    want = ("%s: guard_db %s: %s is not an SQLite database (move it away, or set guard_db to another file);"
            " or set guard_db none to keep bans in memory only" % (g.conf_path, db, db))
    rc, out = check(g)
    assert rc == 1 and want in out.splitlines(), out
    assert want in refused(g).splitlines()
    with open(db) as f:
        assert f.read() == "bans go here\n"


def test_guard_db_broken_after_its_header_stops_the_start(make_gate):
    """A file that passes the look at its header but SQLite cannot open:
    the daemon's own open refuses too, and its line names the file once."""
    g = make_gate(start=False, check_exit=False)
    db = nobody_dir(g.dir / "state") + "/guard.db"
    with open(db, "wb") as f:
        f.write(b"SQLite format 3\0" + b"\0" * 200)
    os.chown(db, NOBODY.pw_uid, NOBODY.pw_gid)
    g.write_config(guard_db=db)
    log = refused(g)
    lines = [l for l in log.splitlines() if "event=guard_db_error" in l]
    assert len(lines) == 1, log
    assert 'error="%s: ' % db in lines[0] and lines[0].count(db) == 1, lines[0]
    assert "fallback" not in log and "event=start " not in log


@pytest.mark.skipif(sanitized_build(), reason="LeakSanitizer needs /proc, which a chroot hides")
def test_default_state_directory_created_for_the_user(make_gate, dovecot, fresh_user):
    # Inside a chroot the default guard_db is JAIL/var/lib/imapgate/guard.db:
    # the start makes what is missing of it, the last one nobody's, 0750.
    g = make_gate(start=False)
    jail = g.dir / "jail"
    jail.mkdir()
    g.write_config(chroot_directory=str(jail), guard_db=None, guard_maxretry=1, guard_failure_delay=0)
    state = jail / "var/lib/imapgate"
    rc, out = check(g)
    assert rc == 0, out
    assert "%s will be created at start (owner nobody, mode 0750)" % state in out
    assert not (jail / "var").exists()  # -t creates nothing
    g.start()
    st = os.stat(state)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY.pw_uid, NOBODY.pw_gid, 0o750)
    assert os.stat(jail / "var/lib").st_uid == 0
    g.wait_log(r"created %s for the guard's database \(owner nobody, mode 0750\)" % state)
    g.wait_log(r"event=guard_db file=/var/lib/imapgate/guard\.db restored_bans=0")
    assert os.stat(state / "guard.db").st_uid == NOBODY.pw_uid


def test_existing_state_directory_is_never_chowned(make_gate):
    g = make_gate(start=False, check_exit=False)
    jail = g.dir / "jail"
    state = jail / "var/lib/imapgate"
    root_dir(state)
    g.write_config(chroot_directory=str(jail), guard_db=None)
    want = ("guard_db /var/lib/imapgate/guard.db: directory /var/lib/imapgate is not writable by nobody:"
            " Permission denied (fix: chown nobody /var/lib/imapgate); or set guard_db none to keep bans"
            " in memory only (paths inside chroot_directory %s)" % jail)
    rc, out = check(g)
    assert rc == 1 and want in out, out
    assert want in refused(g)
    st = os.stat(state)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    assert os.listdir(state) == []


def test_check_reports_every_problem_at_once(make_gate):
    g = make_gate(start=False, check_exit=False)
    d = root_dir(g.dir / "state")
    os.symlink("/etc/passwd", str(g.dir / "stats"))
    g.write_config(guard_db=d + "/guard.db",
                   client_tls_cert_file=str(g.dir / "missing.pem"), client_tls_key_file=str(g.dir / "missing.key"),
                   stat_filename=str(g.dir / "stats"))
    rc, out = check(g)
    assert rc == 1, out
    assert "missing.pem" in out
    assert "guard_db %s/guard.db: directory %s is not writable by nobody" % (d, d) in out
    assert "%s: stat_filename: cannot open stat file %s: it is a symbolic link" % (g.conf_path, g.dir / "stats") in out
    assert "%s: 3 errors, imapgate would not start" % g.conf_path in out
    # A stat file in a directory that does not exist.
    g.write_config(client_tls_cert_file=None, client_tls_key_file=None, guard_db="none",
                   stat_filename=str(g.dir / "nodir" / "stats"))
    rc, out = check(g)
    assert rc == 1, out
    assert ("%s: stat_filename: cannot create stat file %s: directory %s: No such file or directory"
            % (g.conf_path, g.dir / "nodir" / "stats", g.dir / "nodir")) in out.splitlines(), out
    log = refused(g)
    assert "stat_filename: cannot create stat file" in log


def test_check_warns_about_the_trace_file(make_gate):
    # The start goes on without a trace (a debugging aid): -t warns, exits 0.
    g = make_gate(start=False, protocol_log_filename="/nonexistent-imapgate/trace")
    rc, out = check(g)
    assert rc == 0, out
    assert ("warning: %s: protocol_log_filename: cannot create /nonexistent-imapgate/trace: directory"
            " /nonexistent-imapgate: No such file or directory (the start goes on without a trace)"
            % g.conf_path) in out.splitlines(), out
