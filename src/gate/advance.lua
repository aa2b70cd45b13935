-- Moves users' status forward, never back: ADMITTED < PUBLISHED < ISSUED = FAILED. A late
-- PUBLISHED acknowledgement therefore cannot overwrite ISSUED. The users leave inflight: they
-- were delivered (PUBLISHED) or reached the database or the dead-letter table (ISSUED, FAILED).
--
-- KEYS[1] status    hash: user -> status
-- KEYS[2] inflight  sorted set: claimed user -> lease deadline
-- KEYS[3] meta      hash: the per-status counts (see counts.lua; `issued` is ISSUED's)
-- ARGV[1] the target status, ARGV[2..] user ids
--
-- Returns how many users changed status.

-- A coupon Redis does not have (a rehearsal deleted, a duplicate delivered after it) gets no
-- statuses: they would be keys nobody reads or expires. Lost state is rebuilt by the restore.
if redis.call('HEXISTS', KEYS[3], 'stock') == 0 then
  return 0
end

local rank = {ADMITTED = 1, PUBLISHED = 2, ISSUED = 3, FAILED = 3}
local target = ARGV[1]
local changed = 0
for i = 2, #ARGV do
  local user = ARGV[i]
  local current = redis.call('HGET', KEYS[1], user)
  if (rank[current] or 0) < rank[target] then
    redis.call('HSET', KEYS[1], user, target)
    count_change(current, target)
    changed = changed + 1
  end
  redis.call('ZREM', KEYS[2], user)
end
write_counts(KEYS[3])
return changed
