import type { AdvisorCandidate, AdvisorPolicyReport, AdvisorReport, ShareRange } from '../advisor/advisor-report.js';

export interface ReportTableOptions {
  /** ANSI colours (bold headings, green suggestion). The caller decides: main.ts only asks for them on a TTY. */
  readonly color?: boolean;
  /** Show at most this many top identities per policy (all of them when absent). */
  readonly top?: number;
}

/** Longer identities are cut, so that one client's 2 kB key cannot push the table off the screen. */
const MAX_IDENTITY_LENGTH = 40;
const INDENT = '  ';
const GAP = '   ';

/**
 * The report as plain text for a terminal: per policy, a heading, the candidate limits as an aligned
 * table, the suggested limit and the heaviest identities. Every string from the report is
 * sanitised first, since identities (and, over `--url`, the whole report) come from untrusted hands.
 */
export function formatReportTable(report: AdvisorReport, options: ReportTableOptions = {}): string {
  const style = styles(options.color === true);
  const lines: string[] = [
    style.bold(
      `Limit advisor report: ${report.scope === 'shared' ? 'shared (all instances)' : `${clean(String(report.scope))} (one instance)`}` +
        `, last ${formatSeconds(report.periodSeconds)}, generated ${clean(String(report.generatedAt))}`,
    ),
  ];
  const policies = Array.isArray(report.policies) ? report.policies : [];
  if (policies.length === 0) lines.push('', 'No policy in the report: none recorded traffic over the period (or, from Redis, the key prefix is not the app\'s).');
  for (const policy of policies) lines.push('', ...formatPolicy(policy, options.top, style));
  lines.push(
    '',
    style.dim('A client is one identity in one window: an identity seen in three windows counts three times.'),
    style.dim('≈: an estimate between the bounds in brackets; "exact": known exactly.'),
  );
  return `${lines.join('\n')}\n`;
}

function formatPolicy(policy: AdvisorPolicyReport, top: number | undefined, style: Styles): string[] {
  const lines = [
    style.bold(`Policy ${clean(policy.name)}`) +
      `: ${clean(policy.rate)}, ${clean(policy.algorithm)}, ${clean(policy.mode)}, estimates ${clean(policy.estimate)}`,
    `${INDENT}clients ${formatCount(policy.clients)}, requests ${formatCount(policy.requests)}, ` +
      `denied ${formatCount(policy.denied)}, shadow-denied ${formatCount(policy.shadowDenied)}`,
    '',
  ];

  const candidates = policy.candidates ?? [];
  const rows = candidates.map((candidate) => candidateRow(candidate, policy));
  lines.push(...table(['limit', 'clients denied', 'requests denied', 'estimate', 'note'], rows, [true, false, false, false, false]));

  lines.push('', INDENT + style.green(suggestionLine(policy)));

  const identities = (policy.top ?? []).slice(0, top ?? Infinity);
  if (identities.length === 0) {
    lines.push(`${INDENT}Top identities: none recorded.`);
  } else {
    lines.push('');
    const rows = identities.map((entry) => [truncate(clean(entry.identity)), formatCount(entry.requests), `±${formatCount(entry.error)}`]);
    lines.push(...table(['top identity', 'requests', '± error'], rows, [false, true, true]));
  }
  return lines;
}

function candidateRow(candidate: AdvisorCandidate, policy: AdvisorPolicyReport): string[] {
  const notes: string[] = [];
  if (candidate.limit === policy.limit) notes.push('current');
  if (candidate.limit === policy.suggested) notes.push('suggested');
  return [
    formatCount(candidate.limit),
    shareCell(candidate.clientsDenied, candidate.clientsDeniedRange, candidate.exact),
    shareCell(candidate.requestsDenied, candidate.requestsDeniedRange, candidate.exact),
    candidate.exact ? 'exact' : '≈',
    notes.join(', '),
  ];
}

function shareCell(share: number, range: ShareRange | undefined, exact: boolean): string {
  if (exact || range === undefined || range.low === range.high) return formatPercent(share);
  return `≈${formatPercent(share)} (${formatPercent(range.low)}–${formatPercent(range.high)})`;
}

