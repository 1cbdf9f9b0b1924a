import { UsageHistogram, usageThresholds } from '../../lib/advisor/usage-histogram.js';

/** Thresholds per doubling above 16. */
const STEPS = 8;

/** A reproducible random source. */
function random(seed: number): () => number {
  let state = seed;
  return () => (state = (state * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
}

/** Peaks of many light clients, a few heavy ones and one abuser, as the advisor meets them. */
function peaks(limit: number, seed: number): number[] {
  const next = random(seed);
  const light = Array.from({ length: 500 }, () => 1 + Math.floor(next() * limit * 0.3));
  const heavy = Array.from({ length: 20 }, () => Math.floor(limit * (0.8 + next() * 1.5)));
  return [...light, ...heavy, limit * 40];
}

/** Each client's requests, interleaved, each recorded with its count on one of two instances. */
function recordOnTwoInstances(limit: number, clientPeaks: readonly number[], seed: number): UsageHistogram {
  const next = random(seed);
  const [a, b] = [new UsageHistogram(usageThresholds(limit)), new UsageHistogram(usageThresholds(limit))];
  const counts = clientPeaks.map(() => 0);
  const active = clientPeaks.map((_, client) => client);
  while (active.length > 0) {
    const at = Math.floor(next() * active.length);
    const client = active[at];
    (next() < 0.5 ? a : b).record(++counts[client]);
    if (counts[client] === clientPeaks[client]) active[at] = active[active.length - 1], active.pop();
  }
  a.merge(b);
  return a;
}

describe('usageThresholds', () => {
  it.each([1, 5, 10, 100, 1_000, 100_000])('limit %i: every count to 16, then about 9%% apart (12.5%% where whole counts round), up to 16 × the limit, the limit and the count above it included', (limit) => {
    const thresholds = [...usageThresholds(limit)];
    expect(thresholds.slice(0, 16)).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
    for (let i = 1; i < thresholds.length; i++) {
      expect(thresholds[i]).toBeGreaterThan(thresholds[i - 1]);
      if (thresholds[i - 1] >= 16) expect(thresholds[i] / thresholds[i - 1]).toBeLessThanOrEqual(1.125);
    }
    expect(thresholds).toContain(limit);
    expect(thresholds).toContain(limit + 1);
    expect(thresholds.at(-1)).toBeLessThanOrEqual(Math.max(16, 16 * limit));
    expect(thresholds.at(-1)).toBeGreaterThan(Math.max(16, 16 * limit) / 1.1);
    // bounded by the limit, not the traffic: some 150 thresholds for 100,000 a window
    expect(thresholds.length).toBeLessThanOrEqual(16 + STEPS * Math.log2(Math.max(16, 16 * limit) / 16) + 3);
  });
});

describe('UsageHistogram', () => {
  it.each([
    [10, 1],
    [100, 2],
    [1_000, 3],
  ])('limit %i: what every candidate would have refused lies within its bounds, and is exact at the thresholds and at the limit', (limit, seed) => {
    const clientPeaks = peaks(limit, seed);
    const histogram = recordOnTwoInstances(limit, clientPeaks, seed + 10);
    expect(histogram.clients).toBe(clientPeaks.length);
    expect(histogram.requests).toBe(clientPeaks.reduce((sum, p) => sum + p, 0));
    const candidates = [...new Set([1, 2, 7, Math.floor(limit / 3), limit - 1, limit, limit + 3, 2 * limit, 5 * limit + 1, 20 * limit])].filter((n) => n >= 1);
    for (const candidate of candidates) {
      const clients = clientPeaks.filter((p) => p > candidate).length;
      const requests = clientPeaks.reduce((sum, p) => sum + Math.max(0, p - candidate), 0);
      const estimate = histogram.estimate(candidate);
      expect(estimate.clientsDenied.low).toBeLessThanOrEqual(clients);
      expect(estimate.clientsDenied.high).toBeGreaterThanOrEqual(clients);
      expect(estimate.requestsDenied.low).toBeLessThanOrEqual(requests);
      expect(estimate.requestsDenied.high).toBeGreaterThanOrEqual(requests);
      if (estimate.exact) expect([estimate.clientsDenied.low, estimate.requestsDenied.low]).toEqual([clients, requests]);
    }
    const atLimit = histogram.estimate(limit);
    expect(atLimit.exact).toBe(true);
    expect(atLimit.clientsDenied.low).toBe(clientPeaks.filter((p) => p > limit).length);
  });

  it('between thresholds, the bounds are those of the thresholds around the candidate', () => {
    const histogram = new UsageHistogram(Int32Array.from([1, 2, 4, 8]));
    for (const peak of [1, 3, 5, 9]) for (let count = 1; count <= peak; count++) histogram.record(count);
    // 4 clients, peaks 1, 3, 5 and 9; a limit of 5 refuses what passes 5, and 6 is no threshold
    const estimate = histogram.estimate(5);
    expect(estimate.exact).toBe(false);
    expect(estimate.clientsDenied).toEqual({ low: 1, high: 2 }); // ≥ 8: one client; ≥ 4: two
    expect(estimate.requestsDenied).toEqual({ low: 2, high: 8 }); // counts ≥ 8: 8, 9; counts ≥ 4: 4, 5 and 4..9
    expect(histogram.estimate(7)).toMatchObject({ exact: true, clientsDenied: { low: 1, high: 1 }, requestsDenied: { low: 2, high: 2 } });
  });

  it('holds 20 bytes per threshold however many clients it has seen', () => {
    const histogram = new UsageHistogram(usageThresholds(100));
    const before = histogram.bytes;
    for (let client = 0; client < 10_000; client++) histogram.record(1);
    expect(histogram.bytes).toBe(before);
    expect(histogram.bytes).toBe(usageThresholds(100).length * (4 + 16));
    expect(histogram.clients).toBe(10_000);
  });

  it('refuses to merge a histogram of other thresholds', () => {
    expect(() => new UsageHistogram(usageThresholds(10)).merge(new UsageHistogram(usageThresholds(1_000)))).toThrow('different thresholds');
  });
});

describe('UsageHistogram with costs', () => {
  it('counts a client as reaching every threshold a request of several units passes over', () => {
    const histogram = new UsageHistogram(usageThresholds(10));
    // one client: 3 units, then 5 (count 8), then 4 (count 12)
    histogram.record(3, 3);
    histogram.record(8, 5);
    histogram.record(12, 4);
    expect(histogram.clients).toBe(1);
    expect(histogram.requests).toBe(3);
    for (const limit of [2, 5, 7, 9, 10, 11]) expect(histogram.estimate(limit).clientsDenied).toEqual({ low: 1, high: 1 });
    expect(histogram.estimate(12).clientsDenied).toEqual({ low: 0, high: 0 });
    // requests past the limit: the one that ends at 12 past 10, the last two past 5
    expect(histogram.estimate(10).requestsDenied).toEqual({ low: 1, high: 1 });
    expect(histogram.estimate(5).requestsDenied).toEqual({ low: 2, high: 2 });
  });
});
