-- An operator deletes a dead letter: it leaves the DLQ and is resolved for its order (see
-- resolve()), in one step.
-- KEYS[1] dlq stream, KEYS[2] order hash, KEYS[3] the order's unresolved dead letters,
-- KEYS[4] orders with dead letters, KEYS[5] finished orders
-- ARGV[1] dlq entry id, ARGV[2] order id ('' when unknown), ARGV[3] member, ARGV[4] now (ms)
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return {'not_found', -1} end
if ARGV[2] == '' then return {'deleted', -1} end
return {'deleted', resolve(KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[2], ARGV[3], ARGV[4])}
