-- The admission gate: decides, atomically, whether each user of a batch gets into one coupon
-- event. Redis runs a script to completion before anything else, so the read-check-write below
-- cannot interleave with another application: that is what makes the cap hard. A batch is the
-- applications one instance received close together (see batching.rs), in the order they
-- arrived there; they are decided one by one in that order, exactly as if each had its own
-- call, so a batch of one is the unbatched gate.
--
-- KEYS[1] meta     hash: stock, opens_at_us, closes_at_us (a missing bound is open), closed (set
--                  the first time an application arrives after closes_at_us), recovering
--                  (held, see hold.lua), the per-status counts (see counts.lua)
-- KEYS[2] seq      string: the last score handed out, microseconds
-- KEYS[3] queue    sorted set: admitted user -> score (only winners are ever added)
-- KEYS[4] pending  list: admitted users the batch issuer has not published yet
-- KEYS[5] status   hash: user -> ADMITTED | PUBLISHED | ISSUED | FAILED
-- ARGV     user ids, in arrival order
--
-- Returns one answer per user, in ARGV's order: {outcome, position, score_us, status, stock};
-- only ADMITTED and ALREADY carry the rest. NOT_FOUND, NOT_OPEN and CLOSED are about the event,
-- so every user of the batch gets the same one.

local meta = redis.call('HMGET', KEYS[1], 'stock', 'opens_at_us', 'closes_at_us', 'recovering',
  'closed')
-- Held while its state is rebuilt from PostgreSQL (see restore.lua): admitting now could hand
-- out a position or a unit of stock that is already taken, and the answer to a re-application
-- could be wrong. Nothing of the batch is written.
if meta[4] then
  return redis.error_reply('TRYAGAIN the coupon is being restored')
end
local stock = tonumber(meta[1])

-- Every user of the batch gets the same answer.
local function all(answer)
  local answers = {}
  for i = 1, #ARGV do
    answers[i] = answer
  end
  return answers
end

if not stock then
  return all({'NOT_FOUND'})
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

local opens, closes = tonumber(meta[2]), tonumber(meta[3])
-- Once closed, closed for good, even if Redis' clock later steps back.
local closed = meta[5]

local admitted = redis.call('ZCARD', KEYS[3])
-- This batch's winners, written together after the loop: user -> their answer.
local winners, scored, users = {}, {}, {}
local answers = {}
for i, user in ipairs(ARGV) do
  -- One per user: an admitted user gets the same answer forever, even after the window
  -- closed, and a user twice in one batch is admitted by the first and told so by the second.
  local won = winners[user]
  local previous = not won and redis.call('ZSCORE', KEYS[3], user)
  -- Strictly increasing per coupon (see above): same-microsecond arrivals, in one batch or
  -- not, get distinct scores in arrival order. The window is judged at this score, as a call
  -- of this application's own would have.
  local clock = math.max(now, last + 1)
  closed = closed or (closes and clock >= closes)
  if won then
    answers[i] = {'ALREADY', won[2], won[3], won[4], won[5]}
  elseif previous then
    local rank = redis.call('ZRANK', KEYS[3], user)
    local status = redis.call('HGET', KEYS[5], user) or 'ADMITTED'
    answers[i] = {'ALREADY', tostring(rank + 1), previous, status, meta[1]}
  elseif closed then
    if not meta[5] then
      meta[5] = '1'
      redis.call('HSET', KEYS[1], 'closed', '1')
    end
    answers[i] = {'CLOSED'}
  elseif opens and clock < opens then
    answers[i] = {'NOT_OPEN'}
  elseif admitted >= stock then
    -- Hard cap: the queue holds winners only, so its size is the number admitted.
    answers[i] = {'SOLD_OUT'}
  else
    -- '%.0f' because tostring() would print 1.7e+15.
    last = clock
    admitted = admitted + 1
    local score = string.format('%.0f', clock)
    scored[#scored + 1] = score
    scored[#scored + 1] = user
    users[#users + 1] = user
    answers[i] = {'ADMITTED', tostring(admitted), score, 'ADMITTED', meta[1]}
    winners[user] = answers[i]
  end
end

if #users > 0 then
  redis.call('SET', KEYS[2], string.format('%.0f', last), 'KEEPTTL')
  redis.call('ZADD', KEYS[3], unpack(scored))
  -- Written in the same step as the admissions, so no winner exists that the issuer cannot see.
  redis.call('RPUSH', KEYS[4], unpack(users))
  -- A newcomer normally has no status; if one was left behind outside the line (a late
  -- acknowledgement for a winner the line no longer holds), the counts follow the hash.
  local previous_statuses = redis.call('HMGET', KEYS[5], unpack(users))
  local statuses = {}
  for i, user in ipairs(users) do
    count_change(previous_statuses[i] or nil, 'ADMITTED')
    statuses[#statuses + 1] = user
    statuses[#statuses + 1] = 'ADMITTED'
  end
  redis.call('HSET', KEYS[5], unpack(statuses))
  write_counts(KEYS[1])
end
return answers
