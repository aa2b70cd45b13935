-- Rebuilds a held coupon from what PostgreSQL persisted, in one step: the meta, the queue with
-- the persisted positions and scores, ISSUED statuses, the issued counter and the score
-- watermark. Nothing is pending or in flight afterwards: every persisted winner is done.
--
-- KEYS[1] meta, KEYS[2] seq, KEYS[3] queue, KEYS[4] pending, KEYS[5] inflight, KEYS[6] status
-- ARGV[1] how many meta field/value pairs follow, then those pairs,
-- then triples: position, user, score (microseconds), in ascending position.
--
-- A position with no persisted row (its winner was lost with Redis' memory before it was
-- published) keeps a placeholder member, '~lost:<position>': ranks then still equal the
-- persisted positions, the lost winner's unit of stock stays spent (the cap holds), and new
-- applicants continue after the last position. '~' sorts after every digit, so a placeholder
-- given its predecessor's score ranks right after it.
--
-- Returns the number of winners restored, or -1 when the coupon was not held (restored by
-- another instance already, or never lost).

if redis.call('HEXISTS', KEYS[1], 'stock') == 1 or redis.call('HEXISTS', KEYS[1], 'recovering') == 0 then
  return -1
end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6])

local pairs_count = tonumber(ARGV[1])
local fields = {}
for i = 2, 1 + pairs_count * 2 do
  fields[#fields + 1] = ARGV[i]
end

local restored, expected, last_score = 0, 1, '0'
for i = 2 + pairs_count * 2, #ARGV, 3 do
  local position, user, score = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
  while expected < position do
    redis.call('ZADD', KEYS[3], last_score, string.format('~lost:%010d', expected))
    expected = expected + 1
  end
  redis.call('ZADD', KEYS[3], score, user)
  redis.call('HSET', KEYS[6], user, 'ISSUED')
  restored, expected, last_score = restored + 1, position + 1, score
end

-- New scores must stay above every restored one, whatever Redis' clock says now.
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(last_score) > seq then
  redis.call('SET', KEYS[2], last_score)
end
if #fields > 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
end
redis.call('HSET', KEYS[1], 'issued', restored)
redis.call('HDEL', KEYS[1], 'recovering')
return restored
