-- Compensation for a cancelled order: puts a reservation's stock back once and publishes
-- StockReleased in the same step. With no reservation yet it leaves a tombstone, so a late
-- OrderPlaced for the cancelled order reserves nothing. A late delivery for an order that no
-- longer exists (removed by retention) leaves nothing behind.
-- KEYS[1] stream, KEYS[2] reservation hash, KEYS[3] order hash
-- ARGV[1] product key prefix, ARGV[2] StockReleased fields without payload (JSON array)
local state = redis.call('HGET', KEYS[2], 'state')
if not state then
  if redis.call('EXISTS', KEYS[3]) == 0 then return {'gone'} end
  redis.call('HSET', KEYS[2], 'state', 'cancelled')
  return {'tombstoned'}
end
if state == 'released' then
  local stored = redis.call('HGET', KEYS[2], 'release_event')
  if stored then redis.call('XADD', KEYS[1], '*', unpack(cjson.decode(stored))) end
  return {'repeated'}
end
if state ~= 'reserved' then return {'nothing'} end
local items_json = redis.call('HGET', KEYS[2], 'items')
for _, item in ipairs(cjson.decode(items_json)) do
  local product = ARGV[1] .. item.product_id
  if redis.call('EXISTS', product) == 1 then
    redis.call('HINCRBY', product, 'stock', item.quantity)
  end
end
local event = cjson.decode(ARGV[2])
event[#event + 1] = 'payload'
event[#event + 1] = cjson.encode({items = cjson.decode(items_json)})
local encoded = cjson.encode(event)
redis.call('HSET', KEYS[2], 'state', 'released', 'release_event', encoded)
redis.call('XADD', KEYS[1], '*', unpack(event))
return {'released'}
