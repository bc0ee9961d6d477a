-- pipeline.lua: a wrk script that sends DEPTH pipelined requests per round trip (TechEmpower plaintext style).
--
-- Usage: wrk -t1 -c64 -d10s -s scripts/pipeline.lua http://127.0.0.1:8080/ -- [DEPTH]
-- DEPTH defaults to 16. Every request is wrk's own (method, path and headers from the command line),
-- built once in init() and concatenated, so request() costs nothing per round trip.

local batch

function init(args)
  local depth = tonumber(args[1]) or 16
  if depth < 1 then
    error("pipeline.lua: depth must be at least 1, got " .. tostring(args[1]))
  end
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format()
  end
  batch = table.concat(requests)
end

function request()
  return batch
end
