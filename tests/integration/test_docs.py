"""Documentation follows the code: every setting of `pake serve --help` is in docs/configuration.md,
every route of the route table is in docs/api.md, and every alert in the rules has its runbook."""
import json
import os
import re
import subprocess
import unittest

BIN = os.environ.get("PAKE_BIN", "build/pake")
ROOT = os.environ.get("PAKE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


class Docs(unittest.TestCase):
    def test_every_setting_is_documented(self):
        help_text = subprocess.check_output([BIN, "serve", "--help"]).decode()
        flags = re.findall(r"^\s+--(\S+)\s+(PAKE_\S+)\s+default: (.*)$", help_text, re.M)
        self.assertGreater(len(flags), 30)
        doc = read("docs/configuration.md")
        for flag, env, default in flags:
            if flag.startswith("fault-"):
                continue  # test builds only; documented in prose
            self.assertIn("`--%s`" % flag, doc)
            self.assertIn("`%s`" % env, doc)

    def test_every_route_is_documented(self):
        routes = json.loads(subprocess.check_output([BIN, "routes"]))
        doc = read("docs/api.md")
        for r in routes:
            self.assertIn(r["path"], doc, r)

    def test_every_alert_has_a_runbook(self):
        alerts = re.findall(r"alert: (\w+)", read("ops/prometheus/alerts.yml"))
        ops = read("docs/operations.md")
        for a in alerts:
            self.assertIn("### Runbook: " + a, ops)


if __name__ == "__main__":
    unittest.main(verbosity=2)
