-- Store a denial decided on figures a replica remembered (first writer wins), only if every ledger
-- it was decided on still has those figures: the check and the commit in one round trip.
-- KEYS[1] decision, KEYS[2..] ledger hashes.
-- ARGV[1] decision JSON, ARGV[2] decision ttl seconds, then per ledger (2 each): spent, reserved.
-- Returns {'duplicate', stored JSON} | {'committed'} | {'changed', figures...}, where figures are spent
-- and reserved of every ledger, in KEYS order ('' and '' for a hash that no longer exists).
local stored = redis.call('GET', KEYS[1])
if stored then
  return {'duplicate', stored}
end

local figures, changed = {}, false
for i = 2, #KEYS do
  local current = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  local spent, reserved = current[1] or '', current[2] or '0'
  if spent == '' then
    reserved = ''
  end
  if spent ~= ARGV[1 + (i - 1) * 2] or reserved ~= ARGV[2 + (i - 1) * 2] then
    changed = true
  end
  figures[#figures + 1] = spent
  figures[#figures + 1] = reserved
end
if changed then
  return {'changed', unpack(figures)}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {'committed'}
