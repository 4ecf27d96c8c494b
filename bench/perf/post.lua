-- wrk script of bench/perf: POST one JSON body with a bearer token, count bad answers, and
-- print the figures as one JSON line at the end.
--
--   wrk -t1 -c10 -d15s --latency -s post.lua http://127.0.0.1:PORT/graphql -- BODY_FILE TOKEN
--
-- An answer is bad when its status is not 200 or its body carries GraphQL "errors" (a rate
-- limit, an authorization failure or a bug would otherwise count as a fast success).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[2]
  bad = 0
  bad_sample = ""
end

function response(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then
    bad = bad + 1
    if bad_sample == "" then
      bad_sample = status .. " " .. string.sub(body, 1, 300)
    end
  end
end

function done(summary, latency, requests)
  local bad_total, sample = 0, ""
  for _, thread in ipairs(threads) do
    bad_total = bad_total + thread:get("bad")
    local s = thread:get("bad_sample")
    if sample == "" and s ~= nil then
      sample = s
    end
  end
  -- Plain characters only: the line is read as JSON.
  sample = string.gsub(sample, '[%c\\"]', " ")
  local e = summary.errors
  io.write(string.format(
    '\nBENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, ' ..
    '"socket_errors": %d, "bad_answers": %d, "bad_sample": "%s"}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, e.connect + e.read + e.write + e.timeout, bad_total, sample))
end
