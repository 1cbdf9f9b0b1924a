import fc from 'fast-check';
import { validateHeaderName, validateHeaderValue } from 'node:http';
import { ALGORITHM_NAMES } from '../../lib/algorithms/algorithm-registry.js';
import { policyHeader, policyName, rateLimitHeaders, HEADER_MODES } from '../../lib/headers/rate-limit-headers.js';
import { InvalidRateError, parseRate, type AlgorithmName } from '../../lib/index.js';
import { identityKeyPart } from '../../lib/keys/storage-key.js';
import { bindRules } from '../../lib/rules/bind-rules.js';
import { settleCheck } from '../../lib/storage/rate-limit-decision.js';

// Lone surrogates included: 'binary' only yields whole code points.
const char16 = fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code));
const nasty = fc.constantFrom('"', '\\', '\r', '\n', '\r\n', '\0', '\t', '\x7f', '\u2028', '\ud800', '\udfff', '\ufeff', '{', '}', ';', ',', '=', ' ');

/** Strings of every flavour: ASCII, full Unicode, UTF-16 junk, header-breaking characters. */
const anyString = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.string({ unit: 'grapheme' }),
  fc.string({ unit: char16 }),
  fc.string({ unit: fc.oneof(nasty, fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })) }),
);

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
/** The largest N a rate may have: structured-field integers have at most 15 digits. */
const MAX_N = 999_999_999_999_999;

describe('parseRate fuzz', () => {
  // Grammar-shaped noise reaches far deeper than random text: digits, separators, units, edge numbers.
  const token = fc.constantFrom(
    '1', '0', '7', '00', '9007199254740991', '9007199254740992', '99999999999999999999999', '1e3', '-1', '1.5', 'Infinity', 'NaN',
    '/', ' per ', 'per', ' ', '\t', '\u00a0', ';', ',',
    's', 'm', 'h', 'd', 'second', 'Minutes', 'HOURS', 'day', 'ms', 'week', 'constructor', '__proto__', 'toString',
    '٣', '１', 'ｍ', 'ſ', 'K',
  );
  const rateLike = fc.array(token, { maxLength: 12 }).map((tokens) => tokens.join(''));
  const input = fc.oneof(anyString, rateLike, fc.array(fc.oneof(anyString, rateLike), { maxLength: 5 }));

  /** Calls parseRate; any throw other than InvalidRateError fails the property. */
  function parseOrReject(value: unknown): ReturnType<typeof parseRate> | undefined {
    try {
      return parseRate(value as string);
    } catch (error) {
      if (!(error instanceof InvalidRateError)) throw error;
      expect(error.message).toMatch(/^Invalid rate /);
      return undefined;
    }
  }

  it('throws only InvalidRateError, and what it returns is sane', () => {
    fc.assert(
      fc.property(input, (value) => {
        const rates = parseOrReject(value);
        if (rates === undefined) return;
        expect(rates.length).toBeGreaterThan(0);
        for (const rate of rates) {
          expect(Number.isSafeInteger(rate.limit) && rate.limit > 0).toBe(true);
          expect(Number.isSafeInteger(rate.windowMs) && rate.windowMs > 0).toBe(true);
          // Headers print windowMs / 1000, which must stay an integer.
          expect(rate.windowMs % 1000).toBe(0);
          expect(rate.text).toBe(rate.text.trim());
        }
        expect(new Set(rates.map((r) => r.windowMs)).size).toBe(rates.length);
      }),
      { numRuns: 2000 },
    );
  });

  it('throws only InvalidRateError for any JavaScript value, however odd', () => {
    fc.assert(
      fc.property(fc.anything({ withBigInt: true, withNullPrototype: true, withObjectString: true, withBoxedValues: true }), (value) => {
        parseOrReject(value);
        parseOrReject([value]);
        parseOrReject(['1/second', value]);
      }),
      { numRuns: 1000 },
    );
  });

  it('names any unknown word as an unknown unit', () => {
    const known = new Set(['s', 'second', 'seconds', 'm', 'minute', 'minutes', 'h', 'hour', 'hours', 'd', 'day', 'days']);
    const word = fc.oneof(
      fc.constantFrom('constructor', 'ms', 'week', 'fortnight', 'y', 'hasownproperty', 'tostring', 'valueof'),
      fc.stringMatching(/^[a-z]{1,12}$/),
    );
    fc.assert(
      fc.property(word.filter((w) => !known.has(w)), (unit) => {
        expect(() => parseRate(`1/${unit}`)).toThrow(`unknown unit "${unit}"`);
      }),
    );
  });

  const UNITS = [
    { ms: 1_000, names: ['s', 'second', 'seconds'] },
    { ms: 60_000, names: ['m', 'minute', 'minutes'] },
    { ms: 3_600_000, names: ['h', 'hour', 'hours'] },
    { ms: 86_400_000, names: ['d', 'day', 'days'] },
  ];
  const space = (min: number) => fc.string({ unit: fc.constantFrom(' ', '\t', '\u00a0', '\u3000'), minLength: min, maxLength: 3 });
  const digits = (value: number) => fc.nat({ max: 3 }).map((zeros) => '0'.repeat(zeros) + String(value));

  /** One valid limit from the grammar, with the numbers it must parse to. */
  const validRate = fc
    .record({
      n: fc.oneof(fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: MAX_N })),
      unit: fc.constantFrom(...UNITS),
      unitIndex: fc.nat({ max: 2 }),
      withCount: fc.boolean(),
      perWord: fc.boolean(),
    })
    .chain(({ n, unit, unitIndex, withCount, perWord }) => {
      const maxCount = Math.floor(MAX_SAFE / unit.ms);
      return fc
        .record({
          count: fc.oneof(fc.integer({ min: 1, max: 60 }), fc.integer({ min: 1, max: maxCount })),
          nDigits: digits(n),
          unitText: fc.mixedCase(fc.constant(unit.names[unitIndex])),
          per: fc.mixedCase(fc.constant('per')),
          s: fc.tuple(space(0), space(0), space(1), space(1), space(0), space(0), space(0)),
        })
        .chain(({ count, nDigits, unitText, per, s }) =>
          digits(count).map((countDigits) => {
            const separator = perWord ? `${s[2]}${per}${s[3]}` : `${s[0]}/${s[1]}`;
            const middle = withCount ? `${countDigits}${s[4]}` : '';
            const core = `${nDigits}${separator}${middle}${unitText}`;
            return {
              part: `${s[5]}${core}${s[6]}`,
              expected: { limit: n, windowMs: (withCount ? count : 1) * unit.ms, text: core },
            };
          }),
        );
    });

  it('parses every valid rate of the grammar to the right numbers, as a string or an array', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(validRate, { minLength: 1, maxLength: 4, selector: (r) => r.expected.windowMs }),
        fc.nat(),
        (rates, cut) => {
          const expected = rates.map((r) => r.expected);
          const parts = rates.map((r) => r.part);
          expect(parseRate(parts.join(';'))).toEqual(expected);
          // The same limits split across array items at an arbitrary point.
          const at = 1 + (cut % parts.length);
          const asArray = [parts.slice(0, at).join(';'), ...(at < parts.length ? [parts.slice(at).join(';')] : [])];
          expect(parseRate(asArray)).toEqual(expected);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('refuses an N of more than 15 digits, which the RateLimit headers could not carry', () => {
    fc.assert(
      fc.property(fc.integer({ min: MAX_N + 1, max: MAX_SAFE }), fc.constantFrom('s', 'minute', 'hours'), (n, unit) => {
        expect(() => parseRate(`${n}/${unit}`)).toThrow(/more than 15 digits/);
      }),
    );
    expect(parseRate(`${MAX_N}/day`)[0].limit).toBe(MAX_N);
  });

  it('refuses two limits with the same window, however they are written', () => {
    fc.assert(
      fc.property(validRate, fc.integer({ min: 1, max: 1000 }), (rate, limit) => {
        const sameWindow = `${limit} per ${rate.expected.windowMs / 1000} seconds`;
        expect(() => parseRate(`${rate.part};${sameWindow}`)).toThrow(/share the window/);
      }),
    );
  });
});

