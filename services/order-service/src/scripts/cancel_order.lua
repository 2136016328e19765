-- Cancels an order on request while it is neither final nor shipped, and publishes
-- OrderCancelled in the same step, so compensation (stock release, refund) follows. A completed or
-- cancelled order is refused, and so is one whose shipment label exists (a label moves the order to
-- COMPLETED in shipping's own script, but one made by an older version leaves it PAID until the
-- order group reads it): the customer would be told both "confirmed" and "cancelled". Otherwise shipping's state is set to cancelled here, in the same step, so a label
-- can no longer be made for the order, whatever order shipping reads its events in.
-- KEYS[1] order hash, KEYS[2] stream, KEYS[3] finished orders, KEYS[4] shipment hash,
-- KEYS[5] counters hash, KEYS[6] completion times (list), KEYS[7 ..] the status indexes kept
-- (each ends in ':status:<STATUS>'; statuses without one are not indexed), as project.lua's
-- status_index() (prepended) reads them; finish() and notify() are the prelude's too
-- ARGV[1] reason, ARGV[2] now (RFC 3339), ARGV[3] OrderCancelled fields JSON,
-- ARGV[4] status channel, ARGV[5] now (ms since the epoch), ARGV[6] completion times kept
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found', '', ''} end
local o = redis.call('HMGET', KEYS[1], 'status', 'index_member', 'id', 'created_ms',
  'status_reason')
local status = o[1]
if status == 'COMPLETED' or status == 'CANCELLED' then return {'conflict', status, o[5] or ''} end
local shipment = redis.call('HGET', KEYS[4], 'state')
if shipment == 'labelled' then return {'shipped', status, ''} end
if not shipment then redis.call('HSET', KEYS[4], 'state', 'cancelled') end
redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'status_reason', ARGV[1], 'updated_at', ARGV[2])
local from_index = status_index(KEYS, status)
if from_index then redis.call('ZREM', from_index, o[2]) end
redis.call('ZADD', status_index(KEYS, 'CANCELLED'), 0, o[2])
finish(KEYS[3], KEYS[5], KEYS[6], o[3], 'CANCELLED', o[4], ARGV[5], ARGV[6])
local cancelled = cjson.decode(ARGV[3])
publish_event(KEYS[2], cancelled, 1, #cancelled)
notify(ARGV[4], cjson.encode({order_id = o[3], status = 'CANCELLED',
  status_reason = ARGV[1], previous_status = status, event_type = 'OrderCancelled',
  updated_at = ARGV[2]}))
return {'cancelled', status, o[4]}
