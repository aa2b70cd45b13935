-- Holds a coupon whose Redis state is gone, until restore.lua rebuilds it: applications and
-- position reads answer TRYAGAIN (503) instead of admitting into an empty queue.
--
-- KEYS[1] meta
-- ARGV[1] now, in microseconds (when the hold began, for operators)
--
-- Returns 1 when the coupon is (now) held, 0 when its state is present and nothing was done.

if redis.call('HEXISTS', KEYS[1], 'stock') == 1 then
  return 0
end
redis.call('HSETNX', KEYS[1], 'recovering', ARGV[1])
return 1
