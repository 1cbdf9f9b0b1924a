/** Redis twin of `leaky-bucket.algorithm.ts`: hash { l = level, a = measured at, x = expires at }. */
export const LEAKY_BUCKET_LUA = `function(key, now, limit, window, burst, cost)
  local state = redis.call('HMGET', key, 'l', 'a', 'x')
  local level = 0
  if state[3] and tonumber(state[3]) > now then
    level = math.max(0, tonumber(state[1]) - ((now - tonumber(state[2])) * limit) / window)
  end
  if level + cost <= burst then
    local filled = level + cost
    local until_empty = math.ceil((filled * window) / limit)
    return 1, burst - filled, 0, until_empty, function()
      redis.call('HSET', key, 'l', num(filled), 'a', num(now), 'x', num(now + until_empty))
      redis.call('PEXPIREAT', key, num(now + until_empty))
    end
  end
  local retry = 0
  if cost <= burst then retry = ((level + cost - burst) * window) / limit end
  return 0, burst - level, retry, (level * window) / limit, nil
end`;
