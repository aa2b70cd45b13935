-- Takes one token from every bucket, or from none (GCRA, as in go-redis/redis_rate): a bucket
-- is the "theoretical arrival time" of its next request, so it is one number that expires.
--
-- KEYS[1..n] the buckets
-- ARGV[2i-1] bucket i's emission interval (µs per token), ARGV[2i] its tolerance (interval ×
-- burst, µs)
--
-- Returns {} when every bucket had a token, else {i, µs until bucket i has one}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local next_arrival = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local arrival = math.max(tonumber(redis.call('GET', key) or now), now)
  local allowed_at = arrival + interval - tolerance
  if allowed_at > now then
    return {i, allowed_at - now}
  end
  next_arrival[i] = arrival + interval
end
for i, key in ipairs(KEYS) do
  -- '%.0f': tostring would print a µs timestamp in exponent form and lose digits.
  redis.call('SET', key, string.format('%.0f', next_arrival[i]),
    'PX', math.max(1, math.ceil((next_arrival[i] - now) / 1000)))
end
return {}
