/**
 * Redis twin of `token-bucket.algorithm.ts`: a string of three packed doubles (tokens, when they
 * were counted, when the bucket is full again). The key expires when the bucket is full again.
 */
export const TOKEN_BUCKET_LUA = `function(key, now, limit, window, burst, cost)
  local stored_tokens, counted_at, full_at = state(key, 24, '<ddd')
  local tokens = burst
  if stored_tokens and full_at > now then tokens = math.min(burst, stored_tokens + ((now - counted_at) * limit) / window) end
  if cost <= tokens then
    local left = tokens - cost
    local until_full = math.ceil(((burst - left) * window) / limit)
    return 1, left, 0, until_full, set_state, struct.pack('<ddd', left, now, now + until_full), now + until_full
  end
  local retry = 0
  if cost <= burst then retry = ((cost - tokens) * window) / limit end
  return 0, tokens, retry, ((burst - tokens) * window) / limit, nil
end`;

export const TOKEN_BUCKET_ADJUST_LUA = `function(key, now, limit, window, burst, units)
  local stored_tokens, counted_at, full_at = state(key, 24, '<ddd')
  local tokens = burst
  if stored_tokens and full_at > now then tokens = math.min(burst, stored_tokens + ((now - counted_at) * limit) / window) end
  local left = math.min(burst, tokens - units)
  local until_full = math.ceil(((burst - left) * window) / limit)
  if until_full <= 0 then redis.call('DEL', key) return end
  redis.call('SET', key, struct.pack('<ddd', left, now, now + until_full), 'PXAT', now + until_full)
end`;

/** Gives back what of a charge has not drained: see undrained.ts. */
export const TOKEN_BUCKET_REFUND_LUA = `function(key, now, limit, window, burst, cost, charged_at)
  local units = undrained(now, charged_at, limit, window, cost)
  if units > 0 then adjusts['tb'](key, now, limit, window, burst, -units) end
end`;
