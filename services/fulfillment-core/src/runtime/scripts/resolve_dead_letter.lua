-- Resolves one dead letter of an order: its replayed entry was handled by its group, or an
-- operator deleted it. The order's count of unresolved dead letters drops; at none, the order
-- leaves the set of orders with dead letters and, when it is finished, goes back to the finished
-- set (from now), so the retention sweep may remove it later. Defines resolve(); the script it is
-- prepended to calls it.
-- keys: order hash, the order's unresolved dead letters, orders with dead letters, finished
-- orders; order_id, member ('<group> <event_id>'), now_ms
local function resolve(order_key, letters_key, flagged_key, finished_key, order_id, member, now_ms)
  if redis.call('SREM', letters_key, member) == 0 then return -1 end
  local left = redis.call('SCARD', letters_key)
  if redis.call('EXISTS', order_key) == 0 then return left end
  redis.call('HSET', order_key, 'dead_letters', left)
  if left == 0 then
    redis.call('SREM', flagged_key, order_id)
    local status = redis.call('HGET', order_key, 'status')
    if status == 'COMPLETED' or status == 'CANCELLED' then
      redis.call('ZADD', finished_key, now_ms, order_id)
    end
  end
  return left
end
