"""
The benchmark's load generator (bench/loadgen.c) in a few seconds, so it
cannot rot: it builds warning-free, and each mode completes against Dovecot
and through imapgate with every reply checked. Asserts on its JSON line. The
benchmark itself (make bench) is not a test.
"""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from harness import REPO, can_bind, make_message, register_secret, sanitized_build
from tls_util import Certs, tls_dovecot, tls_gate

LOADGEN_SRC = REPO / "bench" / "loadgen.c"
FLOOD_SRC = "127.0.0.77"  # banned below; never 127.0.0.1 (guard_ignore)


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory):
    """bench/loadgen.c compiled now with the Makefile's warnings (errors), under the
    sanitizers too when the daemon under test was built with them."""
    exe = tmp_path_factory.mktemp("loadgen") / "loadgen"
    cmd = ["cc", "-std=c11", "-D_GNU_SOURCE", "-O1", "-g", "-Wall", "-Wextra", "-Wformat=2", "-Wshadow",
           "-Wstrict-prototypes", "-Werror", "-o", str(exe), str(LOADGEN_SRC), "-lssl", "-lcrypto"]
    if sanitized_build():
        cmd[4:4] = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert p.returncode == 0, p.stdout.decode(errors="replace")
    return exe


def run(loadgen, port, mode, user=None, password=None, timeout=60, **kw):
    """Run loadgen; return its lines parsed (the result is the last). Runs end at
    max_cycles; seconds is only the bound for a slow machine."""
    argv = [str(loadgen), "--port", str(port), "--mode", mode, "--timeout-ms", "5000"]
    if user is not None:
        # One user: the templates carry no %d.
        argv += ["--users", "1", "--user-fmt", user, "--password-fmt", password]
    for k, v in kw.items():
        argv += ["--" + k.replace("_", "-")] + ([] if v is True else [str(v)])
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0, err
    assert "Sanitizer" not in err and "runtime error" not in err, err
    lines = [json.loads(ln) for ln in p.stdout.decode().splitlines()]
    assert lines, "no output"
    return lines


def assert_clean(r, mode):
    assert r["mode"] == mode
    assert r["errors"] == 0 and r["failed"] == 0, json.dumps(r)
    assert not r["aborted"], json.dumps(r)
    assert sum(r["error_kinds"].values()) == 0 and r["first_error"] == "", json.dumps(r)


@pytest.fixture
def mail_user(dovecot, fresh_user):
    """A user with 5 small messages and one of 300 KB."""
    name, password = fresh_user
    for i in range(5):
        dovecot.deliver(name, subject='bench "smoke" %d' % i)
    dovecot.deliver(name, make_message(subject="big", body=("y" * 998 + "\r\n") * 300))
    return name, password


@pytest.mark.parametrize("via", ["direct", "imapgate"])
def test_webmail_cycles(loadgen, dovecot, make_gate, mail_user, via):
    port = dovecot.port if via == "direct" else make_gate(max_connections_per_ip=0).port
    (r,) = run(loadgen, port, "webmail", *mail_user, conns=2, seconds=10, max_cycles=30)
    assert_clean(r, "webmail")
    assert r["cycles"] == 30 and r["logins"] == 30, r
    assert 0 <= r["login_p50_us"] <= r["login_p99_us"] <= r["cycle_p99_us"], r
    assert 0 <= r["reused"] <= r["logins"]
    if via == "direct":
        assert r["reused"] == 0, r  # only a proxy answers XPROXYREUSE


def test_bulk_counts_body_bytes(loadgen, make_gate, mail_user):
    gate = make_gate(max_connections_per_ip=0)
    (r,) = run(loadgen, gate.port, "bulk", *mail_user, conns=1, seconds=10, max_cycles=12)
    assert_clean(r, "bulk")
    assert r["cycles"] == 12, r
    # Six messages fetched twice each, the big one 300 KB: bodies, not protocol lines.
    assert 2 * 300 * 1000 < r["bytes"] < 2 * 400 * 1000, r


