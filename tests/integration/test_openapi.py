#!/usr/bin/env python3
"""The OpenAPI document served at /openapi.json must describe exactly the route table.

Runs `pake routes` (the table) and a real `pake serve` on a free loopback port with a temporary data
directory, fetches /openapi.json and checks:
  - every route of the table is documented, and every documented path+method is in the table
    (path templates compare exactly), with the same operationId and the same deprecated flag;
  - the document is structurally sound (OpenAPI 3.1.0, every $ref resolves, operationIds unique, path
    parameters declared, every response status has a description);
  - live calls over HTTP (success and error paths of most routes) answer with a status the document
    lists for that operation, a documented media type, a body that validates against the documented
    schema, the headers the document marks required, and, for problems, a `code` the documented
    response names.

Self-contained (standard library only). Run: PAKE_BIN=build/pake python3 tests/integration/test_openapi.py
"""
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAKE_BIN = os.environ.get("PAKE_BIN", os.path.join(ROOT, "build", "pake"))
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MAX_BODY = 4096  # the test server's --max-body-bytes


# ---- a small JSON Schema (2020-12 subset) validator, enough for the document's schemas ------------

class SchemaError(Exception):
    pass


def _type_ok(value, t):
    if t == "null":
        return value is None
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "string":
        return isinstance(value, str)
    if t == "array":
        return isinstance(value, list)
    if t == "object":
        return isinstance(value, dict)
    raise SchemaError(f"unknown type {t!r}")


def resolve(doc, ref):
    if not ref.startswith("#/"):
        raise SchemaError(f"external $ref {ref!r}")
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise SchemaError(f"unresolvable $ref {ref!r}")
        node = node[part]
    return node


