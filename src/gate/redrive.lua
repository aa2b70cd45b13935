-- Gives FAILED winners another chance once the cause of their failure is fixed: each goes back
-- to pending as ADMITTED, at its place in line, for the issuer to publish again. A winner that
-- is not FAILED (any more) is left alone, so running it twice changes nothing the second time.
--
-- KEYS[1] pending, KEYS[2] status, KEYS[3] queue, KEYS[4] meta (its per-status counts)
--
-- Returns how many winners went back to pending.

local redriven = 0
local statuses = redis.call('HGETALL', KEYS[2])
local failed = {}
for i = 1, #statuses, 2 do
  if statuses[i + 1] == 'FAILED' and redis.call('ZSCORE', KEYS[3], statuses[i]) then
    failed[#failed + 1] = {statuses[i], tonumber(redis.call('ZRANK', KEYS[3], statuses[i]))}
  end
end
-- In line order, so they are published in the order they were admitted.
table.sort(failed, function(a, b) return a[2] < b[2] end)
for _, winner in ipairs(failed) do
  set_status(KEYS[2], winner[1], 'ADMITTED')
  redis.call('RPUSH', KEYS[1], winner[1])
  redriven = redriven + 1
end
write_counts(KEYS[4])
return redriven
