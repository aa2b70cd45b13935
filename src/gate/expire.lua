-- Retires a finished, fully persisted coupon's Redis copy: every key expires after the
-- retention, and the issuer's registry forgets it. Reads then come from PostgreSQL.
--
-- KEYS[1] meta, KEYS[2] seq, KEYS[3] queue, KEYS[4] pending, KEYS[5] inflight, KEYS[6] status
-- ARGV[1] retention in seconds
-- ARGV[2] how many admissions the caller found persisted (with the lost placeholders)
--
-- Returns the coupon's application count, or -1 when nothing changes: work is still pending or
-- in flight, it is held, admissions moved on since the caller looked, or it is not finished by
-- Redis' own clock (the clock admissions are decided by; an instance's may run ahead).

if redis.call('LLEN', KEYS[4]) > 0 or redis.call('ZCARD', KEYS[5]) > 0
    or redis.call('HEXISTS', KEYS[1], 'recovering') == 1 then
  return -1
end
local meta = redis.call('HMGET', KEYS[1], 'stock', 'closes_at_us', 'closed')
local stock, closes = tonumber(meta[1]), tonumber(meta[3] and '0' or meta[2])
if not stock then
  return -1
end
local admitted = redis.call('ZCARD', KEYS[3])
if admitted ~= tonumber(ARGV[2]) then
  return -1
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
if admitted < stock and not (closes and now >= closes) then
  return -1
end
for i = 1, #KEYS do
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return tonumber(redis.call('HGET', KEYS[1], 'applications') or '0')
