"""
The private Redis of the harness (the shared guard's tests rely on it): its ACL
user, requirepass, a Unix socket, kill and restart on the same port, and that
nothing of it outlives the test. No imapgate here.
"""

import socket

import pytest

from harness import RedisError, RespClient, is_listening


def test_acl_user_limited_to_prefix(redis_server):
    r = redis_server
    assert r.url().startswith("redis://imapgate:")
    with RespClient(r.host, r.port, "imapgate", r.password) as c:
        assert c.command("SET", "imapgate:k", "v") == "OK"
        assert c.command("GET", "imapgate:k") == "v"
        with pytest.raises(RedisError, match="NOPERM"):
            c.command("SET", "other:k", "v")
        with pytest.raises(RedisError, match="NOPERM"):
            c.command("PUBLISH", "other:events", "x")
        assert c.command("PUBLISH", "imapgate:events", "x") == 0
    # The default user is off, a wrong password refused.
    with RespClient(r.host, r.port) as c, pytest.raises(RedisError, match="NOAUTH"):
        c.command("PING")
    with pytest.raises(RedisError, match="WRONGPASS"):
        RespClient(r.host, r.port, "imapgate", "wrong")
    assert r.cli("GET", "imapgate:k") == "v"
    # No persistence.
    assert r.cli("CONFIG", "GET", "save") == ["save", ""]
    assert r.cli("CONFIG", "GET", "appendonly") == ["appendonly", "no"]


def test_requirepass_unix_socket_and_no_password(make_redis):
    r = make_redis(password="just-a-pw", acl=False, unix=True)
    assert r.url(db=2) == "redis://:just-a-pw@127.0.0.1:%d/2" % r.port
    with RespClient(r.host, r.port, None, "just-a-pw") as c:
        assert c.command("PING") == "PONG"
    with RespClient(None, None, unix_path=r.unix_path) as c, pytest.raises(RedisError, match="NOAUTH"):
        c.command("PING")
    assert r.unix_url() == "unix:%s?db=0" % r.unix_path

    open_ = make_redis()
    assert open_.url() == "redis://127.0.0.1:%d/0" % open_.port
    with RespClient(open_.host, open_.port) as c:
        assert c.command("PING") == "PONG"


def test_kill_and_restart_same_port(redis_server):
    r = redis_server
    port = r.port
    r.cli("SET", "imapgate:x", "1")
    sub = RespClient(r.host, r.port, "imapgate", r.password)
    sub.command("SUBSCRIBE", "imapgate:events")
    r.kill()
    assert not r.running()
    assert not is_listening(port)
    # A client of the dead server sees the connection closed, not a hang.
    with pytest.raises((EOFError, OSError)):
        sub.read_reply(timeout=5)
    sub.close()
    with pytest.raises(OSError):
        socket.create_connection((r.host, port), timeout=1).close()
    r.restart()
    assert r.port == port and r.running()
    assert r.cli("GET", "imapgate:x") is None  # nothing persisted
    r.stop()
    assert not r.running() and not is_listening(port)


def test_subscriber_sees_publish(redis_server):
    r = redis_server
    with RespClient(r.host, r.port, "imapgate", r.password) as sub:
        assert sub.command("SUBSCRIBE", "imapgate:events") == ["subscribe", "imapgate:events", 1]
        assert r.cli("PUBLISH", "imapgate:events", "hello") == 1
        assert sub.read_reply(timeout=5) == ["message", "imapgate:events", "hello"]
