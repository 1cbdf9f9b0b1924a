import { ConcurrencyLeases } from '../../lib/concurrency/concurrency-leases.js';
import { FakeClock } from '../support/fake-clock.js';

describe('ConcurrencyLeases (memory)', () => {
  it('holds a key only while it has leases: its last release deletes it', () => {
    const leases = new ConcurrencyLeases(new FakeClock().now);
    leases.acquire('k', 2, 1_000, 'a');
    leases.acquire('k', 2, 1_000, 'b');
    leases.release('k', 'a');
    expect(leases.size).toBe(1);
    leases.release('k', 'b');
    expect(leases.size).toBe(0);
  });

  it('frees keys whose leases expired unreleased, without a timer: each acquire sweeps two keys', () => {
    const clock = new FakeClock();
    const leases = new ConcurrencyLeases(clock.now);
    // 1,000 clients whose app never released (as if every request outlived its lease)
    for (let i = 0; i < 1_000; i++) leases.acquire(`dead-${i}`, 1, 1_000, 'lease');
    expect(leases.size).toBe(1_000);
    clock.advance(1_000);
    // one live client keeps acquiring and releasing: its acquires sweep the dead keys away, two a time
    const live = (times: number) => {
      for (let i = 0; i < times; i++) {
        leases.acquire('live', 1, 1_000, `l${i}`);
        leases.release('live', `l${i}`);
      }
    };
    live(100);
    expect(leases.size).toBeGreaterThanOrEqual(800);
    expect(leases.size).toBeLessThanOrEqual(801);
    live(420);
    expect(leases.size).toBe(0);
  });

  it('reclaim() with no budget given sweeps every key once', () => {
    const clock = new FakeClock();
    const leases = new ConcurrencyLeases(clock.now);
    for (let i = 0; i < 10; i++) leases.acquire(`k${i}`, 1, 1_000 + i * 100, 'lease');
    clock.advance(1_500); // k0..k5 expired, k6..k9 live
    leases.reclaim();
    expect(leases.size).toBe(4);
    expect(leases.expiresAt('k9')).toBe(clock.time - 1_500 + 1_900);
  });
});
