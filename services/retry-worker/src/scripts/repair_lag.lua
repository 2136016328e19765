-- Repairs a group's read counter, so its lag is right again: after a restart from an append-only
-- file, a group's entries-read can fall behind for good (the file replays reads as XCLAIMs, which
-- do not count), and XINFO's lag then stays too high forever (a lag alert that never clears, KEDA
-- holding the most replicas). The entries after the group's last delivered one are counted (at
-- most ARGV[2]; the stream is never trimmed above what a group has not read), and when XINFO's lag
-- says otherwise, entries-read is set to entries-added minus that count.
-- KEYS[1] stream; ARGV[1] group, ARGV[2] most entries to count
-- Replies {'right', lag}, {'repaired', lag}, {'too_far', -1} (more than ARGV[2] behind: left for
-- a later pass), {'no_group', -1}
local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_group', -1} end
local stream = fields(redis.call('XINFO', 'STREAM', KEYS[1]))
for _, flat in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local g = fields(flat)
  if g['name'] == ARGV[1] then
    local last = g['last-delivered-id']
    local cap = tonumber(ARGV[2])
    local behind = 0
    if last ~= stream['last-generated-id'] then
      local want = cap
      if g['lag'] and g['lag'] + 1 < cap then want = g['lag'] + 1 end
      behind = #redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', want)
      if behind >= cap then return {'too_far', -1} end
    end
    if g['lag'] == behind then return {'right', behind} end
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], last, 'ENTRIESREAD',
      stream['entries-added'] - behind)
    return {'repaired', behind}
  end
end
return {'no_group', -1}
