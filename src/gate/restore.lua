-- Rebuilds a held coupon in one step from what PostgreSQL persisted and what Redis still holds,
-- then lifts the hold. Run only after every send that could have been in flight has landed and
-- been consumed (see ops::reconcile), so PostgreSQL holds every published winner.
--
-- KEYS[1] meta, KEYS[2] seq, KEYS[3] queue, KEYS[4] pending, KEYS[5] inflight, KEYS[6] status,
-- KEYS[7] told (user -> "position:score": tickets the instances told and still remember,
-- written back while the coupon was held; see gate::told), KEYS[8] lost (user ->
-- "position:score": told winners no restore could give a place; kept across restores)
-- ARGV[1] the hold this restore waited out (hold.lua): any other hold is left alone
-- ARGV[2] positions known spent: the highest position ever seen handed out (PostgreSQL keeps
--         it, see ops::reconcile); every position up to it stays taken
-- ARGV[3] how many meta field/value pairs follow, then those pairs (stock among them),
-- then triples: position, user, score (microseconds), in ascending position.
--
-- The new line, position by position:
-- * a persisted winner keeps its persisted position (PostgreSQL is the record);
-- * a winner Redis still holds that PostgreSQL does not (admitted, not yet published), or that
--   an instance remembers telling (Redis lost it), keeps the position it was told when that
--   position is free; after a regression (a failover that
--   lost writes) its position may belong to someone persisted, and it moves behind the line;
-- * a position nobody holds keeps a placeholder member, '~lost:<position>': its winner was lost
--   with Redis' memory before being published. Ranks then still equal persisted positions, the
--   lost winner's unit of stock stays spent (the cap holds), and newcomers continue after.
-- Scores are made strictly increasing along the line, so ranks follow it.
--
-- Returns {persisted, requeued, dropped, lost}: winners written back as ISSUED, Redis-only
-- winners kept (pending again with their status, or FAILED as they were), Redis-only winners
-- who no longer fit the stock (only after a regression with unreplicated admissions; they are
-- recorded in KEYS[8] with the place they were told, and their position answer says LOST),
-- and placeholders. {-1} when the coupon is not under that hold (another instance restored it, or
-- a newer hold came after it, whose own settle this restore did not wait out).

if redis.call('HGET', KEYS[1], 'recovering') ~= ARGV[1] then
  return {-1}
end

local spent = tonumber(ARGV[2])
local pairs_count = tonumber(ARGV[3])
local fields, stock = {}, nil
for i = 4, 3 + pairs_count * 2, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  if ARGV[i] == 'stock' then
    stock = tonumber(ARGV[i + 1])
  end
end

local persisted, persisted_users, last_position = {}, {}, 0
for i = 4 + pairs_count * 2, #ARGV, 3 do
  local position = tonumber(ARGV[i])
  persisted[position] = {ARGV[i + 1], tonumber(ARGV[i + 2])}
  persisted_users[ARGV[i + 1]] = true
  last_position = position
end

-- What Redis still holds that PostgreSQL does not, by the position it was told.
local held, old_status = {}, {}
local old = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
for i = 1, #old, 2 do
  local user = old[i]
  if string.sub(user, 1, 6) ~= '~lost:' and not persisted_users[user] then
    held[#held + 1] = {user, tonumber(old[i + 1]), (i + 1) / 2}
    old_status[user] = redis.call('HGET', KEYS[6], user)
  end
end

-- Positions handed out before the loss stay taken, persisted or not: a winner told one of them
-- may exist whom nobody holds any more, and no second user is ever told the same place.
local last_spent = last_position
if spent > last_spent then
  last_spent = spent
end
if stock and last_spent > stock then
  last_spent = stock
end

-- Tickets an instance remembers telling, of winners Redis no longer holds: their places were
-- handed out, so they are spent too.
local known = {}
for _, winner in ipairs(held) do
  known[winner[1]] = true
end
local told = redis.call('HGETALL', KEYS[7])
for i = 1, #told, 2 do
  local user = told[i]
  local position, score = string.match(told[i + 1], '^(%d+):(%d+)$')
  position, score = tonumber(position), tonumber(score)
  if position and not persisted_users[user] and not known[user] then
    held[#held + 1] = {user, score, position}
    known[user] = true
    if position > last_spent and (not stock or position <= stock) then
      last_spent = position
    end
  end
end
-- By position; two users told the same position (only after a loss with
-- APP_REDIS__ACK_REPLICAS=0): the one who arrived first keeps it.
table.sort(held, function(a, b)
  if a[3] ~= b[3] then
    return a[3] < b[3]
  end
  return a[2] < b[2]
end)

local line, behind = {}, {}
local by_position = {}
for _, winner in ipairs(held) do
  local position = winner[3]
  if position <= last_spent and persisted[position] == nil and by_position[position] == nil then
    by_position[position] = winner
  else
    behind[#behind + 1] = winner
  end
end
for position = 1, last_spent do
  local w = persisted[position] or by_position[position]
  if w then
    line[position] = {w[1], w[2], persisted[position] ~= nil}
  else
    line[position] = {string.format('~lost:%010d', position), 0, false}
  end
end
for _, winner in ipairs(behind) do
  line[#line + 1] = {winner[1], winner[2], false, winner[3]}
end

redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
local count, requeued, dropped, lost, last_score = 0, 0, 0, 0, 0
-- The per-status counts (see counts.lua), rebuilt with the statuses they count; ISSUED's is
-- `count`, written as `issued`.
local counted = {ADMITTED = 0, PUBLISHED = 0, FAILED = 0}
for position, w in ipairs(line) do
  local user, score, is_persisted = w[1], w[2], w[3]
  if stock and position > stock then
    -- Told 202 by a server that lost the write's replication (APP_REDIS__ACK_REPLICAS=0), and
    -- an earlier arrival or a persisted winner holds that place: the user hears LOST there.
    redis.call('HSET', KEYS[8], user, string.format('%d:%.0f', w[4], w[2]))
    dropped = dropped + 1
  else
    if score <= last_score then
      score = last_score + 1
    end
    last_score = score
    redis.call('ZADD', KEYS[3], string.format('%.0f', score), user)
    if is_persisted then
      redis.call('HSET', KEYS[6], user, 'ISSUED')
      count = count + 1
    elseif string.sub(user, 1, 6) == '~lost:' then
      lost = lost + 1
    else
      if old_status[user] == 'FAILED' then
        redis.call('HSET', KEYS[6], user, 'FAILED')
        counted.FAILED = counted.FAILED + 1
      else
        -- Published, yet no row after the drain: published again. Its status stays PUBLISHED
        -- (statuses never go back); the issuer claims from pending whatever the status.
        local status = old_status[user] == 'PUBLISHED' and 'PUBLISHED' or 'ADMITTED'
        redis.call('HSET', KEYS[6], user, status)
        counted[status] = counted[status] + 1
        redis.call('RPUSH', KEYS[4], user)
      end
      requeued = requeued + 1
    end
  end
end

-- New scores must stay above every restored one, whatever Redis' clock says now.
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
if last_score > seq then
  redis.call('SET', KEYS[2], string.format('%.0f', last_score), 'KEEPTTL')
end
if #fields > 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
end
redis.call('HSET', KEYS[1], 'issued', count, 'lost', lost, 'count:ADMITTED', counted.ADMITTED,
  'count:PUBLISHED', counted.PUBLISHED, 'count:FAILED', counted.FAILED)
redis.call('HDEL', KEYS[1], 'recovering')
-- A coupon held at its creation carried a time to live until its row was committed.
redis.call('PERSIST', KEYS[1])
return {count, requeued, dropped, lost}
