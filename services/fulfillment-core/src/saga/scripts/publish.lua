-- publish_event(stream, A, i, j): adds the entry whose fields are A[i .. j] (names and values,
-- flat) to `stream`, and puts it in the same step in the pending list of every group that acts on
-- it (`XCLAIM ... FORCE JUSTID` to the consumer UNREAD; which groups, claim_for_groups() says,
-- made from routing.rs and prepended): a group's reader reads with NOACK, and an entry its group
-- must act on is already pending for it, whatever becomes of that reader. The entry is marked
-- `routed = ROUTING_VERSION` (first among its fields) so readers know it. When a group it goes to
-- does not exist (a stream this entry made, a group removed), the entry is added again unmarked
-- instead (the first one deleted, and acknowledged where it was claimed): a reader of a group
-- made later claims an unmarked entry before it handles it. Returns the entry's id.
local function publish_event(stream, A, i, j)
  -- The first of a repeated field counts, as readers take it.
  local event_type, projected, replay_for, routed
  for f = i, j - 1, 2 do
    local name, value = A[f], A[f + 1]
    if name == 'type' then
      event_type = event_type or value
    elseif name == 'projected' then
      if projected == nil then projected = value == '1' end
    elseif name == 'replay_for' then
      replay_for = replay_for or value
    elseif name == 'routed' then
      routed = routed or value
    end
  end
  local id
  if routed == ROUTING_VERSION then
    id = redis.call('XADD', stream, '*', unpack(A, i, j))
  else
    id = redis.call('XADD', stream, '*', 'routed', ROUTING_VERSION, unpack(A, i, j))
  end
  local claimed, missing = {}, false
  local function claim(group)
    local reply = redis.pcall('XCLAIM', stream, group, UNREAD, 0, id, 'FORCE', 'JUSTID')
    if type(reply) == 'table' and reply.err then
      missing = true
    else
      claimed[#claimed + 1] = group
    end
  end
  claim_for_groups(claim, event_type, projected, replay_for)
  if missing then
    redis.call('XDEL', stream, id)
    for _, group in ipairs(claimed) do redis.call('XACK', stream, group, id) end
    local unmarked = {}
    for f = i, j - 1, 2 do
      if A[f] ~= 'routed' then
        unmarked[#unmarked + 1] = A[f]
        unmarked[#unmarked + 1] = A[f + 1]
      end
    end
    id = redis.call('XADD', stream, '*', unpack(unmarked))
    claim_for_groups(function(group)
      redis.pcall('XCLAIM', stream, group, UNREAD, 0, id, 'FORCE', 'JUSTID')
    end, event_type, projected, replay_for)
  end
  return id
end
