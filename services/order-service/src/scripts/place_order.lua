-- Writes an order and its OrderPlaced event together: no order without its event, no event
-- without its order. With an Idempotency-Key, a key already used returns the first order instead.
-- The event is recorded in the order's history here too, with the entry id XADD gave it (what the
-- projection does for OrderPlaced; the entry is marked `projected`, and the order group skips it).
-- KEYS[1] stream, KEYS[2] order hash, KEYS[3] orders index, KEYS[4] PENDING index,
-- KEYS[5] idempotency key, KEYS[6] counters hash, KEYS[7] history hash
-- ARGV[1] order id, ARGV[2] '1' when an Idempotency-Key was given, ARGV[3] request
-- fingerprint, ARGV[4] key TTL (s), ARGV[5] n = count of order field names and values,
-- ARGV[6] event_id, ARGV[7] and ARGV[8] the history entry's JSON before and after its stream id,
-- ARGV[9 .. 8+n] order fields, ARGV[9+n ..] event fields
-- Every check that can refuse comes before the first write (a script that errs after a write
-- keeps the write, and its error reply would read as "nothing written"): a key's TTL that
-- SET ... EX would refuse is refused first.
if ARGV[2] == '1' then
  local ttl = tonumber(ARGV[4])
  if not ttl or ttl < 1 or ttl > 1e9 or ttl ~= math.floor(ttl) then
    error({err = 'ERR the idempotency key TTL is out of range: ' .. tostring(ARGV[4])})
  end
  local existing = redis.call('GET', KEYS[5])
  if existing then
    -- Stored as '<fingerprint>|<order id>'; the fingerprint (the request's JSON) may itself hold
    -- '|', the order id (a UUID) never does, so the last '|' is the separator.
    local fingerprint, order_id = string.match(existing, '^(.*)|([^|]*)$')
    return {'existing', order_id, fingerprint}
  end
end
local n = tonumber(ARGV[5])
local order = {unpack(ARGV, 9, 8 + n)}
local id = publish_event(KEYS[1], ARGV, 9 + n, #ARGV)
-- The index member sorts like the stream: the OrderPlaced entry id, zero-padded, then the order id.
local ms, seq = string.match(id, '(%d+)-(%d+)')
local member = string.rep('0', 15 - #ms) .. ms .. '-' .. string.rep('0', 10 - #seq) .. seq .. ':' .. ARGV[1]
order[#order + 1] = 'index_member'
order[#order + 1] = member
redis.call('HSET', KEYS[2], unpack(order))
redis.call('ZADD', KEYS[3], 0, member)
redis.call('ZADD', KEYS[4], 0, member)
count(KEYS[6], 'orders_placed', 1)
redis.call('HSETNX', KEYS[7], ARGV[6], ARGV[7] .. id .. ARGV[8])
if ARGV[2] == '1' then
  redis.call('SET', KEYS[5], ARGV[3] .. '|' .. ARGV[1], 'EX', ARGV[4])
end
return {'created', id, ''}
