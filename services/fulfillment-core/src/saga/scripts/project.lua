-- The order projection as a function, project(KEYS, ARGV): records an event in the order's
-- history (once per event_id) and moves the order's status. The order group's script
-- (project_order.lua) calls it for what it reads; a step's transition.lua calls it for the event
-- it publishes, in the same script (the event then carries `projected`, and the order group
-- skips it). A status never moves backwards: progress only grows
-- (PENDING < RESERVED < PAID < COMPLETED), COMPLETED and CANCELLED are final, FAILED (a dead
-- letter) holds until progress grows again after a replay. A StockFailed or PaymentFailed cancels
-- the order and publishes OrderCancelled in the same step.
-- A finished order (COMPLETED, CANCELLED) is recorded with the time it finished for the
-- retention sweep, counted, and its placed-to-final time kept among the last ARGV[9].
-- Events that move no status (OrderPlaced, NotificationSent, NotificationFailed, StockReleased,
-- PaymentRefunded) are
-- recorded in the history only, without reading the order. A status change is announced with
-- notify() (the batch's one PUBLISH).
-- KEYS[1] order hash, KEYS[2] history hash, KEYS[3] stream, KEYS[4] finished orders,
-- KEYS[5] counters hash, KEYS[6] completion times (list), KEYS[7 ..] the status indexes kept
-- (each ends in ':status:<STATUS>'; statuses without one are not indexed)
-- ARGV[1] event type, ARGV[2] event_id, ARGV[3] history entry JSON, ARGV[4] the event's time
-- (RFC 3339), ARGV[5] reason, ARGV[6] OrderCancelled fields JSON or '', ARGV[7] status channel,
-- ARGV[8] now (ms since the epoch), ARGV[9] completion times kept
local function status_index(KEYS, status)
  local suffix = ':status:' .. status
  for i = 7, #KEYS do
    if string.sub(KEYS[i], -#suffix) == suffix then return KEYS[i] end
  end
  return nil
end
-- Finishes an order that moved to `status` (COMPLETED or CANCELLED): recorded with the time it
-- finished (`now_ms`) in `finished` for the retention sweep, counted in `counters`
-- (orders_completed, orders_cancelled), and its placed-to-final time kept in `samples` among the
-- last `kept`.
local function finish(finished, counters, samples, id, status, created_ms, now_ms, kept)
  redis.call('ZADD', finished, now_ms, id)
  count(counters, 'orders_' .. string.lower(status), 1)
  if created_ms then
    keep_recent(samples, tonumber(now_ms) - tonumber(created_ms), tonumber(kept))
  end
end
local function project(KEYS, ARGV)
  local t = ARGV[1]
  if t == 'OrderPlaced' or t == 'NotificationSent' or t == 'NotificationFailed'
      or t == 'StockReleased' or t == 'PaymentRefunded' then
    if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown', '', ''} end
    redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3])
    return {'unchanged', '', ''}
  end
  local o = redis.call('HMGET', KEYS[1], 'status', 'progress', 'failed', 'index_member', 'id',
    'status_reason', 'created_ms')
  if not o[5] then return {'unknown', '', ''} end
  redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3])
  local status, progress, failed = o[1], tonumber(o[2] or '0'), o[3] == '1'
  if status == 'COMPLETED' or status == 'CANCELLED' then return {'final', status, ''} end
  local new_progress, cancel, new_failed = progress, false, failed
  if t == 'StockReserved' then new_progress = math.max(progress, 1)
  elseif t == 'PaymentProcessed' then new_progress = math.max(progress, 2)
  elseif t == 'ShipmentPrepared' then new_progress = 3
  elseif t == 'StockFailed' or t == 'PaymentFailed' or t == 'OrderCancelled' then cancel = true
  elseif t == 'EventDeadLettered' then new_failed = true
  end
  if new_progress > progress then new_failed = false end
  local new_status, reason
  if cancel then new_status, reason = 'CANCELLED', ARGV[5]
  elseif new_progress == 3 then new_status, reason = 'COMPLETED', ''
  elseif new_failed then
    new_status = 'FAILED'
    reason = (t == 'EventDeadLettered') and ARGV[5] or o[6]
  else
    new_status, reason = ({[0] = 'PENDING', 'RESERVED', 'PAID'})[new_progress], ''
  end
  local flag = new_failed and '1' or '0'
  if new_status == status then
    if new_progress ~= progress or new_failed ~= failed then
      redis.call('HSET', KEYS[1], 'progress', new_progress, 'failed', flag)
    end
    return {'unchanged', status, ''}
  end
  redis.call('HSET', KEYS[1], 'progress', new_progress, 'failed', flag, 'status', new_status,
    'status_reason', reason or '', 'updated_at', ARGV[4])
  local from_index, to_index = status_index(KEYS, status), status_index(KEYS, new_status)
  if from_index then redis.call('ZREM', from_index, o[4]) end
  if to_index then redis.call('ZADD', to_index, 0, o[4]) end
  if new_status == 'COMPLETED' or new_status == 'CANCELLED' then
    finish(KEYS[4], KEYS[5], KEYS[6], o[5], new_status, o[7], ARGV[8], ARGV[9])
  end
  if cancel and ARGV[6] ~= '' then
    local cancelled = cjson.decode(ARGV[6])
    publish_event(KEYS[3], cancelled, 1, #cancelled)
  end
  notify(ARGV[7], cjson.encode({order_id = o[5], status = new_status,
    status_reason = reason or '', previous_status = status, event_type = t, updated_at = ARGV[4]}))
  return {'changed', new_status, o[7] or ''}
end
