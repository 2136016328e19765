-- Moves one pending entry of a group to the dead-letter stream, atomically: the DLQ entry, the
-- group's dead-letter counter, the EventDeadLettered event and the XACK happen together or not
-- at all, so nothing is acknowledged that is not in the DLQ.
-- KEYS[1] stream, KEYS[2] dlq stream, KEYS[3] counters hash, KEYS[4] poison marker
-- ARGV[1] group, ARGV[2] source entry id, ARGV[3] deliveries, ARGV[4] error, ARGV[5] time,
-- ARGV[6] '1' when the entry is undecodable (dead-lettered once whichever group sees it first),
-- ARGV[7] counter field, ARGV[8] n = number of original field names and values,
-- ARGV[9 .. 8+n] the original fields, ARGV[9+n ..] the EventDeadLettered fields (may be none)
local group, source_id = ARGV[1], ARGV[2]
if ARGV[6] == '1' then
  if not redis.call('SET', KEYS[4], group, 'NX', 'EX', 86400) then
    redis.call('XACK', KEYS[1], group, source_id)
    return {'acked', ''}
  end
end
local n = tonumber(ARGV[8])
local entry = {}
for i = 9, 8 + n do entry[#entry + 1] = ARGV[i] end
local meta = {'dlq_group', group, 'dlq_source_id', source_id, 'dlq_deliveries', ARGV[3],
  'dlq_error', ARGV[4], 'dlq_at', ARGV[5]}
for i = 1, #meta do entry[#entry + 1] = meta[i] end
local dlq_id = redis.call('XADD', KEYS[2], '*', unpack(entry))
redis.call('HINCRBY', KEYS[3], ARGV[7], 1)
if #ARGV > 8 + n then
  local event = {}
  for i = 9 + n, #ARGV do event[#event + 1] = ARGV[i] end
  redis.call('XADD', KEYS[1], '*', unpack(event))
end
redis.call('XACK', KEYS[1], group, source_id)
return {'dead_lettered', dlq_id}
