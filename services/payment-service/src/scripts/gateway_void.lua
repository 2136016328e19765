-- The test gateway's void: gives up the payment under an idempotency key, so no charge under it
-- goes through afterwards; refused when a charge already went through (the caller then has a
-- charged payment, not a failed one).
-- KEYS[1] charges, KEYS[2] voids; ARGV[1] idempotency key, ARGV[2] void record (JSON)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {'charged'} end
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
return {'voided'}
