-- A count of one coupon's books at one instant, for the watcher's live invariants
-- (see ops::reconcile::books). Read-only. O(winners), about 0.7 µs each: the watcher runs it
-- only on an event at rest (nothing pending or in flight, no admissions moving), and not more
-- often than the size of the event allows.
--
-- KEYS[1] meta, KEYS[2] queue, KEYS[3] pending, KEYS[4] inflight, KEYS[5] status
--
-- Returns {} for a coupon Redis lacks or holds (the watcher's hold handles those), else
-- {queue members, lost placeholders, public issued count, ADMITTED, PUBLISHED, ISSUED, FAILED,
--  other statuses, stranded}; stranded: ADMITTED winners neither pending nor in flight, whom
-- no issuer will ever publish.

local meta = redis.call('HMGET', KEYS[1], 'stock', 'recovering', 'lost', 'issued')
if not meta[1] or meta[2] then
  return {}
end

local count = {ADMITTED = 0, PUBLISHED = 0, ISSUED = 0, FAILED = 0}
local other = 0
for _, status in ipairs(redis.call('HVALS', KEYS[5])) do
  if count[status] then
    count[status] = count[status] + 1
  else
    other = other + 1
  end
end

-- With nothing pending or in flight (the watcher asks at rest), every ADMITTED winner is
-- stranded; otherwise each is looked for among those waiting.
local stranded = count.ADMITTED
local waiting_count = redis.call('LLEN', KEYS[3]) + redis.call('ZCARD', KEYS[4])
if stranded > 0 and waiting_count > 0 then
  local waiting = {}
  for _, user in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    waiting[user] = true
  end
  for _, user in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    waiting[user] = true
  end
  stranded = 0
  local statuses = redis.call('HGETALL', KEYS[5])
  for i = 1, #statuses, 2 do
    if statuses[i + 1] == 'ADMITTED' and not waiting[statuses[i]] then
      stranded = stranded + 1
    end
  end
end

return {redis.call('ZCARD', KEYS[2]), tonumber(meta[3] or '0'), tonumber(meta[4] or '0'),
  count.ADMITTED, count.PUBLISHED, count.ISSUED, count.FAILED, other, stranded}
