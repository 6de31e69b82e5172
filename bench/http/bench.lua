-- wrk script for bench/http/run.sh. Arguments (after `--`):
--   mode   fixed | notes | search
--   file   ids file (notes) or words file (search); "-" for fixed
--   rate   target requests/s for the whole run (0: as fast as possible)
--   conns  number of connections (to turn rate into a per-connection delay)
-- done() prints one machine-readable line:
--   BENCH requests=N seconds=S rps=R p50_us=A p90_us=B p99_us=C errors=E status_errors=F
-- (errors: connect/read/write/timeout; status_errors: responses with status >= 400, as wrk counts).
-- No response() hook on purpose: defining one makes wrk parse every response through Lua.
-- wrk cannot send at a fixed rate (that is wrk2's -R); with rate > 0 each connection waits
-- conns/rate seconds after each response (delay()), so the offered rate is at most `rate`; the
-- achieved rate is reported.

local mode, items, delay_ms = "fixed", {}, 0
local counter = 0

local function read_lines(path)
  local t = {}
  local f = assert(io.open(path, "r"), "cannot open " .. path)
  for line in f:lines() do
    if #line > 0 then t[#t + 1] = line end
  end
  f:close()
  assert(#t > 0, path .. " is empty")
  return t
end

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

function init(args)
  mode = args[1] or "fixed"
  local file = args[2] or "-"
  local rate = tonumber(args[3] or "0") or 0
  local conns = tonumber(args[4] or "1") or 1
  if mode ~= "fixed" then items = read_lines(file) end
  if mode == "search" then
    for i, w in ipairs(items) do items[i] = urlencode(w) end
  end
  if rate > 0 then
    delay_ms = conns * 1000.0 / rate
    -- Defined only when pacing: wrk checks for a global delay() after init() and then schedules
    -- every request through a timer, which would slow the unpaced runs.
    function delay()
      return delay_ms
    end
  end
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
  counter = math.random(1, math.max(1, #items))
end

function request()
  if mode == "notes" then
    local id = items[math.random(1, #items)]
    return wrk.format("GET", "/v1/notes/" .. id)
  elseif mode == "search" then
    counter = counter % #items + 1
    return wrk.format("GET", "/v1/search?q=" .. items[counter] .. "&limit=20")
  end
  return wrk.format("GET", wrk.path)
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  local secs = summary.duration / 1e6
  io.write(string.format(
    "BENCH requests=%d seconds=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d errors=%d status_errors=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), errors, e.status))
end
