"""
The benchmark's load generator (bench/loadgen.c) in a few seconds, so it
cannot rot: it builds warning-free, and each mode completes against Dovecot
and through imapgate with every reply checked. Asserts on its JSON line. The
benchmark itself (make bench) is not a test, except its policy and fleet
workloads in their quickest form (bench/run.py --workloads policy, about 15 s;
--workloads fleet, about 6 s).
"""

import json
import re
import socket
import os
import shutil
import subprocess
import tempfile

import pytest

from harness import (REPO, build_dir, can_bind, free_port, make_message, postfix_unavailable, redis_unavailable,
                     register_secret, sanitized_build, wait_for, wait_listening)
from tls_util import Certs, tls_dovecot, tls_gate

LOADGEN_SRC = REPO / "bench" / "loadgen.c"
FLOOD_SRC = "127.0.0.77"  # banned below; never 127.0.0.1 (guard_ignore)
POLICY_KEY = "smoke-policy-api-key-0123456789"
register_secret(POLICY_KEY)


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
    # Three BYEs, then the address is dropped in the kernel (the helper
    # attaches the filter asynchronously: wait until a SYN goes unanswered).
    (r,) = run(loadgen, gate.port, "flood", timeout=30, conns=1, seconds=4, max_cycles=3, src=FLOOD_SRC)
    assert r["refused"] == 3 and r["error_kinds"]["not_refused"] == 0, r
    gate.wait_log(r"event=ban_drop client=%s " % re.escape(FLOOD_SRC))

    def dropped():
        s = socket.socket()
        s.bind((FLOOD_SRC, 0))
        s.settimeout(0.3)
        try:
            s.connect(("127.0.0.1", gate.port))
            return False
        except (socket.timeout, OSError):
            return True
        finally:
            s.close()
    wait_for(dropped, 10, what="the kernel drops the banned address")
    # loadgen counts those attempts as connect errors, not refusals.
    (r,) = run(loadgen, gate.port, "flood", timeout=30, conns=1, seconds=4, max_cycles=5, src=FLOOD_SRC)
    assert r["refused"] == 0 and r["error_kinds"]["not_refused"] == 0, r
    assert r["error_kinds"]["connect"] >= 1, r


def test_failures_are_counted(loadgen, dovecot, make_gate, mail_user):
    """A wrong password is a failed cycle (tagged NO), never a completed one."""
    name, _ = mail_user
    wrong = register_secret("wrong-bench-%d" % os.getpid())
    gate = make_gate(guard_failure_delay=0)
    (r,) = run(loadgen, gate.port, "webmail", name, wrong, conns=1, seconds=10, max_cycles=2)
    assert r["cycles"] == 0 and r["failed"] == 2 and r["errors"] == 2, r
    assert r["error_kinds"]["no"] == 2 and "command failed" in r["first_error"], r


def test_policy_storm(loadgen, make_gate):
    pport = free_port()
    gate = make_gate(policy_listen="127.0.0.1:%d" % pport, policy_api_key=POLICY_KEY, guard_db="none")
    wait_listening(pport, "4", timeout=10, proc=gate.proc)
    # 240 requests: allow and report in turn, every 4th report a failure,
    # 6 failures per address (the guard's default maxretry is 5): bans.
    (r,) = run(loadgen, pport, "policy", conns=4, seconds=10, max_cycles=240, api_key=POLICY_KEY)
    assert_clean(r, "policy")
    assert r["cycles"] == 240 and r["allows"] == 120 and r["reports"] == 120, r
    assert r["reports_failed"] == 30 and r["policy_refused"] >= 1, r
    assert 0 < r["cycle_p50_us"] <= r["cycle_p99_us"], r
    # A wrong key: every request answered 401, each a failed cycle.
    (r,) = run(loadgen, pport, "policy", conns=1, seconds=10, max_cycles=3, api_key="wrong-key-0123456789")
    assert r["cycles"] == 0 and r["failed"] == 3 and r["error_kinds"]["no"] == 3, r
    assert "HTTP status 401" in r["first_error"], r


