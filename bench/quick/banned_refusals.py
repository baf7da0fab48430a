#!/usr/bin/env python3
"""How fast a banned address is refused (one Python client: client-bound).

A quick measurement for development notes, not the benchmark (make bench,
issue 6). Run from the repository root with /usr/bin/python3 after make.
Loopback only; bounded in count."""
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "e2e"))
import time, socket, subprocess
import harness
d = harness.Dovecot(); d.start()
g = harness.Imapgate(backend_port=d.port, guard_db="none", control_socket=None); g.start()
g.write_config(control_socket=str(g.dir/"ctl.sock")); g.stop(); g.start()
subprocess.run([str(g.build/"imapgate-ctl"), "-s", str(g.dir/"ctl.sock"), "ban", "127.0.0.77"], check=True, capture_output=True)
n = 3000; t = time.perf_counter()
for i in range(n):
    s = socket.socket(); s.bind(("127.0.0.77", 0)); s.connect(("127.0.0.1", g.port))
    b = s.recv(200); assert b.startswith(b"* BYE"), b; s.close()
el = time.perf_counter() - t
print("banned client refused: %d connections in %.2fs = %.0f/s (client-side bound, one Python client)" % (n, el, n/el))
# TLS handshake cost
g.stop(); d.stop()
