"""
tls_util — certificates, TLS backends and TLS clients for the TLS end-to-end
tests (tests/e2e/test_tls.py). Standard library plus the `openssl` command.

  Certs(dir)            a CA, a server certificate for localhost / 127.0.0.1 / ::1,
                        a certificate for a wrong name, and a second CA, made with
                        `openssl` into dir; .issue() makes more (reload tests)
  dovecot_tls_conf()    extra Dovecot config: TLS on, an imaps listener, %c (TLS)
                        in login lines, optionally ssl = required (LOGINDISABLED)
  tls_dovecot()         a private Dovecot with that config, via the own_dovecot fixture
  tls_gate()            an imapgate with an implicit-TLS listener (listen ... tls)
  connect_tls()         a harness.RawClient speaking TLS (implicit or after STARTTLS)
  s_client()            run `openssl s_client` with IMAP commands on stdin
  RecordingProxy        a TCP relay that records what imapgate sends a backend

Certificates and keys are world-readable on purpose: imapgate drops to
`nobody` and re-reads them on SIGHUP. Never do that with real keys.
"""

import os
import re
import select
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

from harness import RawClient, free_port, wait_for, wait_listening

OPENSSL = "openssl"


class TlsError(RuntimeError):
    pass


def _run(args, cwd=None, input=None, timeout=30):
    p = subprocess.run([OPENSSL] + args, cwd=cwd, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if p.returncode != 0:
        raise TlsError("openssl %s failed (%d): %s" % (" ".join(args), p.returncode,
                                                       p.stderr.decode(errors="replace")))
    return p.stdout.decode(errors="replace")


def _readable(path):
    os.chmod(path, 0o644)


class Cert:
    """One issued certificate: .cert (PEM, leaf then the CA), .leaf (leaf only), .key, .serial (int)."""

    def __init__(self, cert, leaf, key, serial):
        self.cert, self.leaf, self.key, self.serial = str(cert), str(leaf), str(key), serial


class Certs:
    """Test PKI in dir (created if needed, made traversable for 'nobody').

    .ca / .ca_key      the CA every good certificate chains to
    .server            Cert for DNS:localhost, IP:127.0.0.1, IP:::1 (serial 0x1001)
    .wrong             Cert for DNS:wrong.example.org only (serial 0x1002)
    .other_ca          a CA that signed nothing the servers use
    """

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.ca, self.ca_key = self._make_ca("ca", "imapgate test CA")
        self.other_ca, _ = self._make_ca("other-ca", "imapgate unrelated CA")
        self.server = self.issue("server", ["DNS:localhost", "IP:127.0.0.1", "IP:::1"], serial=0x1001)
        self.wrong = self.issue("wrong", ["DNS:wrong.example.org"], serial=0x1002)

    def _key(self, name):
        key = self.dir / ("%s.key" % name)
        _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key)])
        _readable(key)
        return key

    def _make_ca(self, name, cn):
        key = self._key(name)
        cert = self.dir / ("%s.pem" % name)
        _run(["req", "-x509", "-new", "-key", str(key), "-sha256", "-days", "2", "-subj", "/CN=%s" % cn,
              "-set_serial", "1",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign",
              "-out", str(cert)])
        _readable(cert)
        return str(cert), str(key)

    def issue(self, name, sans, serial, cn=None, out_cert=None, out_key=None):
        """A server certificate signed by the CA, for the given subjectAltNames
        (["DNS:x", "IP:y"]). out_cert/out_key: write there instead of NAME.pem/NAME.key
        (atomically, by rename: a reload never sees half a file)."""
        key = self._key(name + ".new")
        csr = self.dir / ("%s.csr" % name)
        ext = self.dir / ("%s.ext" % name)
        leaf = self.dir / ("%s.leaf.pem" % name)
        _run(["req", "-new", "-key", str(key), "-subj", "/CN=%s" % (cn or sans[0].split(":", 1)[1]),
              "-out", str(csr)])
        ext.write_text("basicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature\n"
                       "extendedKeyUsage=serverAuth\n"
                       "subjectAltName=%s\n" % ",".join(sans))
        _run(["x509", "-req", "-in", str(csr), "-CA", self.ca, "-CAkey", self.ca_key, "-set_serial", str(serial),
              "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(leaf)])
        _readable(leaf)
        cert = Path(out_cert) if out_cert else self.dir / ("%s.pem" % name)
        keyp = Path(out_key) if out_key else self.dir / ("%s.key" % name)
        tmp = cert.with_name(cert.name + ".tmp")
        tmp.write_text(leaf.read_text() + Path(self.ca).read_text())
        _readable(tmp)
        # Key first: a reload between the two renames sees a mismatch and keeps the old pair.
        os.replace(key, keyp)
        os.replace(tmp, cert)
        csr.unlink()
        ext.unlink()
        return Cert(cert, leaf, keyp, serial)

    def client_context(self, ca=None, check_hostname=True, max_version=None):
        """An ssl.SSLContext that trusts our CA (or ca) and checks host names."""
        ctx = ssl.create_default_context(cafile=ca or self.ca)
        ctx.check_hostname = check_hostname
        if max_version is not None:
            ctx.maximum_version = max_version
        return ctx


def cert_serial(path):
    """Serial number (int) of the first certificate in a PEM file."""
    out = _run(["x509", "-in", str(path), "-noout", "-serial"])
    return int(out.strip().split("=", 1)[1], 16)


def peer_serial(sock):
    """Serial number (int) of the certificate the peer of an SSLSocket presented."""
    return int(sock.getpeercert()["serialNumber"], 16)


# --------------------------------------------------------------------------
# Dovecot with TLS


def dovecot_tls_conf(cert, imaps_port, required=False):
    """Extra Dovecot config (appended after the harness's own, so it overrides):
    TLS with cert (a Cert), an imaps listener on imaps_port, and the TLS state (%c) in
    login lines. required=True: ssl = required and disable_plaintext_auth = yes, so
    plain connections get LOGINDISABLED until STARTTLS; loopback is then not treated
    as secure (login_trusted_networks emptied)."""
    conf = """
ssl = %s
ssl_cert = <%s
ssl_key = <%s
ssl_min_protocol = TLSv1.2
login_log_format_elements = user=<%%u> method=%%m rip=%%r lip=%%l tls=<%%c> session=<%%{session}>
service imap-login {
  inet_listener imaps {
    port = %d
    ssl = yes
  }
}
""" % ("required" if required else "yes", cert.cert, cert.key, imaps_port)
    if required:
        conf += "disable_plaintext_auth = yes\nlogin_trusted_networks =\n"
    return conf


def tls_dovecot(own_dovecot, cert, required=False, **kw):
    """A started private Dovecot with TLS (see dovecot_tls_conf). Returns it with
    .imaps_port set; .port stays the plain (STARTTLS) port."""
    imaps = free_port()
    d = own_dovecot(start=False, extra_conf=dovecot_tls_conf(cert, imaps, required=required), **kw)
    d.imaps_port = imaps
    d.start()
    wait_listening(imaps, "4", timeout=10)
    return d


def tls_login_lines(dovecot, user):
    """Dovecot's login lines for user that say the connection was TLS (needs dovecot_tls_conf)."""
    return [ln for ln in dovecot.login_lines(user) if re.search(r"tls=<TLS[^>]*>", ln)]


def plain_login_lines(dovecot, user):
    """Dovecot's login lines for user over a connection without TLS."""
    return [ln for ln in dovecot.login_lines(user) if not re.search(r"tls=<TLS[^>]*>", ln)]


# --------------------------------------------------------------------------
# imapgate with TLS


def tls_gate(make_gate, cert, start=True, implicit=True, **config):
    """An imapgate with client_tls_cert_file/key_file = cert (a Cert) and, when implicit,
    an extra implicit-TLS listener on 127.0.0.1 (g.tls_port) beside the plain ones."""
    config.setdefault("client_tls_cert_file", cert.cert)
    config.setdefault("client_tls_key_file", cert.key)
    g = make_gate(start=False, **config)
    g.tls_port = None
    if implicit:
        g.tls_port = g.add_listener("tls")
    if start:
        g.start()
        if implicit:
            wait_listening(g.tls_port, "4", timeout=10, proc=g.proc)
    return g


def wrap_client(c, context, server_hostname="localhost", timeout=10.0):
    """Run a TLS handshake on a RawClient's socket (after STARTTLS, or at once for
    implicit TLS) and keep using the same RawClient. Bytes already buffered in plaintext
    are an error: nothing may come between the STARTTLS OK and the handshake."""
    if c.buf:
        raise AssertionError("plaintext bytes after the STARTTLS reply: %r" % c.buf)
    c.sock.settimeout(timeout)
    c.sock = context.wrap_socket(c.sock, server_hostname=server_hostname)
    return c


def connect_tls(gate, context, port=None, server_hostname="localhost", timeout=10.0):
    """A RawClient over implicit TLS to gate.tls_port (or port), tracked by the gate
    (closed at teardown)."""
    c = RawClient("127.0.0.1", port or gate.tls_port, timeout=timeout)
    gate.clients.append(c)
    return wrap_client(c, context, server_hostname=server_hostname, timeout=timeout)


def starttls(c, context, tag="s", server_hostname="localhost"):
    """Send STARTTLS on a greeted RawClient, check the OK, and handshake."""
    lines = c.command(tag, "STARTTLS")
    assert lines[-1].startswith(tag.encode() + b" OK"), lines
    return wrap_client(c, context, server_hostname=server_hostname)


def tls_is_open(c, wait=0.1):
    """RawClient.is_open for a TLS socket (which cannot MSG_PEEK)."""
    r, _, _ = select.select([c.sock], [], [], wait)
    if not r:
        return True
    try:
        chunk = c.sock.recv(65536)
    except (OSError, ssl.SSLError):
        return False
    c.buf += chunk
    return bool(chunk)


# --------------------------------------------------------------------------
# openssl s_client


def s_client(port, commands, ca, starttls=False, servername="localhost", timeout=20, extra=()):
    """Run `openssl s_client` against 127.0.0.1:port with commands (lines, sent with CRLF)
    on stdin; it stays until the server closes (end with LOGOUT). Returns
    (returncode, stdout, stderr) as str."""
    args = [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", ca,
            "-verify_return_error", "-verify_hostname", servername, "-servername", servername,
            "-brief", "-crlf", "-ign_eof"]
    if starttls:
        args += ["-starttls", "imap"]
    args += list(extra)
    p = subprocess.run(args, input="".join(line + "\n" for line in commands).encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


# --------------------------------------------------------------------------
# a recording relay between imapgate and a backend


class RecordingProxy:
    """Listens on 127.0.0.1:.port, relays each connection to 127.0.0.1:target_port and
    records every byte sent toward the backend (.upstream, bytes, all connections) and
    back (.downstream). Used to prove what imapgate put on the wire in cleartext.

    source: local address for the backend side (e.g. 127.0.0.2, so that Dovecot does
    not treat the connection as local and therefore secure)."""

    def __init__(self, target_port, source=None):
        self.target_port = target_port
        self.source = source
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.upstream = b""
        self.downstream = b""
        self.streams = []  # per connection: [bytes toward the backend, bytes back]
        self.connections = 0
        self.stopped = False
        self.socks = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopped:
            try:
                r, _, _ = select.select([self.lsock], [], [], 0.1)
                if not r:
                    continue
                a, _ = self.lsock.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.target_port), timeout=5,
                                             source_address=(self.source, 0) if self.source else None)
                b.settimeout(None)
            except OSError:
                a.close()
                continue
            with self.lock:
                self.connections += 1
                self.socks += [a, b]
                rec = [b"", b""]
                self.streams.append(rec)
            threading.Thread(target=self._pump, args=(a, b, rec), daemon=True).start()

    def _pump(self, a, b, rec):
        socks = [a, b]
        try:
            while not self.stopped:
                r, _, _ = select.select(socks, [], [], 0.1)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    with self.lock:
                        if s is a:
                            self.upstream += data
                            rec[0] += data
                        else:
                            self.downstream += data
                            rec[1] += data
                    (b if s is a else a).sendall(data)
        except OSError:
            pass
        finally:
            a.close()
            b.close()

    def close(self):
        self.stopped = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass
        self.thread.join(timeout=2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_until(pred, timeout, what):
    """harness.wait_for with the argument order these tests use."""
    return wait_for(pred, timeout, interval=0.05, what=what)