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
local healed = {}
local current_key = 0
local function heal(key)
  redis.call('DEL', key)
  healed[#healed + 1] = current_key
end

local function finite(value) return value == value and value > -math.huge and value < math.huge end

-- The numbers packed under a key, or nothing if there is no key; unreadable state is healed.
local function state(key, size, format)
  local stored = redis.pcall('GET', key)
  if not stored then return nil end
  if type(stored) == 'string' and #stored == size then
    local a, b, c = struct.unpack(format, stored)
    if finite(a) and finite(b) and (c == nil or finite(c)) then return a, b, c end
  end
  heal(key)
  return nil
end

-- A sliding-log member: the running count of units before and after its request.
local function log_entry(member)
  if type(member) ~= 'string' or #member ~= 16 then return nil end
  local before, after = struct.unpack('>dd', member)
  if finite(before) and finite(after) then return before, after end
  return nil
end

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

-- One check: the usual one (only_rule, cost 1), or n rules numbered in ARGV from first_rule, on
-- keys first_key..; four numbers per rule written to reply from r.
local function decide(r, first_key, n, cost, first_rule, only_rule)
  if n == 1 and only_rule then
    current_key = first_key
    local allowed, remaining, retry_after, reset, commit = only_rule[1](KEYS[first_key], now, only_rule[2], only_rule[3], only_rule[4], 1)
    reply[r + 1] = allowed
    reply[r + 2] = math.floor(remaining)
    reply[r + 3] = math.ceil(retry_after)
    reply[r + 4] = math.ceil(reset)
    if allowed == 1 then commit() end
    return
  end
  local commits = {}
  local all_allowed = true
  for i = 1, n do
    local rule = rules[tonumber(ARGV[first_rule + i - 1])]
    current_key = first_key + i - 1
    local allowed, remaining, retry_after, reset, commit = rule[1](KEYS[first_key + i - 1], now, rule[2], rule[3], rule[4], cost)
    if allowed == 0 then all_allowed = false end
    commits[i] = commit
    local at = r + (i - 1) * 4
    reply[at + 1] = allowed
    reply[at + 2] = math.floor(remaining)
    reply[at + 3] = math.ceil(retry_after)
    reply[at + 4] = math.ceil(reset)
  end
  if all_allowed then
    for i = 1, n do commits[i]() end
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
local at = 3 + rule_count * 4
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
