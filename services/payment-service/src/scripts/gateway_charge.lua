-- The test gateway's charge under an idempotency key: once, and never after the payment was
-- voided (given up), as a real processor refuses to capture a cancelled payment.
-- KEYS[1] charges, KEYS[2] voids; ARGV[1] idempotency key, ARGV[2] charge record (JSON)
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {'voided'} end
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return {'charged'}
