/**
 * Redis twin of `leaky-bucket.algorithm.ts`: a string of three packed doubles (level, when it was
 * measured, when the bucket is empty). The key expires when the bucket is empty.
 */
export const LEAKY_BUCKET_LUA = `function(key, now, limit, window, burst, cost)
  local stored_level, measured_at, empty_at = state(key, 24, '<ddd')
  local level = 0
  if stored_level and empty_at > now then level = math.max(0, stored_level - ((now - measured_at) * limit) / window) end
  if level + cost <= burst then
    local filled = level + cost
    local until_empty = math.ceil((filled * window) / limit)
    return 1, burst - filled, 0, until_empty, set_state, struct.pack('<ddd', filled, now, now + until_empty), now + until_empty
  end
  local retry = 0
  if cost <= burst then retry = ((level + cost - burst) * window) / limit end
  return 0, burst - level, retry, (level * window) / limit, nil
end`;

export const LEAKY_BUCKET_ADJUST_LUA = `function(key, now, limit, window, burst, units)
  local stored_level, measured_at, empty_at = state(key, 24, '<ddd')
  local level = 0
  if stored_level and empty_at > now then level = math.max(0, stored_level - ((now - measured_at) * limit) / window) end
  local filled = math.max(0, level + units)
  local until_empty = math.ceil((filled * window) / limit)
  if until_empty <= 0 then redis.call('DEL', key) return end
  redis.call('SET', key, struct.pack('<ddd', filled, now, now + until_empty), 'PXAT', now + until_empty)
end`;

/** Gives back what of a charge has not drained: see undrained.ts. */
export const LEAKY_BUCKET_REFUND_LUA = `function(key, now, limit, window, burst, cost, charged_at)
  local units = undrained(now, charged_at, limit, window, cost)
  if units > 0 then adjusts['lb'](key, now, limit, window, burst, -units) end
end`;
