import { InvalidRateError, parseRate } from '../../lib/index.js';

describe('parseRate', () => {
  it.each([
    ['5/minute', 5, 60_000],
    ['10/second', 10, 1_000],
    ['1/s', 1, 1_000],
    ['100 per hour', 100, 3_600_000],
    ['100 per 2 hours', 100, 7_200_000],
    ['10/5 minutes', 10, 300_000],
    ['10/5minutes', 10, 300_000],
    ['7/d', 7, 86_400_000],
    ['3 per 1 day', 3, 86_400_000],
    ['  42 / 3 m  ', 42, 180_000],
    ['1000/DAYS', 1000, 86_400_000],
    ['2/h', 2, 3_600_000],
    ['9/30 seconds', 9, 30_000],
  ])('parses %j', (input, limit, windowMs) => {
    expect(parseRate(input)).toEqual([{ limit, windowMs, text: input.trim() }]);
  });

  it('splits on ";" and accepts arrays of strings, keeping the order', () => {
    expect(parseRate('10/second; 1000/day').map((r) => r.windowMs)).toEqual([1_000, 86_400_000]);
    expect(parseRate(['10/second', '100/minute;5/hour']).map((r) => r.limit)).toEqual([10, 100, 5]);
  });

  it.each([
    ['', 'empty limit'],
    ['   ', 'empty limit'],
    ['0/minute', 'positive integer'],
    ['-1/minute', 'does not match'],
    ['1.5/minute', 'does not match'],
    ['10/0 minutes', 'positive integer'],
    ['10/fortnight', 'unknown unit "fortnight"'],
    ['10/ms', 'unknown unit "ms"'],
    ['10 minutes', 'does not match'],
    ['ten/minute', 'does not match'],
    ['10//minute', 'does not match'],
    ['10 per', 'does not match'],
    ['10perminute', 'does not match'],
    ['/minute', 'does not match'],
    ['10/minute;', 'empty limit'],
    ['10/minute; 20/minute', 'share the window'],
    ['10/60 seconds; 5/1 minute', 'share the window'],
    ['99999999999999999999/minute', 'positive integer'],
    ['1/9999999999999 days', 'too long'],
  ])('rejects %j, naming it and the grammar', (input, reason) => {
    let error: unknown;
    try {
      parseRate(input);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(InvalidRateError);
    const message = (error as Error).message;
    expect(message).toContain(`Invalid rate ${JSON.stringify(input)}`);
    expect(message).toContain(reason);
    expect(message).toContain('"N per M units"');
  });

  it.each([[[]], [null], [undefined], [42], [{}], [['5/minute', 7]]])('rejects the non-string input %j', (input) => {
    expect(() => parseRate(input as never)).toThrow(InvalidRateError);
  });
});
