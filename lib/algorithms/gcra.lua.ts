/**
 * Redis twin of `gcra.algorithm.ts`: one packed double, the theoretical arrival time. Past its
 * expiry the stored time is behind `now`, so `max(tat, now)` already treats it as no state.
 */
export const GCRA_LUA = `function(key, now, limit, window, burst, cost)
  local interval = window / limit
  local stored_tat = state(key, 8, '<d')
  local base = now
  if stored_tat then base = math.max(stored_tat, now) end
  local tat = base + cost * interval
  local allow_at = tat - burst * interval
  if allow_at <= now then
    local until_idle = math.ceil(tat - now)
    return 1, (now - allow_at) / interval, 0, until_idle, set_state, struct.pack('<d', tat), now + until_idle
  end
  local retry = 0
  if cost <= burst then retry = allow_at - now end
  return 0, (now - (base - burst * interval)) / interval, retry, base - now, nil
end`;

export const GCRA_ADJUST_LUA = `function(key, now, limit, window, burst, units)
  local interval = window / limit
  local stored_tat = state(key, 8, '<d')
  local base = now
  if stored_tat then base = math.max(stored_tat, now) end
  local tat = math.max(now, base + units * interval)
  local until_idle = math.ceil(tat - now)
  if until_idle <= 0 then redis.call('DEL', key) return end
  redis.call('SET', key, struct.pack('<d', tat), 'PXAT', now + until_idle)
end`;

/** Gives back what of a charge has not drained: see undrained.ts. */
export const GCRA_REFUND_LUA = `function(key, now, limit, window, burst, cost, charged_at)
  local units = undrained(now, charged_at, limit, window, cost)
  if units > 0 then adjusts['gc'](key, now, limit, window, burst, -units) end
end`;
