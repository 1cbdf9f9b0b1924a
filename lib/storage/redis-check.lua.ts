import { ALGORITHMS } from '../algorithms/algorithm-registry.js';
import type { RateLimitAlgorithm } from '../algorithms/algorithm.interface.js';
import { LUA_PRELUDE } from './redis-lua-prelude.js';

/**
 * One script decides a batch of checks in one call. Each check is all or nothing, and is decided
 * (and committed) before the next, so two checks of one key in a batch see each other.
 *
 * KEYS: the keys of every check, in order; one check's keys share one hash tag.
 * ARGV: now (ms, or '' for the server's TIME), the number of distinct rules R, R times (algorithm
 * code, limit, window, burst, capacity, blockFor ms or 0), then per check either one rule number
 * (the usual check: one rule, cost 1) or -n, the cost and n rule numbers. Redis pays for every
 * argument, hence the short form.
 *
 * A key under a block is denied until it ends (see redis-lua-prelude.ts). A rule with `blockFor`
 * that denies a request it could ever admit blocks its key, after the check's reads.
 *
 * Reply: per check, per rule: allowed, floor(remaining), ceil(retryAfterMs), ceil(resetMs). (Not
 * `now`: turning a 13-digit number into a reply costs Redis more than the rest of the reply.) A
 * check that raised an error has allowed = -1 and the error's text instead of remaining, and
 * committed nothing: reads come before commits, and a commit only SETs a string or adds to a
 * sorted set it has just read. (A read may drop state that counts as none anyway: expired log
 * entries, unreadable state.) Then the numbers (1-based) of the keys whose state could not be
 * read and was dropped, and last, how many of those there are.
 *
 * State that cannot be read (another type, a truncated string) is deleted and counts as none:
 * one client's bad key must cost that client a fresh start, not every client of the batch an error.
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

local algorithms = {}
${algorithms.map((algorithm) => `algorithms['${algorithm.code}'] = ${algorithm.lua}`).join('\n')}

local rules = {}
local rule_count = tonumber(ARGV[2])
for r = 1, rule_count do
  local at = 3 + (r - 1) * 6
  rules[r] = { algorithms[ARGV[at]], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4]), tonumber(ARGV[at + 5]) }
end

local reply = {}

local function answer(at, allowed, remaining, retry_after, reset)
  reply[at + 1] = allowed
  reply[at + 2] = math.floor(remaining)
  reply[at + 3] = math.ceil(retry_after)
  reply[at + 4] = math.ceil(reset)
end

-- One check: the usual one (only_rule, cost 1), or n rules numbered in ARGV from first_rule, on
-- keys first_key..; four numbers per rule written to reply from r.
local function decide(r, first_key, n, cost, first_rule, only_rule)
  if n == 1 and only_rule then
    current_key = first_key
    local allowed, remaining, retry_after, reset, commit, was_blocked = unless_blocked(only_rule[1](KEYS[first_key], now, only_rule[2], only_rule[3], only_rule[4], 1))
    if allowed == 1 then
      commit()
    elseif only_rule[6] > 0 and not was_blocked and only_rule[5] >= 1 then
      write_block(KEYS[first_key], now + only_rule[6])
      remaining, retry_after, reset = 0, only_rule[6], only_rule[6]
    end
    answer(r, allowed, remaining, retry_after, reset)
    return
  end
  local commits = {}
  local blocks = {}
  local all_allowed = true
  for i = 1, n do
    local rule = rules[tonumber(ARGV[first_rule + i - 1])]
    current_key = first_key + i - 1
    local allowed, remaining, retry_after, reset, commit, was_blocked = unless_blocked(rule[1](KEYS[current_key], now, rule[2], rule[3], rule[4], cost))
    if allowed == 0 then
      all_allowed = false
      if rule[6] > 0 and not was_blocked and cost <= rule[5] then
        blocks[#blocks + 1] = { KEYS[current_key], now + rule[6] }
        remaining, retry_after, reset = 0, rule[6], rule[6]
      end
    end
    commits[i] = commit
    answer(r + (i - 1) * 4, allowed, remaining, retry_after, reset)
  end
  if all_allowed then
    for i = 1, n do commits[i]() end
  else
    for b = 1, #blocks do write_block(blocks[b][1], blocks[b][2]) end
  end
end

local function failed(r, n, error)
  local text = type(error) == 'table' and (error.err or 'error') or tostring(error)
  for i = 1, n do
    local at = r + (i - 1) * 4
    reply[at + 1], reply[at + 2], reply[at + 3], reply[at + 4] = -1, text, 0, 0
  end
end

local r = 0
local key = 1
local at = 3 + rule_count * 6
local last = #ARGV
while at <= last do
  local head = tonumber(ARGV[at])
  local n, cost, first_rule, only_rule = 1, 1, nil, nil
  if head > 0 then
    only_rule = rules[head]
    at = at + 1
  else
    n, cost, first_rule = -head, tonumber(ARGV[at + 1]), at + 2
    at = at + 2 - head
  end
  blocked_until = nil
  local ok, error = pcall(decide, r, key, n, cost, first_rule, only_rule)
  if not ok then failed(r, n, error) end
  r = r + 4 * n
  key = key + n
end

for h = 1, #healed do reply[r + h] = healed[h] end
reply[r + #healed + 1] = #healed
return reply
`;
}

/** The script for batches that mix algorithms. */
export const REDIS_CHECK_LUA = buildCheckScript(Object.values(ALGORITHMS));
