-- wrk script: PUT /buy_order with a fresh v4 UUID idempotence key per request.
-- math.random-based UUIDs, seeded per thread from a nonce given after `--` plus the thread number,
-- so two runs (or two threads) never replay each other's keys. Currencies are spread evenly.
local threads = 0
function setup(thread)
  thread:set("thread_number", threads)
  threads = threads + 1
end

local currencies = {"USD", "EUR", "GBP"}
local hex = {"0","1","2","3","4","5","6","7","8","9","a","b","c","d","e","f"}
local variant = {"8","9","a","b"}

function init(args)
  local nonce = tonumber(args[1] or "0") or 0
  math.randomseed(nonce + (thread_number or 0) * 1000003)
  for _ = 1, 100 do math.random() end
end

local function uuid4()
  local out = {}
  for i = 1, 36 do
    if i == 9 or i == 14 or i == 19 or i == 24 then out[i] = "-"
    elseif i == 15 then out[i] = "4"
    elseif i == 20 then out[i] = variant[math.random(1, 4)]
    else out[i] = hex[math.random(1, 16)] end
  end
  return table.concat(out)
end

local headers = {["Content-Type"] = "application/json"}

function request()
  local body = '{"currency":"' .. currencies[math.random(1, 3)] .. '","amount":"' .. math.random(1, 999) .. '.'
    .. string.format("%02d", math.random(0, 99)) .. '","idempotence_key":"' .. uuid4() .. '"}'
  return wrk.format("PUT", "/buy_order", headers, body)
end

dofile(os.getenv("BENCH_DIR") .. "/report.lua")
