/** Redis twin of `fixed-window.algorithm.ts`: hash { e = window end, c = count }. */
export const FIXED_WINDOW_LUA = `function(key, now, limit, window, burst, cost)
  local window_end = now - (now % window) + window
  local state = redis.call('HMGET', key, 'e', 'c')
  local count = 0
  if tonumber(state[1]) == window_end then count = tonumber(state[2]) end
  local reset = window_end - now
  if count + cost <= limit then
    return 1, limit - count - cost, 0, reset, function()
      redis.call('HSET', key, 'e', num(window_end), 'c', num(count + cost))
      redis.call('PEXPIREAT', key, num(window_end))
    end
  end
  return 0, limit - count, reset, reset, nil
end`;
