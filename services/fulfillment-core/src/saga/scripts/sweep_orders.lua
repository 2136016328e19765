-- Removes finished orders whose retention has passed: the order, its history, each service's
-- state of it and its index entries, together per order, all in the order's partition. The
-- order's lines in the catalog's and the test gateway's ledgers live in other slots: each removed
-- order joins the partition's outbox of swept orders, and the same pass removes those lines
-- (retention.rs). An order with unresolved dead letters is kept (it leaves the finished set;
-- resolving its last dead letter puts it back).
-- KEYS[1] finished orders (sorted set), KEYS[2] orders index, KEYS[3] swept orders (the outbox),
-- KEYS[4 .. 3+s] the status indexes (each ends in ':status:<STATUS>'), then ARGV[2] keys per
-- order (the order hash first), in the order of the ids
-- ARGV[1] cutoff (ms; finished at or before it), ARGV[2] keys per order, ARGV[3] s = status
-- indexes, ARGV[4 ..] order ids
local per, statuses = tonumber(ARGV[2]), tonumber(ARGV[3])
local function status_index(status)
  local suffix = ':status:' .. status
  for i = 4, 3 + statuses do
    if string.sub(KEYS[i], -#suffix) == suffix then return KEYS[i] end
  end
  return nil
end
local swept = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local finished = redis.call('ZSCORE', KEYS[1], id)
  if finished and tonumber(finished) <= tonumber(ARGV[1]) then
    local first = 4 + statuses + (i - 4) * per
    local o = redis.call('HMGET', KEYS[first], 'status', 'index_member', 'dead_letters')
    if tonumber(o[3] or '0') > 0 then
      redis.call('ZREM', KEYS[1], id)
    else
      if o[2] then
        redis.call('ZREM', KEYS[2], o[2])
        local index = o[1] and status_index(o[1])
        if index then redis.call('ZREM', index, o[2]) end
      end
      redis.call('DEL', unpack(KEYS, first, first + per - 1))
      redis.call('SADD', KEYS[3], id)
      redis.call('ZREM', KEYS[1], id)
      swept = swept + 1
    end
  end
end
return swept