@pytest.mark.parametrize("via", ["direct", "imapgate"])
def test_bulk_over_tls(loadgen, own_dovecot, make_gate, via):
    # The bench's TLS cases (run.py --workloads tls): --tls straight to
    # Dovecot's imaps port, and through imapgate with TLS on both sides.
    d = tempfile.mkdtemp(prefix="imapgate-bench-tls-")
    os.chmod(d, 0o755)
    try:
        certs = Certs(d)
        dv = tls_dovecot(own_dovecot, certs.server)
        for i in range(3):
            dv.deliver("alice", make_message(subject="tls %d" % i, body=("z" * 998 + "\r\n") * 200 * (i + 1)))
        if via == "direct":
            port = dv.imaps_port
        else:
            port = tls_gate(make_gate, certs.server, backend=dv, server_tls="starttls", tls_ca_file=certs.ca,
                            tls_server_name="localhost", max_connections_per_ip=0).tls_port
        (r,) = run(loadgen, port, "bulk", "alice", "alicepw", conns=1, seconds=10, max_cycles=6, tls=True)
        assert_clean(r, "bulk")
        assert r["tls"] is True and r["cycles"] == 6, r
        assert 2 * 1200 * 1000 < r["bytes"] < 2 * 1300 * 1000, r
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_idle_reports_ready_then_ends(loadgen, make_gate, mail_user):
    gate = make_gate(max_connections_per_ip=0)
    ready, r = run(loadgen, gate.port, "idle", *mail_user, conns=8, seconds=10, hold=0.2)
    assert ready["event"] == "ready" and ready["idle"] == 8 and ready["failed"] == 0, ready
    assert_clean(r, "idle")
    assert r["cycles"] == 8, r  # each session: DONE, then LOGOUT answered OK


def test_burst(loadgen, make_gate):
    gate = make_gate(max_connections_per_ip=0)
    (r,) = run(loadgen, gate.port, "burst", conns=16, bursts=2, seconds=10)
    assert_clean(r, "burst")
    assert r["cycles"] == 32 and r["lost"] == 0, r


def test_flood_from_banned_address(loadgen, make_gate):
    if not can_bind(FLOOD_SRC):
        pytest.skip("cannot bind %s" % FLOOD_SRC)
    # Every banned connection answered with BYE (no kernel drop here: see
    # test_guard.py for that, and below for how loadgen counts it).
    gate = make_gate(start=False, guard_drop_after=0)
    gate.write_config(control_socket=str(gate.dir / "ctl.sock"))
    gate.start()
    ctl = [str(gate.build / "imapgate-ctl"), "-s", str(gate.dir / "ctl.sock")]
    subprocess.run(ctl + ["ban", FLOOD_SRC, "600"], check=True, stdout=subprocess.PIPE, timeout=15)
    (r,) = run(loadgen, gate.port, "flood", conns=4, seconds=10, max_cycles=40, src=FLOOD_SRC)
    assert_clean(r, "flood")
    assert r["refused"] == 40 and r["cycles"] == 40, r
    # A source that is not banned is counted as an error, not as a refusal.
    (r,) = run(loadgen, gate.port, "flood", conns=1, seconds=10, max_cycles=3)
    assert r["refused"] == 0 and r["error_kinds"]["not_refused"] == 3, r


def test_flood_dropped_in_the_kernel_counts_as_connect_errors(loadgen, make_gate):
    if not can_bind(FLOOD_SRC):
        pytest.skip("cannot bind %s" % FLOOD_SRC)
    gate = make_gate(start=False, guard_drop_after=3)
    gate.write_config(control_socket=str(gate.dir / "ctl.sock"))
    gate.start()
    ctl = [str(gate.build / "imapgate-ctl"), "-s", str(gate.dir / "ctl.sock")]
    subprocess.run(ctl + ["ban", FLOOD_SRC, "600"], check=True, stdout=subprocess.PIPE, timeout=15)
    gate.wait_log(r"event=control command=ban")
    argv = dict(conns=1, seconds=4, max_cycles=20, src=FLOOD_SRC)
    (r,) = run(loadgen, gate.port, "flood", timeout=30, **argv)
    # A few BYEs, then the address is dropped: attempts time out at connect.
    assert 3 <= r["refused"] < 20 and r["error_kinds"]["not_refused"] == 0, r
    assert r["error_kinds"]["connect"] >= 1, r


def test_failures_are_counted(loadgen, dovecot, make_gate, mail_user):
    """A wrong password is a failed cycle (tagged NO), never a completed one."""
    name, _ = mail_user
    wrong = register_secret("wrong-bench-%d" % os.getpid())
    gate = make_gate(guard_failure_delay=0)
    (r,) = run(loadgen, gate.port, "webmail", name, wrong, conns=1, seconds=10, max_cycles=2)
    assert r["cycles"] == 0 and r["failed"] == 2 and r["errors"] == 2, r
    assert r["error_kinds"]["no"] == 2 and "command failed" in r["first_error"], r
