/**
 * Redis twin of `sliding-window-log.algorithm.ts`: a sorted set with one member per admitted
 * request, scored by its time. A member packs two doubles, the running count of units before the
 * request and after it, so the units in the window are the newest member's "after" minus the
 * oldest one's "before": the cost of a check never depends on a request's weight. They are packed
 * big-endian, whose bytes sort like the numbers, so members of one millisecond sort by count too.
 */
export const SLIDING_WINDOW_LOG_LUA = `function(key, now, limit, window, burst, cost)
  -- Dropping entries that left the window changes no decision, so it may happen before commit.
  if type(redis.pcall('ZREMRANGEBYSCORE', key, '-inf', now - window)) == 'table' then
    if blocked_or_healed(key) then return 0, 0, 0, 0, nil end
  end
  local oldest = redis.call('ZRANGE', key, 0, 0)[1]
  local first_before, last_after, last_at = 0, 0, 0
  if oldest then
    local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    first_before = log_entry(oldest)
    local _, after = log_entry(newest[1])
    if first_before and after and after >= first_before then
      last_after, last_at = after, tonumber(newest[2])
    else
      heal(key)
      oldest, first_before = nil, 0
    end
  end
  local count = last_after - first_before
  if count + cost <= limit then
    return 1, limit - count - cost, 0, window, function()
      -- Never older than the newest entry, so rank, time and running count keep one order.
      redis.call('ZADD', key, math.max(now, last_at), struct.pack('>dd', last_after, last_after + cost))
      redis.call('PEXPIREAT', key, now + window)
    end
  end
  local retry = 0
  if cost <= limit then
    -- The oldest request whose units, once gone, leave room for this one.
    local rank = rank_reaching(key, first_before + count + cost - limit)
    retry = tonumber(redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')[2]) + window - now
  end
  local reset = 0
  if count > 0 then reset = last_at + window - now end
  return 0, limit - count, retry, reset, nil
end`;

export const SLIDING_WINDOW_LOG_ADJUST_LUA = `function(key, now, limit, window, burst, units)
  if type(redis.pcall('ZREMRANGEBYSCORE', key, '-inf', now - window)) == 'table' then
    if blocked_or_healed(key) then return end
  end
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local last_after, last_at = 0, 0
  if newest[1] then
    local first_before = log_entry(redis.call('ZRANGE', key, 0, 0)[1])
    local _, after = log_entry(newest[1])
    if first_before and after and after >= first_before then
      last_after, last_at = after, tonumber(newest[2])
    else
      heal(key)
      newest = {}
    end
  end
  if units > 0 then
    local at = math.max(now, last_at)
    redis.call('ZADD', key, at, struct.pack('>dd', last_after, last_after + units))
    redis.call('PEXPIREAT', key, at + window)
    return
  end
  if not newest[1] then return end
  -- A refund takes back the newest units: the entries above the running count it leaves.
  local target = last_after + units
  local first_before = log_entry(redis.call('ZRANGE', key, 0, 0)[1])
  if target <= first_before then redis.call('DEL', key) return end
  local rank = rank_reaching(key, target)
  local last = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')
  local before = log_entry(last[1])
  redis.call('ZREMRANGEBYRANK', key, rank, -1)
  redis.call('ZADD', key, last[2], struct.pack('>dd', before, target))
  redis.call('PEXPIREAT', key, tonumber(last[2]) + window)
end`;
