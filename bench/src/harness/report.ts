// The one table of a bench run (markdown), shared with the storage scenarios' hook.

/**
 * One line of the table. Every cell is optional text; the storage hook writes the same shape.
 * `throughput` is the main result (req/s, 429/s; checks/s or bytes per key for the storage rows),
 * `vsBare` the ratio to bare, or to the reference the cell names.
 */
export interface Row {
  scenario: string;
  contender: string;
  throughput?: string;
  vsBare?: string;
  p50?: string;
  p99?: string;
  p999?: string;
  redis?: string;
  spread?: string;
  target?: string;
  pass?: boolean | string;
  notes?: string;
}

const COLUMNS: [keyof Row, string][] = [
  ['scenario', 'Scenario'],
  ['contender', 'Contender'],
  ['throughput', 'Result (median)'],
  ['vsBare', 'vs bare / reference'],
  ['p50', 'p50 ms'],
  ['p99', 'p99 ms'],
  ['p999', 'p99.9 ms'],
  ['redis', 'Redis calls'],
  ['spread', 'Rounds spread'],
  ['target', 'Target'],
  ['pass', 'Pass'],
  ['notes', 'Notes'],
];

function cell(row: Row, key: keyof Row): string {
  const value = row[key];
  if (key === 'pass' && typeof value === 'boolean') return value ? '✅ pass' : '❌ FAIL';
  return value === undefined || value === '' ? '' : String(value).replaceAll('|', '\\|').replaceAll('\n', ' ');
}

export function markdownTable(rows: readonly Row[]): string {
  const lines = [`| ${COLUMNS.map(([, title]) => title).join(' | ')} |`, `|${COLUMNS.map(() => '---').join('|')}|`];
  for (const row of rows) lines.push(`| ${COLUMNS.map(([key]) => cell(row, key)).join(' | ')} |`);
  return lines.join('\n');
}

export const fmt = {
  int: (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—'),
  ms: (n: number) => (Number.isFinite(n) ? (n < 10 ? n.toFixed(2) : n.toFixed(1)) : '—'),
  ratio: (n: number) => (Number.isFinite(n) ? `${n.toFixed(3)}×` : '—'),
  pct: (n: number) => (Number.isFinite(n) ? `${(n * 100).toFixed(1)}%` : '—'),
  per: (n: number) => (Number.isFinite(n) ? (n === 0 ? '0' : n < 0.01 ? n.toExponential(1) : n.toFixed(2)) : '—'),
};
