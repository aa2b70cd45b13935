-- The admission gate: decides, atomically, whether one user gets into one coupon event.
-- Redis runs a script to completion before anything else, so the read-check-write below
-- cannot interleave with another application: that is what makes the cap hard.
--
-- KEYS[1] meta     hash: stock, opens_at_us, closes_at_us (a missing bound is open), closed (set
--                  the first time an application arrives after closes_at_us), recovering
--                  (held, see hold.lua)
-- KEYS[2] seq      string: the last score handed out, microseconds
-- KEYS[3] queue    sorted set: admitted user -> score (only winners are ever added)
-- KEYS[4] pending  list: admitted users the batch issuer has not published yet
-- KEYS[5] status   hash: user -> ADMITTED | PUBLISHED | ISSUED | FAILED
-- ARGV[1] user id
--
-- Returns {outcome, position, score_us, status, stock}; only ADMITTED and ALREADY carry the rest.

local meta = redis.call('HMGET', KEYS[1], 'stock', 'opens_at_us', 'closes_at_us', 'recovering',
  'closed')
-- Held while its state is rebuilt from PostgreSQL (see restore.lua): admitting now could hand
-- out a position or a unit of stock that is already taken, and the answer to a re-application
-- could be wrong.
if meta[4] then
  return redis.error_reply('TRYAGAIN the coupon is being restored')
end
local stock = tonumber(meta[1])
if not stock then
  return {'NOT_FOUND'}
end
local user = ARGV[1]

-- One per user: an admitted user gets the same answer forever, even after the window closed.
local previous = redis.call('ZSCORE', KEYS[3], user)
if previous then
  local rank = redis.call('ZRANK', KEYS[3], user)
  local status = redis.call('HGET', KEYS[5], user) or 'ADMITTED'
  return {'ALREADY', tostring(rank + 1), previous, status, meta[1]}
end

-- The event's own clock never goes back: Redis' clock, not the API instance's (instances with
-- skewed clocks agree), but never before the last score handed out or the last member queued
-- (a lost `seq` key must not let a newcomer rank before earlier winners).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local tail = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
if tail[2] and tonumber(tail[2]) > last then
  last = tonumber(tail[2])
end
if now <= last then
  now = last + 1
end

local opens, closes = tonumber(meta[2]), tonumber(meta[3])
-- Once closed, closed for good, even if Redis' clock later steps back.
if meta[5] or (closes and now >= closes) then
  if not meta[5] then
    redis.call('HSET', KEYS[1], 'closed', '1')
  end
  return {'CLOSED'}
end
if opens and now < opens then
  return {'NOT_OPEN'}
end

-- Hard cap: the queue holds winners only, so its size is the number admitted.
local admitted = redis.call('ZCARD', KEYS[3])
if admitted >= stock then
  return {'SOLD_OUT'}
end

-- Strictly increasing per coupon (see above): same-microsecond arrivals get distinct scores in
-- arrival order. '%.0f' because tostring() would print 1.7e+15.
local score = string.format('%.0f', now)
redis.call('SET', KEYS[2], score, 'KEEPTTL')
redis.call('ZADD', KEYS[3], score, user)
-- Written in the same step as the admission, so no winner exists that the issuer cannot see.
redis.call('RPUSH', KEYS[4], user)
redis.call('HSET', KEYS[5], user, 'ADMITTED')
return {'ADMITTED', tostring(admitted + 1), score, 'ADMITTED', meta[1]}
