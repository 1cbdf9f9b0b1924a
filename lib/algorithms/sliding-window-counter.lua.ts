/** Redis twin of `sliding-window-counter.algorithm.ts`: hash { s = window start, c = current, p = previous }. */
export const SLIDING_WINDOW_COUNTER_LUA = `function(key, now, limit, window, burst, cost)
  local start = now - (now % window)
  local state = redis.call('HMGET', key, 's', 'c', 'p')
  local stored_start = tonumber(state[1])
  local current, previous = 0, 0
  if stored_start == start then
    current, previous = tonumber(state[2]), tonumber(state[3])
  elseif stored_start == start - window then
    previous = tonumber(state[2])
  end
  local elapsed = now - start
  local estimate = (previous * (window - elapsed)) / window + current
  if estimate + cost <= limit then
    return 1, limit - estimate - cost, 0, 2 * window - elapsed, function()
      redis.call('HSET', key, 's', num(start), 'c', num(current + cost), 'p', num(previous))
      redis.call('PEXPIREAT', key, num(start + 2 * window))
    end
  end
  local retry = 0
  if cost > limit then
    retry = 0
  elseif current + cost <= limit then
    retry = window - elapsed - ((limit - current - cost) * window) / previous
  else
    retry = window - elapsed + math.max(0, window - ((limit - cost) * window) / current)
  end
  local reset = 0
  if current > 0 then reset = 2 * window - elapsed elseif previous > 0 then reset = window - elapsed end
  return 0, limit - estimate, retry, reset, nil
end`;
