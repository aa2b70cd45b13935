-- Deletes a rehearsal event's Redis copy, unless winners are still on their way (pending, in
-- flight, or published and not yet persisted) or it is held for a restore: deleting then
-- would leave messages on Kafka for an event that no longer exists (dead letters, and a page
-- for failed events). Reads every status: O(winners), once per deletion.
--
-- KEYS: meta, seq, queue, pending, inflight, status, told, lost (CouponKeys::all)
--
-- Returns 1 when deleted (or already gone), 0 when busy.

if redis.call('LLEN', KEYS[4]) > 0 or redis.call('ZCARD', KEYS[5]) > 0
    or redis.call('HEXISTS', KEYS[1], 'recovering') == 1 then
  return 0
end
for _, status in ipairs(redis.call('HVALS', KEYS[6])) do
  if status == 'ADMITTED' or status == 'PUBLISHED' then
    return 0
  end
end
redis.call('DEL', unpack(KEYS))
return 1
