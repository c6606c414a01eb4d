-- wrk script: counts answers by kind across wrk's threads and prints one JSON line (RESULT {...})
-- with wrk's own latency and error figures, for load-test and bench-server to read.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, unavailable, unclear, other = 0, 0, 0, 0
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 503 then
    unavailable = unavailable + 1
    -- A lost task's answer must say what happened: the worker process and that nothing was counted.
    if not (body and string.find(body, "worker process", 1, true)) then unclear = unclear + 1 end
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local t = { ok = 0, unavailable = 0, unclear = 0, other = 0 }
  for _, thread in ipairs(threads) do
    for key, _ in pairs(t) do t[key] = t[key] + thread:get(key) end
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"ok":%d,"unavailable":%d,"unclear":%d,"other":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, t.ok, t.unavailable, t.unclear, t.other,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