describe('rate-limit header writer fuzz', () => {
  const safeRate = fc
    .record({
      limit: fc.oneof(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: MAX_N })),
      seconds: fc.oneof(fc.integer({ min: 1, max: 3600 }), fc.integer({ min: 1, max: Math.floor(MAX_SAFE / 1000) })),
    })
    .map(({ limit, seconds }) => `${limit}/${seconds} seconds`);

  // Raw per-rule outcomes as an algorithm may report them: fractional, negative, 0 or huge.
  const rawNumber = fc.oneof(
    fc.constantFrom(0, -0, 0.5, -0.5, 1, 999, 1000, 1001, MAX_SAFE, -MAX_SAFE),
    fc.double({ min: -MAX_SAFE, max: MAX_SAFE, noNaN: true }),
    fc.integer({ min: 0, max: 10_000_000 }),
  );
  const outcome = fc.tuple(fc.boolean(), rawNumber, rawNumber.map(Math.abs), rawNumber.map(Math.abs));

  const scenario = fc
    .record({
      name: anyString,
      rates: fc.uniqueArray(safeRate, { minLength: 1, maxLength: 3, selector: (r) => parseRate(r)[0].windowMs }),
      algorithm: fc.constantFrom<AlgorithmName>(...ALGORITHM_NAMES),
      cost: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: MAX_SAFE })),
    })
    .chain((s) => fc.array(outcome, { minLength: s.rates.length, maxLength: s.rates.length }).map((outcomes) => ({ ...s, outcomes })));

  const VISIBLE = /^[\x20-\x7e]*$/;
  const NAME = '"[\\x20\\x21\\x23-\\x5b\\x5d-\\x7e]*"'; // a structured-field string: no bare " or \
  const INTEGER = '(?:0|[1-9]\\d{0,14})'; // a structured-field integer: at most 15 digits
  const POLICY_ITEM = `${NAME};q=${INTEGER};w=${INTEGER}`;

  it('writes only sendable values: visible ASCII, names quoted safely, numbers as non-negative integers', () => {
    fc.assert(
      fc.property(scenario, ({ name, rates, algorithm, cost, outcomes }) => {
        // bindRules is how every rule gets its name, as the route planner does it.
        const rules = bindRules(parseRate(rates), { name, bucket: 'b', algorithm });
        const policy = policyHeader(rules);
        const result = settleCheck(
          rules.map((rule) => ({ rule })),
          0,
          cost,
          outcomes.map(([allowed, remaining, retryAfterMs, resetMs]) => ({ allowed, remaining, retryAfterMs, resetMs })),
        );

        expect(policy).toMatch(new RegExp(`^${POLICY_ITEM}(?:, ${POLICY_ITEM})*$`));
        const items = [...policy.matchAll(/;q=(\d+);w=(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
        expect(items).toEqual(rules.map((r) => [r.limit, r.windowMs / 1000]));

        for (const mode of HEADER_MODES) {
          for (const [header, value] of rateLimitHeaders(mode, result, policy)) {
            expect(value).toMatch(VISIBLE);
            expect(() => validateHeaderName(header)).not.toThrow();
            expect(() => validateHeaderValue(header, value)).not.toThrow();
            if (header === 'ratelimit-policy') expect(value).toBe(policy);
            else if (header === 'ratelimit') expect(value).toMatch(new RegExp(`^${NAME};r=${INTEGER};t=${INTEGER}$`));
            else expect(value).toMatch(new RegExp(`^${INTEGER}$`));
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it('policyName keeps printable ASCII, replaces the rest one for one, and is idempotent', () => {
    fc.assert(
      fc.property(anyString, (raw) => {
        const name = policyName(raw);
        expect(name).toMatch(/^[\x20\x21\x23-\x5b\x5d-\x7e]*$/);
        expect(name).toHaveLength(raw.length);
        expect(policyName(name)).toBe(name);
        [...name].forEach((c, i) => {
          const original = raw[i];
          expect(c).toBe(/^[\x20\x21\x23-\x5b\x5d-\x7e]$/.test(original) ? original : '_');
        });
      }),
      { numRuns: 1000 },
    );
  });
});

describe('identityKeyPart fuzz', () => {
  const SAFE = /^[A-Za-z0-9._:@/+=-]{1,96}$/;
  const plainish = fc.string({
    unit: fc.constantFrom(...'aZ09._:@/+=-'.split(''), '#', ' ', '{', '}'),
    minLength: 0,
    maxLength: 100,
  });
  const identity = fc.oneof(anyString, plainish, fc.string({ unit: char16, minLength: 90, maxLength: 5000 }));

  it('is short, printable and brace-free, and keeps plain identities as they are', () => {
    fc.assert(
      fc.property(identity, (value) => {
        const part = identityKeyPart(value);
        expect(part.length).toBeLessThanOrEqual(96);
        expect(part).toMatch(/^[A-Za-z0-9._:@/+=#-]+$/);
        if (SAFE.test(value)) expect(part).toBe(value);
        else expect(part).toMatch(/^#[A-Za-z0-9_-]{43}$/);
      }),
      { numRuns: 2000 },
    );
  });

  // Small edits are where a lossy encoding (UTF-8 of lone surrogates, case folding, truncation) would collide.
  type Edit =
    | { kind: 'append'; text: string }
    | { kind: 'replace'; at: number; by: string }
    | { kind: 'upper' }
    | { kind: 'drop'; at: number };
  const edit: fc.Arbitrary<Edit> = fc.oneof(
    fc.record({ kind: fc.constant('append' as const), text: fc.oneof(nasty, char16) }),
    fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), by: fc.oneof(nasty, char16, fc.constant('\ufffd')) }),
    fc.record({ kind: fc.constant('upper' as const) }),
    fc.record({ kind: fc.constant('drop' as const), at: fc.nat() }),
  );
  function apply(value: string, e: Edit): string {
    if (e.kind === 'append') return value + e.text;
    if (e.kind === 'upper') return value.toUpperCase();
    if (value.length === 0) return value;
    const at = e.at % value.length;
    return e.kind === 'drop' ? value.slice(0, at) + value.slice(at + 1) : value.slice(0, at) + e.by + value.slice(at + 1);
  }

  it('maps distinct identities to distinct parts (edited pairs, random pairs, and a part fed back in)', () => {
    fc.assert(
      fc.property(identity, edit, identity, (a, e, c) => {
        const b = apply(a, e);
        for (const other of [b, c, identityKeyPart(a)]) {
          if (other !== a) expect(identityKeyPart(other)).not.toBe(identityKeyPart(a));
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps a whole batch of distinct identities distinct', () => {
    fc.assert(
      fc.property(fc.uniqueArray(identity, { minLength: 20, maxLength: 60 }), (values) => {
        expect(new Set(values.map(identityKeyPart)).size).toBe(values.length);
      }),
      { numRuns: 200 },
    );
  });
});
