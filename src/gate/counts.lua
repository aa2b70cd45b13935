-- Per-status counters, prepended to every script that writes a status where it is loaded
-- (`concat!(include_str!("counts.lua"), …)`: apply, advance, redrive).
-- They live in the coupon's meta hash (fields in `COUNTER` below; ISSUED's is the public
-- `issued` count, which always counted exactly the ISSUED statuses), so a census reads four
-- fields instead of every status, and they vanish, expire and are rebuilt with the definition
-- (written as zeros by `Gate::register`, rebuilt by restore.lua).
-- Every status a script writes is counted here (`set_status`, or `count_change` beside a write
-- of its own), in the same atomic script, so the counts never lag the statuses.

local COUNTER = {ADMITTED = 'count:ADMITTED', PUBLISHED = 'count:PUBLISHED', ISSUED = 'issued',
  FAILED = 'count:FAILED'}
-- Counter field -> change not yet written: one HINCRBY per status a script touches, not per user.
local moved = {}

local function count(status, by)
  local field = COUNTER[status]
  if field then
    moved[field] = (moved[field] or 0) + by
  end
end

-- Counts `user` leaving `old` (nil: no status yet) for `status`.
local function count_change(old, status)
  if old ~= status then
    count(old, -1)
    count(status, 1)
  end
end

-- Writes one user's status and counts the change; returns the status it replaced.
local function set_status(status_key, user, status)
  local old = redis.call('HGET', status_key, user)
  if old ~= status then
    redis.call('HSET', status_key, user, status)
    count_change(old, status)
  end
  return old
end

-- Adds the counted changes to the meta hash. `issued` is the public count and always moves (as
-- it did before the other counts existed); the others only where the coupon keeps them: one
-- written before they existed has none (its census scans, as it always did, until a restore
-- rebuilds them), and a coupon whose meta hash is lost gets them back from the restore, not a
-- hash of counts alone.
local function write_counts(meta_key)
  local meta = redis.call('HMGET', meta_key, 'stock', 'count:ADMITTED')
  for field, by in pairs(moved) do
    local kept = meta[2] or (field == 'issued' and meta[1])
    if by ~= 0 and kept then
      redis.call('HINCRBY', meta_key, field, by)
    end
  end
  moved = {}
end

