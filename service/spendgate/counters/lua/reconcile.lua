-- Reconcile ledger hashes with the ledger store and the open holds: report, and in 'fix' mode
-- repair, atomically (so never a read-modify-write race with commit/settle/expire).
-- KEYS[1] epoch counter, KEYS[2] expiry zset (every open hold is in it), KEYS[3..] ledger hashes.
-- ARGV[1] key prefix, ARGV[2] 'check' | 'fix', ARGV[3] '1' to also overwrite a counter that is
-- ahead of the ledger (only when its version is still the one the caller observed), then per
-- ledger (5 each): ledger id, ledger spent, ledger version, observed counter version ('' = none),
-- ttl seconds for a hash created here ('' = never expires).
-- Returns per ledger (8 each): existed ('1'|'0'), spent, reserved, version (before; '' when
-- missing), held (every open hold naming the ledger), orphaned (the part of held on holds taken
-- on an earlier incarnation of the hash), spent after, reserved after.
--
-- Repair rules. spent: replaced by the ledger snapshot when the counter is older (lower version)
-- or has another spent at the same version — never when it is newer, which means a record
-- settled after the snapshot was read. reserved: set to the sum of the open holds naming the
-- ledger; holds taken on an earlier incarnation of the hash are adopted (re-tagged with the
-- current epoch), so their release takes their amount off again. A missing hash is created.

local function text(hi, lo)
  if hi == 0 then
    return string.format('%d', lo)
  end
  return string.format('%d%09d', hi, lo)
end

local prefix, mode, fix_ahead = ARGV[1], ARGV[2], ARGV[3] == '1'
local count = #KEYS - 2
local index = {}
for i = 1, count do
  index[ARGV[3 + (i - 1) * 5 + 1]] = i
end

-- Every open hold naming one of these ledgers: {hold key, epoch, amount} per ledger.
local refs = {}
for i = 1, count do
  refs[i] = {}
end
for _, request_id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local hold_key = prefix .. ':h:' .. request_id
  local fields = redis.call('HGETALL', hold_key)
  local amount = '0'
  for j = 1, #fields, 2 do
    if fields[j] == 'amount' then
      amount = fields[j + 1]
    end
  end
  for j = 1, #fields, 2 do
    if string.sub(fields[j], 1, 2) == 'e:' then
      local i = index[string.sub(fields[j], 3)]
      if i then
        local list = refs[i]
        list[#list + 1] = {hold_key, fields[j + 1], amount}
      end
    end
  end
end

local out = {}
for i = 1, count do
  local base = 3 + (i - 1) * 5
  local ledger_id, spent, version = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local observed, ttl = ARGV[base + 4], ARGV[base + 5]
  local key = KEYS[2 + i]
  local existed = redis.call('EXISTS', key) == 1
  local before = redis.call('HMGET', key, 'spent', 'reserved', 'version', 'epoch')
  local epoch = before[4] or ''

  local h_hi, h_lo, o_hi, o_lo = 0, 0, 0, 0
  for _, ref in ipairs(refs[i]) do
    local a_hi, a_lo = limbs(ref[3])
    h_hi, h_lo = add(h_hi, h_lo, a_hi, a_lo)
    if ref[2] ~= epoch or not existed then
      o_hi, o_lo = add(o_hi, o_lo, a_hi, a_lo)
    end
  end
  local held = text(h_hi, h_lo)

  if mode == 'fix' then
    if not existed then
      epoch = new_epoch(KEYS[1])
      redis.call('HSET', key, 'spent', spent, 'reserved', '0', 'version', version, 'epoch', epoch)
      if ttl ~= '' then
        redis.call('EXPIRE', key, ttl)
      end
    else
      local current = tonumber(before[3] or '') or -1
      local wanted = tonumber(version)
      if current < wanted or (current == wanted and before[1] ~= spent)
          or (fix_ahead and current > wanted and before[3] == observed) then
        redis.call('HSET', key, 'spent', spent, 'version', version)
      end
    end
    for _, ref in ipairs(refs[i]) do
      if ref[2] ~= epoch then
        redis.call('HSET', ref[1], 'e:' .. ledger_id, epoch)
      end
    end
    if redis.call('HGET', key, 'reserved') ~= held then
      redis.call('HSET', key, 'reserved', held)
    end
  end

  local after = redis.call('HMGET', key, 'spent', 'reserved')
  out[#out + 1] = existed and '1' or '0'
  out[#out + 1] = before[1] or ''
  out[#out + 1] = before[2] or ''
  out[#out + 1] = before[3] or ''
  out[#out + 1] = held
  out[#out + 1] = text(o_hi, o_lo)
  out[#out + 1] = after[1] or ''
  out[#out + 1] = after[2] or ''
end
return out
