-- Reserves every item of one order, all or nothing, once per order however often OrderPlaced is
-- delivered, and publishes StockReserved or StockFailed in the same step. A repeated delivery
-- publishes the stored outcome again (downstream is idempotent); an order cancelled before its
-- reservation is never reserved, and so is an order removed by retention (a late delivery).
-- KEYS[1] stream, KEYS[2] reservation hash, KEYS[3] counters hash, KEYS[4 .. 3+n] product hashes,
-- KEYS[4+n] order hash
-- ARGV[1] n, ARGV[2 .. 1+n] quantities, ARGV[2+n .. 1+2n] product ids, ARGV[2+2n] items JSON,
-- ARGV[3+2n] StockReserved fields (JSON array), ARGV[4+2n] StockFailed fields without payload
local n = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[2], 'state')
if state then
  if state == 'cancelled' then return {'cancelled', ''} end
  local stored = redis.call('HGET', KEYS[2], 'event')
  if stored then redis.call('XADD', KEYS[1], '*', unpack(cjson.decode(stored))) end
  return {'repeated', state}
end
if redis.call('EXISTS', KEYS[4 + n]) == 0 then return {'gone', ''} end
for i = 1, n do
  local stock = redis.call('HGET', KEYS[3 + i], 'stock')
  local reason = nil
  if not stock then
    reason = 'unknown_product'
  elseif tonumber(stock) < tonumber(ARGV[1 + i]) then
    reason = 'insufficient_stock'
  end
  if reason then
    local event = cjson.decode(ARGV[4 + 2 * n])
    event[#event + 1] = 'payload'
    event[#event + 1] = cjson.encode({reason = reason, product_id = ARGV[1 + n + i]})
    local encoded = cjson.encode(event)
    redis.call('HSET', KEYS[2], 'state', 'failed', 'reason', reason, 'event', encoded)
    redis.call('XADD', KEYS[1], '*', unpack(event))
    return {'failed', reason}
  end
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[3 + i], 'stock', -tonumber(ARGV[1 + i]))
end
redis.call('HSET', KEYS[2], 'state', 'reserved', 'items', ARGV[2 + 2 * n], 'event', ARGV[3 + 2 * n])
redis.call('HINCRBY', KEYS[3], 'reservations', 1)
redis.call('XADD', KEYS[1], '*', unpack(cjson.decode(ARGV[3 + 2 * n])))
return {'reserved', ''}
