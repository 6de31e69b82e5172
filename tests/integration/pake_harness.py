"""
Integration-test harness for PAKE (Python standard library only).

It starts the real `pake` binary (env PAKE_BIN, default build/pake) on 127.0.0.1 with port 0 and a
temporary data directory, reads the chosen port from the "listening" JSON log line, waits until
GET /health/ready answers 200, and at the end stops the process by pid with SIGTERM and checks that
it exited 0 and that its stderr (kept in a file) holds no sanitizer report.

Model:
  * Server: one process. `request()` uses one keep-alive http.client connection per thread
    (reconnecting when the server closed it); `raw()` speaks bytes over a fresh socket for malformed
    HTTP; `extra_args` / `env` pass flags and environment to the server.
  * Response: status, headers (case-insensitive), body bytes and, when the body is JSON, `.json`.
  * ServerTestCase: a unittest base class that starts one server per test class (setUpClass) and
    stops it in tearDownClass; assertion helpers check the success envelope and problem documents.
  * SLOW: a time factor, 3 when the binary is an ASan/UBSan build (env PAKE_SANITIZED=1).
  * Store: the embedded SQLite store by default. When env PAKE_TEST_DATABASE_URL (or a file named by
    PAKE_TEST_DATABASE_URL_FILE) gives a PostgreSQL server URL, each Server gets a fresh database
    (CREATE DATABASE through psql, dropped in cleanup()) and starts with --database-url, so the same
    test files run against the PostgreSQL store. PG_URL is that server URL (None when unset).
"""
import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("PAKE_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
PAKE_BIN = os.environ.get("PAKE_BIN", os.path.join(SOURCE_DIR, "build", "pake"))
SANITIZED = os.environ.get("PAKE_SANITIZED", "0").lower() in ("1", "on", "true", "yes")
SLOW = 3.0 if SANITIZED else 1.0


def wait_for(what, fn, timeout=10.0, interval=0.02):
    """Polls fn until it returns a truthy value and returns it; fails with `what` after timeout * SLOW
    seconds."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)
SANITIZER_MARKERS = ("AddressSanitizer", "runtime error", "LeakSanitizer", "ThreadSanitizer")

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
def _pg_url():
    url = os.environ.get("PAKE_TEST_DATABASE_URL")
    path = os.environ.get("PAKE_TEST_DATABASE_URL_FILE")
    if not url and path and os.path.exists(path):
        with open(path) as f:
            url = f.read().strip()
    return url or None


PG_URL = _pg_url()
STORE_BACKEND = "postgres" if PG_URL else "sqlite"


def pg_database_url(server_url, dbname):
    """The URL of database `dbname` on the server of `server_url` (postgres://user@host:port/db)."""
    return server_url.rsplit("/", 1)[0] + "/" + dbname


def psql(url, sql, timeout=30):
    """Runs SQL with psql against url; returns stdout (raises on failure)."""
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("psql failed: %s" % r.stderr.strip())
    return r.stdout


def pg_create_database(server_url=None):
    """A fresh, empty database on the test server; returns its URL."""
    server_url = server_url or PG_URL
    name = "pake_t_%d_%s" % (os.getpid(), os.urandom(4).hex())
    psql(server_url, "CREATE DATABASE %s" % name)
    return pg_database_url(server_url, name)


_dir_databases = {}


def pg_database_for_dir(data_dir):
    """The database that stands for a data directory a test passes in on purpose (to restart a server
    on the same data): created on first use, the same for later servers, dropped at exit."""
    if data_dir not in _dir_databases:
        _dir_databases[data_dir] = pg_create_database()
        if len(_dir_databases) == 1:
            atexit.register(lambda: [pg_drop_database(u) for u in _dir_databases.values()])
    return _dir_databases[data_dir]


def pg_drop_database(url, server_url=None):
    server_url = server_url or PG_URL
    try:
        psql(server_url, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % url.rsplit("/", 1)[1])
    except (RuntimeError, OSError, subprocess.SubprocessError):
        pass


PROBLEM_FIELDS = ("type", "title", "status", "detail", "instance", "code", "retryable", "request_id", "trace_id")


def run_pake(args, env=None, timeout=30):
    """Runs `pake ARGS` to completion; returns CompletedProcess with text stdout/stderr."""
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([PAKE_BIN] + list(args), capture_output=True, text=True, timeout=timeout * SLOW, env=e)


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.header_list = headers  # [(name, value)] as received
        self.headers = {}
        for k, v in headers:
            self.headers.setdefault(k.lower(), v)
        self.body = body
        self._json = None

    def header(self, name):
        return self.headers.get(name.lower())

    def all_headers(self, name):
        return [v for k, v in self.header_list if k.lower() == name.lower()]

    @property
    def content_type(self):
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    @property
    def json(self):
        if self._json is None:
            self._json = json.loads(self.body.decode("utf-8"))
        return self._json

    @property
    def data(self):
        return self.json["data"]

    def __repr__(self):
        return "<Response %d %s %r>" % (self.status, self.content_type, self.body[:300])


class Server:
    def __init__(self, extra_args=(), env=None, data_dir=None, threads=2, ready_timeout=30.0):
        # These suites test behaviour, not limits: the per-client rate limits are raised unless a test
        # sets them itself (test_foundation.py tests the limiter).
        unlimited = []
        for cls in ("read", "write", "search", "admin"):
            if "--rate-" + cls not in extra_args:
                unlimited += ["--rate-" + cls, "1000000", "--burst-" + cls, "1000000"]
        self.extra_args = unlimited + list(extra_args)
        self.env = dict(env or {})
        self.own_database = None
        if PG_URL and "--database-url" not in extra_args and "PAKE_DATABASE_URL" not in self.env:
            if data_dir is None:
                self.own_database = pg_create_database()
                url = self.own_database
            else:
                url = pg_database_for_dir(data_dir)
            self.extra_args += ["--database-url", url]
        self.threads = threads
        self.ready_timeout = ready_timeout * SLOW
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="pake-itest-")
        self.proc = None
        self.port = None
        self.stderr_path = None
        self._local = threading.local()
        self.exit_code = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self):
        fd, self.stderr_path = tempfile.mkstemp(prefix="pake-stderr-", suffix=".log")
        os.close(fd)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:fast_unwind_on_malloc=0")
        env.setdefault("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0" % os.path.join(HERE, "..", "lsan.supp"))
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        env.update(self.env)
        args = [PAKE_BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir,
                "--threads", str(self.threads)] + self.extra_args
        self._errf = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self._errf, env=env)
        deadline = time.monotonic() + self.ready_timeout
        while self.port is None:
            if self.proc.poll() is not None:
                raise RuntimeError("pake exited with %s before listening:\n%s" % (self.proc.returncode, self.stderr()))
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("pake did not log 'listening' in time:\n" + self.stderr())
            for line in self.stderr().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("msg") == "listening":
                    self.port = int(rec["address"].rsplit(":", 1)[1])
                    break
            else:
                time.sleep(0.02)
        while True:
            try:
                if self.request("GET", "/health/ready", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("pake not ready within %.0f s:\n%s" % (self.ready_timeout, self.stderr()))
            time.sleep(0.05)
        return self

    def signal(self, sig=signal.SIGTERM):
        os.kill(self.proc.pid, sig)

    def wait(self, timeout=30):
        try:
            self.exit_code = self.proc.wait(timeout=timeout * SLOW)
        finally:
            self._errf.close()
        return self.exit_code

    def stop(self, timeout=30):
        """SIGTERM by pid, wait, return (exit_code, problems) where problems lists what went wrong."""
        self.close_connections()
        problems = []
        if self.proc is None:
            return None, problems
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            code = self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
            problems.append("did not exit within %d s of SIGTERM" % timeout)
        if code != 0 and code is not None:
            problems.append("exit code %d" % code)
        problems += self.sanitizer_reports()
        return code, problems

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self):
        self.kill()
        if self.own_database:
            pg_drop_database(self.own_database)
            self.own_database = None
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.stderr_path and os.path.exists(self.stderr_path) and not os.environ.get("PAKE_KEEP_LOGS"):
            os.unlink(self.stderr_path)

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def sanitizer_reports(self):
        text = self.stderr()
        found = [m for m in SANITIZER_MARKERS if m in text]
        if not found:
            return []
        i = min(text.find(m) for m in found)
        return ["sanitizer report in stderr:\n" + text[max(0, i - 200):i + 4000]]

    def log_lines(self):
        out = []
        for line in self.stderr().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    # ---- HTTP ------------------------------------------------------------------------------------
    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def connection(self, timeout=10):
        c = getattr(self._local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout * SLOW)
            self._local.conn = c
            conns = self.__dict__.setdefault("_all_conns", [])
            conns.append(c)
        return c

    def close_connections(self):
        for c in self.__dict__.get("_all_conns", []):
            try:
                c.close()
            except OSError:
                pass
        self.__dict__["_all_conns"] = []
        self._local = threading.local()

    def request(self, method, path, body=None, headers=None, json_body=None, timeout=10, new_conn=False):
        """One request over this thread's keep-alive connection. json_body is serialised with
        Content-Type application/json unless headers give another. Retries once on a connection the
        server closed between requests (idle keep-alive)."""
        hdrs = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            if not any(k.lower() == "content-type" for k in hdrs):
                hdrs["Content-Type"] = "application/json"
        if isinstance(body, str):
            body = body.encode("utf-8")
        for attempt in (0, 1):
            if new_conn:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout * SLOW)
            else:
                conn = self.connection(timeout)
            try:
                conn.request(method, path, body=body, headers=hdrs)
                res = conn.getresponse()
                data = res.read()
                r = Response(res.status, res.reason, res.getheaders(), data)
                if new_conn or res.will_close:
                    conn.close()
                    if not new_conn:
                        self._local.conn = None
                return r
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                conn.close()
                self._local.conn = None
                if attempt or new_conn:
                    raise

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json_body=None, **kw):
        return self.request("POST", path, json_body=json_body, **kw)

    def raw(self, data, timeout=5, read_until_close=True):
        """Sends raw bytes on a new connection and returns everything the server answers until it
        closes the connection (or the timeout passes)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout * SLOW)
        try:
            s.sendall(data)
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                out += chunk
                if not read_until_close and b"\r\n\r\n" in out:
                    break
            return out
        finally:
            s.close()

    def create_note(self, **fields):
        fields.setdefault("title", "note")
        r = self.post("/v1/notes", fields)
        if r.status != 201:
            raise AssertionError("create failed: %r" % r)
        return r.data


def parse_raw_response(raw):
    """Parses the first HTTP/1.1 response of raw bytes: (status, {lower name: value}, body)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if "content-length" in hdrs:
        body = body[: int(hdrs["content-length"])]
    return status, hdrs, body


