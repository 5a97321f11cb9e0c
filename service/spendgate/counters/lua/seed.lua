-- Seed ledger hashes from the authoritative ledger store, then read them.
-- KEYS[1] epoch counter; KEYS[2..] ledger hashes.
-- ARGV per ledger (3 each): spent, version, ttl seconds ('' = never expires).
-- Returns spent, reserved per ledger (flat).
local figures = {}
for i = 2, #KEYS do
  local base = (i - 2) * 3
  apply_snapshot(KEYS[1], KEYS[i], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3])
  local current = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  figures[#figures + 1] = current[1] or '0'
  figures[#figures + 1] = current[2] or '0'
end
return figures
