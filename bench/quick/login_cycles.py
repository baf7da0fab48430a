#!/usr/bin/env python3
"""Sequential LOGIN/SELECT/LOGOUT cycles, direct Dovecot vs through imapgate (each LOGIN right after the previous LOGOUT: through imapgate it can reuse the connection).

A quick measurement for development notes, not the benchmark (make bench,
issue 6). Run from the repository root with /usr/bin/python3 after make.
Loopback only; bounded in count."""
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "e2e"))
import time, statistics
import harness
d = harness.Dovecot(); d.start()
g = harness.Imapgate(backend_port=d.port, guard_db="none"); g.start()
def cycle(port):
    c = harness.RawClient('127.0.0.1', port)
    c.read_line()
    t0 = time.perf_counter()
    lines = c.command('a', 'LOGIN alice alicepw')
    t1 = time.perf_counter()
    c.command('b', 'SELECT INBOX'); c.command('c', 'LOGOUT'); c.close()
    return t1 - t0, any(b'XPROXYREUSE' in ln for ln in lines)
for name, port in [('direct', d.port), ('imapgate', g.port)] * 2:
    cyc = []; logins = []; reused = 0
    t = time.perf_counter()
    for i in range(200):
        t0 = time.perf_counter(); ms, r = cycle(port); logins.append(ms); reused += r; cyc.append(time.perf_counter() - t0)
    el = time.perf_counter() - t
    print("%-9s cycles/s %.0f  login p50 %.2f ms p99 %.2f ms  reused %d/200" % (name, 200/el, statistics.median(logins)*1e3, sorted(logins)[197]*1e3, reused))
g.stop(); d.stop()
