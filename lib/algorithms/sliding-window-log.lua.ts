/**
 * Redis twin of `sliding-window-log.algorithm.ts`: a list with one element per admitted request,
 * oldest first, each the memory half's entry as three packed doubles: the request's time, and the
 * running count of units before and after it. The units in the window are the newest entry's
 * "after" minus the oldest one's "before", so the cost of a check never depends on a request's
 * weight.
 *
 * A list, not a sorted set: a new entry is never older than the newest, so entries are in order
 * of time and running count as they are appended, and RPUSH and LINDEX cost Redis a fraction of
 * ZADD (which finds its place by score) and ZRANGE. Indexes and times are passed to Redis as text
 * (`whole`, see redis-lua-prelude.ts), never as Lua numbers.
 */
const LOG = `-- An entry's time and running counts, or nothing if it is not one.
  local function entry(packed)
    if type(packed) ~= 'string' or #packed ~= 24 then return nil end
    local at, before, after = struct.unpack('<ddd', packed)
    if finite(at) and finite(before) and finite(after) then return at, before, after end
    return nil
  end

  local function entry_at(key, index)
    return redis.call('LINDEX', key, whole(index))
  end

  -- The first index from \`low\` to \`high\` whose entry came after \`since\`; the one at \`high\`
  -- did. \`low\` first: usually a single entry left the window since the last check.
  local function first_after(key, low, high, since)
    local at = entry(entry_at(key, low))
    if at and at > since then return low end
    low = low + 1
    while low < high do
      local middle = math.floor((low + high) / 2)
      at = entry(entry_at(key, middle))
      if at and at > since then high = middle else low = middle + 1 end
    end
    return low
  end

  -- The index of the oldest entry whose running count reaches \`target\`, by a binary search.
  local function first_reaching(key, target)
    local low, high = 0, redis.call('LLEN', key) - 1
    while low < high do
      local middle = math.floor((low + high) / 2)
      local _, _, after = entry(entry_at(key, middle))
      if after and after >= target then high = middle else low = middle + 1 end
    end
    return low
  end

  -- The log once the entries that left the window are dropped (which changes no decision):
  -- whether it has entries, the oldest one's count before it, the newest one's time and count
  -- after it. Nothing if the key holds a block (then blocked_until is set).
  local function read(key, now, window)
    local oldest = redis.pcall('LINDEX', key, '0')
    if type(oldest) == 'table' then
      if blocked_or_healed(key) then return nil end
      return false, 0, 0, 0
    end
    if not oldest then return false, 0, 0, 0 end
    local first_at, first_before = entry(oldest)
    local last_at, _, last_after = entry(redis.call('LINDEX', key, '-1'))
    if first_at and last_at and last_after >= first_before then
      if first_at > now - window then return true, first_before, last_at, last_after end
      if last_at <= now - window then
        redis.call('DEL', key)
        return false, 0, 0, 0
      end
      local first = first_after(key, 1, redis.call('LLEN', key) - 1, now - window)
      redis.call('LTRIM', key, whole(first), '-1')
      first_at, first_before = entry(redis.call('LINDEX', key, '0'))
      if first_at then return true, first_before, last_at, last_after end
    end
    heal(key)
    return false, 0, 0, 0
  end

  -- Commits an entry.
  local function append(key, packed, expires_at)
    redis.call('RPUSH', key, packed)
    redis.call('PEXPIREAT', key, whole(expires_at))
  end`;

export const SLIDING_WINDOW_LOG_LUA = `(function()
  ${LOG}
  return function(key, now, limit, window, burst, cost)
    local any, first_before, last_at, last_after = read(key, now, window)
    if any == nil then return 0, 0, 0, 0 end
    local count = last_after - first_before
    if count + cost <= limit then
      -- Never older than the newest entry, so time and running count keep one order.
      local at = math.max(now, last_at)
      return 1, limit - count - cost, 0, window, append, struct.pack('<ddd', at, last_after, last_after + cost), now + window
    end
    local retry = 0
    if cost <= limit then
      -- The oldest request whose units, once gone, leave room for this one.
      retry = entry(entry_at(key, first_reaching(key, first_before + count + cost - limit))) + window - now
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
      append(key, struct.pack('<ddd', at, last_after, last_after + units), at + window)
      return
    end
    if not any then return end
    -- A refund takes back the newest units: the entries above the running count it leaves.
    local target = last_after + units
    if target <= first_before then redis.call('DEL', key) return end
    local index = first_reaching(key, target)
    local at, before = entry(entry_at(key, index))
    redis.call('LTRIM', key, '0', whole(index))
    redis.call('LSET', key, '-1', struct.pack('<ddd', at, before, target))
    redis.call('PEXPIREAT', key, whole(at + window))
  end
end)()`;

export const SLIDING_WINDOW_LOG_REFUND_LUA = `(function()
  ${LOG}
  -- The index of the oldest entry that came at or after \`time\`, or the list's length if none did.
  local function entry_from(key, length, time)
    local low, high = 0, length
    while low < high do
      local middle = math.floor((low + high) / 2)
      local at = entry(entry_at(key, middle))
      if at and at >= time then high = middle else low = middle + 1 end
    end
    return low
  end
  return function(key, now, limit, window, burst, cost, charged_at)
    if not read(key, now, window) then return end
    local length = redis.call('LLEN', key)
    local from = entry_from(key, length, charged_at)
    if from >= length then return end
    -- The charge's entry: of its time and weight (entries alike are alike in every way). Gone (out
    -- of the window), or stamped later (a clock that went back), nothing is taken back: any other
    -- entry would be a later request's, which would then leave the window before its time.
    local tail = redis.call('LRANGE', key, whole(from), '-1')
    local found = nil
    for i = 1, #tail do
      local at, before, after = entry(tail[i])
      if at ~= charged_at then break end
      if after - before == cost then found = i break end
    end
    if not found then return end
    -- the entries after it lose its units from their running counts
    local later = {}
    for i = found + 1, #tail do
      local at, before, after = entry(tail[i])
      later[#later + 1] = struct.pack('<ddd', at, before - cost, after - cost)
    end
    local removed = from + found - 1
    if removed == 0 then redis.call('DEL', key) else redis.call('LTRIM', key, '0', whole(removed - 1)) end
    for i = 1, #later, 1000 do redis.call('RPUSH', key, unpack(later, i, math.min(i + 999, #later))) end
    local newest = entry(redis.call('LINDEX', key, '-1'))
    if newest then redis.call('PEXPIREAT', key, whole(newest + window)) end
  end
end)()`;
