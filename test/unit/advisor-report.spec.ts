import { InvalidAdvisorQueryError, parseAdvisorQuery, parseCandidates, parsePeriod, parseTarget } from '../../lib/advisor/advisor-query.js';
import { mergeSketches, redactIdentity, identityOfKey } from '../../lib/advisor/heavy-hitters.js';
import { policyReport } from '../../lib/advisor/policy-report.js';
import { bucketLength, type PolicyMeta } from '../../lib/advisor/policy-usage.js';
import { SpaceSaving } from '../../lib/advisor/space-saving.js';
import { UsageHistogram, usageThresholds } from '../../lib/advisor/usage-histogram.js';

const meta = (limit: number): PolicyMeta => ({
  id: 'b:fw1m',
  name: 'Quotes.get',
  rate: `${limit}/minute`,
  limit,
  windowMs: 60_000,
  algorithm: 'fixed-window',
  mode: 'enforce',
  bucketMs: bucketLength(60_000),
  thresholds: usageThresholds(limit),
});

/** 1,000 clients with 1..1000 requests each in one window: the share past N is exactly (1000 - N) / 1000. */
function uniform(limit: number): UsageHistogram {
  const histogram = new UsageHistogram(usageThresholds(limit));
  for (let peak = 1; peak <= 1_000; peak++) for (let count = 1; count <= peak; count++) histogram.record(count);
  return histogram;
}

describe('policyReport', () => {
  const figures = (limit: number) => ({ meta: meta(limit), histogram: uniform(limit), denied: 0, shadowDenied: 0, timeline: [], top: [] });

  it('judges the current limit exactly, and others within the bounds of their neighbouring thresholds', () => {
    const report = policyReport(figures(100), { candidates: [333, 700] });
    expect(report.candidates.map((entry) => entry.limit)).toEqual([25, 50, 100, 200, 333, 400, 700]);
    for (const candidate of report.candidates) {
      const truth = (1_000 - candidate.limit) / 1_000;
      expect(candidate.clientsDeniedRange.low).toBeLessThanOrEqual(truth);
      expect(candidate.clientsDeniedRange.high).toBeGreaterThanOrEqual(truth);
      // thresholds are about 9% apart: so are the bounds
      expect(candidate.clientsDeniedRange.high - candidate.clientsDeniedRange.low).toBeLessThanOrEqual(0.1 * candidate.limit / 1_000 + 0.001);
    }
    expect(report.candidates.find((entry) => entry.limit === 100)).toMatchObject({ exact: true, clientsDenied: 0.9 });
  });

  it('suggests the smallest limit sure to refuse at most the target, and says what it rests on', () => {
    const report = policyReport(figures(100), { target: 0.05 });
    // 5% of 1,000 clients: 50 may go past it, so 950 is enough; the threshold above 950 decides
    expect(report.suggested).toBeGreaterThanOrEqual(950);
    expect(report.suggestion!.clientsDenied).toBeLessThanOrEqual(0.05);
    expect(report.suggestion).toMatchObject({ target: 0.05, clients: 1_000, requests: 500_500 });
    // the next smaller limit the histogram can judge would refuse more than the target
    const below = uniform(100).estimate(report.suggested! - 100);
    expect(below.clientsDenied.low / 1_000).toBeGreaterThan(0.05);
  });

  it('suggests nothing without traffic, nor when more than the target went past 16 × the limit', () => {
    const empty = { ...figures(100), histogram: new UsageHistogram(usageThresholds(100)) };
    expect(policyReport(empty, {}).suggested).toBeNull();
    expect(policyReport(figures(10), { target: 0.001 }).suggested).toBeNull();
  });

  it('lists the distribution from the first threshold, clients falling as requests do', () => {
    const { distribution } = policyReport(figures(100), {});
    expect(distribution[0]).toEqual({ threshold: 1, clients: 1_000, requests: 500_500 });
    for (let k = 1; k < distribution.length; k++) expect(distribution[k].clients).toBeLessThanOrEqual(distribution[k - 1].clients);
  });
});

describe('mergeSketches', () => {
  it("adds instances' counts, and an absent identity's possible count to its error", () => {
    const [a, b] = [new SpaceSaving(2), new SpaceSaving(2)];
    for (const id of ['x', 'x', 'x', 'y']) a.offer(id);
    for (const id of ['x', 'z', 'z']) b.offer(id);
    const view = (sketch: SpaceSaving) => ({ entries: sketch.top(2), floor: sketch.floor });
    const merged = mergeSketches([view(a), view(b)]);
    expect(merged[0]).toEqual({ identity: 'x', requests: 4, error: 0 });
    // z: 2 on b, absent from a, which may have seen it up to its floor (max(1, 4/2) = 2) times;
    // y: 1 on a, absent from b (floor max(1, 3/2) = 1)
    expect([a.floor, b.floor]).toEqual([2, 1]);
    expect(merged.find((entry) => entry.identity === 'z')).toEqual({ identity: 'z', requests: 2, error: 2 });
    expect(merged.find((entry) => entry.identity === 'y')).toEqual({ identity: 'y', requests: 1, error: 1 });
  });
});

describe('identities', () => {
  it('are read from between the hash-tag braces, and redacted by a keyed hash', () => {
    expect(identityOfKey('rl:{ip:1.2.3.4}:b:fw1m')).toBe('ip:1.2.3.4');
    const key = Buffer.from('k'.repeat(32));
    expect(redactIdentity('alice', key)).toBe(redactIdentity('alice', key));
    expect(redactIdentity('alice', key)).not.toBe(redactIdentity('alice', Buffer.from('j'.repeat(32))));
    expect(redactIdentity('alice', key)).toMatch(/^h:[A-Za-z0-9_-]{22}$/);
  });
});

describe('advisor queries', () => {
  it('reads periods, targets and candidates as the dashboard and the CLI write them', () => {
    expect(parsePeriod('90')).toBe(90_000);
    expect(parsePeriod('1h')).toBe(3_600_000);
    expect(parseTarget('0.1%')).toBeCloseTo(0.001, 12);
    expect(parseCandidates('50, 100,50')).toEqual([50, 100]);
    expect(parseAdvisorQuery({ period: '3600', target: '0.01', candidates: '5', top: '3' })).toEqual({ periodMs: 3_600_000, target: 0.01, candidates: [5], top: 3 });
  });

  it.each([
    [{ period: 'soon' }, /period "soon" is not a duration/],
    [{ target: '2' }, /target "2" must be a share/],
    [{ candidates: '5,-1' }, /"-1" is not a positive whole number/],
    [{ top: ['1', '2'] }, /top must be given once/],
    [{ top: '5000' }, /top "5000"/],
  ])('refuses %j, saying what to write', (query, message) => {
    expect(() => parseAdvisorQuery(query)).toThrow(InvalidAdvisorQueryError);
    expect(() => parseAdvisorQuery(query)).toThrow(message);
  });
});
