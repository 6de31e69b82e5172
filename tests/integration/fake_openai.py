"""
A small OpenAI-compatible API server for tests (Python standard library only), on 127.0.0.1.

It speaks the real wire format of the two endpoints PAKE uses:
  POST /v1/embeddings        {"model", "input": str | [str]}  ->  {"object":"list","data":[{"object":
                             "embedding","index","embedding":[...]}],"model","usage"}; items are sent in
                             reverse order, so a client that ignores "index" gets them wrong
  POST /v1/chat/completions  {"model", "messages":[...]}  ->  {"id","object":"chat.completion","created",
                             "model","choices":[{"index":0,"message":{"role":"assistant","content"},
                             "finish_reason":"stop"}],"usage"}
Errors use OpenAI's body {"error":{"message","type","code"}}: 401 for a wrong or missing bearer key
(when the server has one), 400 for a missing model or input, 404 for other paths.

Embeddings are deterministic: every word of the input adds +1 to bucket hash(word) % dims (so texts
sharing words are close and semantic search works end to end). The chat answer is
"SUMMARY: " + the first 8 words of the note found between the <note-...> markers.

Failure modes, scripted per operation ("embeddings" or "chat"). Each rule applies to the next `times`
requests (None = for ever) whose raw body contains `match` (None = any request):
  {"status": 429, "retry_after": "1"}       an error answer (with an OpenAI error body) and headers
  {"status": 500}
  {"slow": 3.0}                             sleeps before answering normally
  {"dims": 5}                               vectors of the wrong length
  {"malformed": True}                       a 200 whose body is not JSON
  {"reply": "text"} / {"content": None}     chat: this content instead (None: a null content)

Every request is recorded: (time, path, headers dict with lower-case names, parsed JSON body or None,
the answer's status). Thread-safe: a ThreadingHTTPServer, one lock over rules and records.
"""
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def word_vector(text, dims):
    v = [0.0] * dims
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        h = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
        v[h % dims] += 1.0
    if not any(v):
        v[0] = 1.0
    return v


class FakeOpenAI:
    def __init__(self, dims=64, api_key=None):
        self.dims = dims
        self.api_key = api_key
        self.lock = threading.Lock()
        self.rules = {"embeddings": [], "chat": []}
        self.records = []
        self.httpd = None
        self.thread = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                fake._handle(self)

            def do_GET(self):
                fake._send(self, 404, {"error": {"message": "not found", "type": "invalid_request_error",
                                                 "code": "not_found"}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    @property
    def base_url(self):
        return "http://127.0.0.1:%d/v1" % self.httpd.server_address[1]

    # ---- scripting and records -------------------------------------------------------------------
    def add_rule(self, op, times=1, match=None, **mode):
        with self.lock:
            self.rules[op].append({"times": times, "match": match, "mode": mode})

    def clear_rules(self):
        with self.lock:
            for op in self.rules:
                self.rules[op] = []

    def requests(self, op=None, match=None):
        """Recorded requests (optionally of one operation, optionally whose raw body contains match)."""
        path = {"embeddings": "/v1/embeddings", "chat": "/v1/chat/completions", None: None}[op]
        with self.lock:
            return [r for r in self.records
                    if (path is None or r["path"] == path) and (match is None or match in r["raw"])]

    def _take_rule(self, op, raw):
        with self.lock:
            for rule in self.rules[op]:
                if rule["match"] is not None and rule["match"] not in raw:
                    continue
                if rule["times"] is not None:
                    rule["times"] -= 1
                    if rule["times"] <= 0:
                        self.rules[op].remove(rule)
                return rule["mode"]
        return {}

    # ---- the wire ----------------------------------------------------------------------------------
    @staticmethod
    def _send(h, status, body, headers=None, raw=None):
        data = raw if raw is not None else json.dumps(body).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout)

    @staticmethod
    def _error(message, type_, code):
        return {"error": {"message": message, "type": type_, "code": code}}

    def _handle(self, h):
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n).decode("utf-8", "replace")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        op = {"/v1/embeddings": "embeddings", "/v1/chat/completions": "chat"}.get(h.path)
        rec = {"time": time.monotonic(), "path": h.path, "headers": {k.lower(): v for k, v in h.headers.items()},
               "body": body, "raw": raw, "status": None}
        with self.lock:
            self.records.append(rec)

        def answer(status, obj=None, headers=None, raw_bytes=None):
            rec["status"] = status
            self._send(h, status, obj, headers, raw_bytes)

        if op is None:
            return answer(404, self._error("Unknown request URL: POST %s" % h.path, "invalid_request_error",
                                           "unknown_url"))
        if self.api_key is not None and h.headers.get("Authorization") != "Bearer " + self.api_key:
            return answer(401, self._error("Incorrect API key provided.", "invalid_request_error",
                                           "invalid_api_key"))
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return answer(400, self._error("you must provide a model parameter", "invalid_request_error", None))
        mode = self._take_rule(op, raw)
        if "slow" in mode:
            time.sleep(mode["slow"])
        if "status" in mode:
            st = mode["status"]
            hdrs = {"Retry-After": mode["retry_after"]} if "retry_after" in mode else {}
            kind = {400: ("Invalid request", "invalid_request_error", None),
                    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
                    404: ("The model does not exist or you do not have access to it.", "invalid_request_error",
                          "model_not_found"),
                    429: ("Rate limit reached for requests", "requests", "rate_limit_exceeded")}.get(
                st, ("The server had an error while processing your request.", "server_error", None))
            return answer(st, self._error(*kind), hdrs)
        if mode.get("malformed"):
            return answer(200, raw_bytes=b'{"object":"list","data":[{"embedding":[0.1,')
        if op == "embeddings":
            return answer(200, self._embeddings(body, mode.get("dims", self.dims)))
        return answer(200, self._chat(body, mode))

    def _embeddings(self, body, dims):
        inp = body.get("input")
        inputs = [inp] if isinstance(inp, str) else inp
        data = [{"object": "embedding", "index": i, "embedding": word_vector(t, dims)} for i, t in enumerate(inputs)]
        data.reverse()
        tokens = sum(len(t.split()) for t in inputs)
        return {"object": "list", "data": data, "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def _chat(self, body, mode):
        if "reply" in mode or "content" in mode:
            content = mode.get("reply", mode.get("content"))
        else:
            user = next((m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"), "")
            m = re.search(r"<note-([0-9a-f]+)>\n(.*)\n</note-\1>", user, re.S)
            note = m.group(2) if m else user
            words = re.sub(r"^Title: [^\n]*\n\n", "", note).split()
            content = "SUMMARY: " + " ".join(words[:8])
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}
