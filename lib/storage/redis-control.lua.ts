import { ALGORITHMS } from '../algorithms/algorithm-registry.js';
import { LUA_PRELUDE } from './redis-lua-prelude.js';

/**
 * The operations of RateLimitService (and of `count`'s refunds) on the keys of one limit, each
 * one script call: `peek`, `adjust`, `reset` and `block`. The twin of MemoryStorage's methods of
 * the same names; every algorithm's `lua` and `luaAdjust` do the arithmetic.
 *
 * KEYS: one per rule, sharing one hash tag. ARGV: now (or ''), the operation, its amount (the
 * cost to peek at, the units to charge or refund if negative, the block's ms), the channel to
 * publish invalidations on ('' for none), then per key (algorithm code, limit, window, burst).
 *
 * Reply of `peek` and `adjust`: four numbers per key, as the check script's (for `adjust`, what
 * a peek of one unit then sees); `remaining` is what the check would leave, as there.
 * `reset`, `block`, and a refund on a key that was denying a unit, publish the keys (newline-separated)
 * so every app instance drops denials of them from its block cache.
 */
export const REDIS_CONTROL_LUA = `#!lua
${LUA_PRELUDE}

local algorithms = {}
local adjusts = {}
${Object.values(ALGORITHMS)
  .map((algorithm) => `algorithms['${algorithm.code}'] = ${algorithm.lua}\nadjusts['${algorithm.code}'] = ${algorithm.luaAdjust}`)
  .join('\n')}

local op, amount, channel = ARGV[2], tonumber(ARGV[3]), ARGV[4]

if op == 'reset' then
  redis.call('DEL', unpack(KEYS))
  if channel ~= '' then redis.call('PUBLISH', channel, table.concat(KEYS, '\\n')) end
  return {}
end

if op == 'block' then
  for i = 1, #KEYS do write_block(KEYS[i], now + amount) end
  -- a shorter block may replace a longer one that instances have cached
  if channel ~= '' then redis.call('PUBLISH', channel, table.concat(KEYS, '\\n')) end
  return {}
end

local function rule(i)
  local at = 5 + (i - 1) * 4
  return ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
end

-- Every key's verdict on a request of \`cost\`, charging nothing: per key, allowed, remaining,
-- retry after, reset, and whether a block decided it.
local function look(cost)
  local verdicts = {}
  for i = 1, #KEYS do
    current_key = i
    blocked_until = nil
    local code, limit, window, burst = rule(i)
    local allowed, remaining, retry_after, reset, _, was_blocked = unless_blocked(algorithms[code](KEYS[i], now, limit, window, burst, cost))
    verdicts[i] = { allowed, remaining, retry_after, reset, was_blocked }
  end
  return verdicts
end

local function answer(verdicts)
  local reply = {}
  for i = 1, #verdicts do
    local v = verdicts[i]
    reply[#reply + 1] = v[1]
    reply[#reply + 1] = math.floor(v[2])
    reply[#reply + 1] = math.ceil(v[3])
    reply[#reply + 1] = math.ceil(v[4])
  end
  return reply
end

if op == 'peek' then return answer(look(amount)) end

if op == 'adjust' then
  local before = look(1)
  local reopened = false
  for i = 1, #KEYS do
    if not before[i][5] then
      current_key = i
      local code, limit, window, burst = rule(i)
      adjusts[code](KEYS[i], now, limit, window, burst, amount)
      if amount < 0 and before[i][1] == 0 then reopened = true end
    end
  end
  if reopened and channel ~= '' then redis.call('PUBLISH', channel, table.concat(KEYS, '\\n')) end
  return answer(look(1))
end

return redis.error_reply('unknown operation ' .. tostring(op))
`;
