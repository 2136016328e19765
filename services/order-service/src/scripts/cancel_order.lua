-- Cancels an order on request while it is not final, and publishes OrderCancelled in the same
-- step, so compensation (stock release, refund) follows. A completed or cancelled order is refused.
-- KEYS[1] order hash, KEYS[2] stream, KEYS[3] finished orders
-- ARGV[1] reason, ARGV[2] now (RFC 3339), ARGV[3] OrderCancelled fields JSON,
-- ARGV[4] status index prefix, ARGV[5] status channel, ARGV[6] now (ms since the epoch)
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found', '', ''} end
local o = redis.call('HMGET', KEYS[1], 'status', 'index_member', 'id', 'created_ms')
local status = o[1]
if status == 'COMPLETED' or status == 'CANCELLED' then return {'conflict', status, ''} end
redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'status_reason', ARGV[1], 'updated_at', ARGV[2])
redis.call('ZREM', ARGV[4] .. status, o[2])
redis.call('ZADD', ARGV[4] .. 'CANCELLED', 0, o[2])
redis.call('ZADD', KEYS[3], ARGV[6], o[3])
redis.call('XADD', KEYS[2], '*', unpack(cjson.decode(ARGV[3])))
redis.call('PUBLISH', ARGV[5], cjson.encode({order_id = o[3], status = 'CANCELLED',
  status_reason = ARGV[1], previous_status = status, event_type = 'OrderCancelled',
  updated_at = ARGV[2]}))
return {'cancelled', status, o[4]}
