"""
pytest fixtures for imapgate's end-to-end tests.

  dovecot      one Dovecot for the whole session (started again if a test left
               it stopped); do not stop or restart it in a test: use own_dovecot
  own_dovecot  a factory for private, function-scoped Dovecots (tests that stop,
               restart or break the backend)
  make_gate    a factory: make_gate(**config) starts an imapgate in front of the
               session Dovecot; at teardown every gate is stopped with SIGTERM
               and must exit 0, with no sanitizer report and no password in its log
  fresh_user   a new user (name, password) with an empty INBOX in the session Dovecot
  policy_server a PolicyRecorder (stand-in Dovecot auth policy server), running
  make_postfix a factory: make_postfix(dovecot) starts a private Postfix doing SMTP AUTH
               through dovecot's SASL socket (Dovecot(sasl_socket=True)); skips the
               test when Postfix cannot run here (not root, not installed)
  redis_server a private redis-server (harness.Redis) with an ACL user and password,
               running; make_redis a factory for more (make_redis(password=None, ...));
               both skip the test when redis-server is not installed

Run with Debian's pytest:  /usr/bin/python3 -m pytest tests/e2e
"""

import itertools
import os
import secrets
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (DEFAULT_USERS, SECRETS, Dovecot, Imapgate, PolicyRecorder, Postfix,  # noqa: E402
                     Redis, have_ipv6, postfix_unavailable, redis_unavailable)


# Users made before the session Dovecot starts, handed out by fresh_user: adding
# a user to a running Dovecot costs up to a second (passwd-file re-read).
SPARE_USERS = 80
_spare = []


@pytest.fixture(scope="session")
def _session_dovecot():
    users = dict(DEFAULT_USERS)
    for i in range(SPARE_USERS):
        name, pw = "t%d_%02d" % (os.getpid(), i), "pw-" + secrets.token_hex(6)
        users[name] = pw
        _spare.append((name, pw))
    d = Dovecot(users=users, ipv6=have_ipv6())
    d.start()
    yield d
    d.cleanup()


@pytest.fixture
def dovecot(_session_dovecot):
    """The shared Dovecot, running."""
    if not _session_dovecot.running():
        _session_dovecot.start()
    return _session_dovecot


@pytest.fixture
def own_dovecot():
    """Factory for private Dovecots: own_dovecot(start=True, **Dovecot kwargs)."""
    made = []

    def factory(start=True, **kw):
        d = Dovecot(**kw)
        made.append(d)
        if start:
            d.start()
        return d

    yield factory
    for d in made:
        d.cleanup()


_user_ids = itertools.count(1)


@pytest.fixture
def fresh_user(dovecot):
    """(name, password) of a new user of the session Dovecot, with an empty INBOX."""
    if _spare:
        return _spare.pop(0)
    name = "u%d_%d" % (os.getpid(), next(_user_ids))
    password = "pw-" + secrets.token_hex(6)
    dovecot.add_user(name, password)
    return name, password


def _gate_problems(gate):
    """Reasons a finished gate fails the test: crash, bad exit, sanitizer, leaked secret."""
    problems = []
    if gate.check_exit:
        if gate.running():
            try:
                rc = gate.stop(timeout=15)
            except TimeoutError as e:
                problems.append(str(e))
                rc = None
        else:
            rc = gate.returncode if gate.returncode is not None else gate.proc.returncode
        if rc is not None and rc != 0:
            problems.append("imapgate exit code %r on SIGTERM (crash or unclean shutdown)" % rc)
    else:
        gate.kill()
    report = gate.sanitizer_report()
    if report:
        problems.append("sanitizer report in imapgate's log:\n" + report)
    log = gate.log_text()
    leaked = sorted(s for s in SECRETS if s and s in log)
    if leaked:
        problems.append("password(s) or credentials in imapgate's log: %r" % leaked)
    return problems


@pytest.fixture
def make_gate(dovecot, request):
    """Factory: make_gate(start=True, backend=None, check_exit=True, text=None, **config).

    backend: a Dovecot (default the session one) or a port number.
    config keys become config lines (True/False -> yes/no, a list -> several lines,
    None -> key removed). check_exit=False for a gate a test expects to fail.
    """
    gates = []

    def factory(start=True, backend=None, check_exit=True, text=None, **config):
        if backend is None:
            backend = dovecot
        port = backend if isinstance(backend, int) else backend.port
        g = Imapgate(backend_port=port, text=text, **config)
        g.check_exit = check_exit
        gates.append(g)
        if start:
            g.start()
        return g

    yield factory

    problems = []
    for g in gates:
        # Clients a test left open would make SIGTERM wait up to shutdown_timeout.
        g.close_clients()
    for g in gates:
        if g.proc is None:
            continue
        p = _gate_problems(g)
        if p or getattr(request.node, "_failed", False):
            # Shown by pytest under "Captured stdout teardown" when something failed.
            print("--- imapgate log (%s) ---\n%s" % (g.conf_path, g.log_text()[-6000:]))
        problems += p
    for g in gates:
        g.cleanup()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def policy_server():
    """A running PolicyRecorder; its url goes to Dovecot(policy_url=...)."""
    rec = PolicyRecorder().start()
    yield rec
    rec.cleanup()


@pytest.fixture
def make_postfix(request):
    """Factory: make_postfix(dovecot, start=True, **Postfix kwargs) for a Dovecot made with
    sasl_socket=True. Every instance is stopped and removed at teardown; its log is
    printed when the test failed."""
    reason = postfix_unavailable()
    made = []

    def factory(dovecot, start=True, **kw):
        if reason:
            pytest.skip(reason)
        if not dovecot.sasl_path:
            raise ValueError("make_postfix needs a Dovecot(sasl_socket=True)")
        pf = Postfix(dovecot.sasl_path, **kw)
        made.append(pf)
        if start:
            pf.start()
        return pf

    yield factory
    for pf in made:
        if getattr(request.node, "_failed", False):
            print("--- postfix log (%s) ---\n%s" % (pf.dir, pf.log_text()[-4000:]))
        pf.cleanup()


@pytest.fixture
def make_redis(request):
    """Factory: make_redis(start=True, **Redis kwargs) -> a private redis-server (harness.Redis).
    Every instance is killed and its directory removed at teardown (also when the test
    failed, when its log is printed)."""
    reason = redis_unavailable()
    made = []

    def factory(start=True, **kw):
        if reason:
            pytest.skip(reason)
        r = Redis(**kw)
        made.append(r)
        if start:
            r.start()
        return r

    yield factory
    for r in made:
        if getattr(request.node, "_failed", False):
            print("--- redis log (%s) ---\n%s" % (r.dir, r.log_text()[-4000:]))
        r.cleanup()


@pytest.fixture
def redis_server(make_redis):
    """A running private Redis with the ACL user "imapgate" (keys and channels under
    "imapgate:") and a random password; redis_server.url() is guard_redis's value."""
    return make_redis(password="redis-" + secrets.token_hex(8))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        item._failed = True


@pytest.fixture
def gate(make_gate):
    """One imapgate with the default test config in front of the session Dovecot."""
    return make_gate()

