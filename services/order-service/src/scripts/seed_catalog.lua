-- Seeds the catalog when it is empty, in one step so racing replicas seed it once.
-- KEYS[1] products set, KEYS[2 ..] the products' hashes, in the order of ARGV's products;
-- ARGV: id, name, price, stock for each product
if redis.call('SCARD', KEYS[1]) > 0 then return 0 end
for i = 1, #ARGV, 4 do
  local product = KEYS[2 + (i - 1) / 4]
  redis.call('HSET', product, 'id', ARGV[i], 'name', ARGV[i + 1], 'price', ARGV[i + 2],
    'stock', ARGV[i + 3])
  redis.call('SADD', KEYS[1], ARGV[i])
end
return 1
