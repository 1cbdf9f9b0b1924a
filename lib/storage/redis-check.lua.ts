import { ALGORITHMS, getAlgorithm } from '../algorithms/algorithm-registry.js';
import type { RateLimitAlgorithm } from '../algorithms/algorithm.interface.js';
import type { RateLimitCheck } from './rate-limit-storage.interface.js';

/**
 * One script decides a whole check in one round trip, all or nothing.
 *
 * KEYS: one per rule, all inside one hash tag.
 * ARGV: now (ms, or '' to use the server's TIME), cost, then per rule: algorithm code, limit, window, burst.
 * Returns per rule: allowed, floor(remaining), ceil(retryAfterMs), ceil(resetMs). (Not `now`: turning a
 * 13-digit number into a reply costs Redis more than the rest of the reply.)
 * Commits only if every rule allowed.
 *
 * Redis runs a script's whole body on every call, so each script defines only the algorithms it
 * dispatches to: one script per algorithm for the usual check, and one with all of them for
 * checks that mix algorithms.
 */
export function buildCheckScript(algorithms: readonly RateLimitAlgorithm[]): string {
  return `
-- Fractions are stored with 17 significant digits, so they read back as the same double.
local function num(value) return string.format('%.17g', value) end

local algorithms = {}
${algorithms.map((algorithm) => `algorithms['${algorithm.code}'] = ${algorithm.lua}`).join('\n')}

local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local cost = tonumber(ARGV[2])
local reply = {}
local commits = {}
local all_allowed = true
for i = 1, #KEYS do
  local at = 3 + (i - 1) * 4
  local allowed, remaining, retry_after, reset, commit = algorithms[ARGV[at]](
    KEYS[i], now, tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), cost)
  if allowed == 0 then all_allowed = false end
  commits[i] = commit
  local r = #reply
  reply[r + 1] = allowed
  reply[r + 2] = math.floor(remaining)
  reply[r + 3] = math.ceil(retry_after)
  reply[r + 4] = math.ceil(reset)
end
if all_allowed then
  for i = 1, #commits do commits[i]() end
end
return reply
`;
}

/** The script for checks that mix algorithms. */
export const REDIS_CHECK_LUA = buildCheckScript(Object.values(ALGORITHMS));

/** KEYS then ARGV of {@link REDIS_CHECK_LUA} for one check; `now` undefined means the server's TIME. */
export function redisCheckArguments(checks: readonly RateLimitCheck[], cost: number, now?: number): (string | number)[] {
  const args: (string | number)[] = [];
  for (const { key } of checks) args.push(key);
  args.push(now ?? '', cost);
  for (const { rule } of checks) args.push(getAlgorithm(rule.algorithm).code, rule.limit, rule.windowMs, rule.burst);
  return args;
}
