-- Spendgate counters: helpers shared by every script (prepended by redis_counters.py, since a
-- Redis script cannot include another).
--
-- Money is non-negative integer nano-USD kept as decimal strings. Lua numbers are doubles,
-- exact only below 2^53 (about 9.0e15 nanos, 9 million USD), so no amount is ever turned
-- into a Lua number whole: comparisons split each value into base-1e9 limbs (hi = all
-- digits but the last nine, lo = the last nine), which is exact below 9e24. Additions are
-- left to HINCRBY, whose arithmetic is Redis' exact signed 64-bit integers (it refuses to
-- overflow rather than round). The ledger's BIGINT columns share that 2^63 bound.
--
-- Ledger hash  <prefix>:l:<ledger id>   spent, reserved, version, epoch
-- Hold hash    <prefix>:h:<request id>  amount, and e:<ledger id> = that ledger's epoch when reserved
-- Expiry zset  <prefix>:exp             request ids scored by expiry (ms since the epoch)

local function limbs(value)
  if not string.match(value, '^%d+$') then
    error('spendgate: not a non-negative integer: ' .. tostring(value))
  end
  local n = string.len(value)
  if n <= 9 then
    return 0, tonumber(value)
  end
  return tonumber(string.sub(value, 1, n - 9)), tonumber(string.sub(value, n - 8))
end

local function add(a_hi, a_lo, b_hi, b_lo)
  local hi, lo = a_hi + b_hi, a_lo + b_lo
  if lo >= 1000000000 then
    return hi + 1, lo - 1000000000
  end
  return hi, lo
end

-- -1, 0 or 1 as a is below, equal to or above b.
local function compare(a_hi, a_lo, b_hi, b_lo)
  if a_hi ~= b_hi then
    return a_hi < b_hi and -1 or 1
  end
  if a_lo ~= b_lo then
    return a_lo < b_lo and -1 or 1
  end
  return 0
end

-- The admission rule: spent + reserved + amount <= limit, or with amount 0, spent + reserved < limit.
local function has_room(spent, reserved, amount, limit)
  local s_hi, s_lo = limbs(spent)
  local r_hi, r_lo = limbs(reserved)
  local a_hi, a_lo = limbs(amount)
  local l_hi, l_lo = limbs(limit)
  local hi, lo = add(s_hi, s_lo, r_hi, r_lo)
  hi, lo = add(hi, lo, a_hi, a_lo)
  local order = compare(hi, lo, l_hi, l_lo)
  if amount == '0' then
    return order < 0
  end
  return order <= 0
end

-- A ledger hash's epoch: unique per creation, so a hold taken on an earlier incarnation of
-- the hash (deleted, evicted, flushed) never releases on the rebuilt one.
local function new_epoch(counter_key)
  local now = redis.call('TIME')
  return redis.call('INCR', counter_key) .. '@' .. now[1] .. '.' .. now[2]
end

-- Bring a ledger hash to a committed snapshot: create it (nothing reserved, a new epoch) when
-- absent; otherwise replace spent only with a newer version. Never adds, so racing replicas
-- and replayed snapshots cannot count a cost twice, and an older snapshot never wins.
local function apply_snapshot(counter_key, key, spent, version, ttl)
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'spent', spent, 'reserved', '0', 'version', version, 'epoch', new_epoch(counter_key))
    if ttl ~= '' then
      redis.call('EXPIRE', key, ttl)
    end
    return
  end
  local current = redis.call('HGET', key, 'version')
  if not current or tonumber(current) < tonumber(version) then
    redis.call('HSET', key, 'spent', spent, 'version', version)
  end
end

-- Take amount off a ledger's reserved figure, never below zero.
local function unreserve(key, reserved, amount)
  if amount == '0' then
    return
  end
  local a_hi, a_lo = limbs(amount)
  local r_hi, r_lo = limbs(reserved or '0')
  if compare(a_hi, a_lo, r_hi, r_lo) <= 0 then
    redis.call('HINCRBY', key, 'reserved', '-' .. amount)
  else
    redis.call('HSET', key, 'reserved', '0')
  end
end

-- Release a request's hold exactly once: 1 if it was held, 0 if already released (or never).
-- Only ledgers whose epoch still matches are touched: a rebuilt hash never held this amount.
local function release(prefix, request_id)
  local hold_key = prefix .. ':h:' .. request_id
  redis.call('ZREM', prefix .. ':exp', request_id)
  local fields = redis.call('HGETALL', hold_key)
  if #fields == 0 then
    return 0
  end
  local amount = '0'
  for i = 1, #fields, 2 do
    if fields[i] == 'amount' then
      amount = fields[i + 1]
    end
  end
  for i = 1, #fields, 2 do
    local field = fields[i]
    if string.sub(field, 1, 2) == 'e:' then
      local key = prefix .. ':l:' .. string.sub(field, 3)
      local current = redis.call('HMGET', key, 'epoch', 'reserved')
      if current[1] == fields[i + 1] then
        unreserve(key, current[2], amount)
      end
    end
  end
  redis.call('DEL', hold_key)
  return 1
end
