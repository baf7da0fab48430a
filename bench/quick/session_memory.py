#!/usr/bin/env python3
"""imapgate's RSS per idle session before login (after login: idle_memory.py).

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
base = rss(g.pid())
N = 400
pre = []
for i in range(N):
    s = socket.create_connection(("127.0.0.1", g.port)); s.recv(1000); pre.append(s)
time.sleep(0.3)
r1 = rss(g.pid())
print("pre-auth idle: %d sessions, +%d KiB = %.1f KiB/session" % (N, r1 - base, (r1 - base) / N))
for s in pre: s.close()
g.stop(); d.stop()
