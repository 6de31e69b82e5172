#!/usr/bin/env python3
"""Helpers of bench/mcp/run.sh (stdlib only), one sub-command each:

  export BASE OUT.jsonl
      Pages through GET /v1/notes of a PAKE server (oldest first) and writes every stored note, as PAKE
      serves it, one JSON object a line. The SDK reference server loads this file, so both servers
      search the same notes and return the same documents (same fields, same bytes per hit).
  session URL
      initialize (protocol 2025-11-25) + notifications/initialized on an MCP Streamable HTTP endpoint;
      prints "SESSION_ID PROTOCOL_VERSION" for the wrk script (MCP_SESSION / MCP_VERSION).
  check URL SESSION VERSION WORDS_FILE N OUT.json
      Sends tools/call search_notes for the first N words (limit 20) with the headers the wrk script
      uses, and fails unless every answer is HTTP 200 with a JSON-RPC result, isError false, and
      structuredContent holding at least one hit. Writes {word: [ids...]} to OUT.json.
  compare A.json B.json
      Fails unless both servers returned the same hits (as sets) for every sampled word; reports whether
      the order is the same too.
"""
import http.client
import json
import sys
import urllib.parse

HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def conn_for(url):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30), u.path or "/"


def rpc_answer(resp, body):
    """The JSON-RPC message in a POST answer, framed as JSON or as an SSE stream (last data event)."""
    ctype = resp.getheader("Content-Type", "")
    text = body.decode("utf-8")
    if ctype.startswith("text/event-stream"):
        msg = None
        for event in text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(ln[5:].lstrip(" ") for ln in event.split("\n") if ln.startswith("data:"))
            if data.strip():
                m = json.loads(data)
                if "result" in m or "error" in m:
                    msg = m
        if msg is None:
            raise SystemExit("no JSON-RPC answer in the SSE stream: %r" % text[:300])
        return msg
    return json.loads(text)


def export(base, out):
    conn, _ = conn_for(base)
    n, cursor = 0, None
    with open(out, "w", encoding="utf-8") as f:
        while True:
            q = "/v1/notes?limit=100&sort=created_at&order=asc"
            if cursor:
                q += "&cursor=" + urllib.parse.quote(cursor)
            conn.request("GET", q, headers={"Accept": "application/json"})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise SystemExit("GET %s: HTTP %d %r" % (q, r.status, body[:200]))
            page = json.loads(body)
            for note in page["data"]:
                f.write(json.dumps(note, ensure_ascii=False, separators=(",", ":")) + "\n")
                n += 1
            cursor = page["meta"]["pagination"]["next_cursor"]
            if not cursor:
                break
    print("mcp_client: exported %d notes" % n, file=sys.stderr)


def session(url):
    conn, path = conn_for(url)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "bench-mcp", "version": "1"}}}
    conn.request("POST", path, json.dumps(init), HEADERS)
    r = conn.getresponse()
    body = r.read()
    sid = r.getheader("Mcp-Session-Id")
    if r.status != 200 or not sid:
        raise SystemExit("initialize: HTTP %d, session %r: %r" % (r.status, sid, body[:300]))
    msg = rpc_answer(r, body)
    version = msg["result"]["protocolVersion"]
    h = dict(HEADERS, **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": version})
    conn.request("POST", path, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), h)
    r = conn.getresponse()
    r.read()
    if r.status != 202:
        raise SystemExit("notifications/initialized: HTTP %d" % r.status)
    print(sid, version)


def check(url, sid, version, words_file, n, out):
    conn, path = conn_for(url)
    words = [w.strip() for w in open(words_file, encoding="utf-8") if w.strip()][: int(n)]
    h = dict(HEADERS, **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": version})
    hits = {}
    for i, w in enumerate(words):
        req = {"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call",
               "params": {"name": "search_notes", "arguments": {"query": w, "limit": 20}}}
        conn.request("POST", path, json.dumps(req), h)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit("search %r: HTTP %d %r" % (w, r.status, body[:300]))
        msg = rpc_answer(r, body)
        res = msg.get("result")
        if not res or res.get("isError") or "structuredContent" not in res:
            raise SystemExit("search %r: not a successful tool result: %r" % (w, json.dumps(msg)[:300]))
        sc = res["structuredContent"]
        if sc["count"] < 1 or not sc["notes"]:
            raise SystemExit("search %r: no hits" % w)
        if json.loads(res["content"][0]["text"]) != sc:
            raise SystemExit("search %r: text content differs from structuredContent" % w)
        hits[w] = [note["id"] for note in sc["notes"]]
        print("mcp_client: %s %r -> %d hits, %d bytes (%s)" % (url, w, sc["count"], len(body),
              r.getheader("Content-Type")), file=sys.stderr)
    json.dump(hits, open(out, "w"))


def compare(a_file, b_file):
    a, b = json.load(open(a_file)), json.load(open(b_file))
    if a.keys() != b.keys():
        raise SystemExit("different sampled words")
    same_order = True
    for w in a:
        if set(a[w]) != set(b[w]):
            raise SystemExit("search %r: the servers returned different notes:\n %s\n %s" % (w, a[w], b[w]))
        same_order = same_order and a[w] == b[w]
    print("mcp_client: same hits for %d sampled words (%s order)" % (len(a), "same" if same_order else "different"),
          file=sys.stderr)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"export": export, "session": session, "check": check, "compare": compare}[cmd](*args)
