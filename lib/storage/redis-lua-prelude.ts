/**
 * What every script starts with: the clock, the caller's deadline, and reading state that may be
 * unreadable or blocked. ARGV[1] is now (ms), or '' for the server's TIME; ARGV[2] the server's
 * time (ms) after which the caller has given up on the script, or '' for no deadline.
 *
 * A script run after its deadline (Redis paused, frozen, or reached late) must change nothing:
 * its caller has reported it failed, and the failure must not take effect later. `expired` says
 * so before anything is read; `server_time` goes back in the reply, so the app learns how the
 * server's clock stands to its own (see server-clock.ts).
 *
 * A block (`block`, or a rule's `blockFor`) replaces a key's state with a 9-byte string: `b` and
 * the packed time it ends, expiring then. No algorithm's state has that size, so the usual read
 * finds it at no extra cost: `state()` answers "no state" and sets `blocked_until`, and the
 * caller turns the verdict into a denial until then.
 */
export const LUA_PRELUDE = `local now = tonumber(ARGV[1])
local deadline = tonumber(ARGV[2])
local server_time = 0
if not now or deadline then
  local time = redis.call('TIME')
  server_time = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
if not now then now = server_time end
local expired = deadline ~= nil and server_time > deadline

local healed = {}
local current_key = 0
local blocked_until = nil

local function heal(key)
  redis.call('DEL', key)
  healed[#healed + 1] = current_key
end

local function finite(value) return value == value and value > -math.huge and value < math.huge end

local format = string.format
local last_whole, last_text = nil, nil
-- A whole number (a time in ms) as a command argument. Redis writes a Lua number out with
-- '%.17g', which costs it more than the rest of a SET; '%d' costs a third of that, and the last
-- one is kept, since checks of one rule in a batch often share an expiry. Anything but a whole
-- number within 2^53 stays a number, as before.
local function whole(n)
  if n == last_whole then return last_text end
  if n % 1 == 0 and n < 9007199254740992 and n > -9007199254740992 then
    last_whole, last_text = n, format('%d', n)
    return last_text
  end
  return n
end

-- When the block stored as \`stored\` ends, if it is a block that has not ended.
local function block_end(stored)
  if #stored ~= 9 or string.byte(stored, 1) ~= 98 then return nil end
  local ends = struct.unpack('<d', string.sub(stored, 2))
  if finite(ends) and ends > now then return ends end
  return nil
end

local function write_block(key, ends)
  redis.call('SET', key, 'b' .. struct.pack('<d', ends), 'PXAT', whole(ends))
end

-- Commits packed state: expiring at \`expires_at\`, or keeping the key's expiry if that is nil.
local function set_state(key, packed, expires_at)
  if expires_at then
    redis.call('SET', key, packed, 'PXAT', whole(expires_at))
  else
    redis.call('SET', key, packed, 'KEEPTTL')
  end
end

-- The numbers packed under a key, or nothing if there is no key (or a block: see blocked_until).
-- Unreadable state is healed.
local function state(key, size, format)
  local stored = redis.pcall('GET', key)
  if not stored then return nil end
  if type(stored) == 'string' then
    if #stored == size then
      local a, b, c = struct.unpack(format, stored)
      if finite(a) and finite(b) and (c == nil or finite(c)) then return a, b, c end
    elseif #stored == 9 and string.byte(stored, 1) == 98 then
      blocked_until = block_end(stored) -- nil once ended: then it is no state
      return nil
    end
  end
  heal(key)
  return nil
end

-- For a key that should hold the sliding log's list but does not: true if it holds a block
-- (blocked_until set); otherwise the key is dropped (healed, unless it was an ended block) and false.
local function blocked_or_healed(key)
  local stored = redis.pcall('GET', key)
  if type(stored) == 'string' and #stored == 9 and string.byte(stored, 1) == 98 then
    blocked_until = block_end(stored)
    if blocked_until then return true end
    redis.call('DEL', key)
    return false
  end
  heal(key)
  return false
end

-- A verdict, overridden by a block found while reading the state: denied until it ends.
local function unless_blocked(allowed, remaining, retry_after, reset, commit)
  if not blocked_until then return allowed, remaining, retry_after, reset, commit, false end
  local ends = blocked_until
  blocked_until = nil
  return 0, 0, ends - now, ends - now, nil, true
end`;
