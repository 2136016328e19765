-- Removes finished orders whose retention has passed: the order, its history, each service's
-- state of it, its index entries and the test gateway's ledger lines, together per order. An
-- order with unresolved dead letters is kept (it leaves the finished set; resolving its last dead
-- letter puts it back).
-- KEYS[1] finished orders (sorted set), KEYS[2] orders index, KEYS[3] gateway charges,
-- KEYS[4] gateway refunds, KEYS[5] gateway voids, then ARGV[3] keys per order (the order hash
-- first), in the order of the ids
-- ARGV[1] cutoff (ms; finished at or before it), ARGV[2] status index prefix,
-- ARGV[3] keys per order, ARGV[4 ..] order ids
local per = tonumber(ARGV[3])
local swept = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local finished = redis.call('ZSCORE', KEYS[1], id)
  if finished and tonumber(finished) <= tonumber(ARGV[1]) then
    local first = 6 + (i - 4) * per
    local o = redis.call('HMGET', KEYS[first], 'status', 'index_member', 'dead_letters')
    if tonumber(o[3] or '0') > 0 then
      redis.call('ZREM', KEYS[1], id)
    else
      if o[2] then
        redis.call('ZREM', KEYS[2], o[2])
        if o[1] then redis.call('ZREM', ARGV[2] .. o[1], o[2]) end
      end
      redis.call('DEL', unpack(KEYS, first, first + per - 1))
      redis.call('HDEL', KEYS[3], id)
      redis.call('HDEL', KEYS[4], id)
      redis.call('HDEL', KEYS[5], id)
      redis.call('ZREM', KEYS[1], id)
      swept = swept + 1
    end
  end
end
return swept
