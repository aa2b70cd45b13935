-- Holds a coupon until restore.lua rebuilds it from PostgreSQL: applications and position reads
-- answer TRYAGAIN (503), and the issuer claims nothing from it.
--
-- KEYS[1] meta
-- ARGV[1] this hold's identity (unique; a restore names the hold it waited for)
-- ARGV[2] '1' to hold even though the state is there (it regressed, or the server changed and
--         may have lost its last writes); '0' to hold only when the state is missing
--
-- Returns the identity of the hold the coupon is under now (this one, or one placed before and
-- not yet lifted), or nil when nothing was done.

if ARGV[2] ~= '1' and redis.call('HEXISTS', KEYS[1], 'stock') == 1 then
  return redis.call('HGET', KEYS[1], 'recovering')
end
redis.call('HSETNX', KEYS[1], 'recovering', ARGV[1])
return redis.call('HGET', KEYS[1], 'recovering')
