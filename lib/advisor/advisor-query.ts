import { parseDuration } from '../rules/parse-rate.js';
import type { AdvisorQuery } from './policy-report.js';

/** A query a client or a terminal wrote that cannot be read; the message says what to write. */
export class InvalidAdvisorQueryError extends RangeError {
  override readonly name = 'InvalidAdvisorQueryError';
}

/** `30m`, `1h`, `2 hours`, `1d` (the units of rates), or a whole number of seconds (`90`); in ms. */
export function parsePeriod(text: string, what = 'period'): number {
  const trimmed = text.trim();
  if (/^[0-9]{1,10}$/.test(trimmed)) {
    const ms = Number(trimmed) * 1_000;
    if (ms >= 1_000) return ms;
  } else if (trimmed.length <= 32) {
    try {
      return parseDuration(trimmed);
    } catch {
      // said below, in these terms (a bare number is seconds here, not milliseconds)
    }
  }
  throw new InvalidAdvisorQueryError(`${what} ${JSON.stringify(text.slice(0, 32))} is not a duration: use e.g. 30m, 1h, 2h, 1d, or a whole number of seconds such as 90.`);
}

/** A share of clients in (0, 1): a fraction, `0.001`, or a percentage, `0.1%`. */
export function parseTarget(text: string, what = 'target'): number {
  const trimmed = text.trim();
  const percent = trimmed.endsWith('%');
  const digits = percent ? trimmed.slice(0, -1).trim() : trimmed;
  const value = /^(?:[0-9]{1,10}\.?[0-9]{0,10}|\.[0-9]{1,10})(?:e[+-]?[0-9]{1,3})?$/i.test(digits) ? Number(digits) / (percent ? 100 : 1) : NaN;
  if (!(value > 0 && value < 1)) {
    throw new InvalidAdvisorQueryError(
      `${what} ${JSON.stringify(text.slice(0, 32))} must be a share of clients between 0 and 1 exclusive, as a fraction (0.001) or a percentage (0.1%).`,
    );
  }
  return value;
}

/** `50,100,200`: positive whole numbers, in the order given, without repeats. */
export function parseCandidates(text: string, what = 'candidates'): number[] {
  const limits: number[] = [];
  for (const item of text.split(',').map((part) => part.trim())) {
    const value = /^[0-9]{1,15}$/.test(item) ? Number(item) : NaN;
    if (!(Number.isSafeInteger(value) && value >= 1)) {
      const shown = item === '' ? 'an empty item' : JSON.stringify(item.slice(0, 32));
      throw new InvalidAdvisorQueryError(`${what}: ${shown} is not a positive whole number; list limits as 50,100,200.`);
    }
    if (!limits.includes(value)) limits.push(value);
  }
  return limits;
}

/** A whole number from 0 to 1000 (how many identities to list). */
export function parseTop(text: string, what = 'top'): number {
  const value = /^[0-9]{1,4}$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!(value >= 0 && value <= 1_000)) throw new InvalidAdvisorQueryError(`${what} ${JSON.stringify(text.slice(0, 32))} must be a whole number from 0 to 1000.`);
  return value;
}

/** The dashboard's `report.json?period=&target=&candidates=&top=`; an unreadable one throws. */
export function parseAdvisorQuery(query: Record<string, unknown>): AdvisorQuery {
  const text = (name: string): string | undefined => {
    const value = query[name];
    if (value === undefined) return undefined;
    if (typeof value !== 'string') throw new InvalidAdvisorQueryError(`${name} must be given once`);
    return value;
  };
  const period = text('period');
  const target = text('target');
  const candidates = text('candidates');
  const top = text('top');
  return {
    ...(period !== undefined && { periodMs: parsePeriod(period) }),
    ...(target !== undefined && { target: parseTarget(target) }),
    ...(candidates !== undefined && { candidates: parseCandidates(candidates) }),
    ...(top !== undefined && { top: parseTop(top) }),
  };
}
