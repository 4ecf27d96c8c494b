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
  -- The latency distribution at fixed percentiles: the harness merges several runs' with it.
  local points = {}
  for _, p in ipairs({1, 5, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 95, 97, 98, 99, 99.5, 99.9}) do
    table.insert(points, string.format("[%g, %d]", p, latency:percentile(p)))
  end
  local e = summary.errors
  io.write(string.format(
    '\nBENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"min_us": %d, "max_us": %d, "mean_us": %.1f, "percentiles_us": [%s], ' ..
    '"socket_errors": %d, "timeouts": %d, "bad_answers": %d, "bad_sample": "%s"}\n',
    summary.requests, summary.duration, summary.bytes,
    latency.min, latency.max, latency.mean, table.concat(points, ", "),
    e.connect + e.read + e.write, e.timeout, bad_total, sample))
end
