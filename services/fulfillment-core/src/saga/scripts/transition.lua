-- Moves a per-order state hash from an expected state to a new one and publishes the event that
-- says so, atomically: the effect is recorded and announced together or not at all. A repeated
-- transition (the same event delivered again) publishes the event again, unchanged, so the
-- outcome is announced at least once and happens once. The state hash keeps the id of the entry
-- it published (field '<ARGV[3]>_entry'), not a copy: a repeat publishes that entry's fields
-- again while the stream holds it; once trimmed, every group has acknowledged it and there is
-- nothing to repeat. A hash written by an earlier version keeps the event's fields as a JSON
-- array under ARGV[3] itself, and a repeat publishes those; an earlier version finding only the
-- id (a rolling upgrade, a rollback) sees no stored event and skips, as it would have anyway.
-- A state hash is only created while its order exists: a late delivery for an order removed by
-- retention changes nothing. Guards are other state hashes of the same order that must be in one
-- of their allowed states for the step to apply (notification confirms only a live label, and
-- only when no cancellation was sent).
-- With projection arguments, the published event is also recorded in the order's status and
-- history by project() (project.lua, prepended), with the entry id XADD gave it.
-- KEYS[1] stream, KEYS[2] state hash, KEYS[3] counters hash, KEYS[4] order hash,
-- KEYS[5 .. 4+g] guard hashes, KEYS[5+g ..] project()'s keys (when projecting)
-- ARGV[1] expected states, ',' before and after each ('-' means "no state yet"), e.g. ',-,charging,'
-- ARGV[2] new state, ARGV[3] the hash field of the event (its entry's id goes in
-- '<ARGV[3]>_entry'), ARGV[4] '1' when the step publishes an event ('' for none), ARGV[5] counter
-- to increment ('' for none),
-- ARGV[6] g = guards, ARGV[7] f = fact names and values, ARGV[8] p = projection arguments (0 or
-- 10), ARGV[9 .. 8+g] allowed states of each guard hash (as ARGV[1]), ARGV[9+g .. 8+g+f] fact
-- name/value pairs, each set only if not set yet, ARGV[9+g+f .. 8+g+f+p] project()'s nine
-- arguments (its history entry JSON cut before the stream id) and the rest of that JSON,
-- ARGV[9+g+f+p ..] the event's fields, flat (published as they are: no JSON decoding on the way)
-- Replies {outcome, state, then project()'s reply when it ran}
local function one_of(state, list)
  return string.find(list, ',' .. state .. ',', 1, true) ~= nil
end
local state = redis.call('HGET', KEYS[2], 'state') or '-'
if state == '-' and redis.call('EXISTS', KEYS[4]) == 0 then return {'gone', state} end
if not one_of(state, ARGV[1]) then
  if state == ARGV[2] and ARGV[3] ~= '' then
    local entry_id, fields = redis.call('HGET', KEYS[2], ARGV[3] .. '_entry'), nil
    if entry_id then
      local entry = redis.call('XRANGE', KEYS[1], entry_id, entry_id)[1]
      fields = entry and entry[2]
    else
      local stored = redis.call('HGET', KEYS[2], ARGV[3])
      fields = stored and cjson.decode(stored)
    end
    if entry_id or fields then
      if fields then publish_event(KEYS[1], fields, 1, #fields) end
      return {'repeated', state}
    end
  end
  return {'skipped', state}
end
local guards, facts, p = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
for i = 1, guards do
  local guard_state = redis.call('HGET', KEYS[4 + i], 'state') or '-'
  if not one_of(guard_state, ARGV[8 + i]) then return {'blocked', guard_state} end
end
-- One HSET for the state, the published entry's id and, on a new hash, the facts (nothing to
-- keep there). The entry is added first, for its id; once a script has written, Redis runs its
-- every write (no out-of-memory refusal halfway), so the two land together.
local fields, id = {'state', ARGV[2]}, nil
if ARGV[4] ~= '' then
  id = publish_event(KEYS[1], ARGV, 9 + guards + facts + p, #ARGV)
  fields[#fields + 1] = ARGV[3] .. '_entry'
  fields[#fields + 1] = id
end
for i = 9 + guards, 8 + guards + facts, 2 do
  if state == '-' then
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  else
    redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[2], unpack(fields))
if ARGV[5] ~= '' then count(KEYS[3], ARGV[5], 1) end
if not id or p == 0 then return {'applied', state} end
local at = 8 + guards + facts
local project_keys, project_args = {unpack(KEYS, 5 + guards)}, {unpack(ARGV, at + 1, at + 9)}
project_args[3] = project_args[3] .. id .. ARGV[at + 10]
local projected = project(project_keys, project_args)
return {'applied', state, projected[1], projected[2], projected[3]}
