-- The batch issuer's claim: moves up to ARGV[1] winners from pending to inflight, each with a
-- lease, in one atomic step, so two issuer instances never claim the same winner at once.
--
-- KEYS[1] pending   list: admitted users not yet published
-- KEYS[2] inflight  sorted set: claimed user -> lease deadline (ms)
-- KEYS[3] queue     sorted set: admitted user -> score (for position and appliedAt)
-- KEYS[4] status    hash: user -> status
-- KEYS[5] meta      hash: stock, closes_at_us, recovering
-- ARGV[1] batch size, ARGV[2] lease in milliseconds
--
-- Returns {finished, user, position, score, user, position, score, ...}; finished is 1 when the
-- coupon can never have work again (sold out or closed, nothing pending, nothing in flight).

-- Nothing leaves a held coupon: its restore waits for every send that could be in flight, and
-- a send started now would not be waited for.
if redis.call('HEXISTS', KEYS[5], 'recovering') == 1 then
  return {0}
end

local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- A lease that ran out belongs to an instance that died mid-batch: its winners go back to the
-- head of pending, unless the consumer already issued them (then they are simply done).
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms)
for i = #expired, 1, -1 do
  local user = expired[i]
  redis.call('ZREM', KEYS[2], user)
  local status = redis.call('HGET', KEYS[4], user)
  if status == 'ADMITTED' or status == 'PUBLISHED' then
    redis.call('LPUSH', KEYS[1], user)
  end
end

local out = {0}
local users = redis.call('LPOP', KEYS[1], tonumber(ARGV[1]))
if users then
  local deadline = string.format('%.0f', now_ms + tonumber(ARGV[2]))
  for _, user in ipairs(users) do
    local score = redis.call('ZSCORE', KEYS[3], user)
    -- A pending user always has a score; without one there is nothing correct to send.
    if score then
      redis.call('ZADD', KEYS[2], deadline, user)
      out[#out + 1] = user
      out[#out + 1] = tostring(redis.call('ZRANK', KEYS[3], user) + 1)
      out[#out + 1] = score
    end
  end
end

if #out == 1 and redis.call('LLEN', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) == 0 then
  local meta = redis.call('HMGET', KEYS[5], 'stock', 'closes_at_us')
  local stock, closes = tonumber(meta[1]), tonumber(meta[2])
  local sold_out = stock == nil or redis.call('ZCARD', KEYS[3]) >= stock
  local closed = closes ~= nil and now_ms * 1000 >= closes
  if sold_out or closed then
    out[1] = 1
  end
end
return out
