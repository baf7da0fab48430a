"""
imapgate as Dovecot's auth policy server (policy_listen): the HTTP endpoint
spoken to directly, with the request bytes Dovecot 2.3 sends (see
../shared/reference/dovecot-auth-policy.md and test_harness_doors.py for the
captured format). allow answers from the guard, report counts failures in
the same guard as the IMAP front, bans reach imapgate's own listener, bad
requests get a 4xx and change nothing. The real Dovecot and Postfix doors
are in test_policy_doors.py.
"""

import http.client
import json
import socket
import urllib.request

import pytest

from harness import (RawClient, can_bind, ctl, free_port, login_raw, register_secret, run_check, wait_for,
                     wait_listening)

KEY = "k3y-for-policy-tests-0123456789"
register_secret(KEY)
FAST = dict(guard_maxretry=3, guard_failure_delay=0, guard_db="none")


@pytest.fixture
def pgate(make_gate):
    """A gate with the policy endpoint; .pport is its port."""
    def factory(**extra):
        pport = free_port()
        cfg = dict(FAST)
        cfg.update(policy_listen="127.0.0.1:%d" % pport, policy_api_key=KEY, control_socket="ctl.sock")
        cfg.update(extra)
        g = make_gate(**cfg)
        g.pport = pport
        wait_listening(pport, "4", timeout=10, proc=g.proc)
        return g
    return factory


def body(remote="192.0.2.7", login="alice", pwhash="0352", protocol="smtp", session="", fail_type=None, **more):
    """A body as Dovecot 2.3 builds it: sorted keys, strings, then the booleans
    (fail_type: as Dovecot 2.4 adds it)."""
    d = {"device_id": "", "login": login, "protocol": protocol, "pwhash": pwhash, "remote": remote,
         "session_id": session}
    if fail_type is not None:
        d["fail_type"] = fail_type
    text = json.dumps(d, sort_keys=True, separators=(",", ":"))[:-1] + ',"tls":false'
    for k, v in more.items():
        text += ',"%s":%s' % (k, "true" if v else "false")
    return text + "}"


