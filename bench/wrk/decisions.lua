-- wrk script of bench/floor.py: authorize requests, or authorize+record pairs, each with a unique request_id.
-- wrk <url> -s decisions.lua -- <mode: authorize|pair> <run prefix> <gateway token> <api key>
-- A pair's record reuses its authorize's id, so pair mode needs one connection per thread (-t N -c N):
-- then a thread's requests go out one after another and a record always follows its authorize's answer.
-- done() prints one line "WRK_JSON {...}" (latencies in µs) for floor.py to parse.

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "authorize"
  prefix = args[2] or "run"
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. (args[3] or "")}
  api_key = args[4] or ""
  counter = 0
  pending = nil
  -- wrk calls the first thread's request() once right after init to inspect the request, and never
  -- sends it: that call must not leave a pending record behind.
  inspected = thread_id ~= 1
end

local function authorize_body(request_id)
  return string.format('{"request_id":"%s","api_key":"%s","model":"gpt-4o","end_user":"cust-1",'
    .. '"tags":["tag-1"],"estimated_cost":"0.002"}', request_id, api_key)
end

function request()
  if not inspected then
    inspected = true
    return wrk.format("POST", "/v1/authorize", headers, authorize_body(prefix .. "-inspected"))
  end
  if mode == "pair" and pending ~= nil then
    local body = string.format('{"request_id":"%s","cost":"0.001","outcome":"success"}', pending)
    pending = nil
    return wrk.format("POST", "/v1/record", headers, body)
  end
  counter = counter + 1
  local request_id = string.format("%s-%d-%d", prefix, thread_id, counter)
  if mode == "pair" then
    pending = request_id
  end
  return wrk.format("POST", "/v1/authorize", headers, authorize_body(request_id))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,'
    .. '"p50_us":%d,"p99_us":%d}\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
