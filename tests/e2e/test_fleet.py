"""
Several imapgate instances share one guard through a real Redis
(guard_redis): failures add up across the fleet, a ban anywhere is refused
everywhere, unban anywhere reopens everywhere, a late instance catches up
on the active bans, Redis down changes nothing locally and the fleet
converges when it is back, ACL passwords are used and a wrong one is a
clear error while imapgate keeps serving. Two and three instances in front
of the same real Dovecot, from distinct loopback client addresses.
"""

import json
import secrets
import time

import pytest

from harness import can_bind, ctl, login_raw, register_secret, wait_for

pytestmark = pytest.mark.skipif(not can_bind("127.0.0.40"), reason="needs 127.0.0.0/8 source addresses")

FAST = dict(guard_maxretry=3, guard_failure_delay=0, guard_db="none", control_socket="ctl.sock")


@pytest.fixture
def fleet(make_gate, make_redis):
    """fleet(n, **cfg) -> (redis, [gates]); instance i is node 'n<i>'."""
    def factory(n=2, redis=None, **cfg):
        r = redis or make_redis(password="fleet-" + secrets.token_hex(8))
        gates = []
        for i in range(n):
            c = dict(FAST, guard_redis=r.url(), guard_redis_node="n%d" % i)
            c.update(cfg)
            gates.append(make_gate(**c))
        for g in gates:
            wait_for(lambda g=g: redis_up(g), 10, what="imapgate connected to Redis")
        return r, gates
    return factory


def status(g):
    return json.loads(ctl(g, "status", "--json")[1])


def redis_up(g):
    st = status(g).get("redis")
    return bool(st and st["up"])


def refused(g, src):
    """Does g refuse a connection from src (banned: BYE as the greeting)?"""
    c = g.connect_raw(src=src)
    try:
        return c.read_line().startswith(b"* BYE ")
    finally:
        c.close()


def fail_login(g, src, user, pw):
    c = g.connect_greeted(src=src)
    try:
        return login_raw(c, user, pw)[-1]
    finally:
        c.close()


def test_failures_on_two_instances_add_up_to_one_ban(fleet, fresh_user):
    user, _ = fresh_user
    r, (a, b) = fleet(2)
    src = "127.0.0.41"
    assert b" NO " in fail_login(a, src, user, "wrong-1")
    assert b" NO " in fail_login(b, src, user, "wrong-2")
    # Each instance sees both failures, and says which node counted which.
    wait_for(lambda: "2 failure(s) counted" in ctl(a, "why", src)[1], 10, what="B's failure counted on A")
    out = ctl(a, "why", src)[1]
    assert "node=n0" in out and "node=n1" in out, out
    assert not refused(a, src) and not refused(b, src)
    mark = a.log_mark()
    assert b" NO " in fail_login(b, src, user, "wrong-3")  # the third, anywhere, bans
    wait_for(lambda: refused(a, src), 10, what="A refuses after B's third failure")
    assert refused(b, src)
    a.wait_log(r"event=(peer_failure|ban) ", since=mark)


def test_ban_on_one_refuses_at_the_other_and_unban_reopens(fleet):
    r, (a, b) = fleet(2)
    src = "127.0.0.42"
    rc, out, _ = ctl(a, "ban", src, "600")
    assert rc == 0
    wait_for(lambda: refused(b, src), 10, what="B refuses A's ban")
    rc, out, _ = ctl(b, "unban", src)
    assert rc == 0 and out == "lifted 1 ban(s)\n"
    wait_for(lambda: not refused(a, src), 10, what="A reopens after B's unban")
    b.wait_log(r"event=unban prefix=127\.0\.0\.42/32 ")
    a.wait_log(r"event=peer_unban node=n1 prefix=127\.0\.0\.42/32 ")


def test_three_instances_and_a_late_one_catches_up(fleet, make_gate):
    r, gates = fleet(3)
    src = "127.0.0.43"
    assert ctl(gates[2], "ban", src, "900")[0] == 0
    for g in gates[:2]:
        wait_for(lambda g=g: refused(g, src), 10, what="every instance refuses")
    # A fourth one started now loads the active ban from Redis.
    late = make_gate(**dict(FAST, guard_redis=r.url(), guard_redis_node="late"))
    wait_for(lambda: redis_up(late), 10, what="late instance up")
    wait_for(lambda: refused(late, src), 10, what="the late instance has the ban")
    bans = json.loads(ctl(late, "bans", "--json")[1])
    assert [x["prefix"] for x in bans] == [src + "/32"]
    assert 800 < bans[0]["seconds_left"] <= 900
    assert status(late)["redis"]["catchup_bans"] >= 1


