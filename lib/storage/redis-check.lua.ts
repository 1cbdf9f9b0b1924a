import { ALGORITHMS } from '../algorithms/algorithm-registry.js';
import type { RateLimitAlgorithm } from '../algorithms/algorithm.interface.js';

/**
 * One script decides a batch of checks in one call. Each check is all or nothing, and is decided
 * (and committed) before the next, so two checks of one key in a batch see each other.
 *
 * KEYS: the keys of every check, in order; one check's keys share one hash tag.
 * ARGV: now (ms, or '' for the server's TIME), the number of distinct rules R, R times (algorithm
 * code, limit, window, burst), then per check either one rule number (the usual check: one rule,
 * cost 1) or -n, the cost and n rule numbers. Redis pays for every argument, hence the short form.
 * Returns per check, per rule: allowed, floor(remaining), ceil(retryAfterMs), ceil(resetMs). (Not
 * `now`: turning a 13-digit number into a reply costs Redis more than the rest of the reply.)
 *
 * Redis runs a script's whole body on every call, so each script defines only the algorithms it
 * dispatches to: one script per algorithm for the usual batch, and one with all of them for
 * batches that mix algorithms.
 */
export function buildCheckScript(algorithms: readonly RateLimitAlgorithm[]): string {
  return `
-- Redis writes a number argument exactly; inside a string, a number needs 17 significant digits.
local function num(value) return string.format('%.17g', value) end

local algorithms = {}
${algorithms.map((algorithm) => `algorithms['${algorithm.code}'] = ${algorithm.lua}`).join('\n')}

local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local rules = {}
local rule_count = tonumber(ARGV[2])
for r = 1, rule_count do
  local at = 3 + (r - 1) * 4
  rules[r] = { algorithms[ARGV[at]], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]) }
end

local reply = {}
local r = 0
local key = 0
local at = 3 + rule_count * 4
local last = #ARGV
while at <= last do
  local head = tonumber(ARGV[at])
  if head > 0 then
    local rule = rules[head]
    key = key + 1
    local allowed, remaining, retry_after, reset, commit = rule[1](KEYS[key], now, rule[2], rule[3], rule[4], 1)
    if allowed == 1 then commit() end
    reply[r + 1] = allowed
    reply[r + 2] = math.floor(remaining)
    reply[r + 3] = math.ceil(retry_after)
    reply[r + 4] = math.ceil(reset)
    r = r + 4
    at = at + 1
  else
    local n = -head
    local cost = tonumber(ARGV[at + 1])
    local commits = {}
    local all_allowed = true
    for i = 1, n do
      local rule = rules[tonumber(ARGV[at + 1 + i])]
      local allowed, remaining, retry_after, reset, commit = rule[1](KEYS[key + i], now, rule[2], rule[3], rule[4], cost)
      if allowed == 0 then all_allowed = false end
      commits[i] = commit
      reply[r + 1] = allowed
      reply[r + 2] = math.floor(remaining)
      reply[r + 3] = math.ceil(retry_after)
      reply[r + 4] = math.ceil(reset)
      r = r + 4
    end
    if all_allowed then
      for i = 1, n do commits[i]() end
    end
    key = key + n
    at = at + 2 + n
  end
end
return reply
`;
}

/** The script for batches that mix algorithms. */
export const REDIS_CHECK_LUA = buildCheckScript(Object.values(ALGORITHMS));
