-- Retires a finished, fully persisted coupon's Redis copy: every key expires after the
-- retention, and the issuer's registry forgets it. Reads then come from PostgreSQL.
--
-- KEYS[1] meta, KEYS[2] seq, KEYS[3] queue, KEYS[4] pending, KEYS[5] inflight, KEYS[6] status
-- ARGV[1] retention in seconds
--
-- Returns the coupon's application count, or -1 when work is still pending or in flight (or it
-- is held): then nothing changes.

if redis.call('LLEN', KEYS[4]) > 0 or redis.call('ZCARD', KEYS[5]) > 0
    or redis.call('HEXISTS', KEYS[1], 'recovering') == 1
    or redis.call('HEXISTS', KEYS[1], 'stock') == 0 then
  return -1
end
for i = 1, #KEYS do
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return tonumber(redis.call('HGET', KEYS[1], 'applications') or '0')
