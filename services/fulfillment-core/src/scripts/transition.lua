-- Moves a per-order state hash from an expected state to a new one and publishes the event that
-- says so, atomically: the effect is recorded and announced together or not at all. A repeated
-- transition (the same event delivered again) publishes the stored event again, unchanged, so the
-- outcome is announced at least once and happens once.
-- A state hash is only created while its order exists: a late delivery for an order removed by
-- retention changes nothing. Guards are other state hashes of the same order that must be in one
-- of their allowed states for the step to apply (notification confirms only a live label, and
-- only when no cancellation was sent).
-- KEYS[1] stream, KEYS[2] state hash, KEYS[3] counters hash, KEYS[4] order hash,
-- KEYS[5 .. 4+g] guard hashes
-- ARGV[1] expected states, ',' before and after each ('-' means "no state yet"), e.g. ',-,charging,'
-- ARGV[2] new state, ARGV[3] hash field that stores the event, ARGV[4] the event's fields as a
-- JSON array, stored for repeats ('' for no event), ARGV[5] counter to increment ('' for none),
-- ARGV[6] g = guards, ARGV[7] f = fact names and values, ARGV[8 .. 7+g] allowed states of each
-- guard hash (as ARGV[1]), ARGV[8+g .. 7+g+f] fact name/value pairs, each set only if not set yet,
-- ARGV[8+g+f ..] the event's fields, flat (published as they are: no JSON decoding on the way)
local function one_of(state, list)
  return string.find(list, ',' .. state .. ',', 1, true) ~= nil
end
local state = redis.call('HGET', KEYS[2], 'state') or '-'
if state == '-' and redis.call('EXISTS', KEYS[4]) == 0 then return {'gone', state} end
if not one_of(state, ARGV[1]) then
  if state == ARGV[2] and ARGV[3] ~= '' then
    local stored = redis.call('HGET', KEYS[2], ARGV[3])
    if stored then
      redis.call('XADD', KEYS[1], '*', unpack(cjson.decode(stored)))
      return {'repeated', state}
    end
  end
  return {'skipped', state}
end
local guards, facts = tonumber(ARGV[6]), tonumber(ARGV[7])
for i = 1, guards do
  local guard_state = redis.call('HGET', KEYS[4 + i], 'state') or '-'
  if not one_of(guard_state, ARGV[7 + i]) then return {'blocked', guard_state} end
end
-- One HSET for the state, the event and, on a new hash, the facts (nothing to keep there).
local fields = {'state', ARGV[2]}
if ARGV[4] ~= '' then
  fields[#fields + 1] = ARGV[3]
  fields[#fields + 1] = ARGV[4]
end
for i = 8 + guards, 7 + guards + facts, 2 do
  if state == '-' then
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  else
    redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[2], unpack(fields))
if ARGV[4] ~= '' then redis.call('XADD', KEYS[1], '*', unpack(ARGV, 8 + guards + facts, #ARGV)) end
if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[5], 1) end
return {'applied', state}
