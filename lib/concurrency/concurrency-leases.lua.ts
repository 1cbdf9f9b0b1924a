/**
 * Redis twin of `concurrency-leases.ts`: the leases of one key are a sorted set, one member per
 * lease id scored by its expiry (ms since the epoch), so "drop the expired ones" is one
 * ZREMRANGEBYSCORE and the count in flight is ZCARD. The key expires with its latest lease: an
 * app instance that died holding leases leaves nothing behind for longer than `leaseMs`.
 *
 * KEYS[1]: the key. ARGV: now (ms, or '' for the server's TIME), the deadline (see
 * redis-lua-prelude.ts), limit, leaseMs, lease id; then, optionally, the newest lease the caller
 * holds under the key and its expiry (or '' and ''), and lease id and expiry pairs it holds there.
 * Redis that lacks that newest lease while it is unexpired has lost what the caller wrote (a
 * restart, a failover to a replica behind; replication loses the newest writes first): nothing is
 * acquired, the caller asks again with its leases, which are put back (as CONCURRENCY_RESTORE_LUA
 * does) before the count. So a caller's own acquire never counts without the leases it holds,
 * whether or not it has yet heard of the restart or failover.
 * Reply: allowed (0|1, -1 when it came after its deadline and did nothing, -2 when the newest
 * lease was missing and nothing was acquired), leases in flight (this one included when
 * granted), 1 if the key held something else than a sorted set, which was deleted and counted as
 * no lease (one client's bad key must cost that client a fresh start, not an error on every
 * request), the server's time (0 when not read), when the lease expires, as text: what the app
 * keeps to put the lease back if Redis loses it, and how many leases were put back.
 *
 * The `#!lua` line declares a script that writes, so Redis refuses it before it runs when memory
 * is full (maxmemory with noeviction), instead of letting its first delete through.
 */
export const CONCURRENCY_ACQUIRE_LUA = `#!lua
local key = KEYS[1]
local now = tonumber(ARGV[1])
local deadline = tonumber(ARGV[2])
local server_time = 0
if not now or deadline then
  local time = redis.call('TIME')
  server_time = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
if not now then now = server_time end
if deadline and server_time > deadline then return { -1, 0, 0, server_time, '', 0 } end
local limit, lease_ms, id = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]

local healed = 0
if type(redis.pcall('ZREMRANGEBYSCORE', key, '-inf', now)) == 'table' then
  redis.call('DEL', key)
  healed = 1
end
local newest_expiry = tonumber(ARGV[7])
if newest_expiry and newest_expiry > now and not redis.call('ZSCORE', key, ARGV[6]) then
  return { -2, 0, healed, server_time, '', 0 }
end
local restored = 0
for i = 8, #ARGV, 2 do
  local expires_at = tonumber(ARGV[i + 1])
  if expires_at > now and redis.call('ZADD', key, 'NX', expires_at, ARGV[i]) == 1 then restored = restored + 1 end
end
local in_flight = redis.call('ZCARD', key)
-- a lease still held is renewed and counted once
local held = redis.call('ZSCORE', key, id)
if not held and in_flight >= limit then
  if restored > 0 then
    local latest = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
    redis.call('PEXPIREAT', key, math.ceil(latest))
  end
  return { 0, in_flight, healed, server_time, '', restored }
end
redis.call('ZADD', key, now + lease_ms, id)
if not held then in_flight = in_flight + 1 end
local latest = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
redis.call('PEXPIREAT', key, math.ceil(latest))
return { 1, in_flight, healed, server_time, string.format('%.17g', now + lease_ms), restored }
`;

/**
 * Puts back leases an app instance still holds, after Redis lost them (a restart, a failover to
 * a replica that had not received them): KEYS[1], ARGV: now (or ''), then lease id and expiry
 * pairs. Each lease gets its own expiry again, whatever the limit: the requests are in flight,
 * and counting them again is what keeps the next ones out. A lease already there is left as it
 * is, and one that has expired is not put back. Reply: how many leases were missing.
 */
export const CONCURRENCY_RESTORE_LUA = `#!lua
local key = KEYS[1]
local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
if redis.call('TYPE', key).ok ~= 'zset' then redis.call('DEL', key) end
local missing = 0
for i = 2, #ARGV, 2 do
  local expires_at = tonumber(ARGV[i + 1])
  if expires_at > now and redis.call('ZADD', key, 'NX', expires_at, ARGV[i]) == 1 then missing = missing + 1 end
end
local latest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]
if latest then redis.call('PEXPIREAT', key, math.ceil(tonumber(latest))) end
return missing
`;

/**
 * Gives lease ARGV[1] under KEYS[1] back: ZREM, which deletes the key with its last lease; the
 * key then expires with the latest lease left. Reply: 1 if the lease was held, 0 if not (unknown,
 * expired or released already), -1 if the key held something else than a sorted set, which was
 * deleted (as acquiring would have).
 */
export const CONCURRENCY_RELEASE_LUA = `#!lua
local key = KEYS[1]
local removed = redis.pcall('ZREM', key, ARGV[1])
if type(removed) == 'table' then
  redis.call('DEL', key)
  return -1
end
if removed == 1 then
  local latest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]
  if latest then redis.call('PEXPIREAT', key, math.ceil(tonumber(latest))) end
end
return removed
`;
