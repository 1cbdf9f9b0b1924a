import { ALGORITHMS } from '../algorithms/algorithm-registry.js';
import { UNDRAINED_LUA } from '../algorithms/undrained.js';
import { LUA_PRELUDE } from './redis-lua-prelude.js';

/**
 * The operations of RateLimitService and of `count`'s refunds on the keys of one limit, each one
 * script call: `peek`, `adjust`, `refund`, `reset` and `block`. The twin of MemoryStorage's
 * methods of the same names; every algorithm's `lua`, `luaAdjust` and `luaRefund` do the arithmetic.
 *
 * KEYS: one per rule, sharing one hash tag. ARGV: now (or ''), the deadline (see
 * redis-lua-prelude.ts), the operation, its amount (the cost to peek at or to refund, the units
 * to charge or give back if negative, the block's ms), the channel to publish invalidations on
 * ('' for none), the instant a refunded check was charged at ('' otherwise), then per key
 * (algorithm code, limit, window, burst).
 *
 * Reply: the server's time (0 when not read), 1 if the call came after its deadline and did
 * nothing (else 0), then for `peek` and `adjust` four values per key, as the check script's
 * records (for `adjust`, what a peek of one unit then sees): allowed, then remaining, retry-after
 * and reset unrounded, as text; `remaining` is what the check would leave.
 * `reset`, `block`, and a refund or reward on a key that was denying a unit, publish the keys
 * (newline-separated) so every app instance drops denials of them from its block cache.
 */
export const REDIS_CONTROL_LUA = `#!lua
${LUA_PRELUDE}

if expired then return { server_time, 1 } end

${UNDRAINED_LUA}

local algorithms = {}
local adjusts = {}
local refunds = {}
${Object.values(ALGORITHMS)
  .map((algorithm) => [
    `algorithms['${algorithm.code}'] = ${algorithm.lua}`,
    `adjusts['${algorithm.code}'] = ${algorithm.luaAdjust}`,
    `refunds['${algorithm.code}'] = ${algorithm.luaRefund}`,
  ].join('\n'))
  .join('\n')}

local op, amount, channel, charged_at = ARGV[3], tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])

local function publish()
  if channel ~= '' then redis.call('PUBLISH', channel, table.concat(KEYS, '\\n')) end
end

if op == 'reset' then
  redis.call('DEL', unpack(KEYS))
  publish()
  return { server_time, 0 }
end

if op == 'block' then
  for i = 1, #KEYS do write_block(KEYS[i], now + amount) end
  -- a shorter block may replace a longer one that instances have cached
  publish()
  return { server_time, 0 }
end

local function rule(i)
  local at = 7 + (i - 1) * 4
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

-- The numbers as the algorithm computed them, unrounded (as text, which Redis would otherwise
-- truncate): the app rounds them as for memory, after adding back a peek's cost.
local function answer(verdicts)
  local reply = { server_time, 0 }
  for i = 1, #verdicts do
    local v = verdicts[i]
    reply[#reply + 1] = v[1]
    reply[#reply + 1] = format('%.17g', v[2])
    reply[#reply + 1] = format('%.17g', v[3])
    reply[#reply + 1] = format('%.17g', v[4])
  end
  return reply
end

if op == 'peek' then return answer(look(amount)) end

-- adjust and refund leave a blocked key as it is; giving units back to a key that was denying
-- may reopen it, which every instance's block cache must hear of
if op == 'adjust' or op == 'refund' then
  local before = look(1)
  local reopened = false
  for i = 1, #KEYS do
    if not before[i][5] then
      current_key = i
      local code, limit, window, burst = rule(i)
      if op == 'adjust' then adjusts[code](KEYS[i], now, limit, window, burst, amount)
      else refunds[code](KEYS[i], now, limit, window, burst, amount, charged_at) end
      if (op == 'refund' or amount < 0) and before[i][1] == 0 then reopened = true end
    end
  end
  if reopened then publish() end
  if op == 'refund' then return { server_time, 0 } end
  return answer(look(1))
end

return redis.error_reply('unknown operation ' .. tostring(op))
`;
