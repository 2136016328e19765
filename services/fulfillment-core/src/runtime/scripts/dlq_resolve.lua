-- A replayed dead letter was handled by its group: resolve it (see resolve()).
-- KEYS[1] order hash, KEYS[2] the order's unresolved dead letters, KEYS[3] orders with dead
-- letters, KEYS[4] finished orders; ARGV[1] order id, ARGV[2] member, ARGV[3] now (ms)
local left = resolve(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3])
if left < 0 then return {'not_flagged', -1} end
return {'resolved', left}
