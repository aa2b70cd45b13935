-- A consistent read of one coupon (and optionally one user) at one instant of Redis' clock.
-- Read-only; one round trip instead of six.
--
-- KEYS[1] meta, KEYS[2] queue, KEYS[3] status, KEYS[4] lost (see restore.lua)
-- ARGV[1] user id, or '' for the coupon alone
--
-- Returns {} for an unknown coupon, else
-- {stock, name, created_at_us, opens_at_us, closes_at_us, issued, admitted, now_us,
--  [score, position, status]} with '' for absent values (Lua arrays stop at the first nil).

local m = redis.call('HMGET', KEYS[1], 'stock', 'name', 'created_at_us', 'opens_at_us',
  'closes_at_us', 'issued', 'recovering', 'closed')
if m[7] then
  return redis.error_reply('TRYAGAIN the coupon is being restored')
end
if not m[1] then
  return {}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
-- A closed event reads as closed even if Redis' clock stepped back (see apply.lua).
if m[8] and m[5] and now < tonumber(m[5]) then
  now = tonumber(m[5])
end
now = string.format('%.0f', now)
local out = {m[1], m[2] or '', m[3] or '', m[4] or '', m[5] or '', m[6] or '0',
  tostring(redis.call('ZCARD', KEYS[2])), now}

if ARGV[1] ~= '' then
  local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if score then
    out[9] = score
    out[10] = tostring(redis.call('ZRANK', KEYS[2], ARGV[1]) + 1)
    out[11] = redis.call('HGET', KEYS[3], ARGV[1]) or 'ADMITTED'
  else
    -- Told a place a restore could not give back: the answer is final, at the place told.
    local lost = redis.call('HGET', KEYS[4], ARGV[1])
    if lost then
      local position, told_score = string.match(lost, '^(%d+):(%d+)$')
      out[9], out[10], out[11] = told_score, position, 'LOST'
    end
  end
end
return out
