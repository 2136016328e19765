-- Catalog writes, each in one step so they compose with reservations (which change stock inside
-- inventory's scripts at any time). Name and price are plain edits; stock is never overwritten
-- blindly: it moves by a delta (an adjustment commutes with reservations), or is set only when the
-- caller's If-Match still names the product as it is now (revision and stock), so a value read
-- before a reservation cannot undo it. Every write bumps the product's revision.
-- A create that finds the product exactly as it would make it (same name, price and initial
-- stock) answers 'same', so a retried create is not a conflict. An adjustment with an
-- Idempotency-Key records the key and its answer with the delta, in this same step: a retry with
-- the key gets the first answer back ('replayed') and moves nothing.
-- KEYS[1] products set, KEYS[2] product hash, KEYS[3] (adjust with a key only) the key's record
-- ARGV[1] mode:
--   'create' ARGV[2] id, ARGV[3] name, ARGV[4] price, ARGV[5] stock
--   'edit'   ARGV[2] id, ARGV[3] name, ARGV[4] price, ARGV[5] stock or '' (created with it, 0
--            when '', if the product does not exist), ARGV[6] expected '<rev>-<stock>' or '':
--            when given, the edit applies only to the product as it is now; a stock needs it
--   'adjust' ARGV[2] delta, ARGV[3] highest stock allowed, and with KEYS[3]: ARGV[4] the
--            request's fingerprint, ARGV[5] how long the key is kept (s)
-- Every check that can refuse comes before the first write (a script that errs after a write
-- keeps the write, and its error reply would read as "nothing written"): a key's TTL that
-- SET ... EX would refuse is refused first.
-- Replies: {'created'|'updated', rev, stock}, {'same', rev, stock}, {'exists'}, {'not_found'},
-- {'precondition_required'}, {'precondition_failed', rev, stock}, {'out_of_range', stock},
-- {'adjusted'|'replayed', rev, stock, name, price}, {'key_reused'}
local mode = ARGV[1]
local function current()
  local p = redis.call('HMGET', KEYS[2], 'rev', 'stock')
  return tonumber(p[1] or '0'), tonumber(p[2] or '0')
end
if mode == 'adjust' and KEYS[3] then
  local ttl = tonumber(ARGV[5])
  if not ttl or ttl < 1 or ttl > 1e9 or ttl ~= math.floor(ttl) then
    error({err = 'ERR the idempotency key TTL is out of range: ' .. tostring(ARGV[5])})
  end
  local recorded = redis.call('GET', KEYS[3])
  if recorded then
    local first = cjson.decode(recorded)
    if first.fingerprint ~= ARGV[4] then return {'key_reused'} end
    return {'replayed', first.rev, first.stock, first.name, first.price}
  end
end
local exists = redis.call('EXISTS', KEYS[2]) == 1
if mode == 'edit' and not exists and ARGV[6] ~= '' then return {'precondition_failed', 0, 0} end
if mode == 'create' or (mode == 'edit' and not exists) then
  if redis.call('SADD', KEYS[1], ARGV[2]) == 0 and mode == 'create' then
    local p = redis.call('HMGET', KEYS[2], 'name', 'price', 'initial_stock', 'rev', 'stock')
    if p[1] == ARGV[3] and p[2] == ARGV[4] and p[3] == ARGV[5] then
      return {'same', tonumber(p[4] or '0'), tonumber(p[5] or '0')}
    end
    return {'exists'}
  end
  local stock = ARGV[5]
  if stock == '' then stock = '0' end
  redis.call('HSET', KEYS[2], 'id', ARGV[2], 'name', ARGV[3], 'price', ARGV[4], 'stock', stock,
    'rev', 1, 'initial_stock', stock)
  return {'created', 1, tonumber(stock)}
end
if not exists then return {'not_found'} end
local rev, stock = current()
if mode == 'edit' then
  if ARGV[6] ~= '' and ARGV[6] ~= rev .. '-' .. stock then
    return {'precondition_failed', rev, stock}
  end
  if ARGV[5] ~= '' then
    if ARGV[6] == '' then return {'precondition_required'} end
    stock = tonumber(ARGV[5])
    redis.call('HSET', KEYS[2], 'name', ARGV[3], 'price', ARGV[4], 'stock', stock, 'rev', rev + 1)
  else
    redis.call('HSET', KEYS[2], 'name', ARGV[3], 'price', ARGV[4], 'rev', rev + 1)
  end
  return {'updated', rev + 1, stock}
end
if mode == 'adjust' then
  local after = stock + tonumber(ARGV[2])
  if after < 0 or after > tonumber(ARGV[3]) then return {'out_of_range', stock} end
  redis.call('HSET', KEYS[2], 'stock', after, 'rev', rev + 1)
  local p = redis.call('HMGET', KEYS[2], 'name', 'price')
  local name, price = p[1] or '', p[2] or '0'
  if KEYS[3] then
    redis.call('SET', KEYS[3], cjson.encode({fingerprint = ARGV[4], rev = tostring(rev + 1),
      stock = tostring(after), name = name, price = price}), 'EX', ARGV[5])
  end
  return {'adjusted', rev + 1, after, name, price}
end
return {'unknown_mode'}
