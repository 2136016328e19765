-- Compensation for a cancelled order: puts a reservation's stock back once and records
-- StockReleased with it in the catalog's ledger. With no reservation yet it leaves a tombstone,
-- so a late OrderPlaced for the cancelled order reserves nothing.
-- With one Redis and plain names the script also publishes StockReleased in the same step, and
-- leaves nothing behind for an order that no longer exists (removed by retention): KEYS then go on
-- with the stream and the order hash. Otherwise the caller publishes the stored event on the
-- order's partition afterwards, and checked the order first.
-- The product hashes are those of the reservation's items, read by the caller beforehand (they
-- never change once reserved); one missing from KEYS is an error, never a key built here.
-- KEYS[1] ledger hash, KEYS[2 .. 1+n] product hashes, then optionally KEYS[2+n] stream,
-- KEYS[3+n] order hash
-- ARGV[1] n, ARGV[2 .. 1+n] the product ids of KEYS[2 ..], ARGV[2+n] StockReleased fields
-- without payload (JSON array)
-- Replies {'released', event}, {'repeated', event or ''}, {'tombstoned', ''}, {'nothing', ''},
-- {'gone', ''}, {'stale_items', ''} (KEYS do not cover the items: read again)
local n = tonumber(ARGV[1])
local publish = #KEYS > 1 + n
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  if publish and redis.call('EXISTS', KEYS[3 + n]) == 0 then return {'gone', ''} end
  redis.call('HSET', KEYS[1], 'state', 'cancelled')
  return {'tombstoned', ''}
end
if state == 'released' then
  local stored = redis.call('HGET', KEYS[1], 'release_event')
  if stored and publish then
    local fields = cjson.decode(stored)
    publish_event(KEYS[2 + n], fields, 1, #fields)
  end
  return {'repeated', stored or ''}
end
if state ~= 'reserved' then return {'nothing', ''} end
local items_json = redis.call('HGET', KEYS[1], 'items')
local items = cjson.decode(items_json)
local product_key = {}
for i = 1, n do product_key[ARGV[1 + i]] = KEYS[1 + i] end
for _, item in ipairs(items) do
  if not product_key[item.product_id] then return {'stale_items', ''} end
end
for _, item in ipairs(items) do
  local product = product_key[item.product_id]
  if redis.call('EXISTS', product) == 1 then
    redis.call('HINCRBY', product, 'stock', item.quantity)
  end
end
local event = cjson.decode(ARGV[2 + n])
event[#event + 1] = 'payload'
event[#event + 1] = cjson.encode({items = items})
local encoded = cjson.encode(event)
redis.call('HSET', KEYS[1], 'state', 'released', 'release_event', encoded)
if publish then publish_event(KEYS[2 + n], event, 1, #event) end
return {'released', encoded}
