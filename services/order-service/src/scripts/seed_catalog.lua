-- Seeds the catalog when it is empty, in one step so racing replicas seed it once.
-- KEYS[1] products set; ARGV: key prefix, then id, name, price, stock for each product
if redis.call('SCARD', KEYS[1]) > 0 then return 0 end
for i = 2, #ARGV, 4 do
  redis.call('HSET', ARGV[1] .. ARGV[i], 'id', ARGV[i], 'name', ARGV[i + 1],
    'price', ARGV[i + 2], 'stock', ARGV[i + 3])
  redis.call('SADD', KEYS[1], ARGV[i])
end
return 1
