import { ALGORITHMS } from '../algorithms/algorithm-registry.js';
import type { RateLimitAlgorithm } from '../algorithms/algorithm.interface.js';
import { LUA_PRELUDE } from './redis-lua-prelude.js';

/**
 * One script decides a batch of checks in one call. Each check is all or nothing, and is decided
 * (and committed) before the next, so two checks of one key in a batch see each other.
 *
 * KEYS: the keys of every check, in order; one check's keys share one hash tag.
 * ARGV: now (ms, or '' for the server's TIME), the deadline (see redis-lua-prelude.ts), the
 * number of distinct rules R, R times (algorithm
 * code, limit, window, burst, capacity, blockFor ms or 0, observed 0 or 1), then per check either one rule number
 * (the usual check: one rule, cost 1) or -n, the cost and n rule numbers. Redis pays for every
 * argument, hence the short form, and the shortest: when every check is the usual one, R is sent
 * as -R and the checks' rule numbers follow as one string, a character each.
 *
 * A key under a block is denied until it ends (see redis-lua-prelude.ts). A rule with `blockFor`
 * that denies a request it could ever admit blocks its key, after the check's reads.
 *
 * Reply: { records, errors, healed, now, server time, attempts }; records empty when the batch
 * came after its deadline and decided nothing.
 * - records: per check, per rule, 25 bytes packed little-endian (`<Bddd`): allowed (0 or 1; 2
 *   for a check that raised an error), then remaining, retry-after and reset as the algorithm
 *   computed them, unrounded (the app rounds them as for memory). One string, because Redis
 *   turning a table of numbers into a reply, and ioredis parsing it, cost more than deciding.
 * - errors: the error text of each check that raised one, in order. Such a check committed
 *   nothing: reads come before commits, and a commit only SETs a string or appends to a list it
 *   has just read. (A read may drop state that counts as none anyway: expired log entries,
 *   unreadable state.)
 * - healed: the numbers (1-based) of the keys whose state could not be read and was dropped.
 * - now: the instant the checks were decided at, as text (exact), which a refund names later.
 * - server time: the server's clock (ms), or 0 when it was not read (no deadline, a clock given).
 * - attempts: per rule the limit advisor follows (observed 1), in order, 8 bytes (`<d`): the units
 *   its client attempted in the rule's fixed window, admitted or not, this check's included;
 *   counted under `<key>:o<window number>` (same hash tag) once the check is decided, with
 *   `redis.pcall`, so a bad counter never fails a decided check. Empty when no rule is observed.
 *
 * State that cannot be read (another type, a truncated string) is deleted and counts as none:
 * one client's bad key must cost that client a fresh start, not every client of the batch an error.
 *
 * An algorithm's verdict comes with `commit` and up to three arguments for it: `commit(key, a, b, c)`
 * writes the state if the whole check is admitted. A shared function and its arguments, rather
 * than a closure per check, which Redis would allocate and collect.
 *
 * The `#!lua` line declares a script that writes, so Redis refuses it before it runs when memory
 * is full (maxmemory with noeviction), instead of letting its first delete through.
 *
 * Redis runs a script's whole body on every call, so each script defines only the algorithms it
 * dispatches to: one script per algorithm for the usual batch, and one with all of them for
 * batches that mix algorithms.
 */
