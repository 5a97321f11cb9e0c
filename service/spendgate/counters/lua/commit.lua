-- Store a request's decision (first writer wins) and reserve its amount on every held ledger,
-- all or nothing.
-- KEYS[1] decision, KEYS[2] hold, KEYS[3] expiry zset, KEYS[4..] held ledger hashes.
-- ARGV[1] decision JSON, ARGV[2] decision ttl seconds, ARGV[3] amount, ARGV[4] hold expiry ms,
-- ARGV[5] request id, then per ledger (3 each): ledger id, limit ('' = none), ttl ('' = none).
-- Returns {'duplicate', stored JSON} | {'missing', ids...} | {'committed', figures...} |
-- {'no_room', count, ids without room..., figures...}, where figures are spent and reserved of every
-- held ledger, in KEYS order, before this request's reservation.
local stored = redis.call('GET', KEYS[1])
if stored then
  return {'duplicate', stored}
end
local count = #KEYS - 3
if count == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return {'committed'}
end

local amount = ARGV[3]
local missing = {}
for i = 1, count do
  if redis.call('EXISTS', KEYS[3 + i]) == 0 then
    missing[#missing + 1] = ARGV[5 + (i - 1) * 3 + 1]
  end
end
if #missing > 0 then
  return {'missing', unpack(missing)}
end

local full, epochs, figures = {}, {}, {}
for i = 1, count do
  local base = 5 + (i - 1) * 3
  local current = redis.call('HMGET', KEYS[3 + i], 'spent', 'reserved', 'epoch')
  epochs[i] = current[3] or ''
  figures[#figures + 1] = current[1] or '0'
  figures[#figures + 1] = current[2] or '0'
  local limit = ARGV[base + 2]
  if limit ~= '' and not has_room(current[1] or '0', current[2] or '0', amount, limit) then
    full[#full + 1] = ARGV[base + 1]
  end
end
if #full > 0 then
  local reply = {'no_room', tostring(#full)}
  for _, id in ipairs(full) do
    reply[#reply + 1] = id
  end
  for _, figure in ipairs(figures) do
    reply[#reply + 1] = figure
  end
  return reply
end

local hold = {'amount', amount}
for i = 1, count do
  local base = 5 + (i - 1) * 3
  local key = KEYS[3 + i]
  if amount ~= '0' then
    redis.call('HINCRBY', key, 'reserved', amount)
  end
  if ARGV[base + 3] == '' then
    redis.call('PERSIST', key)
  else
    redis.call('EXPIRE', key, ARGV[base + 3])
  end
  hold[#hold + 1] = 'e:' .. ARGV[base + 1]
  hold[#hold + 1] = epochs[i]
end
redis.call('HSET', KEYS[2], unpack(hold))
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {'committed', unpack(figures)}
