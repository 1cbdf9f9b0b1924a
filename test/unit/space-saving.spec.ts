import { SpaceSaving } from '../../lib/advisor/space-saving.js';

/** A reproducible stream: a few heavy identities among many light ones (Zipf-like weights). */
function stream(length: number, identities: number, seed: number): string[] {
  let state = seed;
  const random = () => ((state = (state * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
  const weights = Array.from({ length: identities }, (_, i) => 1 / (i + 1));
  const total = weights.reduce((sum, w) => sum + w, 0);
  const out: string[] = [];
  for (let n = 0; n < length; n++) {
    let pick = random() * total;
    let i = 0;
    while (pick > weights[i] && i < identities - 1) pick -= weights[i++];
    out.push(`client-${i}`);
  }
  return out;
}

function exactCounts(items: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(item, (counts.get(item) ?? 0) + 1);
  return counts;
}

describe('SpaceSaving', () => {
  it('counts exactly while it follows no more identities than its capacity', () => {
    const sketch = new SpaceSaving(4);
    for (const id of ['a', 'b', 'a', 'c', 'a', 'b', 'd']) sketch.offer(id);
    expect(sketch.top(10)).toEqual([
      { identity: 'a', count: 3, error: 0 },
      { identity: 'b', count: 2, error: 0 },
      expect.objectContaining({ count: 1, error: 0 }),
      expect.objectContaining({ count: 1, error: 0 }),
    ]);
    expect(sketch.total).toBe(7);
    expect(sketch.top(1)).toEqual([{ identity: 'a', count: 3, error: 0 }]);
  });

  it('gives a newcomer the least counted place only once its estimate passes the floor (the least count, and n/k)', () => {
    const sketch = new SpaceSaving(2);
    for (const id of ['a', 'a', 'a', 'b', 'c']) sketch.offer(id);
    // c (1 so far) does not pass the floor, max(1, 5/2): light newcomers do not churn the places
    expect(sketch.top(2)).toEqual([
      { identity: 'a', count: 3, error: 0 },
      { identity: 'b', count: 1, error: 0 },
    ]);
    expect(sketch.floor).toBe(2);
    for (let i = 0; i < 3; i++) sketch.offer('c');
    expect(sketch.top(2).map((hitter) => hitter.identity)).toEqual(['a', 'b']);
    // its fifth offer, at n = 9: 5 passes max(1, 9/2); counted at the floor plus one, never below its true 5
    sketch.offer('c');
    expect(sketch.top(2)).toEqual([
      { identity: 'c', count: 5, error: 4 },
      { identity: 'a', count: 3, error: 0 },
    ]);
  });

  it.each([
    [50, 2_000, 20_000, 1],
    [100, 10_000, 50_000, 2],
    [20, 500, 30_000, 3],
  ])('capacity %i, %i identities, %i offers: every identity above n/k is followed, and counts are within their error', (capacity, identities, length, seed) => {
    const items = stream(length, identities, seed);
    const sketch = new SpaceSaving(capacity);
    for (const item of items) sketch.offer(item);
    const exact = exactCounts(items);
    const followed = new Map(sketch.top(capacity).map((hitter) => [hitter.identity, hitter]));
    expect(followed.size).toBe(capacity);
    for (const [identity, count] of exact) {
      if (count > sketch.floor) expect(followed.has(identity)).toBe(true);
    }
    // the floor stays near n/k: newcomers are counted from it, not from their estimates
    expect(sketch.floor).toBeLessThanOrEqual(1.25 * length / capacity);
    for (const hitter of followed.values()) {
      const truth = exact.get(hitter.identity) ?? 0;
      expect(hitter.count).toBeGreaterThanOrEqual(truth);
      expect(hitter.count - hitter.error).toBeLessThanOrEqual(truth);
      expect(hitter.error).toBeLessThanOrEqual(sketch.floor);
    }
    // the heaviest comes first
    expect(sketch.top(1)[0].identity).toBe([...exact].sort((x, y) => y[1] - x[1])[0][0]);
    // largest first
    const counts = sketch.top(capacity).map((hitter) => hitter.count);
    expect(counts).toEqual([...counts].sort((a, b) => b - a));
  });

  it('follows an identity longer than its bound by its hash, so a client cannot grow it by sending long keys', () => {
    const sketch = new SpaceSaving(2, 16);
    const long = 'x'.repeat(10_000);
    sketch.offer(long);
    sketch.offer(long);
    const [hitter] = sketch.top(1);
    expect(hitter.count).toBe(2);
    expect(hitter.identity).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(hitter.identity.length).toBeLessThan(100);
  });

  it('forgets everything on clear()', () => {
    const sketch = new SpaceSaving(3);
    for (const id of ['a', 'b', 'a']) sketch.offer(id);
    sketch.clear();
    expect([sketch.size, sketch.total, sketch.top(3)]).toEqual([0, 0, []]);
    sketch.offer('c');
    expect(sketch.top(3)).toEqual([{ identity: 'c', count: 1, error: 0 }]);
  });

  it('refuses a capacity that is not a positive integer, naming it', () => {
    expect(() => new SpaceSaving(0)).toThrow('SpaceSaving capacity must be a positive integer, got 0');
    expect(() => new SpaceSaving(2.5)).toThrow('got 2.5');
  });
});
