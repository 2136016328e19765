-- Reserves every item of one order, all or nothing, once per order however often OrderPlaced is
-- delivered, and records the outcome (StockReserved or StockFailed) with the reservation in the
-- catalog's ledger. A repeated delivery gets the stored outcome back; an order cancelled before
-- its reservation is never reserved.
-- With one Redis and plain names (the ledger is then the order's reservation hash) the script
-- also publishes the outcome in the same step, records a StockReserved in the order's status and
-- history with project() (project.lua, prepended; the entry is marked `projected`), and reserves
-- nothing for an order removed by retention (a late delivery): KEYS then go on with the stream,
-- the counters, the order hash and project()'s keys. The ledger then keeps the id of the
-- StockReserved entry (field 'event_entry'), not a copy: a repeat publishes that entry's fields
-- again while the stream holds it (once trimmed, every group has acknowledged it). A StockFailed
-- (rare) is kept as a copy under 'event', as is every outcome when the caller publishes.
-- Otherwise the catalog lives in another slot than the order: the caller publishes the stored
-- outcome on the order's partition afterwards (inventory's outbox), and checked the order first.
-- KEYS[1] ledger hash, KEYS[2 .. 1+n] product hashes, then optionally KEYS[2+n] stream,
-- KEYS[3+n] counters hash, KEYS[4+n] order hash, KEYS[5+n ..] project()'s keys
-- ARGV[1] n, ARGV[2 .. 1+n] quantities, ARGV[2+n .. 1+2n] product ids, ARGV[2+2n] items JSON,
-- ARGV[3+2n] StockReserved fields (JSON array, stored; '' when the script publishes),
-- ARGV[4+2n] StockFailed fields without payload, ARGV[5+2n] p = projection arguments (0 or
-- 10), ARGV[6+2n .. 5+2n+p] project()'s nine arguments (its history entry JSON cut before the
-- stream id) and the rest of that JSON,
-- ARGV[6+2n+p ..] StockReserved fields, flat (published as they are)
-- Replies {'reserved', '', event}, {'failed', reason, event}, {'repeated', state, event or ''}
-- (event '' for a StockReserved the script published itself),
-- {'cancelled', '', ''}, {'gone', '', ''}
local n = tonumber(ARGV[1])
local publish = #KEYS > 1 + n
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  if state == 'cancelled' then return {'cancelled', '', ''} end
  local stored = redis.call('HGET', KEYS[1], 'event')
  if publish then
    local fields = stored and cjson.decode(stored)
    local entry_id = not stored and redis.call('HGET', KEYS[1], 'event_entry')
    if entry_id then
      local entry = redis.call('XRANGE', KEYS[2 + n], entry_id, entry_id)[1]
      fields = entry and entry[2]
    end
    if fields then publish_event(KEYS[2 + n], fields, 1, #fields) end
  end
  return {'repeated', state, stored or ''}
end
if publish and redis.call('EXISTS', KEYS[4 + n]) == 0 then return {'gone', '', ''} end
for i = 1, n do
  local stock = redis.call('HGET', KEYS[1 + i], 'stock')
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
    redis.call('HSET', KEYS[1], 'state', 'failed', 'reason', reason, 'event', encoded)
    if publish then publish_event(KEYS[2 + n], event, 1, #event) end
    return {'failed', reason, encoded}
  end
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[1 + i], 'stock', -tonumber(ARGV[1 + i]))
end
local at, p = 5 + 2 * n, tonumber(ARGV[5 + 2 * n])
-- Once a script has written, Redis runs its every write: the entry and the ledger land together.
local id = publish and publish_event(KEYS[2 + n], ARGV, at + 1 + p, #ARGV)
redis.call('HSET', KEYS[1], 'state', 'reserved', 'items', ARGV[2 + 2 * n],
  id and 'event_entry' or 'event', id or ARGV[3 + 2 * n])
if publish then
  count(KEYS[3 + n], 'reservations', 1)
  if p > 0 then
    local project_keys, project_args = {unpack(KEYS, 5 + n)}, {unpack(ARGV, at + 1, at + 9)}
    project_args[3] = project_args[3] .. id .. ARGV[at + 10]
    project(project_keys, project_args)
  end
end
return {'reserved', '', ARGV[3 + 2 * n]}