class ServerTestCase(unittest.TestCase):
    """One server per test class. Subclasses may set SERVER_ARGS / SERVER_ENV."""
    SERVER_ARGS = ()
    SERVER_ENV = {}
    THREADS = 2
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(cls.SERVER_ARGS, cls.SERVER_ENV, threads=cls.THREADS).start()

    @classmethod
    def tearDownClass(cls):
        srv = cls.srv
        try:
            code, problems = srv.stop()
            if problems:
                raise AssertionError("server %s: %s" % (cls.__name__, "; ".join(problems)))
        finally:
            srv.cleanup()

    # ---- assertions ------------------------------------------------------------------------------
    def assertCorrelation(self, r):
        rid = r.header("x-request-id")
        tp = r.header("traceparent")
        self.assertTrue(rid, "no X-Request-ID in %r" % r)
        self.assertTrue(tp and TRACEPARENT_RE.match(tp), "bad traceparent %r in %r" % (tp, r))
        self.assertEqual(r.header("server"), "pake", r)
        return rid, TRACEPARENT_RE.match(tp).group(1)

    def assertEnvelope(self, r, status=200, pagination=False):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.content_type, "application/json", r)
        rid, tid = self.assertCorrelation(r)
        body = r.json
        self.assertEqual(set(body), {"data", "meta"}, r)
        meta = body["meta"]
        self.assertEqual(meta["request_id"], rid)
        self.assertEqual(meta["trace_id"], tid)
        self.assertEqual(meta["api_version"], "v1")
        if pagination:
            p = meta["pagination"]
            self.assertEqual(set(p), {"limit", "count", "next_cursor"}, meta)
            self.assertEqual(p["count"], len(body["data"]))
        return body["data"]

    def assertProblem(self, r, status, code=None, fields=None):
        """A problem+json answer with every required member; `fields`: names expected in errors."""
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.content_type, "application/problem+json", r)
        rid, tid = self.assertCorrelation(r)
        p = r.json
        for k in PROBLEM_FIELDS:
            self.assertIn(k, p, "problem lacks %s: %r" % (k, r))
        self.assertEqual(p["status"], status)
        self.assertIsInstance(p["retryable"], bool)
        self.assertTrue(p["type"].startswith("https://"), p)
        self.assertTrue(p["title"] and p["detail"] and p["code"], p)
        self.assertEqual(p["request_id"], rid)
        self.assertEqual(p["trace_id"], tid)
        if code:
            self.assertEqual(p["code"], code, p)
        if status == 422 and fields is not None:
            self.assertIn("errors", p, p)
            got = {e["field"] for e in p["errors"]}
            for e in p["errors"]:
                self.assertTrue(e["message"], p)
            for f in fields:
                self.assertIn(f, got, p)
        return p


def main():
    """unittest.main with a non-zero exit code on failure (CTest runs each file as one test)."""
    if not os.path.exists(PAKE_BIN):
        print("PAKE_BIN %s does not exist; build first" % PAKE_BIN, file=sys.stderr)
        sys.exit(2)
    unittest.main(verbosity=2)