def validate(doc, schema, value, path="$"):
    """Returns a list of error strings (empty when `value` is valid)."""
    errs = []
    if schema is True or schema == {}:
        return errs
    if schema is False:
        return [f"{path}: no value allowed"]
    if "$ref" in schema:
        errs += validate(doc, resolve(doc, schema["$ref"]), value, path)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, t) for t in types):
            return errs + [f"{path}: {value!r:.60} is not of type {types}"]
    if "const" in schema and value != schema["const"]:
        errs.append(f"{path}: {value!r} != const {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {value!r} not in {schema['enum']}")
    for sub in schema.get("allOf", []):
        errs += validate(doc, sub, value, path)
    if "anyOf" in schema and not any(not validate(doc, s, value, path) for s in schema["anyOf"]):
        errs.append(f"{path}: matches none of anyOf")
    if "oneOf" in schema:
        n = sum(1 for s in schema["oneOf"] if not validate(doc, s, value, path))
        if n != 1:
            errs.append(f"{path}: matches {n} of oneOf (exactly one required)")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errs.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errs.append(f"{path}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errs.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errs.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, v in enumerate(value):
                errs += validate(doc, schema["items"], v, f"{path}[{i}]")
    if isinstance(value, dict):
        for k in schema.get("required", []):
            if k not in value:
                errs.append(f"{path}: missing required member {k!r}")
        props = schema.get("properties", {})
        for k, v in value.items():
            if k in props:
                errs += validate(doc, props[k], v, f"{path}.{k}")
            elif "additionalProperties" in schema:
                ap = schema["additionalProperties"]
                if ap is False:
                    errs.append(f"{path}: unexpected member {k!r}")
                elif isinstance(ap, dict):
                    errs += validate(doc, ap, v, f"{path}.{k}")
        if len(value) < schema.get("minProperties", 0):
            errs.append(f"{path}: fewer than {schema['minProperties']} members")
    return errs


# ---- the server under test ------------------------------------------------------------------------

class Server:
    def __init__(self, *args):
        self.dir = tempfile.mkdtemp(prefix="pake-openapi-")
        self.proc = subprocess.Popen(
            [PAKE_BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(self.dir, "data"),
             "--threads", "1", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        self.port = None
        ready = threading.Event()

        def drain():  # keeps reading stderr so the server never blocks on a full pipe
            for line in self.proc.stderr:
                self.log.append(line)
                if self.port is None:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("msg") == "listening":
                        self.port = int(rec["address"].rsplit(":", 1)[1])
                        ready.set()
            ready.set()

        self.reader = threading.Thread(target=drain, daemon=True)
        self.reader.start()
        if not ready.wait(15) or self.port is None:
            self.stop()
            raise RuntimeError("pake did not log 'listening':\n" + "".join(self.log))

    def request(self, method, path, body=None, headers=None):
        """Returns (status, headers dict with lower-case names, raw body bytes)."""
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode


def template_of(path, templates):
    """The route template a concrete path (without query) matches, or None."""
    path = path.split("?", 1)[0]
    for t in templates:
        rx = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(t)) + "$"
        if re.match(rx, path):
            return t
    return None


class OpenApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(PAKE_BIN, os.X_OK):
            raise unittest.SkipTest(f"PAKE_BIN {PAKE_BIN} is not an executable (build first)")
        out = subprocess.run([PAKE_BIN, "routes"], check=True, capture_output=True, text=True, timeout=30)
        cls.routes = json.loads(out.stdout)
        cls.server = Server("--max-body-bytes", str(MAX_BODY))
        status, headers, body = cls.server.request("GET", "/openapi.json")
        if status != 200:
            cls.server.stop()
            raise AssertionError(f"GET /openapi.json answered {status}")
        cls.openapi_headers = headers
        cls.doc = json.loads(body)
        cls.ops = {}  # (METHOD, template) -> operation
        for tmpl, item in cls.doc.get("paths", {}).items():
            for m in HTTP_METHODS:
                if m in item:
                    cls.ops[(m.upper(), tmpl)] = item[m]
        cls.checked = []  # (operationId, status) pairs verified live

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        if rc not in (0, None):
            log = "".join(cls.server.log)
            if "ERROR: LeakSanitizer" in log and "ERROR: AddressSanitizer" not in log \
                    and "runtime error:" not in log:
                # Leaks at exit belong to the shutdown path (its own tests); this test is about the
                # document, so it only warns about them.
                sys.stderr.write(f"warning: pake serve exited with {rc}: LeakSanitizer reported leaks at exit\n")
                return
            sys.stderr.write("".join(cls.server.log[-40:]))
            raise AssertionError(f"pake serve exited with {rc} after SIGTERM")

    # ---- the table and the document ----

    def test_routes_table_is_sane(self):
        self.assertGreater(len(self.routes), 10)
        keys = [(r["method"], r["path"]) for r in self.routes]
        self.assertEqual(len(keys), len(set(keys)), "duplicate routes in the table")
        for r in self.routes:
            self.assertIn("operation_id", r)
            self.assertIn("deprecated", r)

    def test_document_header(self):
        self.assertEqual(self.doc.get("openapi"), "3.1.0")
        self.assertTrue(self.openapi_headers.get("content-type", "").startswith("application/json"))
        self.assertIn("title", self.doc.get("info", {}))
        self.assertIn("version", self.doc.get("info", {}))
        self.assertEqual(self.doc.get("servers"), [{"url": "http://127.0.0.1:8080",
                                                    "description": self.doc["servers"][0].get("description")}])

    def test_served_document_is_the_source(self):
        src = os.path.join(ROOT, "src", "api", "openapi.json")
        if not os.path.exists(src):
            self.skipTest("no source tree next to the test")
        with open(src, encoding="utf-8") as f:
            self.assertEqual(json.load(f), self.doc, "the binary embeds a stale src/api/openapi.json (rebuild)")

    def test_every_route_is_documented(self):
        table = {(r["method"], r["path"]) for r in self.routes}
        documented = set(self.ops)
        self.assertEqual(sorted(table - documented), [], "routes missing from /openapi.json")
        self.assertEqual(sorted(documented - table), [], "documented operations that are not routes")

    def test_operation_ids_match(self):
        for r in self.routes:
            op = self.ops.get((r["method"], r["path"]))
            if op is None:
                continue  # reported by test_every_route_is_documented
            self.assertEqual(op.get("operationId"), r["operation_id"], f"{r['method']} {r['path']}")
        ids = [op.get("operationId") for op in self.ops.values()]
        self.assertEqual(len(ids), len(set(ids)), "operationIds are not unique")

    def test_deprecated_flags_match(self):
        for r in self.routes:
            op = self.ops.get((r["method"], r["path"]))
            if op is None:
                continue
            self.assertEqual(bool(op.get("deprecated", False)), bool(r["deprecated"]),
                             f"deprecated flag of {r['method']} {r['path']}")

    def test_refs_resolve(self):
        bad = []

        def walk(node, where):
            if isinstance(node, dict):
                if "$ref" in node:
                    try:
                        resolve(self.doc, node["$ref"])
                    except SchemaError as e:
                        bad.append(f"{where}: {e}")
                for k, v in node.items():
                    walk(v, f"{where}/{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{where}/{i}")

        walk(self.doc, "#")
        self.assertEqual(bad, [])

    def _params(self, tmpl, op):
        out = []
        for p in self.doc["paths"][tmpl].get("parameters", []) + op.get("parameters", []):
            out.append(resolve(self.doc, p["$ref"]) if "$ref" in p else p)
        return out

    def test_path_parameters_declared(self):
        for (method, tmpl), op in self.ops.items():
            names = set(re.findall(r"\{([^}]+)\}", tmpl))
            declared = {p["name"] for p in self._params(tmpl, op) if p["in"] == "path"}
            self.assertEqual(declared, names, f"path parameters of {method} {tmpl}")
            for p in self._params(tmpl, op):
                if p["in"] == "path":
                    self.assertTrue(p.get("required"), f"{p['name']} of {tmpl} must be required")

    def test_responses_are_described(self):
        for (method, tmpl), op in self.ops.items():
            self.assertTrue(op.get("responses"), f"{method} {tmpl} has no responses")
            for status, resp in op["responses"].items():
                resp = resolve(self.doc, resp["$ref"]) if "$ref" in resp else resp
                self.assertTrue(resp.get("description"), f"{method} {tmpl} {status}")
                self.assertRegex(status, r"^[1-5][0-9X]{2}$|^default$")

    def test_json_bodies_declare_schemas(self):
        for (method, tmpl), op in self.ops.items():
            if "requestBody" in op:
                content = op["requestBody"]["content"]
                self.assertIn("application/json", content, f"{method} {tmpl}")
                self.assertIn("schema", content["application/json"])

    # ---- live calls against the document ----

    def check(self, method, path, expect, body=None, headers=None, raw=None):
        """Calls the server; checks the answer against the documented operation; returns (headers, json)."""
        tmpl = template_of(path, [t for (m, t) in self.ops if m == method])
        self.assertIsNotNone(tmpl, f"{method} {path} matches no documented operation")
        op = self.ops[(method, tmpl)]
        status, h, data = self.server.request(method, path, raw if raw is not None else body, headers)
        where = f"{method} {path} ({op['operationId']})"
        self.assertEqual(status, expect, f"{where}: {data[:300]!r}")
        documented = op["responses"].get(str(status)) or op["responses"].get(f"{str(status)[0]}XX") \
            or op["responses"].get("default")
        self.assertIsNotNone(documented, f"{where}: status {status} is not documented")
        resp = resolve(self.doc, documented["$ref"]) if "$ref" in documented else documented
        for name, hdef in resp.get("headers", {}).items():
            hdef = resolve(self.doc, hdef["$ref"]) if "$ref" in hdef else hdef
            if hdef.get("required"):
                self.assertIn(name.lower(), h, f"{where}: required header {name} missing")
        parsed = None
        content = resp.get("content")
        if status in (204, 304) or not content:
            self.assertEqual(data, b"", f"{where}: {status} must have no body")
        else:
            ct = h.get("content-type", "")
            media = ct if ct in content else next((m for m in content if m.split(";")[0] == ct.split(";")[0]), None)
            self.assertIsNotNone(media, f"{where}: content-type {ct!r} not documented ({list(content)})")
            schema = content[media].get("schema")
            if media.split(";")[0].endswith("json"):
                parsed = json.loads(data)
                errs = validate(self.doc, schema, parsed)
                self.assertEqual(errs, [], f"{where}: body does not match the schema: {data[:400]!r}")
            if media == "application/problem+json":
                self.assertEqual(parsed["status"], status)
                self.assertIn(f"`{parsed['code']}`", resp["description"],
                              f"{where}: problem code {parsed['code']!r} is not named by the documented response")
        type(self).checked.append((op["operationId"], status))
        return h, parsed

    def new_note(self, **fields):
        body = {"title": "note " + uuid.uuid4().hex[:8], "content": "alpha beta gamma"}
        body.update(fields)
        _, env = self.check("POST", "/v1/notes", 201, body)
        return env["data"]

    def test_live_notes(self):
        h, env = self.check("POST", "/v1/notes", 201,
                            {"title": "Kittens é 日本", "content": "Some **markdown** about kittens",
                             "tags": ["a", "b", "a"], "metadata": {"k": [1, {"x": None}]},
                             "confidence_score": 0.7, "source_uri": "https://example.org/x"})
        note = env["data"]
        self.assertEqual(note["tags"], ["a", "b"])
        self.assertEqual(h["etag"], '"1"')
        self.assertEqual(h["location"], f"/v1/notes/{note['id']}")
        self.assertEqual(env["meta"]["request_id"], h["x-request-id"])
        nid = note["id"]
        self.check("GET", f"/v1/notes/{nid}", 200)
        self.check("GET", f"/v1/notes/{nid}", 304, headers={"If-None-Match": '"1"'})
        h, env = self.check("PATCH", f"/v1/notes/{nid}", 200, {"status": "archived", "human_notes": None},
                            headers={"If-Match": '"1"'})
        self.assertEqual(h["etag"], '"2"')
        _, p = self.check("PATCH", f"/v1/notes/{nid}", 412, {"status": "draft"}, headers={"If-Match": '"1"'})
        self.assertEqual(p["current_version"], 2)
        self.check("PATCH", f"/v1/notes/{nid}", 422, {"status": "bogus", "id": "x"})
        self.check("PATCH", f"/v1/notes/{nid}", 400, raw="{", headers={"Content-Type": "application/json"})
        self.check("GET", f"/v1/notes/{nid}/history", 200)
        self.check("GET", "/v1/notes/not-a-uuid", 404)
        self.check("GET", f"/v1/notes/{uuid.uuid4()}", 404)
        self.check("DELETE", f"/v1/notes/{nid}", 412, headers={"If-Match": '"1"'})
        self.check("DELETE", f"/v1/notes/{nid}", 204, headers={"If-Match": '"2"'})
        self.check("DELETE", f"/v1/notes/{nid}", 404)

    def test_live_create_errors_and_idempotency(self):
        _, p = self.check("POST", "/v1/notes", 422, {"titel": "typo", "confidence_score": 2})
        self.assertEqual({e["field"] for e in p["errors"]}, {"titel", "title", "confidence_score"})
        self.check("POST", "/v1/notes", 415, raw='{"title":"x"}', headers={"Content-Type": "text/plain"})
        self.check("POST", "/v1/notes", 400, raw=b'{"title":"\xff"}', headers={"Content-Type": "application/json"})
        self.check("POST", "/v1/notes", 413, raw="x" * (MAX_BODY + 1), headers={"Content-Type": "application/json"})
        key = {"Idempotency-Key": "openapi-" + uuid.uuid4().hex}
        h1, first = self.check("POST", "/v1/notes", 201, {"title": "idem"}, headers=key)
        h2, again = self.check("POST", "/v1/notes", 201, {"title": "idem"}, headers=key)
        self.assertEqual(again["data"]["id"], first["data"]["id"])
        self.assertEqual(h2.get("idempotent-replayed"), "true")
        self.check("POST", "/v1/notes", 422, {"title": "other"}, headers=key)
        self.check("POST", "/v1/notes", 400, {"title": "x"}, headers={"Idempotency-Key": "has space"})

    def test_live_list_and_search(self):
        for i in range(3):
            self.new_note(title=f"zebra {i}", tags=["list-test"], type="memo")
        _, env = self.check("GET", "/v1/notes?limit=2&tags=list-test&type=memo&sort=title&order=asc", 200)
        self.assertEqual(env["meta"]["pagination"]["count"], 2)
        cursor = env["meta"]["pagination"]["next_cursor"]
        self.assertIsNotNone(cursor)
        _, env2 = self.check("GET", "/v1/notes?limit=2&tags=list-test&type=memo&sort=title&order=asc&cursor="
                             + cursor, 200)
        self.assertEqual(len(env2["data"]), 1)
        self.check("GET", "/v1/notes?limit=0&bogus=1", 422)
        self.check("GET", "/v1/notes?cursor=garbage", 422)
        _, env = self.check("GET", "/v1/search?q=zebra&tags_any=list-test,none&min_confidence=0.1", 200)
        self.assertTrue(env["data"] and "<mark>" in env["data"][0]["snippet"])
        self.check("GET", "/v1/search", 422)
        self.check("GET", "/v1/search?q=zebra&sort=nope", 422)

    def test_live_links(self):
        a, b = self.new_note(), self.new_note()
        self.check("POST", f"/v1/notes/{a['id']}/links", 201, {"target_id": b["id"], "type": "supports",
                                                               "strength": 0.8})
        self.check("POST", f"/v1/notes/{a['id']}/links", 409, {"target_id": b["id"], "type": "supports"})
        self.check("POST", f"/v1/notes/{a['id']}/links", 422, {"target_id": "nope", "weight": 1})
        self.check("POST", f"/v1/notes/{uuid.uuid4()}/links", 404, {"target_id": b["id"]})
        _, env = self.check("GET", f"/v1/notes/{b['id']}/links", 200)
        self.assertEqual(len(env["data"]), 1)
        self.check("GET", f"/v1/notes/{uuid.uuid4()}/links", 404)

    def test_live_compat_routes(self):
        table = {(r["method"], r["path"]): r for r in self.routes}
        note = self.new_note(title="compat walrus")
        calls = [
            ("/search_notes", 200, {"query": "walrus", "filters": {"status": "active"}, "limit": 5}),
            ("/get_note_by_id", 200, {"note_id": note["id"]}),
            ("/notes_from_schema", 201, {"title": "from schema", "tags": ["n8n"]}),
            ("/search_notes", 422, {"query": "walrus", "unknown": 1}),
            ("/get_note_by_id", 422, {"note_id": "nope"}),
            ("/get_note_by_id", 404, {"id": str(uuid.uuid4())}),
            ("/notes_from_schema", 422, {}),
        ]
        for path, status, body in calls:
            self.assertTrue(table[("POST", path)]["deprecated"])
            h, _ = self.check("POST", path, status, body)
            self.assertIn("deprecation", h, path)
            m = re.match(r'^<([^>]+)>;\s*rel="successor-version"$', h.get("link", ""))
            self.assertIsNotNone(m, f"{path}: Link header {h.get('link')!r}")
            successor = [k for k in self.ops
                         if re.fullmatch(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(k[1])), m.group(1))]
            self.assertTrue(successor, f"{path}: successor {m.group(1)} is not a documented path")
            self.assertFalse(any(self.ops[k].get("deprecated") for k in successor))

    def test_live_operations_and_admin(self):
        self.check("GET", "/health/live", 200)
        self.check("GET", "/health/ready", 200)
        self.check("GET", "/metrics", 200)
        self.check("GET", "/openapi.json", 200)
        self.check("GET", "/v1/admin/breakers", 200)
        for action in ("force-open", "disable", "reset"):
            self.check("POST", f"/v1/admin/breakers/no-such-breaker/{action}", 404)

    def test_live_correlation_headers(self):
        h, env = self.check("GET", "/v1/notes?limit=1", 200,
                            headers={"X-Request-ID": "openapi-test.1",
                                     "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
        self.assertEqual(h["x-request-id"], "openapi-test.1")
        self.assertTrue(h["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-"))
        self.assertEqual(env["meta"]["trace_id"], "0af7651916cd43dd8448eb211c80319c")
        h, _ = self.check("GET", "/v1/notes?limit=1", 200, headers={"X-Request-ID": "bad id"})
        self.assertNotEqual(h["x-request-id"], "bad id")

    def test_unknown_route_and_method_are_documented_problems(self):
        status, h, data = self.server.request("GET", "/v1/notes/x/extra")
        self.assertEqual(status, 404)
        self.assertIn("`route_not_found`", self.doc["info"]["description"])
        self.assertEqual(json.loads(data)["code"], "route_not_found")
        status, h, data = self.server.request("PUT", "/v1/notes")
        self.assertEqual(status, 405)
        resp = self.doc["components"]["responses"]["MethodNotAllowed"]
        self.assertEqual(validate(self.doc, resp["content"]["application/problem+json"]["schema"], json.loads(data)),
                         [])
        self.assertIn("`method_not_allowed`", resp["description"])
        self.assertIn("allow", h)


if __name__ == "__main__":
    unittest.main(verbosity=2)
