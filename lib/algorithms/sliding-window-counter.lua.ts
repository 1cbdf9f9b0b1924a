/**
 * Redis twin of `sliding-window-counter.algorithm.ts`: a string of three packed doubles (window
 * start, current count, previous count). The key expires when the next window ends; later writes
 * in the same window keep that expiry.
 */
export const SLIDING_WINDOW_COUNTER_LUA = `function(key, now, limit, window, burst, cost)
  local start = now - (now % window)
  local stored_start, stored_current, stored_previous = state(key, 24, '<ddd')
  local current, previous = 0, 0
  local same_window = stored_start == start
  if same_window then
    current, previous = stored_current, stored_previous
  elseif stored_start == start - window then
    previous = stored_current
  end
  local elapsed = now - start
  local estimate = (previous * (window - elapsed)) / window + current
  if estimate + cost <= limit then
    -- a later write in the same window keeps the key's expiry
    local expires_at = nil
    if not same_window then expires_at = start + 2 * window end
    return 1, limit - estimate - cost, 0, 2 * window - elapsed, set_state, struct.pack('<ddd', start, current + cost, previous), expires_at
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

export const SLIDING_WINDOW_COUNTER_ADJUST_LUA = `function(key, now, limit, window, burst, units)
  local start = now - (now % window)
  local stored_start, stored_current, stored_previous = state(key, 24, '<ddd')
  local current, previous = 0, 0
  if stored_start == start then
    current, previous = stored_current, stored_previous
  elseif stored_start == start - window then
    previous = stored_current
  end
  local from_current = math.max(-current, units)
  local packed = struct.pack('<ddd', start, current + from_current, math.max(0, previous + (units - from_current)))
  redis.call('SET', key, packed, 'PXAT', start + 2 * window)
end`;

export const SLIDING_WINDOW_COUNTER_REFUND_LUA = `function(key, now, limit, window, burst, cost, charged_at)
  local start = now - (now % window)
  local charged = charged_at - (charged_at % window)
  local stored_start, stored_current, stored_previous = state(key, 24, '<ddd')
  local current, previous = 0, 0
  if stored_start == start then
    current, previous = stored_current, stored_previous
  elseif stored_start == start - window then
    previous = stored_current
  end
  if charged == start and current > 0 then
    current = math.max(0, current - cost)
  elseif charged == start - window and previous > 0 then
    previous = math.max(0, previous - cost)
  else
    return
  end
  redis.call('SET', key, struct.pack('<ddd', start, current, previous), 'PXAT', start + 2 * window)
end`;
