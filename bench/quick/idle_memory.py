#!/usr/bin/env python3
"""imapgate's RSS per logged-in session in IDLE.

A quick measurement for development notes, not the benchmark (make bench,
issue 6). Run from the repository root with /usr/bin/python3 after make.
Loopback only; bounded in count."""
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "e2e"))
import time, socket
import harness
def rss(pid):
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmRSS"): return int(l.split()[1])
d = harness.Dovecot(extra_conf="service imap {\n  service_count = 0\n  client_limit = 1000\n  process_limit = 4\n}\n"); d.start()
g = harness.Imapgate(backend_port=d.port, guard_db="none", max_connections_per_ip=0); g.start()
time.sleep(0.3)
time.sleep(0.3)
base2 = rss(g.pid())
logged = []
N = 400
for i in range(N):
    c = harness.RawClient("127.0.0.1", g.port); c.read_line()
    c.command("a", "LOGIN alice alicepw"); c.command("s", "SELECT INBOX"); c.send(b"i IDLE\r\n"); c.read_line()
    logged.append(c)
time.sleep(0.5)
r2 = rss(g.pid())
print("logged in, IDLE: %d sessions, +%d KiB = %.1f KiB/session" % (N, r2 - base2, (r2 - base2) / N))
for c in logged: c.close()
g.stop(); d.stop()
