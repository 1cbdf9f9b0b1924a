import type { AlgorithmOutcome, RateLimitAlgorithm } from './algorithm.interface.js';
import { SLIDING_WINDOW_LOG_ADJUST_LUA, SLIDING_WINDOW_LOG_LUA, SLIDING_WINDOW_LOG_REFUND_LUA } from './sliding-window-log.lua.js';

const NO_ENTRIES: readonly number[] = [];
/** Numbers per entry: when the request came, and the running count of units before and after it. */
const ENTRY = 3;

/**
 * At most `limit` units in any window-long interval: exact, at the price of one entry per admitted
 * request. Each entry carries running counts, so a request's weight costs nothing: the units in
 * the window are the newest entry's "after" minus the oldest one's "before".
 * State: a flat list of entries (time, before, after), oldest first.
 */
export const slidingWindowLog: RateLimitAlgorithm = {
  name: 'sliding-window-log',
  code: 'sl',
  usesBurst: false,
  lua: SLIDING_WINDOW_LOG_LUA,
  luaAdjust: SLIDING_WINDOW_LOG_ADJUST_LUA,
  luaRefund: SLIDING_WINDOW_LOG_REFUND_LUA,
  check(state, at, now, { limit, windowMs }, cost, out, log) {
    const entries = at >= 0 && log !== undefined ? log : NO_ENTRIES;
    // Entries at or before now - window have left the window.
    let first = 0;
    while (first < entries.length && entries[first] <= now - windowMs) first += ENTRY;
    const newest = entries.length - ENTRY;
    const count = first < entries.length ? entries[newest + 2] - entries[first + 1] : 0;
    if (count + cost <= limit) {
      out.allowed = true;
      out.remaining = limit - count - cost;
      out.retryAfterMs = 0;
      out.resetMs = windowMs;
      out.expiresAt = now + windowMs;
      out.a = at >= 0 ? first : 0; // numbers to drop on commit
      return;
    }
    out.allowed = false;
    out.remaining = limit - count;
    out.retryAfterMs = cost <= limit ? entries[entryReaching(entries, first, entries[first + 1] + count + cost - limit)] + windowMs - now : 0;
    out.resetMs = count > 0 ? entries[newest] + windowMs - now : 0;
  },
  adjust(state, at, now, { windowMs }, units, out, log) {
    const entries = log!;
    let first = 0;
    while (first < entries.length && entries[first] <= now - windowMs) first += ENTRY;
    if (first > 0) entries.splice(0, first);
    if (units > 0) {
      out.a = 0;
      this.log!.commit(entries, now, units, out);
    } else if (entries.length > 0) {
      // A refund takes back the newest units: the entries above the running count it leaves.
      const target = entries[entries.length - ENTRY + 2] + units;
      if (target <= entries[1]) {
        entries.length = 0;
      } else {
        const last = entryReaching(entries, 0, target);
        entries[last + 2] = target;
        entries.length = last + ENTRY;
      }
    }
    out.expiresAt = entries.length > 0 ? entries[entries.length - ENTRY] + windowMs : now;
  },
  refund(state, at, now, { windowMs }, cost, chargedAt, out, log) {
    if (at < 0 || log === undefined) return false;
    const entries = log;
    let first = 0;
    while (first < entries.length && entries[first] <= now - windowMs) first += ENTRY;
    if (first > 0) entries.splice(0, first);
    // The charge's entry: of its time and weight (entries alike are alike in every way). Gone (out
    // of the window), or stamped later (a clock that went back), nothing is taken back: any other
    // entry would be a later request's, which would then leave the window before its time.
    let found = entryFrom(entries, chargedAt);
    while (found < entries.length && entries[found] === chargedAt && entries[found + 2] - entries[found + 1] !== cost) found += ENTRY;
    if (found >= entries.length || entries[found] !== chargedAt) return false;
    for (let later = found + ENTRY; later < entries.length; later += ENTRY) {
      entries[later + 1] -= cost;
      entries[later + 2] -= cost;
    }
    entries.splice(found, ENTRY);
    out.expiresAt = entries.length > 0 ? entries[entries.length - ENTRY] + windowMs : now;
    return true;
  },
  log: {
    commit(log: number[], now: number, cost: number, out: AlgorithmOutcome) {
      if (out.a > 0) log.splice(0, out.a);
      if (log.length === 0) return void log.push(now, 0, cost);
      // Never older than the newest entry, so time and running count keep one order.
      const newest = log.length - ENTRY;
      log.push(Math.max(now, log[newest]), log[newest + 2], log[newest + 2] + cost);
    },
  },
};

/** Index of the oldest entry from `first` on whose running count reaches `target` (entries are sorted by it). */
function entryReaching(entries: readonly number[], first: number, target: number): number {
  let low = first / ENTRY;
  let high = entries.length / ENTRY - 1;
  while (low < high) {
    const middle = Math.floor((low + high) / 2);
    if (entries[middle * ENTRY + 2] >= target) high = middle;
    else low = middle + 1;
  }
  return low * ENTRY;
}

/** Index of the oldest entry that came at or after `time`, or the length if none did. */
function entryFrom(entries: readonly number[], time: number): number {
  let low = 0;
  let high = entries.length / ENTRY;
  while (low < high) {
    const middle = Math.floor((low + high) / 2);
    if (entries[middle * ENTRY] >= time) high = middle;
    else low = middle + 1;
  }
  return low * ENTRY;
}
