-- Puts a dead letter back on the stream for its own group only (field replay_for) and removes it
-- from the DLQ, atomically. The event keeps its event_id, so idempotent handlers see a redelivery.
-- KEYS[1] dlq stream, KEYS[2] stream; ARGV[1] dlq entry id
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return {'not_found', '', ''} end
local fields = found[1][2]
local entry, group = {}, ''
for i = 1, #fields, 2 do
  local name = fields[i]
  if name == 'dlq_group' then
    group = fields[i + 1]
  elseif string.sub(name, 1, 4) ~= 'dlq_' and name ~= 'replay_for' then
    entry[#entry + 1] = name
    entry[#entry + 1] = fields[i + 1]
  end
end
if group == '' then return {'not_a_dead_letter', '', ''} end
entry[#entry + 1] = 'replay_for'
entry[#entry + 1] = group
local id = publish_event(KEYS[2], entry, 1, #entry)
redis.call('XDEL', KEYS[1], ARGV[1])
return {'replayed', id, group}
