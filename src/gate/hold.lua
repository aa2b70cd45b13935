-- Holds a coupon until restore.lua rebuilds it from PostgreSQL: applications and position reads
-- answer TRYAGAIN (503), and the issuer claims nothing from it.
--
-- KEYS[1] meta
-- ARGV[1] now, in microseconds (when the hold began, for operators)
-- ARGV[2] '1' to hold even though the state is there (it regressed, or the server changed and
--         may have lost its last writes); '0' to hold only when the state is missing
--
-- Returns 1 when the coupon is (now) held, 0 when nothing was done.

if ARGV[2] ~= '1' and redis.call('HEXISTS', KEYS[1], 'stock') == 1 then
  return 0
end
redis.call('HSETNX', KEYS[1], 'recovering', ARGV[1])
return 1