function suggestionLine(policy: AdvisorPolicyReport): string {
  const suggestion = policy.suggestion;
  if (policy.suggested === null || suggestion === null || suggestion === undefined) {
    return 'Suggested limit: none, no traffic was seen over the period.';
  }
  const current = suggestion.limit === policy.limit ? 'the current limit' : `current ${formatCount(policy.limit)}`;
  return (
    `Suggested limit: ${formatCount(suggestion.limit)} (${current}) for a target of ${formatPercent(suggestion.target)} of clients denied: ` +
    `it denies at most ${formatPercent(suggestion.clientsDenied)} of clients and ${formatPercent(suggestion.requestsDenied)} of requests, ` +
    `on ${formatCount(suggestion.clients)} clients and ${formatCount(suggestion.requests)} requests.`
  );
}

/** Left-aligned text, right-aligned numbers where `numeric` says so; trailing blanks trimmed. */
function table(header: readonly string[], rows: readonly (readonly string[])[], numeric: readonly boolean[]): string[] {
  const widths = header.map((title, column) => Math.max(width(title), ...rows.map((row) => width(row[column]))));
  const render = (cells: readonly string[]) =>
    INDENT +
    cells
      .map((cell, column) => (numeric[column] ? padStart(cell, widths[column]) : padEnd(cell, widths[column])))
      .join(GAP)
      .trimEnd();
  return [render(header), render(widths.map((w) => '-'.repeat(w))), ...rows.map(render)];
}

/** Counted in code points, so that an astral character is one column (as most terminals draw it). */
function width(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

function padEnd(text: string, to: number): string {
  return text + ' '.repeat(Math.max(0, to - width(text)));
}

function padStart(text: string, to: number): string {
  return ' '.repeat(Math.max(0, to - width(text))) + text;
}

function truncate(text: string): string {
  const chars = Array.from(text);
  return chars.length <= MAX_IDENTITY_LENGTH ? text : `${chars.slice(0, MAX_IDENTITY_LENGTH - 1).join('')}…`;
}

// Whole escape sequences first (CSI, OSC such as hyperlinks or clipboard writes, other ESC pairs),
// then any control character left, C0, DEL and C1, and the bidi and line-separator characters that
// would make a line read otherwise than it is.
const ESCAPE_SEQUENCE = /\u001b\[[0-?]*[ -/]*[@-~]?|\u001b\][^\u0007\u001b]*(?:\u0007|\u001b\\)?|\u009b[0-?]*[ -/]*[@-~]?|\u001b[@-_]?/g;
const CONTROL = /[\p{Cc}\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]|\p{Cs}/gu;

/** Text safe to print on a terminal: every control character or escape sequence becomes `?`. */
export function sanitizeForTerminal(value: unknown): string {
  return String(value).replace(ESCAPE_SEQUENCE, '?').replace(CONTROL, '?');
}

const clean = sanitizeForTerminal;

const COUNT = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

function formatCount(value: number): string {
  return typeof value === 'number' && Number.isFinite(value) ? COUNT.format(value) : '?';
}

/**
 * A share from 0 to 1 as a percentage with the digits that matter: `0%`, `<0.01%`, `0.12%`, `12.5%`,
 * `>99.9%`, `100%`. Tiny and almost-total shares keep their sign, since 0% and 100% mean "none" and "all".
 */
export function formatPercent(share: number): string {
  if (typeof share !== 'number' || !Number.isFinite(share)) return '?';
  const percent = share * 100;
  if (percent === 0) return '0%';
  if (percent > 0 && percent < 0.01) return '<0.01%';
  if (percent > 99.9 && percent < 100) return '>99.9%';
  const digits = Math.abs(percent) < 1 ? 2 : 1;
  return `${trimZeros(percent.toFixed(digits))}%`;
}

function trimZeros(fixed: string): string {
  return fixed.includes('.') ? fixed.replace(/\.?0+$/, '') : fixed;
}

/** `3600` → `1h`, `5400` → `1h 30m`, `90` → `1m 30s`. */
export function formatSeconds(seconds: number): string {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return '?';
  let rest = Math.round(seconds);
  if (rest === 0) return '0s';
  const parts: string[] = [];
  for (const [unit, size] of [['d', 86_400], ['h', 3_600], ['m', 60], ['s', 1]] as const) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.join(' ');
}

interface Styles {
  bold(text: string): string;
  dim(text: string): string;
  green(text: string): string;
}

function styles(color: boolean): Styles {
  const wrap = (open: number, close: number) => (text: string) => (color ? `\u001b[${open}m${text}\u001b[${close}m` : text);
  return { bold: wrap(1, 22), dim: wrap(2, 22), green: wrap(32, 39) };
}
