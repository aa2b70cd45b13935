-- Gives back claimed winners whose send failed, at the head of pending, so the next tick
-- retries them first instead of waiting for their lease to run out.
--
-- KEYS[1] pending, KEYS[2] inflight, KEYS[3] status
-- ARGV[1..] user ids, in the order they were claimed
--
-- Returns how many went back.

local released = 0
for i = #ARGV, 1, -1 do
  local user = ARGV[i]
  -- Only a claim still held goes back: a lease that expired may already be someone else's.
  if redis.call('ZREM', KEYS[2], user) == 1 then
    local status = redis.call('HGET', KEYS[3], user)
    if status == 'ADMITTED' or status == 'PUBLISHED' then
      redis.call('LPUSH', KEYS[1], user)
      released = released + 1
    end
  end
end
return released
