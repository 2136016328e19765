-- Moves a per-order state hash from an expected state to a new one and publishes the event that
-- says so, atomically: the effect is recorded and announced together or not at all. A repeated
-- transition (the same event delivered again) publishes the stored event again, unchanged, so the
-- outcome is announced at least once and happens once.
-- A state hash is only created while its order exists: a late delivery for an order removed by
-- retention changes nothing.
-- KEYS[1] stream, KEYS[2] state hash, KEYS[3] counters hash, KEYS[4] order hash
-- ARGV[1] expected states, comma separated; '-' means "no state yet"
-- ARGV[2] new state, ARGV[3] hash field that stores the event, ARGV[4] event fields as a JSON
-- array ('' for no event), ARGV[5] counter to increment ('' for none),
-- ARGV[6 ..] extra field/value pairs, each set only if not set yet
local state = redis.call('HGET', KEYS[2], 'state') or '-'
if state == '-' and redis.call('EXISTS', KEYS[4]) == 0 then return {'gone', state} end
local expected = false
for candidate in string.gmatch(ARGV[1] .. ',', '([^,]*),') do
  if candidate == state then expected = true end
end
if not expected then
  if state == ARGV[2] and ARGV[3] ~= '' then
    local stored = redis.call('HGET', KEYS[2], ARGV[3])
    if stored then
      redis.call('XADD', KEYS[1], '*', unpack(cjson.decode(stored)))
      return {'repeated', state}
    end
  end
  return {'skipped', state}
end
-- One HSET for the state, the event and, on a new hash, the facts (nothing to keep there).
local fields = {'state', ARGV[2]}
if ARGV[4] ~= '' then
  fields[#fields + 1] = ARGV[3]
  fields[#fields + 1] = ARGV[4]
end
for i = 6, #ARGV, 2 do
  if state == '-' then
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  else
    redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[2], unpack(fields))
if ARGV[4] ~= '' then redis.call('XADD', KEYS[1], '*', unpack(cjson.decode(ARGV[4]))) end
if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[5], 1) end
return {'applied', state}