def test_policy_workload_quickest(tmp_path):
    """bench/run.py's policy workload (issue 11) at its shortest: two Dovecots (policy
    server off and on), their imapgates and Postfixes, half a second per figure, and the
    storm; the report has every figure."""
    out, raw = tmp_path / "policy.md", tmp_path / "policy.json"
    p = subprocess.run(["/usr/bin/python3", str(REPO / "bench" / "run.py"), "--build", str(build_dir()),
                        "--workloads", "policy", "--rounds", "1", "--seconds", "0.5", "--users", "20",
                        "--out", str(out), "--json", str(raw)],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    text = p.stdout.decode(errors="replace")
    assert p.returncode == 0, text[-3000:]
    results = json.loads(raw.read_text())
    figures = ["imap-login", "webmail"] + ([] if postfix_unavailable() else ["smtp-auth"])
    for fig in figures:
        for side in ("off", "on"):
            (x,) = [x for x in results if x["workload"] == "policy-" + fig and x["target"] == side]
            assert x["r"]["cycles"] > 0 and x["r"]["failed"] == 0, x
            assert x["r"]["logins"] == x["r"]["cycles"], x
            # Dovecot's auth works harder when it asks a policy server.
            assert x["auth_ms"] is not None and x["gate_ms"] is not None, x
        on = [x for x in results if x["workload"] == "policy-" + fig and x["target"] == "on"][0]
        if fig != "webmail":  # the webmail gate proxies IMAP on both sides
            assert on["gate_ms"] > 0, on
    (st,) = [x for x in results if x["workload"] == "policy-storm"]
    assert st["r"]["cycles"] > 100 and st["r"]["failed"] == 0, st
    assert st["r"]["reports_failed"] > 0 and st["r"]["policy_refused"] > 0, st
    assert st["cpu_per_1000"] > 0, st
    report = out.read_text()
    assert "## Policy server (issue 11)" in report, report
    for what in ("IMAP LOGIN + LOGOUT", "the webmail workload through imapgate", "keep-alive"):
        assert what in report, report
    rows = [ln for ln in report.splitlines() if ln.startswith("| policy server on / off (issue 11)")]
    assert len(rows) == 3 and sum("not run" in ln for ln in rows) == 3 - len(figures), rows


@pytest.mark.skipif(redis_unavailable() is not None, reason=str(redis_unavailable()))
@pytest.mark.skipif(not can_bind("127.2.0.1"), reason="needs 127.0.0.0/8 source addresses")
def test_fleet_workload_quickest(tmp_path):
    """bench/run.py's fleet workload (issue 12) at its shortest: a Redis, imapgates A and B
    sharing it and one without, half a second of webmail per side, 20 ban samples A → B;
    the report has both tables and the two kinds of target rows."""
    out, raw = tmp_path / "fleet.md", tmp_path / "fleet.json"
    p = subprocess.run(["/usr/bin/python3", str(REPO / "bench" / "run.py"), "--build", str(build_dir()),
                        "--workloads", "fleet", "--rounds", "1", "--seconds", "0.5", "--users", "20",
                        "--fleet-samples", "20", "--out", str(out), "--json", str(raw)],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    text = p.stdout.decode(errors="replace")
    assert p.returncode == 0, text[-3000:]
    results = json.loads(raw.read_text())
    for conns in (1, 16):
        for side in ("off", "on"):
            (x,) = [x for x in results if x["workload"] == "fleet-webmail" and x["conns"] == conns
                    and x["target"] == side]
            assert x["r"]["cycles"] > 0 and x["r"]["failed"] == 0, x
            if side == "on":  # every LOGIN went out on Redis as a success event
                # One success per (address, user) pair and 5 minutes: the
                # warm-up already published this run's pairs.
                assert x["events_out"] is not None and x["dropped"] == 0, x
    (lat,) = [x for x in results if x["workload"] == "fleet-latency"]
    assert lat["misses"] == 0 and len(lat["latency_ms"]) == 20, lat
    assert all(0 < v < 2000 for v in lat["latency_ms"]) and min(lat["probes"]) >= 1, lat
    report = out.read_text()
    assert "## Fleet (Redis) (issue 12)" in report, report
    rows = [ln for ln in report.splitlines() if ln.startswith("| fleet (issue 12)")]
    assert len(rows) == 3 and not any("not run" in ln for ln in rows), rows