def request(port, command, text, key=KEY, path="/", method="POST", src="127.0.0.1"):
    """One request on its own connection, as bytes; returns (status, parsed body or text)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(src, 0))
    headers = {"Content-Type": "application/json", "User-Agent": "dovecot/auth-policy-client"}
    if key is not None:
        headers["X-API-Key"] = " " + key  # Dovecot sends "X-API-Key:  value"
    url = path + ("?command=" + command if command else "")
    try:
        c.request(method, url, body=text.encode() if text is not None else None, headers=headers)
        r = c.getresponse()
        data = r.read().decode()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data
    finally:
        c.close()


def report_fail(port, **kw):
    return request(port, "report", body(success=False, policy_reject=False, **kw))


def allow(port, **kw):
    return request(port, "allow", body(**kw))


def test_allow_clean_address_and_keep_alive(pgate):
    g = pgate()
    c = http.client.HTTPConnection("127.0.0.1", g.pport, timeout=10)
    for _ in range(3):  # three requests on one connection
        c.request("POST", "/?command=allow", body=body(), headers={"X-API-Key": KEY})
        r = c.getresponse()
        assert r.status == 200 and r.getheader("Content-Type") == "application/json"
        assert json.loads(r.read()) == {"status": 0}
    c.close()
    rc, out, _ = ctl(g, "why", "192.0.2.7")
    assert out == "192.0.2.7: nothing recorded\n"


def test_reports_ban_at_maxretry_and_allow_refuses(pgate):
    g = pgate()
    for i in range(2):
        assert report_fail(g.pport, pwhash="a%03d" % i) == (200, {"status": 0})
        assert allow(g.pport) == (200, {"status": 0})
    mark = g.log_mark()
    assert report_fail(g.pport, pwhash="a002", session="s3") == (200, {"status": 0})
    g.wait_log(r"event=ban prefix=192\.0\.2\.7/32 ", since=mark)
    lines = g.log_lines("login_failed", since=mark)
    assert any("user=alice rip=192.0.2.7 proto=smtp source=policy session=s3 reason=auth_failed guard=counted"
               " failures=3/3" in ln for ln in lines), lines
    # The ban line follows the failure's own line.
    text = g.log_text()[mark:]
    assert text.index("event=login_failed") < text.index("event=ban ")
    status, ans = allow(g.pport)
    assert status == 200 and ans["status"] == -1 and "Too many failed logins" in ans["msg"]
    # Another address of the same /32? No: a neighbour is not banned.
    assert allow(g.pport, remote="192.0.2.8") == (200, {"status": 0})
    rc, out, _ = ctl(g, "why", "192.0.2.7")
    assert "banned" in out and out.count("proto=smtp reason=auth_failed status=counted") == 3, out


def test_same_wrong_password_counts_once_then_right_one_trusts(pgate):
    g = pgate()
    for _ in range(6):  # a client retrying a stale password
        assert report_fail(g.pport, remote="192.0.2.20", pwhash="beef", protocol="pop3")[0] == 200
    rc, out, _ = ctl(g, "why", "192.0.2.20")
    assert "not banned, 1 failure(s) counted" in out and "repeats=5" in out, out
    # The right password: a success report trusts the prefix for the user.
    assert request(g.pport, "report", body(remote="192.0.2.20", protocol="pop3", success=True,
                                           policy_reject=False)) == (200, {"status": 0})
    for i in range(5):
        report_fail(g.pport, remote="192.0.2.20", pwhash="c%03d" % i, protocol="pop3")
    rc, out, _ = ctl(g, "why", "192.0.2.20")
    assert "not banned" in out and out.count("status=trusted") == 5, out
    assert allow(g.pport, remote="192.0.2.20") == (200, {"status": 0})


def test_allow_counts_nothing_and_policy_reject_is_not_counted(pgate):
    g = pgate()
    for _ in range(10):  # before-auth and after-auth allows, over and over
        assert allow(g.pport, remote="192.0.2.30") == (200, {"status": 0})
    for i in range(5):  # Dovecot reports the attempts we refused: not counted again
        assert request(g.pport, "report", body(remote="192.0.2.30", pwhash="d%03d" % i, success=False,
                                               policy_reject=True))[0] == 200
    rc, out, _ = ctl(g, "why", "192.0.2.30")
    assert out == "192.0.2.30: nothing recorded\n"


def test_ban_from_policy_closes_imap_listener_and_back(pgate, fresh_user):
    if not can_bind("127.0.0.5"):
        pytest.skip("needs 127.0.0.5")
    g = pgate()
    for i in range(3):
        report_fail(g.pport, remote="127.0.0.5", pwhash="e%03d" % i, protocol="smtp")
    r = RawClient("127.0.0.1", g.port, src="127.0.0.5")
    assert r.read_line().startswith(b"* BYE ")
    r.close()
    # A ban earned at the IMAP front is refused to Dovecot's other doors.
    user, _ = fresh_user
    for i in range(3):
        c = g.connect_greeted(src="127.0.0.6")
        login_raw(c, user, "wrong-%d" % i)
        c.close()
    wait_for(lambda: allow(g.pport, remote="127.0.0.6")[1]["status"] == -1, 10, what="IMAP ban seen by policy")
    rc, out, _ = ctl(g, "unban", "127.0.0.6")
    assert rc == 0 and allow(g.pport, remote="127.0.0.6") == (200, {"status": 0})


def test_user_slow_down_answers_a_delay(pgate):
    g = pgate(guard_user_maxretry=2, guard_user_delay_max=4000, guard_maxretry=100)
    for i in range(4):  # one user guessed at from four addresses
        report_fail(g.pport, remote="198.51.100.%d" % (i + 1), login="carol", pwhash="f%03d" % i)
    status, ans = allow(g.pport, remote="198.51.100.99", login="carol")
    assert status == 200 and 1 <= ans["status"] <= 4, ans
    # Another user is not slowed down.
    assert allow(g.pport, remote="198.51.100.99", login="dave") == (200, {"status": 0})


def test_trusted_webmail_host_is_counted_per_user_only(pgate):
    g = pgate(trusted_webmail="192.0.2.80/32")
    for i in range(5):
        report_fail(g.pport, remote="192.0.2.80", pwhash="9%03d" % i)
    rc, out, _ = ctl(g, "why", "192.0.2.80")
    assert out == "192.0.2.80: nothing recorded\n"
    assert allow(g.pport, remote="192.0.2.80") == (200, {"status": 0})


def test_metrics_and_status_show_the_doors(pgate):
    mport = free_port()
    g = pgate(metrics_listen="127.0.0.1:%d" % mport)
    wait_listening(mport, "4", timeout=10, proc=g.proc)
    report_fail(g.pport, remote="192.0.2.40", protocol="smtp", pwhash="1111")
    report_fail(g.pport, remote="192.0.2.40", protocol="pop3", pwhash="2222")
    report_fail(g.pport, remote="192.0.2.40", protocol="sieve", pwhash="3333")
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10).read().decode()
    for proto, n in (("imap", 0), ("pop3", 1), ("smtp", 1), ("sieve", 1)):
        assert 'imapgate_guard_failures_by_proto_total{proto="%s"} %d\n' % (proto, n) in text
    assert "imapgate_policy_requests_total 3\n" in text
    rc, out, _ = ctl(g, "status")
    assert "policy port %d, " % g.pport in out
    rc, out, _ = ctl(g, "status", "--json")
    assert json.loads(out)["policy_port"] == g.pport


@pytest.mark.parametrize("case", ["no_key", "wrong_key", "path", "method", "command", "json", "json_array",
                                  "http_garbage", "no_host", "chunked", "huge_header"])
def test_bad_requests_get_4xx_and_change_nothing(pgate, case):
    g = pgate()
    mark = g.log_mark()
    fail = body(remote="192.0.2.50", success=False, policy_reject=False)
    if case in ("no_key", "wrong_key", "path", "method", "command", "json", "json_array"):
        args = dict(no_key=dict(key=None), wrong_key=dict(key=KEY[:-1] + "X"), path=dict(path="/other"),
                    method=dict(method="PUT"), command=dict(command="ban"),
                    json=dict(text=fail[:-1]), json_array=dict(text="[1,2]")).get(case)
        kw = dict(command="report", text=fail)
        kw.update(args)
        status, _ = request(g.pport, kw.pop("command"), kw.pop("text"), **kw)
        want = dict(no_key=401, wrong_key=401, path=404, method=405).get(case, 400)
        assert status == want
    else:
        raw = dict(
            http_garbage=b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
            no_host=b"POST /?command=report HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            chunked=b"POST /?command=report HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            huge_header=b"POST /?command=report HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n",
        )[case]
        s = socket.create_connection(("127.0.0.1", g.pport), timeout=10)
        s.sendall(raw)
        got = b""
        while True:  # the server answers and closes
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        s.close()
        want = dict(http_garbage=b"HTTP/1.1 400 ", no_host=b"HTTP/1.1 400 ", chunked=b"HTTP/1.1 501 ",
                    huge_header=b"HTTP/1.1 431 ")[case]
        assert got.startswith(want), got[:80]
    g.wait_log(r"event=policy_bad_request client=127\.0\.0\.1 status=\d+ error=", since=mark)
    rc, out, _ = ctl(g, "why", "192.0.2.50")
    assert out == "192.0.2.50: nothing recorded\n"


def test_outside_policy_allow_gets_403(pgate):
    if not can_bind("127.0.0.3"):
        pytest.skip("needs 127.0.0.3")
    g = pgate(policy_allow="127.0.0.1/32")
    status, _ = request(g.pport, "report", body(remote="192.0.2.60", success=False, policy_reject=False),
                        src="127.0.0.3")
    assert status == 403
    g.wait_log(r"event=policy_bad_request client=127\.0\.0\.3 status=403 error=\"not in policy_allow\"")
    rc, out, _ = ctl(g, "why", "192.0.2.60")
    assert out == "192.0.2.60: nothing recorded\n"


def test_header_name_from_dovecot_style_key(pgate):
    g = pgate(policy_api_key="X-Policy-Secret: " + KEY)
    c = http.client.HTTPConnection("127.0.0.1", g.pport, timeout=10)
    c.request("POST", "/?command=allow", body=body(), headers={"x-policy-secret": KEY})
    assert c.getresponse().status == 200
    c.close()
    assert request(g.pport, "allow", body())[0] == 401  # X-API-Key is not the header now


def test_idle_timeout_and_connection_limit(pgate):
    g = pgate(policy_timeout=1, policy_max_connections=2)
    a = socket.create_connection(("127.0.0.1", g.pport), timeout=10)
    b = socket.create_connection(("127.0.0.1", g.pport), timeout=10)
    wait_for(lambda: '"policy_connections":2' in ctl(g, "status", "--json")[1], 5, what="two connections")
    c = socket.create_connection(("127.0.0.1", g.pport), timeout=10)
    assert c.recv(100).startswith(b"HTTP/1.1 503 ")
    c.close()
    # Idle ones are closed after policy_timeout (1 s); wait for EOF, bounded.
    a.settimeout(10)
    assert a.recv(100) == b""
    b.settimeout(10)
    b.recv(100)
    a.close()
    b.close()
    assert request(g.pport, "allow", body())[0] == 200


def test_pipelined_requests_answered_in_order(pgate):
    g = pgate()
    one = body(remote="192.0.2.70")
    req = ("POST /?command=allow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: %s\r\nContent-Type: application/json\r\n"
           "Content-Length: %d\r\n\r\n%s" % (KEY, len(one), one)).encode()
    s = socket.create_connection(("127.0.0.1", g.pport), timeout=10)
    s.sendall(req * 3)
    got = b""
    while got.count(b'{"status":0}') < 3:  # bounded by the socket timeout
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    assert got.count(b"HTTP/1.1 200 OK\r\n") == 3
    s.close()


def test_reload_moves_the_port(pgate):
    g = pgate()
    new = free_port()
    mark = g.log_mark()
    g.write_config(policy_listen="127.0.0.1:%d" % new)
    g.reload()
    g.wait_log(r"event=reload status=ok", since=mark)
    wait_listening(new, "4", timeout=10, proc=g.proc)
    assert request(new, "allow", body())[0] == 200
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", g.pport), timeout=2).close()


@pytest.mark.parametrize("text,want", [
    ("policy_listen 127.0.0.1:8143\n", "imapgate.conf:2: policy_listen: needs policy_api_key"),
    ("policy_listen 127.0.0.1:8143\npolicy_api_key short\n", "imapgate.conf:3: policy_api_key: too short"),
    ("policy_listen 127.0.0.1\npolicy_api_key %s\n" % KEY, "imapgate.conf:2: policy_listen: '127.0.0.1': needs a port"),
    ("policy_hash_mech md4\n", "imapgate.conf:2: policy_hash_mech: 'md4' is not supported"),
    ("policy_hash_mech md5\npolicy_hash_truncate 128\n",
     "imapgate.conf:3: policy_hash_truncate: 128 bits is not less than the 128 bits of md5"),
    ("policy_listen 127.0.0.1:8143\npolicy_listen 127.0.0.1:8143\npolicy_api_key %s\n" % KEY,
     "imapgate.conf:3: policy_listen: duplicate of line 2"),
])
def test_config_errors_name_line_and_key(tmp_path, text, want):
    rc, out = run_check("server_hostname 127.0.0.1\n" + text, path=tmp_path / "imapgate.conf")
    assert rc != 0 and want in out, out


def test_port_in_use_is_an_error_at_start(make_gate):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        g = make_gate(start=False, check_exit=False, policy_listen="127.0.0.1:%d" % port, policy_api_key=KEY)
        g.launch()
        assert g.wait_exit(10) != 0
        assert "policy_listen 127.0.0.1:%d" % port in g.log_text() and "Address already in use" in g.log_text()
    finally:
        s.close()


def test_dovecot_24_fail_type_only_guesses_count(pgate):
    g = pgate()
    mark = g.log_mark()
    for i, ft in enumerate(("internal", "expired", "disabled", "policy")):
        report_fail(g.pport, remote="192.0.2.90", pwhash="7%03d" % i, fail_type=ft)
    g.wait_log(r"event=login_failed user=alice rip=192\.0\.2\.90 proto=smtp source=policy session=- "
               r"reason=policy guard=not_counted", since=mark)
    assert ctl(g, "why", "192.0.2.90")[1] == "192.0.2.90: nothing recorded\n"
    report_fail(g.pport, remote="192.0.2.90", pwhash="8001", fail_type="credentials")
    report_fail(g.pport, remote="192.0.2.90", pwhash="8002", fail_type="account")
    report_fail(g.pport, remote="192.0.2.90", pwhash="8003", fail_type="")  # 2.4 before the end: ""
    assert "not banned" not in ctl(g, "why", "192.0.2.90")[1]  # three counted: banned
