import { execFileSync } from 'node:child_process';
import { flatCopy } from '../../lib/utils/flat-copy.js';

describe('flatCopy', () => {
  it('returns an equal string, lone surrogates and all', () => {
    for (const value of ['', 'a', 'x-api-key:key-42', '\ud800 lone', 'é'.repeat(200)]) expect(flatCopy(value)).toBe(value);
  });

  it('keeps nothing of a large string it was sliced from', () => {
    // this very function, in a child that can collect garbage on demand
    const script = `
      const flatCopy = ${flatCopy.toString()};
      gc();
      const before = process.memoryUsage().heapUsed;
      const kept = [];
      for (let i = 0; i < 20; i++) kept.push(flatCopy(String(i).padEnd(1000000, 'x').slice(2, 40)));
      gc();
      console.log(process.memoryUsage().heapUsed - before, kept[0].length);`;
    const [growth, length] = execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' }).trim().split(' ').map(Number);
    expect(length).toBe(38);
    expect(growth).toBeLessThan(5_000_000); // 20 MB if the parents stayed alive
  });
});
