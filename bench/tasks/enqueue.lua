-- wrk script of bench/tasks/run.sh: POSTs exactly N no-op tasks, then idles. Run wrk with -t1.
-- Arguments (after `--`):
--   n      tasks to create, over all connections
--   mark   file written once the N answers are in: "ok=<201 answers> bad=<other answers>"
-- wrk has no "stop after N requests" mode and always runs for its -d duration. Here each request
-- first goes through delay() (0 ms while POSTs remain, then an hour, which parks the connection),
-- so exactly N POSTs are sent (the delay is decided before the request is built, so a few
-- connections may pass it for the last POSTs: they send a GET of a path with no route instead,
-- a 404 answered before the rate limiter, not counted); the thread stops when the N answers are in, and the driver
-- (pake_tasks.py) interrupts wrk when it sees the mark file.
-- wrk 4.x calls request() once before the run to check the request (script_verify_request); that
-- call is not counted. pake_tasks.py checks that the server holds exactly N tasks afterwards.
-- done() prints: BENCH ok=N bad=M errors=E first_bad_status=S first_bad_body=B (errors: wrk's
-- connect/read/write/timeout errors; the first non-201 answer's status and body, blanks as "_").

local n, mark = 0, nil
local sent, verified = 0, false
local post, probe
local thread_ref
ok, bad, bad_status, bad_body = 0, 0, "", "" -- globals: done() reads them through thread:get()

function setup(thread)
  thread_ref = thread
end

function init(args)
  n = tonumber(args[1]) or 0
  mark = args[2]
  post = wrk.format("POST", "/v1/tasks", { ["Content-Type"] = "application/json" },
    '{"type":"noop","payload":{"ms":0}}')
  probe = wrk.format("GET", "/bench-tasks-idle") -- no such route: 404 before auth and rate limits
end

function delay()
  if sent < n then return 0 end
  return 3600000
end

function request()
  if not verified then
    verified = true -- wrk's check before the run: nothing is sent
    return post
  end
  if sent < n then
    sent = sent + 1
    return post
  end
  return probe -- delay() let several connections through for the last POSTs
end

function response(status, headers, body)
  if status == 201 then
    ok = ok + 1
  elseif status == 404 then
    return -- a probe's answer (POST /v1/tasks never answers 404)
  else
    bad = bad + 1
    if bad == 1 then
      bad_status, bad_body = tostring(status), (string.sub(body or "", 1, 200):gsub("%s", "_"))
    end
  end
  if ok + bad == n then
    if mark then
      local f = io.open(mark, "w")
      if f then
        f:write(string.format("ok=%d bad=%d\n", ok, bad))
        f:close()
      end
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local t = thread_ref
  local e = summary.errors
  io.write(string.format("BENCH ok=%s bad=%s errors=%d first_bad_status=%s first_bad_body=%s\n",
    tostring(t:get("ok")), tostring(t:get("bad")), e.connect + e.read + e.write + e.timeout,
    tostring(t:get("bad_status")), tostring(t:get("bad_body"))))
end
