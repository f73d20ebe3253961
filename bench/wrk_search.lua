-- wrk_search.lua: POSTs the search bodies of a file (one JSON a line,
-- written by `http_load.py bodies`) in turn, over wrk's keep-alive
-- connections. Usage: wrk ... -s bench/wrk_search.lua URL -- BODIES_FILE
local bodies = {}
local i = 0

init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  i = math.random(#bodies)
end

request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, bodies[i])
end

response = function(status, headers, body)
  if status ~= 200 then
    io.stderr:write("status " .. status .. ": " .. body .. "\n")
  end
end
