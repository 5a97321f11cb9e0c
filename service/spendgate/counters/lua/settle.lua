-- After a record committed: release the request's hold (once) and bring each charged ledger's
-- spent up to the committed snapshot.
-- KEYS[1] epoch counter; KEYS[2..] ledger hashes of the snapshots.
-- ARGV[1] key prefix, ARGV[2] request id, ARGV[3] ttl seconds for a hash created here,
-- then per snapshot (2 each): spent, version.
-- Returns spent and reserved of each snapshot ledger after it (KEYS order).
release(ARGV[1], ARGV[2])
for i = 2, #KEYS do
  local base = 3 + (i - 2) * 2
  apply_snapshot(KEYS[1], KEYS[i], ARGV[base + 1], ARGV[base + 2], ARGV[3])
end
local figures = {}
for i = 2, #KEYS do
  local current = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  figures[#figures + 1] = current[1] or '0'
  figures[#figures + 1] = current[2] or '0'
end
return figures
