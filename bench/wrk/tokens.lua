-- Each request presents the next pre-paid credential of this thread's file (PREFIX.<thread>),
-- written by `turnpike-bench tokens`; usage: wrk -s bench/wrk/tokens.lua URL -- PREFIX
dofile("bench/wrk/report.lua")

local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  tokens = {}
  for line in io.lines(args[1] .. "." .. id) do
    tokens[#tokens + 1] = line
  end
  n = 0
  headers = {}
end

function request()
  n = n + 1
  if n > #tokens then
    n = 1 -- out of tokens: reused ones must get 402, never a second 200
  end
  headers["Authorization"] = tokens[n]
  return wrk.format(nil, nil, headers)
end
