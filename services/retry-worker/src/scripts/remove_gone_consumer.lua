-- Removes a consumer from its group only if it has nothing pending and has been neither reading
-- entries nor beating its heartbeat for long enough, checked and done in one step so a consumer
-- that just took entries is never removed. Its heartbeat and its count of work go with it.
-- KEYS[1] stream, KEYS[2] the group's heartbeat hash, KEYS[3] the group's handled counts
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] minimum unseen ms, ARGV[4] now (ms)
local beat = redis.call('HGET', KEYS[2], ARGV[2])
if beat and tonumber(ARGV[4]) - tonumber(beat) < tonumber(ARGV[3]) then return 0 end
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] == ARGV[2] then
    if tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      redis.call('HDEL', KEYS[2], ARGV[2])
      redis.call('HDEL', KEYS[3], ARGV[2])
      return 1
    end
    return 0
  end
end
return 0
