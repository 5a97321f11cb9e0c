-- Read only: a request's prior decision (when asked) and the figures of ledgers, in one call.
-- One script rather than a pipeline of a GET and an HMGET per ledger: the client packs and parses
-- one command instead of one per ledger (bench/README.md, thirteenth round).
-- KEYS[1] the decision key when ARGV[1] is '1'; the other KEYS ledger hashes.
-- Returns the stored decision, then spent and reserved of each ledger; '' for what is missing (no
-- decision; a ledger whose hash is missing, which the caller rebuilds). Empty strings, not nil: a
-- Lua false reaches a RESP3 client as a boolean, a RESP2 one as nil.
local first = 1
local out = {''}
if ARGV[1] == '1' then
  out[1] = redis.call('GET', KEYS[1]) or ''
  first = 2
end
for i = first, #KEYS do
  local current = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  out[#out + 1] = current[1] or ''
  out[#out + 1] = current[2] or ''
end
return out
