-- Takes the lease to send one notification, so one delivery at a time sends it: a delivery that
-- finds another delivery's lease still running (it may be sending right now, in a batch
-- that outlived RETRY_MIN_IDLE_MS) waits for a later retry instead of sending a second copy. A
-- lease that ran out (its holder died, or its send outlived the deadline) is taken over.
-- KEYS[1] the notification hash, KEYS[2] the order's hash. ARGV[1] who asks (its delivery: the
-- consumer and a token of its own), ARGV[2] the lease (ms). Replies {'taken'}, {'settled'} (sent
-- or failed already), {'gone'} (retention removed the order: nothing written), or
-- {'busy', holder, ms left}.
if redis.call('EXISTS', KEYS[2]) == 0 then return {'gone'} end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'sent' or state == 'failed' then return {'settled'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder = redis.call('HGET', KEYS[1], 'lease_holder')
local till = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
if holder and holder ~= ARGV[1] and till > now then
  return {'busy', holder, tostring(till - now)}
end
redis.call('HSET', KEYS[1], 'lease_holder', ARGV[1], 'lease_until', now + tonumber(ARGV[2]))
return {'taken'}
