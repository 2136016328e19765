-- Moves one pending entry of a group to the dead-letter stream, atomically: the DLQ entry, the
-- group's dead-letter counter, the EventDeadLettered event, the order's flag and the XACK happen
-- together or not at all, so nothing is acknowledged that is not in the DLQ, and no dead letter
-- of an order goes unseen: the order's hash counts its unresolved dead letters (`dead_letters`),
-- the order joins the set of orders with dead letters, and it leaves the finished set so the
-- retention sweep keeps it until the dead letter is resolved (resolve_dead_letter.lua). An order
-- that does not exist (removed, or an id made up by a malformed entry) gets no state.
-- KEYS[1] stream, KEYS[2] dlq stream, KEYS[3] counters hash, KEYS[4] poison marker,
-- KEYS[5] order hash, KEYS[6] the order's unresolved dead letters, KEYS[7] orders with dead
-- letters, KEYS[8] finished orders
-- ARGV[1] group, ARGV[2] source entry id, ARGV[3] deliveries, ARGV[4] error, ARGV[5] time,
-- ARGV[6] '1' when the entry is undecodable (dead-lettered once whichever group sees it first),
-- ARGV[7] counter field, ARGV[8] order id ('' when unknown), ARGV[9] the dead letter's member
-- ('<group> <event_id>'), ARGV[10] n = number of original field names and values,
-- ARGV[11 .. 10+n] the original fields, ARGV[11+n ..] the EventDeadLettered fields (may be none)
local group, source_id = ARGV[1], ARGV[2]
if ARGV[6] == '1' then
  if not redis.call('SET', KEYS[4], group, 'NX', 'EX', 86400) then
    redis.call('XACK', KEYS[1], group, source_id)
    return {'acked', ''}
  end
end
local n = tonumber(ARGV[10])
local entry = {}
for i = 11, 10 + n do entry[#entry + 1] = ARGV[i] end
local meta = {'dlq_group', group, 'dlq_source_id', source_id, 'dlq_deliveries', ARGV[3],
  'dlq_error', ARGV[4], 'dlq_at', ARGV[5]}
for i = 1, #meta do entry[#entry + 1] = meta[i] end
local dlq_id = redis.call('XADD', KEYS[2], '*', unpack(entry))
redis.call('HINCRBY', KEYS[3], ARGV[7], 1)
if ARGV[8] ~= '' and redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('SADD', KEYS[6], ARGV[9])
  redis.call('HSET', KEYS[5], 'dead_letters', redis.call('SCARD', KEYS[6]))
  redis.call('SADD', KEYS[7], ARGV[8])
  redis.call('ZREM', KEYS[8], ARGV[8])
end
if #ARGV > 10 + n then
  publish_event(KEYS[1], ARGV, 11 + n, #ARGV)
end
redis.call('XACK', KEYS[1], group, source_id)
return {'dead_lettered', dlq_id}
