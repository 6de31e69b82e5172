"""
MCP at /mcp and over stdio, driven byte by byte (Python stdlib): sessions, header checks (Origin/Host,
MCP-Protocol-Version), JSON-RPC errors, batches per revision, tools and their errors, resources and
pagination, subscriptions delivered on the GET stream after a REST write, DELETE, and `pake mcp`.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pake_harness import PAKE_BIN, SLOW, Server  # noqa: E402

ACCEPT = "application/json, text/event-stream"


def init_body(version="2025-11-25", rid=1):
    return {"jsonrpc": "2.0", "id": rid, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


class McpHttp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(extra_args=["--rate-mcp", "1000000", "--burst-mcp", "1000000"]).start()

    @classmethod
    def tearDownClass(cls):
        code, problems = cls.server.stop()
        if problems:
            raise AssertionError("; ".join(problems))

    def post(self, body, session=None, accept="application/json", headers=None):
        h = {"content-type": "application/json", "accept": accept}
        if session:
            h["mcp-session-id"] = session
        h.update(headers or {})
        raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.server.request("POST", "/mcp", body=raw, headers=h)

    def session(self, version="2025-11-25"):
        r = self.post(init_body(version))
        self.assertEqual(r.status, 200, r)
        sid = r.header("mcp-session-id")
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
        return sid

    def call(self, sid, method, params=None, rid=7):
        r = self.post({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}, sid)
        self.assertEqual(r.status, 200, r)
        return r.json

    def tool(self, sid, name, args):
        return self.call(sid, "tools/call", {"name": name, "arguments": args})["result"]

    def test_initialize_negotiates_and_issues_session(self):
        r = self.post(init_body("2025-06-18"))
        self.assertEqual(r.json["result"]["protocolVersion"], "2025-06-18")
        sid = r.header("mcp-session-id")
        self.assertRegex(sid, r"^[0-9a-f]{64}$")
        r = self.post(init_body("1999-01-01"))
        self.assertEqual(r.json["result"]["protocolVersion"], "2025-11-25")
        caps = r.json["result"]["capabilities"]
        self.assertEqual(caps["resources"], {"subscribe": True, "listChanged": True})
        self.assertIn("logging", caps)
        self.assertIn("completions", caps)

    def test_session_errors(self):
        r = self.post({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        self.assertEqual(r.status, 400)
        r = self.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, "f" * 64)
        self.assertEqual(r.status, 404)
        sid = self.session()
        r = self.server.request("DELETE", "/mcp", headers={"mcp-session-id": sid})
        self.assertEqual(r.status, 204)
        r = self.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid)
        self.assertEqual(r.status, 404)

    def test_origin_host_and_version_headers(self):
        r = self.post(init_body(), headers={"origin": "http://evil.example.com"})
        self.assertEqual(r.status, 403)
        r = self.post(init_body(), headers={"host": "evil.example.com"})
        self.assertEqual(r.status, 403)
        r = self.post(init_body(), headers={"origin": "http://localhost:3000"})
        self.assertEqual(r.status, 200)
        sid = self.session()
        r = self.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid, headers={"mcp-protocol-version": "2020-01-01"})
        self.assertEqual(r.status, 400)
        r = self.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid, headers={"mcp-protocol-version": "2025-06-18"})
        self.assertEqual(r.json["result"], {})

    def test_jsonrpc_errors(self):
        sid = self.session()
        r = self.post("{not json", sid)
        self.assertEqual((r.status, r.json["error"]["code"]), (400, -32700))
        self.assertEqual(self.call(sid, "no/such")["error"]["code"], -32601)
        r = self.post({"jsonrpc": "1.0", "id": 1, "method": "ping"}, sid)
        self.assertEqual(r.json["error"]["code"], -32600)
        self.assertEqual(self.call(sid, "tools/call", {"name": "nope"})["error"]["code"], -32602)
        self.assertEqual(self.call(sid, "tools/list", {"cursor": "bogus"})["error"]["code"], -32602)
        r = self.post({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}}, sid)
        self.assertEqual(r.status, 202)

    def test_batches_follow_the_revision(self):
        batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]
        sid = self.session("2025-06-18")
        self.assertEqual(self.post(batch, sid).status, 400)
        sid = self.session("2025-03-26")
        r = self.post(batch, sid)
        self.assertEqual(r.status, 200)
        self.assertEqual(sorted(m["id"] for m in r.json), [1, 2])

    def test_tools_and_resources(self):
        sid = self.session()
        tools = {t["name"]: t for t in self.call(sid, "tools/list")["result"]["tools"]}
        for n in ("search_notes", "get_note_by_id", "notes_from_schema", "update_note", "delete_note",
                  "link_notes", "get_note_history"):
            self.assertIn("inputSchema", tools[n])
            self.assertIn("outputSchema", tools[n])
            self.assertIn("annotations", tools[n])
        self.assertNotIn("test_simple_text", tools)  # fixtures are off by default
        bad = self.tool(sid, "notes_from_schema", {"content": "no title"})
        self.assertTrue(bad["isError"])
        self.assertIn("title", bad["content"][0]["text"])
        res = self.tool(sid, "notes_from_schema", {"title": "Walrus facts", "content": "walrus tusks", "tags": ["x"]})
        self.assertFalse(res["isError"])
        nid = res["structuredContent"]["id"]
        found = self.tool(sid, "search_notes", {"query": "walrus"})["structuredContent"]
        self.assertIn(nid, [n["id"] for n in found["notes"]])
        self.assertIn("mode", tools["search_notes"]["inputSchema"]["properties"])
        self.assertIn("vector_index", tools["search_notes"]["outputSchema"]["properties"])
        bad = self.tool(sid, "search_notes", {"query": "walrus", "mode": "vector"})
        self.assertTrue(bad["isError"])
        self.assertIn("mode", bad["content"][0]["text"])
        bad = self.tool(sid, "search_notes", {"query": "walrus", "mode": "semantic", "tags": ["x"]})
        self.assertTrue(bad["isError"])
        self.assertIn("tags", bad["content"][0]["text"])
        self.assertEqual(self.tool(sid, "search_notes", {"query": "walrus", "mode": "fulltext"})["structuredContent"],
                         found)
        # semantic / hybrid: the REST ranking (same notes, same order), once the note is embedded
        q = {"q": "walrus tusks", "limit": 5}
        deadline = time.monotonic() + 10 * SLOW
        while time.monotonic() < deadline:
            rest = self.server.get("/v1/search?" + urllib.parse.urlencode(dict(q, mode="semantic"))).json
            if nid in [n["id"] for n in rest["data"]]:
                break
            time.sleep(0.02)
        else:
            self.fail("the note was not embedded in time")
        for mode in ("semantic", "hybrid"):
            rest = self.server.get("/v1/search?" + urllib.parse.urlencode(dict(q, mode=mode))).json
            sc = self.tool(sid, "search_notes", {"query": "walrus tusks", "mode": mode, "limit": 5})["structuredContent"]
            self.assertEqual((sc["mode"], sc["vector_index"], sc["next_cursor"]), (mode, rest["meta"]["vector_index"], None))
            self.assertEqual([(n["id"], n["score"]) for n in sc["notes"]], [(n["id"], n["score"]) for n in rest["data"]])
            self.assertEqual(sc["count"], len(rest["data"]))
        got = self.tool(sid, "get_note_by_id", {"id": nid})
        self.assertEqual(got["structuredContent"]["title"], "Walrus facts")
        other = self.tool(sid, "notes_from_schema", {"title": "Seal facts"})["structuredContent"]["id"]
        link = self.tool(sid, "link_notes", {"source_id": nid, "target_id": other, "type": "related"})
        self.assertFalse(link["isError"], link)
        hist = self.tool(sid, "get_note_history", {"id": nid})["structuredContent"]
        self.assertEqual(hist["events"][0]["action"], "create")
        text = self.call(sid, "resources/read", {"uri": "pake://notes/" + nid})["result"]["contents"][0]
        self.assertEqual(text["mimeType"], "text/markdown")
        self.assertTrue(text["text"].startswith("---\nid: \"%s\"" % nid), text["text"][:80])
        self.assertEqual(self.call(sid, "resources/read", {"uri": "pake://notes/" + "0" * 8 + "-0000-7000-8000-"
                                                           + "0" * 12})["error"]["code"], -32002)
        upd = self.tool(sid, "update_note", {"id": nid, "if_version": 99, "title": "x"})
        self.assertTrue(upd["isError"])
        dele = self.tool(sid, "delete_note", {"id": other})
        self.assertTrue(dele["structuredContent"]["deleted"])
        self.assertTrue(self.tool(sid, "get_note_by_id", {"id": other})["isError"])

    def test_resources_list_paginates(self):
        sid = self.session()
        for i in range(55):
            self.server.request("POST", "/v1/notes", body=json.dumps({"title": "page note %d" % i}),
                                headers={"content-type": "application/json"})
        first = self.call(sid, "resources/list")["result"]
        self.assertEqual(len(first["resources"]), 50)
        second = self.call(sid, "resources/list", {"cursor": first["nextCursor"]})["result"]
        uris = {r["uri"] for r in first["resources"]} & {r["uri"] for r in second["resources"]}
        self.assertEqual(uris, set())
        self.assertEqual(self.call(sid, "resources/list", {"cursor": "x"})["error"]["code"], -32602)
        tmpl = self.call(sid, "resources/templates/list")["result"]["resourceTemplates"]
        self.assertEqual(tmpl[0]["uriTemplate"], "pake://notes/{id}")

    def test_prompts_and_completion(self):
        sid = self.session()
        names = [p["name"] for p in self.call(sid, "prompts/list")["result"]["prompts"]]
        self.assertEqual(names, ["summarize_note", "research_brief"])
        p = self.call(sid, "prompts/get", {"name": "research_brief", "arguments": {"topic": "nothing-matches"}})
        self.assertIn("no notes match", p["result"]["messages"][0]["content"]["text"])
        self.assertEqual(self.call(sid, "prompts/get", {"name": "summarize_note", "arguments": {}})["error"]["code"],
                         -32602)
        c = self.call(sid, "completion/complete", {"ref": {"type": "ref/prompt", "name": "research_brief"},
                                                   "argument": {"name": "topic", "value": "re"}})
        self.assertEqual(c["result"]["completion"]["values"], ["research"])
        self.assertEqual(self.call(sid, "logging/setLevel", {"level": "loud"})["error"]["code"], -32602)
        self.assertEqual(self.call(sid, "logging/setLevel", {"level": "debug"})["result"], {})

    def test_subscription_update_on_get_stream_after_rest_write(self):
        sid = self.session()
        nid = self.tool(sid, "notes_from_schema", {"title": "watched"})["structuredContent"]["id"]
        self.assertEqual(self.call(sid, "resources/subscribe", {"uri": "pake://notes/" + nid})["result"], {})
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=5 * SLOW)
        s.sendall(("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nMcp-Session-Id: %s\r\n\r\n"
                   % sid).encode())
        time.sleep(0.2)
        r = self.server.request("PATCH", "/v1/notes/" + nid, body=json.dumps({"title": "changed"}),
                                headers={"content-type": "application/json"})
        self.assertEqual(r.status, 200)
        data = b""
        deadline = time.monotonic() + 5 * SLOW
        while b"resources/updated" not in data and time.monotonic() < deadline:
            data += s.recv(65536)
        s.close()
        self.assertIn(b"text/event-stream", data)
        self.assertIn(("\"uri\":\"pake://notes/%s\"" % nid).encode(), data)
        self.assertRegex(data.decode(), r"id: 0-\d+")

    def test_sse_answer_when_accepted(self):
        sid = self.session()
        # a call that may send messages before its result (here: the client asks for progress) is
        # answered on an SSE stream, priming event first
        r = self.post({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                       "params": {"name": "search_notes", "arguments": {"query": "anything"},
                                  "_meta": {"progressToken": "p3"}}}, sid, accept=ACCEPT)
        self.assertEqual(r.content_type, "text/event-stream")
        events = [line[6:] for line in r.body.decode().splitlines() if line.startswith("data: ")]
        self.assertEqual(events[0], "")  # priming event
        self.assertEqual(json.loads(events[-1])["id"], 3)
        # a tool that only answers is answered as JSON even when SSE is accepted (no stream to set up)
        r = self.post({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                       "params": {"name": "search_notes", "arguments": {"query": "anything"}}}, sid, accept=ACCEPT)
        self.assertEqual(r.content_type, "application/json")
        answer = json.loads(r.body)
        self.assertEqual(answer["id"], 4)
        self.assertFalse(answer["result"]["isError"])


class McpStdio(unittest.TestCase):
    def test_stdio_speaks_only_mcp_on_stdout(self):
        data = tempfile.mkdtemp(prefix="pake-mcp-stdio-")
        lines = [init_body("2025-03-26"), {"jsonrpc": "2.0", "method": "notifications/initialized"},
                 {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                  "params": {"name": "notes_from_schema", "arguments": {"title": "stdio note", "content": "okapi"}}}]
        text = "\n".join(json.dumps(x) for x in lines) + "\n"
        p = subprocess.Popen([PAKE_BIN, "mcp", "--data-dir", data], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        p.stdin.write(text)
        p.stdin.flush()
        # read until the create (id 2) has answered, so the search below must find the note
        early = []
        deadline = time.monotonic() + 60 * SLOW
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            early.append(line)
            m = json.loads(line)
            if isinstance(m, dict) and m.get("id") == 2:
                break
        more = ["{broken", json.dumps([{"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                       "params": {"name": "search_notes", "arguments": {"query": "okapi"}}},
                                      {"jsonrpc": "2.0", "id": 4, "method": "ping"}])]
        out, err = p.communicate("\n".join(more) + "\n", timeout=60 * SLOW)
        self.assertEqual(p.returncode, 0, err)
        every = [json.loads(line) for line in early + out.splitlines()]  # every stdout line is JSON
        self.assertIn("notifications/resources/list_changed", [m.get("method") for m in every if isinstance(m, dict)])
        # tool calls run on their own threads, so answers may come in any order: match them by id
        by_id = {m["id"]: m for m in every if isinstance(m, dict) and "id" in m and m["id"] is not None}
        self.assertEqual(by_id[1]["result"]["protocolVersion"], "2025-03-26")
        self.assertFalse(by_id[2]["result"]["isError"], by_id[2])
        parse_errors = [m for m in every if isinstance(m, dict) and m.get("error", {}).get("code") == -32700]
        self.assertEqual(len(parse_errors), 1)
        batches = [m for m in every if isinstance(m, list)]
        self.assertEqual(len(batches), 1)
        batch = batches[0]
        self.assertEqual(sorted(m["id"] for m in batch), [3, 4])
        search = [m for m in batch if m["id"] == 3][0]["result"]["structuredContent"]
        self.assertEqual(search["count"], 1)
        self.assertNotIn("AddressSanitizer", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