export function buildCheckScript(algorithms: readonly RateLimitAlgorithm[]): string {
  return `#!lua
${LUA_PRELUDE}

if expired then return { '', {}, {}, string.format('%.17g', now), server_time, '' } end

local algorithms = {}
${algorithms.map((algorithm) => `algorithms['${algorithm.code}'] = ${algorithm.lua}`).join('\n')}

local rules = {}
local rule_count = tonumber(ARGV[3])
local usual_only = rule_count < 0
if usual_only then rule_count = -rule_count end
for r = 1, rule_count do
  local at = 4 + (r - 1) * 7
  rules[r] = { algorithms[ARGV[at]], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4]), tonumber(ARGV[at + 5]), ARGV[at + 6] == '1' }
end

local pack = struct.pack
local records = {}
local errors = {}
local FAILED = pack('<Bddd', 2, 0, 0, 0)

-- The check being decided: its first record, key and argument, its number of rules, and where
-- the next check's arguments start.
local r, key, at, n, next_at = 0, 1, 4 + rule_count * 7, 1, 0
local last = #ARGV
-- When every check is the usual one, their rule numbers are the characters of one argument, and
-- \`at\` counts characters.
local heads = nil
if usual_only then
  heads, at = ARGV[at], 1
  last = #heads
end
local byte = string.byte
local attempts = {}
local floor = math.floor

-- The limit advisor's count of what the key's client attempted in the rule's window.
local function count_attempt(k, rule, cost)
  local window = rule[3]
  local counter = k .. ':o' .. string.format('%d', floor(now / window))
  local count = redis.pcall('INCRBY', counter, cost)
  if type(count) ~= 'number' then
    redis.pcall('DEL', counter)
    count = 0
  elseif count == cost then
    redis.pcall('PEXPIRE', counter, window * 2)
  end
  attempts[#attempts + 1] = pack('<d', count)
end

-- The usual check: one rule, cost 1.
local function decide_one(rule)
  current_key = key
  local k = KEYS[key]
  local allowed, remaining, retry_after, reset, commit, a, b, c = rule[1](k, now, rule[2], rule[3], rule[4], 1)
  if blocked_until then
    allowed, remaining, retry_after, reset = 0, 0, blocked_until - now, blocked_until - now
  elseif allowed == 1 then
    commit(k, a, b, c)
  elseif rule[6] > 0 and rule[5] >= 1 then
    write_block(k, now + rule[6])
    remaining, retry_after, reset = 0, rule[6], rule[6]
  end
  records[r + 1] = pack('<Bddd', allowed, remaining, retry_after, reset)
  if rule[7] then count_attempt(k, rule, 1) end
end

-- n rules, numbered in ARGV from first_rule: committed only if every one admits.
local function decide_all(cost, first_rule)
  local commits, blocks = {}, {}
  local all_allowed = true
  for i = 1, n do
    local rule = rules[tonumber(ARGV[first_rule + i - 1])]
    current_key = key + i - 1
    blocked_until = nil
    local k = KEYS[current_key]
    local allowed, remaining, retry_after, reset, commit, a, b, c = rule[1](k, now, rule[2], rule[3], rule[4], cost)
    if blocked_until then
      allowed, remaining, retry_after, reset = 0, 0, blocked_until - now, blocked_until - now
      all_allowed = false
    elseif allowed == 0 then
      all_allowed = false
      if rule[6] > 0 and cost <= rule[5] then
        blocks[#blocks + 1] = k
        blocks[#blocks + 1] = now + rule[6]
        remaining, retry_after, reset = 0, rule[6], rule[6]
      end
    end
    commits[i] = { commit, k, a, b, c }
    records[r + i] = pack('<Bddd', allowed, remaining, retry_after, reset)
  end
  if all_allowed then
    for i = 1, n do
      local commit, k, a, b, c = unpack(commits[i], 1, 5)
      commit(k, a, b, c)
    end
  else
    for b = 1, #blocks, 2 do write_block(blocks[b], blocks[b + 1]) end
  end
  for i = 1, n do
    local rule = rules[tonumber(ARGV[first_rule + i - 1])]
    if rule[7] then count_attempt(KEYS[key + i - 1], rule, cost) end
  end
end

-- Decides the checks from the current one to the last. An error stops it at the check that
-- raised it; the loop below records the failure and resumes after it: one pcall per batch.
local function decide_from_here()
  if heads then
    while at <= last do
      blocked_until = nil
      n, next_at = 1, at + 1
      decide_one(rules[byte(heads, at)])
      r, key, at = r + 1, key + 1, at + 1
    end
    return
  end
  while at <= last do
    blocked_until = nil
    local head = tonumber(ARGV[at])
    n, next_at = 1, last + 1
    if head > 0 then
      next_at = at + 1
      decide_one(rules[head])
    else
      n, next_at = -head, at + 2 - head
      decide_all(tonumber(ARGV[at + 1]), at + 2)
    end
    r, key, at = r + n, key + n, next_at
  end
end

while true do
  local ok, error = pcall(decide_from_here)
  if ok then break end
  errors[#errors + 1] = type(error) == 'table' and (error.err or 'error') or tostring(error)
  for i = 1, n do records[r + i] = FAILED end
  r, key, at = r + n, key + n, next_at
end

return { table.concat(records), errors, healed, string.format('%.17g', now), server_time, table.concat(attempts) }
`;
}

/** The script for batches that mix algorithms. */
export const REDIS_CHECK_LUA = buildCheckScript(Object.values(ALGORITHMS));
