"""The wrk Lua script shared by both systems, so both get the same load.

Arguments after ``--`` (wrk passes them to ``init``): ``SYSTEM OP RUN KEYS_N THREADS PREFIX``.

- SYSTEM: ``synod`` (JSON strings) or ``etcd`` (gRPC gateway, base64 strings).
- OP: ``put`` (a fresh 16-byte key per request from a per-thread counter, 256-byte
  value), ``load`` (every key ``r%015d`` for 0 <= i < KEYS_N exactly once across the
  threads, then the thread stops and tells stderr), or ``range`` (a random loaded key;
  an answer without exactly one key counts as a miss).
- RUN: one letter that keeps the keys of separate ``put`` runs apart.
- THREADS: wrk's ``-t``, so that ``load`` threads split the keys between them.
- PREFIX: the KV routes' path prefix (``/v1/kv/``; etcd's gateway ``/v3/kv/`` from 3.4,
  ``/v3beta/kv/`` for 3.3).

``done`` prints one line ``WRK_JSON {...}`` with the summary, latency percentiles in
microseconds and the misses; the caller parses that instead of wrk's text report.
"""

from __future__ import annotations

KEY_BYTES = 16
VALUE_BYTES = 256

WRK_LUA = r"""
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64(s)
  local out = {}
  local n = #s
  for i = 1, n, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(v / 262144) % 64
    local c2 = math.floor(v / 4096) % 64
    local c3 = math.floor(v / 64) % 64
    local c4 = v % 64
    out[#out + 1] = B64:sub(c1 + 1, c1 + 1) .. B64:sub(c2 + 1, c2 + 1)
      .. (b and B64:sub(c3 + 1, c3 + 1) or "=") .. (c and B64:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  system, op, run, keys_n = args[1], args[2], args[3], tonumber(args[4])
  threads_total = tonumber(args[5])
  counter = 0
  misses = 0
  loaded = 0
  finished = false
  local value = string.rep("0123456789abcdef", 16)  -- 256 bytes
  prefix = args[6]
  if system == "etcd" then
    value_text = b64(value)
    hit = '"count":"1"'
  else
    value_text = value
    hit = '"count":1'
  end
  path_put = prefix .. "put"
  path_range = prefix .. "range"
  headers = {["Content-Type"] = "application/json"}
  math.randomseed(os.time() * 1000 + tid * 7919)
  next_load = tid
  if op ~= "range" then
    response = nil
  end
  if op == "load" then
    response = load_response
  end
end

local function key_text(k)
  if system == "etcd" then
    return b64(k)
  end
  return k
end

function request()
  if op == "put" then
    counter = counter + 1
    local k = string.format("w%s%02d%012d", run, tid % 100, counter)
    return wrk.format("POST", path_put, headers,
      '{"key":"' .. key_text(k) .. '","value":"' .. value_text .. '"}')
  elseif op == "load" then
    local i = next_load
    if i >= keys_n then
      i = i % keys_n  -- overshoot after this thread is done: rewrite an early key
    end
    next_load = next_load + threads_total
    local k = string.format("r%015d", i)
    return wrk.format("POST", path_put, headers,
      '{"key":"' .. key_text(k) .. '","value":"' .. value_text .. '"}')
  else
    local k = string.format("r%015d", math.random(0, keys_n - 1))
    return wrk.format("POST", path_range, headers, '{"key":"' .. key_text(k) .. '"}')
  end
end

function range_response(status, headers, body)
  if status ~= 200 or not body:find(hit, 1, true) then
    misses = misses + 1
  end
end

function load_response(status, headers, body)
  if status == 200 then
    loaded = loaded + 1
  else
    misses = misses + 1
  end
  if not finished and loaded + misses >= mine() then
    finished = true
    io.stderr:write("WRK_THREAD_LOADED " .. tid .. "\n")
    io.stderr:flush()
    wrk.thread:stop()
  end
end

function mine()
  -- How many keys this thread writes: i = tid, tid + T, tid + 2T, ... below keys_n.
  if tid >= keys_n then
    return 0
  end
  return math.floor((keys_n - 1 - tid) / threads_total) + 1
end

response = range_response

function done(summary, latency, requests)
  local misses_total, loaded_total = 0, 0
  for _, thread in ipairs(threads) do
    misses_total = misses_total + (thread:get("misses") or 0)
    loaded_total = loaded_total + (thread:get("loaded") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"duration_us":%d,"requests":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d},'
      .. '"misses":%d,"loaded":%d}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0),
    latency:percentile(99.9), latency.mean, latency.max, misses_total, loaded_total))
end
"""
