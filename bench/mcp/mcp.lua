-- wrk script of bench/mcp/run.sh: every request is a JSON-RPC tools/call search_notes POSTed to the
-- MCP Streamable HTTP endpoint (the URL given to wrk) inside one session opened before the run
-- (initialize + notifications/initialized by mcp_client.py).
--   arguments (after `--`): words-file [limit]      environment: MCP_SESSION, MCP_VERSION
-- Queries cycle over the words file (one word a line, JSON-safe). Each answer is checked in
-- response(): HTTP 200 and a successful tool result (structuredContent present, no "isError":true,
-- no JSON-RPC "error"); anything else counts as bad. done() prints one machine-readable line:
--   BENCH requests=N seconds=S rps=R p50_us=A p90_us=B p99_us=C errors=E status_errors=F bad=G
-- (errors: connect/read/write/timeout; status_errors: HTTP status >= 400 as wrk counts them;
-- bad: non-200 or not a successful tool result, as seen by response()).
-- The check costs the load generator some CPU per answer (LuaJIT plain find over the body); wrk runs
-- on its own core and the figures compared are the servers' req/s and CPU per request.

local words, limit, counter, id = {}, 20, 0, 0
local session, version
local bad = 0
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  local path = assert(args[1], "words file argument missing")
  limit = tonumber(args[2] or "20") or 20
  for line in assert(io.open(path, "r"), "cannot open " .. path):lines() do
    if #line > 0 then words[#words + 1] = line end
  end
  assert(#words > 0, path .. " is empty")
  session = assert(os.getenv("MCP_SESSION"), "MCP_SESSION not set")
  version = os.getenv("MCP_VERSION") or "2025-11-25"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
  wrk.headers["Mcp-Session-Id"] = session
  wrk.headers["MCP-Protocol-Version"] = version
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
  counter = math.random(1, #words)
end

function request()
  counter = counter % #words + 1
  id = id + 1
  local body = string.format(
    '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"search_notes",' ..
      '"arguments":{"query":"%s","limit":%d}}}', id, words[counter], limit)
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status ~= 200 or not body or not body:find('"structuredContent"', 1, true) or
      body:find('"isError":true', 1, true) or body:find('"error":{', 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local nbad = 0
  for _, t in ipairs(threads) do nbad = nbad + (tonumber(t:get("bad")) or 0) end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "BENCH requests=%d seconds=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d errors=%d status_errors=%d bad=%d\n",
    summary.requests, secs, summary.requests / secs, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status, nbad))
end
