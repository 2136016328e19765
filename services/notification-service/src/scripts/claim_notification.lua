-- Step 1 of a notification, in one script: claims it (nothing or `sending` -> `sending`), takes
-- this delivery's lease to send it, and answers what the message says, read in the same step.
-- One delivery at a time sends: a delivery that finds another delivery's lease still running (it
-- may be sending right now, in a batch that outlived RETRY_MIN_IDLE_MS) waits for a later retry
-- instead of sending a second copy; a lease that ran out (its holder died, or its send outlived
-- the deadline) is taken over. A confirmation goes only for a live label, and neither kind once
-- the other was claimed.
-- KEYS[1] the notification hash, KEYS[2] the order hash, KEYS[3] the other kind's notification
-- hash, KEYS[4] the payment hash, KEYS[5] the shipment hash (confirmations only)
-- ARGV[1] who asks (its delivery: the consumer and the entry id), ARGV[2] the lease (ms),
-- ARGV[3] the address (kept once, as 'to')
-- Replies, checked in this order: {'gone'} (retention removed the order: nothing written),
-- {'settled', state} (sent or failed already), {'blocked', guard state}, {'busy', holder, ms
-- left}, or {'claimed', previous state ('-' for none), items JSON, total, payment state}.
local order = redis.call('HMGET', KEYS[2], 'id', 'items', 'total')
if not order[1] then return {'gone'} end
local n = redis.call('HMGET', KEYS[1], 'state', 'lease_holder', 'lease_until')
local state = n[1]
if state and state ~= 'sending' then return {'settled', state} end
local other = redis.call('HGET', KEYS[3], 'state')
if other then return {'blocked', other} end
if KEYS[5] then
  local label = redis.call('HGET', KEYS[5], 'state') or '-'
  if label ~= 'labelled' then return {'blocked', label} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local till = tonumber(n[3] or '0')
if n[2] and n[2] ~= ARGV[1] and till > now then
  return {'busy', n[2], tostring(till - now)}
end
if state then
  redis.call('HSETNX', KEYS[1], 'to', ARGV[3])
  redis.call('HSET', KEYS[1], 'state', 'sending', 'lease_holder', ARGV[1],
    'lease_until', now + tonumber(ARGV[2]))
else
  redis.call('HSET', KEYS[1], 'state', 'sending', 'lease_holder', ARGV[1],
    'lease_until', now + tonumber(ARGV[2]), 'to', ARGV[3])
end
local payment = redis.call('HGET', KEYS[4], 'state') or ''
return {'claimed', state or '-', order[2] or '', order[3] or '', payment}
