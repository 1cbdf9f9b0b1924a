/**
 * Redis twin of `fixed-window.algorithm.ts`: a string of two packed doubles (window end, count).
 * The key expires when its window ends; later writes in the same window keep that expiry.
 */
export const FIXED_WINDOW_LUA = `function(key, now, limit, window, burst, cost)
  local window_end = now - (now % window) + window
  local stored_end, stored_count = state(key, 16, '<dd')
  local count = 0
  local same_window = stored_end == window_end
  if same_window then count = stored_count end
  local reset = window_end - now
  if count + cost <= limit then
    return 1, limit - count - cost, 0, reset, function()
      local packed = struct.pack('<dd', window_end, count + cost)
      if same_window then redis.call('SET', key, packed, 'KEEPTTL')
      else redis.call('SET', key, packed, 'PXAT', window_end) end
    end
  end
  return 0, limit - count, reset, reset, nil
end`;

export const FIXED_WINDOW_ADJUST_LUA = `function(key, now, limit, window, burst, units)
  local window_end = now - (now % window) + window
  local stored_end, stored_count = state(key, 16, '<dd')
  local count = 0
  if stored_end == window_end then count = stored_count end
  redis.call('SET', key, struct.pack('<dd', window_end, math.max(0, count + units)), 'PXAT', window_end)
end`;
