/**
 * Redis twin of `fixed-window.algorithm.ts`. The state is one string of digits: the count, then
 * the window's number (its end / its length) modulo 10^9 in 9 digits, e.g. `37` + `028333334`.
 * The key expires when its window ends; later writes in the same window keep that expiry.
 *
 * Why digits: Redis keeps a string that is an integer of up to 19 digits as a number, inside the
 * key's object, so a key of up to 44 characters costs 88 B (`MEMORY USAGE`; 72 B up to 30), as
 * much as a 30-character key with a string of 12 bytes. A count of 0 (a leading zero) or above
 * 9 billion (past 2^63) is kept as a short string instead, with the same meaning.
 *
 * Exact, like the packed doubles of the other algorithms: counts are whole numbers, written with
 * `%d` (`%.17g` for any other number, which reads back as the same double), and read back by
 * `tonumber`. Two windows 10^9 windows apart (31 years of one-second windows) would read alike,
 * but a key lives no longer than its window.
 *
 * A value that does not read as such (another type, or the two packed doubles earlier versions
 * kept) is deleted and counts as none. It never has 9 bytes, so never looks like a block (see
 * redis-lua-prelude.ts).
 *
 * Cost: reading and writing the digits take about 0.2 µs more per check than struct.unpack and
 * struct.pack (Redis 7, measured in a Lua loop); a string.match would take 1 µs.
 */
const WINDOW_STATE = `-- The count stored under the key, and whether it is of the window numbered \`window_number\`.
  local function read(key, window_number)
    local stored = redis.pcall('GET', key)
    if not stored then return 0, false end
    if type(stored) == 'string' then
      if #stored == 9 and string.byte(stored, 1) == 98 then
        blocked_until = block_end(stored) -- nil once ended: then it is no state
        return 0, false
      end
      local count, stored_window
      local whole = #stored >= 10 and tonumber(stored)
      if whole and whole >= 0 and whole < 9007199254740992 and whole == math.floor(whole) then
        -- digits that a double holds exactly: the usual case
        stored_window = math.fmod(whole, 1000000000)
        count = (whole - stored_window) / 1000000000
      else
        local digits, window_digits = string.match(stored, '^([%d.e+%-]+)(%d%d%d%d%d%d%d%d%d)$')
        count, stored_window = digits and tonumber(digits), tonumber(window_digits)
      end
      if count and count >= 0 and count < math.huge then return count, stored_window == window_number end
    end
    heal(key)
    return 0, false
  end
  -- The end of the window \`now\` is in, its number (end / length) modulo 10^9, and the count
  -- stored for it: 0 if none, or if the key holds another window's.
  local function current(key, now, window)
    local window_end = now - (now % window) + window
    local window_number = math.fmod(math.floor(window_end / window), 1000000000)
    local stored_count, same_window = read(key, window_number)
    if same_window then return window_end, window_number, stored_count, true end
    return window_end, window_number, 0, false
  end
  -- One string.format: integer formatting for whole counts, which is what counts are.
  local function pack(count, window_number)
    if count < 9007199254740992 and count == math.floor(count) then return string.format('%d%09d', count, window_number) end
    return string.format('%.17g%09d', count, window_number)
  end`;

export const FIXED_WINDOW_LUA = `(function()
  ${WINDOW_STATE}
  return function(key, now, limit, window, burst, cost)
    local window_end, window_number, count, same_window = current(key, now, window)
    local reset = window_end - now
    if count + cost <= limit then
      return 1, limit - count - cost, 0, reset, function()
        local packed = pack(count + cost, window_number)
        if same_window then redis.call('SET', key, packed, 'KEEPTTL')
        else redis.call('SET', key, packed, 'PXAT', window_end) end
      end
    end
    return 0, limit - count, reset, reset, nil
  end
end)()`;

export const FIXED_WINDOW_REFUND_LUA = `(function()
  ${WINDOW_STATE}
  return function(key, now, limit, window, burst, cost, charged_at)
    local window_end, window_number, count, same_window = current(key, now, window)
    if not same_window or charged_at - (charged_at % window) + window ~= window_end then return end
    redis.call('SET', key, pack(math.max(0, count - cost), window_number), 'KEEPTTL')
  end
end)()`;

export const FIXED_WINDOW_ADJUST_LUA = `(function()
  ${WINDOW_STATE}
  return function(key, now, limit, window, burst, units)
    local window_end, window_number, count = current(key, now, window)
    redis.call('SET', key, pack(math.max(0, count + units), window_number), 'PXAT', window_end)
  end
end)()`;
