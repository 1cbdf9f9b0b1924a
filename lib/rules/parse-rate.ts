import { MAX_HEADER_INTEGER } from '../headers/rate-limit-headers.js';

/** A rate as written by the developer, before an algorithm is bound to it. */
export interface ParsedRate {
  readonly limit: number;
  readonly windowMs: number;
  /** The source text of this one limit, trimmed, e.g. `10/5 minutes`. */
  readonly text: string;
}

const UNIT_MS: Readonly<Record<string, number>> = {
  s: 1_000, second: 1_000, seconds: 1_000,
  m: 60_000, minute: 60_000, minutes: 60_000,
  h: 3_600_000, hour: 3_600_000, hours: 3_600_000,
  d: 86_400_000, day: 86_400_000, days: 86_400_000,
};

const GRAMMAR =
  '"N/unit", "N per unit", "N/M units" or "N per M units", where N and M are positive integers and unit is ' +
  'second, minute, hour or day (singular, plural, or s|m|h|d); join several limits with ";", e.g. "10/second; 1000/day"';

// N, then "/" or "per", then an optional count M, then a unit.
const ONE_RATE = /^([0-9]+)\s*(?:\/|\s+per\s+)\s*(?:([0-9]+)\s*)?([a-z]+)$/i;

/** Thrown at start-up for a rate string that does not follow the grammar. */
export class InvalidRateError extends Error {
  constructor(readonly input: unknown, reason: string) {
    super(`Invalid rate ${describe(input)}: ${reason}. Expected ${GRAMMAR}.`);
    this.name = 'InvalidRateError';
  }
}

/**
 * Parses `'10/second'`, `'100 per 2 hours'`, `'10/second; 1000/day'` or an array of such strings.
 * Throws {@link InvalidRateError} naming the bad input; never returns an empty list.
 */
export function parseRate(input: string | readonly string[]): ParsedRate[] {
  const parts: string[] = [];
  if (typeof input === 'string') {
    parts.push(...input.split(';'));
  } else if (Array.isArray(input) && input.length > 0) {
    for (const item of input) {
      if (typeof item !== 'string') throw new InvalidRateError(input, `${describe(item)} is not a string`);
      parts.push(...item.split(';'));
    }
  } else {
    throw new InvalidRateError(input, 'expected a string or a non-empty array of strings');
  }

  const rates = parts.map((part) => parseOne(part, input));
  const windows = new Set<number>();
  for (const rate of rates) {
    if (windows.has(rate.windowMs)) {
      throw new InvalidRateError(input, `two limits share the window of "${rate.text}"; keep one limit per window`);
    }
    windows.add(rate.windowMs);
  }
  return rates;
}

function parseOne(part: string, whole: unknown): ParsedRate {
  const text = part.trim();
  if (text === '') throw new InvalidRateError(whole, 'empty limit');
  const match = ONE_RATE.exec(text);
  if (!match) throw new InvalidRateError(whole, `"${text}" does not match the grammar`);
  const [, n, m, unit] = match;
  const unitName = unit.toLowerCase();
  const unitMs = Object.hasOwn(UNIT_MS, unitName) ? UNIT_MS[unitName] : undefined;
  if (unitMs === undefined) throw new InvalidRateError(whole, `unknown unit "${unit}"`);
  const limit = positiveInteger(n, whole, 'the count');
  if (limit > MAX_HEADER_INTEGER) {
    throw new InvalidRateError(whole, `the count of "${text}" has more than 15 digits, which the RateLimit headers cannot carry`);
  }
  const multiple = m === undefined ? 1 : positiveInteger(m, whole, 'the window length');
  const windowMs = multiple * unitMs;
  if (!Number.isSafeInteger(windowMs)) throw new InvalidRateError(whole, `the window of "${text}" is too long`);
  return { limit, windowMs, text };
}

const ONE_DURATION = /^([0-9]+)\s*([a-z]+)$/i;

/** Thrown at start-up for a duration (`blockFor`) that does not follow the grammar. */
export class InvalidDurationError extends Error {
  constructor(readonly input: unknown, reason: string) {
    super(
      `Invalid duration ${describe(input)}: ${reason}. Expected "N unit" such as "30 s", "15 minutes" or "1 hour" ` +
        '(unit: second, minute, hour or day, singular, plural, or s|m|h|d), or a positive whole number of milliseconds.',
    );
    this.name = 'InvalidDurationError';
  }
}

/** `'15 minutes'`, `'1 hour'`, `'30 s'` (the units of rates), or milliseconds as a number. */
export function parseDuration(input: string | number): number {
  if (typeof input === 'number') {
    if (!Number.isSafeInteger(input) || input < 1) throw new InvalidDurationError(input, 'milliseconds must be a positive integer');
    return input;
  }
  if (typeof input !== 'string') throw new InvalidDurationError(input, 'expected a string or a number');
  const match = ONE_DURATION.exec(input.trim());
  if (!match) throw new InvalidDurationError(input, 'it does not match the grammar');
  const unitName = match[2].toLowerCase();
  const unitMs = Object.hasOwn(UNIT_MS, unitName) ? UNIT_MS[unitName] : undefined;
  if (unitMs === undefined) throw new InvalidDurationError(input, `unknown unit "${match[2]}"`);
  const ms = Number(match[1]) * unitMs;
  if (!Number.isSafeInteger(ms) || ms < 1) throw new InvalidDurationError(input, 'it must be positive and at most 2^53 ms');
  return ms;
}

function positiveInteger(digits: string, whole: unknown, what: string): number {
  const value = Number(digits);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new InvalidRateError(whole, `${what} must be a positive integer, got ${digits}`);
  }
  return value;
}

function describe(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    try {
      return String(value);
    } catch {
      return Object.prototype.toString.call(value);
    }
  }
}
