-- wrk_search.lua: POSTs the search bodies of a file (one JSON a line,
-- written by `http_load.py bodies`) in turn, over wrk's keep-alive
-- connections. Usage: wrk ... -s bench/wrk_search.lua URL -- BODIES_FILE
-- Requests are formatted once in init and no `response` callback is set:
-- both would cost wrk CPU per request on the 2 cores it shares with the
-- server. Errors show in wrk's "Non-2xx or 3xx responses" line.
local reqs = {}
local i = 0

init = function(args)
  for line in io.lines(args[1]) do
    reqs[#reqs + 1] = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, line)
  end
  i = math.random(#reqs)
end

request = function()
  i = i % #reqs + 1
  return reqs[i]
end
