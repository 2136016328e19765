-- Gives up the lease to send a notification when its send failed (the entry stays pending, and
-- whoever retries it may send at once). KEYS[1] the notification hash. ARGV[1] the holder (the delivery that took it).
if redis.call('HGET', KEYS[1], 'lease_holder') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'lease_holder', 'lease_until')
end
return 1
