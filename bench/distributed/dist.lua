-- wrk script for bench/distributed/run.sh. Arguments (after `--`):
--   mode   notes | search | zipf
--   file   ids file (notes, zipf) or words file (search)
--   s      Zipf exponent (zipf only; default 0.99)
-- Environment: BENCH_PORTS="p1[,p2...]" spreads wrk's threads over several servers on 127.0.0.1:
-- thread i connects to port i mod #ports (wrk's setup() hook sets thread.addr), so `wrk -t2` with
-- two ports puts half of the connections on each server. wrk merges the latency histograms of all
-- threads, so p50/p99 cover both servers exactly (no averaging of percentiles). Unset: the URL's host.
--
-- zipf: popularity ranks are assigned to the ids by a fixed-seed shuffle (the same in every thread and
-- every run, so two processes see the same hot set); each request draws a rank from Zipf(s) over the
-- N ids by binary search in a CDF precomputed in init(), so the draw costs O(log N).
--
-- done() prints one machine-readable line:
--   BENCH requests=N seconds=S rps=R p50_us=A p90_us=B p99_us=C errors=E status_errors=F
-- (errors: connect/read/write/timeout; status_errors: responses with status >= 400, as wrk counts).
-- No response() hook on purpose: defining one makes wrk parse every response through Lua.

local thread_no = 0

function setup(thread)
  local ports = os.getenv("BENCH_PORTS") or ""
  local list = {}
  for p in ports:gmatch("%d+") do list[#list + 1] = p end
  if #list > 0 then
    local port = list[thread_no % #list + 1]
    thread.addr = wrk.lookup("127.0.0.1", port)[1]
  end
  thread_no = thread_no + 1
end

local mode, items, counter = "notes", {}, 0
local cdf, ranked = nil, nil

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

-- Deterministic shuffle (Park-Miller LCG, seed 42): the rank -> id map must not depend on the thread.
local function fixed_shuffle(t)
  local out, state = {}, 42
  for i = 1, #t do out[i] = t[i] end
  for i = #out, 2, -1 do
    state = (state * 16807) % 2147483647
    local j = state % i + 1
    out[i], out[j] = out[j], out[i]
  end
  return out
end

local function build_cdf(n, s)
  local c, sum = {}, 0
  for k = 1, n do
    sum = sum + 1 / (k ^ s)
    c[k] = sum
  end
  for k = 1, n do c[k] = c[k] / sum end
  c[n] = 1
  return c
end

local function zipf_rank()
  local u = math.random()
  local lo, hi = 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end

function init(args)
  mode = args[1] or "notes"
  items = read_lines(args[2] or "-")
  if mode == "search" then
    for i, w in ipairs(items) do items[i] = urlencode(w) end
  elseif mode == "zipf" then
    ranked = fixed_shuffle(items)
    cdf = build_cdf(#ranked, tonumber(args[3] or "0.99") or 0.99)
  end
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
  counter = math.random(1, #items)
end

function request()
  if mode == "notes" then
    return wrk.format("GET", "/v1/notes/" .. items[math.random(1, #items)])
  elseif mode == "zipf" then
    return wrk.format("GET", "/v1/notes/" .. ranked[zipf_rank()])
  end
  counter = counter % #items + 1
  return wrk.format("GET", "/v1/search?q=" .. items[counter] .. "&limit=20")
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
