#!/usr/bin/env python3
"""A 50 MB message fetched with curl, direct vs through imapgate.

A quick measurement for development notes, not the benchmark (make bench,
issue 6). Run from the repository root with /usr/bin/python3 after make.
Loopback only; bounded in count."""
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "e2e"))
import time, subprocess
import harness
d = harness.Dovecot(); d.start()
g = harness.Imapgate(backend_port=d.port, guard_db="none"); g.start()
body = ("z" * 998 + "\r\n") * 50000   # ~50 MB
d.deliver("alice", harness.make_message(subject="bulk", body=body))
def fetch(port):
    t = time.perf_counter()
    subprocess.run(["curl", "-s", "--user", "alice:alicepw", "imap://127.0.0.1:%d/INBOX;UID=1" % port, "-o", "/dev/null"], check=True)
    return time.perf_counter() - t
fetch(d.port)
for r in range(3):
    a = fetch(d.port); b = fetch(g.port)
    print("round %d: direct %.0f MB/s, imapgate %.0f MB/s, ratio %.2f" % (r, 50/a, 50/b, a/b))
g.stop(); d.stop()
