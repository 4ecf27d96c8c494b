-- Appended to post.lua for a query whose body names its operation FirstSeen_0: every request
-- renames it FirstSeen_<random prefix>_<n>, so each one is a document the server has never
-- seen (parsed, validated, planned and prepared again). The prefix differs per wrk process,
-- so a later round repeats no name of an earlier one.

local counter = 0
local prefix = nil

function request()
  if prefix == nil then
    math.randomseed(os.time() * 1000 + math.floor(os.clock() * 1000000))
    prefix = string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  end
  counter = counter + 1
  local body = string.gsub(wrk.body, "FirstSeen_0", "FirstSeen_" .. prefix .. "_" .. counter)
  return wrk.format(nil, nil, nil, body)
end