def test_redis_down_local_guard_goes_on_and_the_fleet_converges(fleet, fresh_user):
    user, pw = fresh_user
    r, (a, b) = fleet(2)
    r.kill()
    wait_for(lambda: not redis_up(a) and not redis_up(b), 10, what="both see Redis down")
    a.wait_log(r"event=redis_down ")
    # Logins and bans go on from local state; nothing hangs.
    c = a.connect_greeted(src="127.0.0.44")
    assert login_raw(c, user, pw)[-1].startswith(b"a OK")
    c.close()
    src = "127.0.0.45"
    for i in range(3):
        fail_login(a, src, user, "wrong-%d" % i)
    assert refused(a, src)
    assert not refused(b, src)  # B cannot know yet
    assert status(a)["redis"]["queued"] > 0
    # Redis back: A's queued ban reaches B.
    r.restart()
    wait_for(lambda: redis_up(a) and redis_up(b), 40, what="both reconnected")
    a.wait_log(r"event=redis_up ")
    wait_for(lambda: refused(b, src), 10, what="B gets the ban made while Redis was down")


def test_acl_password_and_a_wrong_one(make_redis, make_gate, fresh_user):
    user, pw = fresh_user
    secret = "fleet-secret-0123456789"
    register_secret(secret)
    r = make_redis(password=secret)
    good = make_gate(**dict(FAST, guard_redis=r.url(), guard_redis_node="good"))
    wait_for(lambda: redis_up(good), 10, what="connected with the ACL user")
    bad = make_gate(**dict(FAST, guard_redis=r.url(password="wrong-password-xyz"),
                          guard_redis_node="bad"))
    register_secret("wrong-password-xyz")
    bad.wait_log(r"event=redis_error .*(WRONGPASS|invalid username-password|AUTH)", timeout=10)
    assert not redis_up(bad)
    # It still serves.
    c = bad.connect_greeted(src="127.0.0.46")
    assert login_raw(c, user, pw)[-1].startswith(b"a OK")
    c.close()
    assert secret not in good.log_text() and "wrong-password-xyz" not in bad.log_text()


def test_a_peer_message_is_untrusted_input(fleet):
    r, (a,) = fleet(1)
    now = int(time.time())
    mark = a.log_mark()
    r.cli("PUBLISH", "imapgate:events", "garbage \x01 not an event")
    a.wait_log(r"event=redis_bad_event error=", since=mark)
    # A well-formed ban of the whole IPv4 Internet from a "peer" is refused.
    r.cli("PUBLISH", "imapgate:events", "ig1 B evil %d 0.0.0.0/0 %d %d 1 manual x" % (now, now, now + 600))
    a.wait_log(r"event=redis_bad_event error=\"ban of 0\.0\.0\.0/0 refused", since=mark)
    assert not refused(a, "127.0.0.47")
    # A good one is applied.
    r.cli("PUBLISH", "imapgate:events", "ig1 B peer %d 127.0.0.47/32 %d %d 1 manual x" % (now, now, now + 600))
    wait_for(lambda: refused(a, "127.0.0.47"), 10, what="a peer's ban applied")
    assert status(a)["redis"]["bad_in"] == 2


def test_a_success_on_one_trusts_the_address_on_the_other(fleet, fresh_user):
    user, pw = fresh_user
    r, (a, b) = fleet(2)
    src = "127.0.0.48"
    before = status(b)["redis"]["events_in"]
    c = a.connect_greeted(src=src)
    assert login_raw(c, user, pw)[-1].startswith(b"a OK")
    c.close()
    wait_for(lambda: status(b)["redis"]["events_in"] > before, 10, what="B heard A's success")
    for i in range(4):  # the owner mistyping on B is not counted, never banned
        fail_login(b, src, user, "typo-%d" % i)
    out = ctl(b, "why", src)[1]
    assert "not banned" in out and out.count("status=trusted") == 4, out
