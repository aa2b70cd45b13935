-- A count of one coupon's books at one instant, for the watcher's live invariants
-- (see ops::reconcile::books). Read-only, and O(1) at rest: it reads the per-status counts the
-- scripts keep (see counts.lua) instead of every status; the full scan is the audit's
-- (ops::audit), which also checks these counts against the statuses.
--
-- KEYS[1] meta, KEYS[2] queue, KEYS[3] pending, KEYS[4] inflight, KEYS[5] status
--
-- Returns {} for a coupon Redis lacks or holds (the watcher's hold handles those), else
-- {queue members, lost placeholders, public issued count, ADMITTED, PUBLISHED, ISSUED, FAILED,
--  status entries, stranded}; stranded: ADMITTED winners neither pending nor in flight, whom
-- no issuer will ever publish.

local meta = redis.call('HMGET', KEYS[1], 'stock', 'recovering', 'lost', 'issued',
  'count:ADMITTED', 'count:PUBLISHED', 'count:FAILED')
if not meta[1] or meta[2] then
  return {}
end
local issued = tonumber(meta[4] or '0')
local admitted = tonumber(meta[5])
local published, failed = tonumber(meta[6] or '0'), tonumber(meta[7] or '0')
local entries = redis.call('HLEN', KEYS[5])

-- A coupon written before the counts existed (see counts.lua) is scanned, as it always was.
if not admitted then
  local count = {ADMITTED = 0, PUBLISHED = 0, ISSUED = 0, FAILED = 0}
  for _, status in ipairs(redis.call('HVALS', KEYS[5])) do
    if count[status] then
      count[status] = count[status] + 1
    end
  end
  admitted, published, issued, failed = count.ADMITTED, count.PUBLISHED, count.ISSUED, count.FAILED
  entries = admitted + published + issued + failed
end

-- Every ADMITTED winner not waiting is stranded: the ADMITTED count less the distinct waiting
-- users whose status is ADMITTED (pending may also hold PUBLISHED winners a restore or a
-- release put back, and the same user twice after a lease expiry and a redrive). Exact as long
-- as the count is; O(pending + in flight), so nothing at rest, where the watcher asks.
local stranded = admitted
if stranded > 0 and redis.call('LLEN', KEYS[3]) + redis.call('ZCARD', KEYS[4]) > 0 then
  local seen = {}
  local function waiting(user)
    if not seen[user] then
      seen[user] = true
      if redis.call('HGET', KEYS[5], user) == 'ADMITTED' then
        stranded = stranded - 1
      end
    end
  end
  for _, user in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    waiting(user)
  end
  for _, user in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    waiting(user)
  end
  -- Below zero only if the count is wrong; the audit names that.
  stranded = math.max(stranded, 0)
end

-- HLEN against the counts' sum is what an O(1) census can see of statuses written or deleted
-- outside the scripts (a status edited in place is the audit's to find).
return {redis.call('ZCARD', KEYS[2]), tonumber(meta[3] or '0'), tonumber(meta[4] or '0'),
  admitted, published, issued, failed, entries, stranded}
