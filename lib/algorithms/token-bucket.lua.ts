/** Redis twin of `token-bucket.algorithm.ts`: hash { t = tokens, a = measured at, x = expires at }. */
export const TOKEN_BUCKET_LUA = `function(key, now, limit, window, burst, cost)
  local state = redis.call('HMGET', key, 't', 'a', 'x')
  local tokens = burst
  if state[3] and tonumber(state[3]) > now then
    tokens = math.min(burst, tonumber(state[1]) + ((now - tonumber(state[2])) * limit) / window)
  end
  if cost <= tokens then
    local left = tokens - cost
    local until_full = math.ceil(((burst - left) * window) / limit)
    return 1, left, 0, until_full, function()
      redis.call('HSET', key, 't', num(left), 'a', num(now), 'x', num(now + until_full))
      redis.call('PEXPIREAT', key, num(now + until_full))
    end
  end
  local retry = 0
  if cost <= burst then retry = ((cost - tokens) * window) / limit end
  return 0, tokens, retry, ((burst - tokens) * window) / limit, nil
end`;
