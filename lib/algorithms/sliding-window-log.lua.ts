/**
 * Redis twin of `sliding-window-log.algorithm.ts`: a sorted set with one member per admitted
 * request, scored by its time. A member packs the memory half's entry as three big-endian
 * doubles: the request's time, and the running count of units before and after it. The units in
 * the window are the newest member's "after" minus the oldest one's "before", so the cost of a
 * check never depends on a request's weight. Big-endian doubles sort like the numbers they hold,
 * so members of one millisecond sort by count too.
 *
 * The time is in the member as well as in its score: a score in a reply costs Redis a conversion
 * to text, about as much as the ZRANGE that asks for it. For the same reason ranks, scores and
 * times are passed to Redis as text (`whole`, see redis-lua-prelude.ts), never as Lua numbers.
 */
const LOG = `-- A member's time and running counts, or nothing if it is not one.
  local function entry(member)
    if type(member) ~= 'string' or #member ~= 24 then return nil end
    local at, before, after = struct.unpack('>ddd', member)
    if finite(at) and finite(before) and finite(after) then return at, before, after end
    return nil
  end

  local function member_at(key, rank)
    return redis.call('ZRANGE', key, whole(rank), whole(rank))[1]
  end

  -- The log once the entries that left the window are dropped (which changes no decision):
  -- whether it has entries, the oldest one's count before it, the newest one's time and count
  -- after it. Nothing if the key holds a block (then blocked_until is set).
  local function read(key, now, window)
    local oldest = redis.pcall('ZRANGE', key, '0', '0')
    if oldest.err then
      if blocked_or_healed(key) then return nil end
      return false, 0, 0, 0
    end
    if not oldest[1] then return false, 0, 0, 0 end
    local first_at, first_before = entry(oldest[1])
    local last_at, _, last_after = entry(redis.call('ZRANGE', key, '-1', '-1')[1])
    if first_at and last_at and last_after >= first_before then
      if first_at > now - window then return true, first_before, last_at, last_after end
      redis.call('ZREMRANGEBYSCORE', key, '-inf', whole(now - window))
      if last_at <= now - window then return false, 0, 0, 0 end
      first_at, first_before = entry(member_at(key, 0))
      if first_at then return true, first_before, last_at, last_after end
    end
    heal(key)
    return false, 0, 0, 0
  end

  -- The rank of the oldest member whose running count reaches \`target\`: members are in order of
  -- both time and running count, so a binary search by rank finds it.
  local function rank_reaching(key, target)
    local low, high = 0, redis.call('ZCARD', key) - 1
    while low < high do
      local middle = math.floor((low + high) / 2)
      local _, _, after = entry(member_at(key, middle))
      if after and after >= target then high = middle else low = middle + 1 end
    end
    return low
  end

  -- Commits an entry.
  local function add(key, member, at, expires_at)
    redis.call('ZADD', key, whole(at), member)
    redis.call('PEXPIREAT', key, whole(expires_at))
  end`;

export const SLIDING_WINDOW_LOG_LUA = `(function()
  ${LOG}
  return function(key, now, limit, window, burst, cost)
    local any, first_before, last_at, last_after = read(key, now, window)
    if any == nil then return 0, 0, 0, 0 end
    local count = last_after - first_before
    if count + cost <= limit then
      -- Never older than the newest entry, so rank, time and running count keep one order.
      local at = math.max(now, last_at)
      return 1, limit - count - cost, 0, window, add, struct.pack('>ddd', at, last_after, last_after + cost), at, now + window
    end
    local retry = 0
    if cost <= limit then
      -- The oldest request whose units, once gone, leave room for this one.
      retry = entry(member_at(key, rank_reaching(key, first_before + count + cost - limit))) + window - now
    end
    local reset = 0
    if count > 0 then reset = last_at + window - now end
    return 0, limit - count, retry, reset
  end
end)()`;

export const SLIDING_WINDOW_LOG_ADJUST_LUA = `(function()
  ${LOG}
  return function(key, now, limit, window, burst, units)
    local any, first_before, last_at, last_after = read(key, now, window)
    if any == nil then return end
    if units > 0 then
      local at = math.max(now, last_at)
      add(key, struct.pack('>ddd', at, last_after, last_after + units), at, at + window)
      return
    end
    if not any then return end
    -- A refund takes back the newest units: the entries above the running count it leaves.
    local target = last_after + units
    if target <= first_before then redis.call('DEL', key) return end
    local rank = rank_reaching(key, target)
    local at, before = entry(member_at(key, rank))
    redis.call('ZREMRANGEBYRANK', key, whole(rank), '-1')
    add(key, struct.pack('>ddd', at, before, target), at, at + window)
  end
end)()`;
