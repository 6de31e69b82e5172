"""TLS: with --tls-cert/--tls-key the server speaks HTTPS with HTTP/1.1 only; HTTP/2 is offered by
ALPN only with --http2 (Debian's h2o has no Rapid Reset fix, so it is opt-in); a bad key stops start."""
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import http.client

BIN = os.environ.get("PAKE_BIN", "build/pake")


def start(*flags):
    d = tempfile.mkdtemp()
    log = open(os.path.join(d, "err.log"), "w+")
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(d, "data"), *flags],
                         stderr=log, stdout=subprocess.DEVNULL)
    for _ in range(1200):
        log.flush()
        m = re.search(r'"address":"127\.0\.0\.1:(\d+)"', open(log.name).read())
        if m:
            return p, int(m.group(1)), log
        if p.poll() is not None:
            break
        time.sleep(0.05)
    return p, None, log


@unittest.skipUnless(shutil.which("openssl"), "openssl command not available")
class Tls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        cls.cert, cls.key = os.path.join(cls.dir, "c.pem"), os.path.join(cls.dir, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=127.0.0.1", "-keyout", cls.key, "-out", cls.cert], check=True, capture_output=True)

    def ctx(self, alpn):
        c = ssl.create_default_context(cafile=self.cert)
        c.check_hostname = False
        c.set_alpn_protocols(alpn)
        return c

    def test_https_http1_only_by_default(self):
        p, port, log = start("--tls-cert", self.cert, "--tls-key", self.key)
        try:
            self.assertIsNotNone(port, open(log.name).read())
            c = http.client.HTTPSConnection("127.0.0.1", port, context=self.ctx(["h2", "http/1.1"]), timeout=10)
            c.request("GET", "/health/live")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(json.loads(r.read())["status"], "pass")
            self.assertNotEqual(c.sock.selected_alpn_protocol(), "h2")
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(20), 0)

    def test_http2_offered_with_flag(self):
        p, port, log = start("--tls-cert", self.cert, "--tls-key", self.key, "--http2")
        try:
            import socket
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            t = self.ctx(["h2", "http/1.1"]).wrap_socket(s, server_hostname="127.0.0.1")
            self.assertEqual(t.selected_alpn_protocol(), "h2")
            t.close()
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(20), 0)

    def test_bad_key_stops_start(self):
        bad = os.path.join(self.dir, "bad.pem")
        with open(bad, "w") as f:
            f.write("not a key\n")
        p, port, log = start("--tls-cert", self.cert, "--tls-key", bad)
        self.assertEqual(p.wait(20), 1)
        self.assertIn("TLS", open(log.name).read())


if __name__ == "__main__":
    unittest.main(verbosity=2)
