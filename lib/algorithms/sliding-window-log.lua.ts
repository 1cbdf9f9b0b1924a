/** Redis twin of `sliding-window-log.algorithm.ts`: a sorted set, one member per admitted unit. */
export const SLIDING_WINDOW_LOG_LUA = `function(key, now, limit, window, burst, cost)
  -- Dropping entries that left the window changes no decision, so it may happen before commit.
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count + cost <= limit then
    return 1, limit - count - cost, 0, window, function()
      -- Members are unique: within one millisecond the count only grows.
      local prefix = num(now) .. ':'
      for i = 1, cost do redis.call('ZADD', key, now, prefix .. (count + i)) end
      redis.call('PEXPIREAT', key, now + window)
    end
  end
  local retry = 0
  if cost <= limit then
    local at = count + cost - limit - 1
    retry = tonumber(redis.call('ZRANGE', key, at, at, 'WITHSCORES')[2]) + window - now
  end
  local reset = 0
  if count > 0 then reset = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]) + window - now end
  return 0, limit - count, retry, reset, nil
end`;
