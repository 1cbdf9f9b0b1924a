import { parseArgs } from 'node:util';
import type { AdvisorReport } from '../advisor/advisor-report.js';
import { checkQuery } from '../advisor/policy-report.js';
import { readSharedReport } from '../advisor/shared-report.js';
import { InvalidAdvisorQueryError, parseCandidates as readCandidates, parsePeriod as readPeriod, parseTarget as readTarget } from '../advisor/advisor-query.js';
import type { CliIo } from './main.js';
import { formatReportTable } from './report-table.js';

/** A mistake in the command line: `report` prints it with a pointer to `--help` and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export const REPORT_USAGE = `Usage:
  nestjs-rate-limiting report --redis <redis-url> [options]
  nestjs-rate-limiting report --url <dashboard-url> [--header 'name: value']... [options]

Prints what the limit advisor learnt: per policy, what candidate limits would have denied,
the suggested limit and the heaviest identities.

Source (exactly one):
  --redis <url>          Read the report every instance shares in Redis (redis:// or rediss://).
  --url <url>            Fetch <url>/report.json from a running app's dashboard endpoint.

Options:
  --prefix <prefix>      Key prefix the app's Redis storage uses (--redis only).
  --header 'name: value' Request header for --url, e.g. an API key; repeatable.
  --period <duration>    How far back to look: 30m, 1h, 2h, 1d, or seconds (90).
  --target <share>       Most clients the suggestion may deny: a fraction in (0, 1), or a percentage (0.1%).
  --candidates <list>    Limits to evaluate besides the current one, e.g. 50,100,200.
  --top <n>              Show at most n of the heaviest identities per policy (--redis reads no more).
  --timeout <duration>   Give up after this long (default 30s).
  --json                 Print the report as JSON, as the library makes it, instead of the table.
  --no-color             No colours even on a terminal (also: the NO_COLOR environment variable).
  -h, --help             This help.

Exit codes: 0 done, 1 the report could not be read, 2 the command line is wrong.`;

const DEFAULT_TIMEOUT_MS = 30_000;
/** The advisor's bounds (lib/advisor/policy-report.ts), said in the CLI's terms. */
const MAX_PERIOD_MS = 30 * 86_400_000;
const MAX_TOP = 1_000;

/** The options `report` understands, once checked. */
export interface ReportArguments {
  readonly source:
    | { readonly kind: 'redis'; readonly url: string; readonly keyPrefix?: string }
    | { readonly kind: 'url'; readonly url: URL; readonly headers: readonly (readonly [string, string])[] };
  readonly periodMs?: number;
  readonly target?: number;
  readonly candidates?: readonly number[];
  readonly top?: number;
  readonly timeoutMs: number;
  readonly json: boolean;
  readonly color: boolean;
}

/** `nestjs-rate-limiting report ...`: the exit code; a runtime failure throws, with a message for the user. */
export async function runReportCommand(argv: readonly string[], io: CliIo): Promise<number> {
  let args: ReportArguments | 'help';
  try {
    args = parseReportArguments(argv, io.env ?? {});
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.stderr(`nestjs-rate-limiting report: ${error.message}\nRun 'nestjs-rate-limiting report --help' for the options.\n`);
    return 2;
  }
  if (args === 'help') {
    io.stdout(`${REPORT_USAGE}\n`);
    return 0;
  }
  const report = await withTimeout(loadReport(args), args.timeoutMs, describeSource(args));
  const color = args.color && io.stdoutIsTTY === true;
  io.stdout(args.json ? `${JSON.stringify(report, null, 2)}\n` : formatReportTable(report, { color, top: args.top }));
  return 0;
}

/** Checks the command line; throws {@link UsageError} naming what is wrong. */
export function parseReportArguments(argv: readonly string[], env: NodeJS.ProcessEnv): ReportArguments | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        redis: { type: 'string' },
        url: { type: 'string' },
        prefix: { type: 'string' },
        header: { type: 'string', multiple: true },
        period: { type: 'string' },
        target: { type: 'string' },
        candidates: { type: 'string' },
        top: { type: 'string' },
        timeout: { type: 'string' },
        json: { type: 'boolean' },
        'no-color': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    // parseArgs names the option ("Unknown option '--perod'", "Option '--period <value>' argument missing").
    throw new UsageError(errorText(error).split('\n')[0]);
  }
  if (values.help) return 'help';

  if (values.redis !== undefined && values.url !== undefined) throw new UsageError('give either --redis or --url, not both.');
  if (values.redis === undefined && values.url === undefined) {
    throw new UsageError('say where the report is: --redis <redis-url> (shared report) or --url <dashboard-url> (a running app).');
  }

  let source: ReportArguments['source'];
  if (values.redis !== undefined) {
    if (values.header !== undefined) throw new UsageError('--header applies to --url only.');
    source = { kind: 'redis', url: parseRedisUrl(values.redis), ...(values.prefix !== undefined && { keyPrefix: values.prefix }) };
  } else {
    if (values.prefix !== undefined) throw new UsageError('--prefix applies to --redis only: the app knows its own prefix.');
    source = { kind: 'url', url: parseDashboardUrl(values.url!), headers: (values.header ?? []).map(parseHeader) };
  }

  const args: ReportArguments = {
    source,
    ...(values.period !== undefined && { periodMs: parsePeriod(values.period, '--period') }),
    ...(values.target !== undefined && { target: parseTarget(values.target) }),
    ...(values.candidates !== undefined && { candidates: parseCandidates(values.candidates) }),
    ...(values.top !== undefined && { top: parseCount(values.top, '--top') }),
    timeoutMs: values.timeout === undefined ? DEFAULT_TIMEOUT_MS : parsePeriod(values.timeout, '--timeout'),
    json: values.json === true,
    color: values['no-color'] !== true && !env.NO_COLOR,
  };
  if (args.periodMs !== undefined && args.periodMs > MAX_PERIOD_MS) {
    throw new UsageError(`--period ${JSON.stringify(values.period)} is longer than the advisor keeps: 30d at most.`);
  }
  if (args.top !== undefined && args.top > MAX_TOP) throw new UsageError(`--top ${args.top} is more than the advisor lists: ${MAX_TOP} at most.`);
  // The library's own bounds (the number of candidates...), so that a query it would refuse is a usage error here too.
  try {
    checkQuery(args);
  } catch (error) {
    throw new UsageError(`${errorText(error)}.`);
  }
  return args;
}

/** The library's readers (advisor-query.ts), their mistakes as usage errors naming the option. */
function inCliTerms<T>(read: (text: string, what: string) => T): (text: string, option?: string) => T {
  return (text, option) => {
    try {
      return read(text, option ?? '');
    } catch (error) {
      if (error instanceof InvalidAdvisorQueryError) throw new UsageError(error.message);
      throw error;
    }
  };
}

/** `30m`, `1h`, `2 hours`, `1d`, or a whole number of seconds (`90`); in milliseconds. */
export const parsePeriod = (text: string, option = '--period'): number => inCliTerms(readPeriod)(text, option);
/** A fraction in (0, 1), `0.001`, or a percentage, `0.1%`. */
export const parseTarget = (text: string): number => inCliTerms(readTarget)(text, '--target');
/** `50,100,200`: positive whole numbers, in the order given, without repeats. */
export const parseCandidates = (text: string): number[] => inCliTerms(readCandidates)(text, '--candidates');

function parseCount(text: string, option: string): number {
  const value = /^[0-9]+$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!Number.isSafeInteger(value)) throw new UsageError(`${option} ${JSON.stringify(text)} must be a whole number, e.g. ${option} 10.`);
  return value;
}

function parseRedisUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`--redis ${JSON.stringify(redact(text))} is not a URL: write it as redis://host:6379 (or rediss:// for TLS).`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new UsageError(`--redis must be a redis:// or rediss:// URL, got ${url.protocol}//...`);
  }
  return text;
}

function parseDashboardUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`--url ${JSON.stringify(redact(text))} is not a URL: give the dashboard's address, e.g. http://localhost:3000/admin/rate-limits.`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--url must be an http:// or https:// URL, got ${url.protocol}//...`);
  // fetch refuses them, and would quote the password in its error.
  if (url.username !== '' || url.password !== '') {
    throw new UsageError("--url may not hold credentials: send them as a header, e.g. --header 'authorization: Basic ...'.");
  }
  return url;
}

// A header name is an HTTP token; a value is Latin-1 without control characters (a newline would start another header).
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const HEADER_VALUE = /^[\t\u0020-\u007e\u0080-\u00ff]*$/;

function parseHeader(text: string): readonly [string, string] {
  const colon = text.indexOf(':');
  const name = colon < 0 ? '' : text.slice(0, colon).trim();
  const value = colon < 0 ? '' : text.slice(colon + 1).trim();
  if (!HEADER_NAME.test(name) || !HEADER_VALUE.test(value)) {
    // The value is likely a secret: name only the header.
    throw new UsageError(`--header must be 'name: value', e.g. --header 'x-api-key: KEY'${name ? ` (check the one for ${JSON.stringify(name)})` : ''}.`);
  }
  return [name, value];
}

/** `<url>/report.json?period=<seconds>&target=<share>&candidates=<list>`, keeping any query the URL has. */
export function reportJsonUrl(args: Pick<ReportArguments, 'periodMs' | 'target' | 'candidates'> & { readonly url: URL }): URL {
  const url = new URL(args.url.href);
  url.hash = '';
  if (!url.pathname.endsWith('/report.json')) url.pathname = `${url.pathname.replace(/\/+$/, '')}/report.json`;
  // Only what was asked for, so the app's own defaults apply to the rest.
  if (args.periodMs !== undefined) url.searchParams.set('period', String(Math.round(args.periodMs / 1_000)));
  if (args.target !== undefined) url.searchParams.set('target', String(args.target));
  if (args.candidates !== undefined) url.searchParams.set('candidates', args.candidates.join(','));
  return url;
}

async function loadReport(args: ReportArguments): Promise<AdvisorReport> {
  const { source } = args;
  if (source.kind === 'redis') {
    let report: AdvisorReport;
    try {
      report = await readSharedReport(source.url, {
        ...(source.keyPrefix !== undefined && { keyPrefix: source.keyPrefix }),
        ...(args.periodMs !== undefined && { periodMs: args.periodMs }),
        ...(args.target !== undefined && { target: args.target }),
        ...(args.candidates !== undefined && { candidates: args.candidates }),
        ...(args.top !== undefined && { top: args.top }),
      });
    } catch (error) {
      throw new Error(`could not read the shared report from ${describeSource(args)}: ${reason(error)}. Check the URL, that Redis is up, and --prefix.`);
    }
    return checkReport(report, describeSource(args));
  }
  return fetchReport(reportJsonUrl({ ...args, url: source.url }), source.headers, args.timeoutMs);
}

async function fetchReport(url: URL, headers: readonly (readonly [string, string])[], timeoutMs: number): Promise<AdvisorReport> {
  const where = redact(url.href);
  const requestHeaders = new Headers({ accept: 'application/json' });
  for (const [name, value] of headers) requestHeaders.append(name, value);
  let response: Response;
  try {
    // No redirects: they would carry the --header values (API keys) to wherever the server points.
    response = await fetch(url, { headers: requestHeaders, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) });
  } catch (error) {
    throw new Error(`could not reach ${where}: ${reason(error)}. Is the app running, and is --url right?`);
  }
  if (response.status < 200 || response.status > 299) {
    await response.body?.cancel().catch(() => undefined);
    throw new Error(`HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''} from ${where}${httpHint(response)}`);
  }
  let text: string;
  try {
    text = await response.text();
  } catch (error) {
    throw new Error(`the response from ${where} broke off: ${reason(error)}.`);
  }
  let report: unknown;
  try {
    report = JSON.parse(text);
  } catch {
    const type = response.headers.get('content-type');
    throw new Error(`the response from ${where} is not valid JSON${type ? ` (content-type ${type})` : ''}: is --url the dashboard's address?`);
  }
  return checkReport(report, where);
}

function httpHint(response: Response): string {
  const status = response.status;
  if (status === 401 || status === 403) {
    return ": the dashboard refused the credentials; pass them with --header, e.g. --header 'x-api-key: KEY'.";
  }
  if (status === 404) return ': is --url the path the dashboard is mounted at, and is the dashboard enabled?';
  if (status >= 300 && status < 400) {
    const location = response.headers.get('location');
    return (
      `: it redirects${location ? ` to ${redact(resolve(location, response.url))}` : ''}; pass that address to --url ` +
      '(redirects are not followed, so that the headers go to the host you named only).'
    );
  }
  return '.';
}

/** Enough of the shape to print it: a report from another version of the library says so, not "undefined". */
function checkReport(report: unknown, where: string): AdvisorReport {
  const policies = (report as { policies?: unknown } | null)?.policies;
  const valid =
    typeof report === 'object' &&
    report !== null &&
    Array.isArray(policies) &&
    policies.every(
      (policy) =>
        typeof policy === 'object' &&
        policy !== null &&
        typeof policy.name === 'string' &&
        Array.isArray(policy.candidates) &&
        Array.isArray(policy.top),
    );
  if (!valid) {
    throw new Error(
      `the answer from ${where} is not an advisor report (no "policies" list of policies with "candidates" and "top"): ` +
        "check the URL, and that the app's nestjs-rate-limiting is as recent as this CLI.",
    );
  }
  return report as AdvisorReport;
}

function withTimeout<T>(work: Promise<T>, ms: number, where: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no report from ${where} after ${ms / 1_000}s; raise --timeout, or check that it is reachable.`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

function describeSource(args: ReportArguments): string {
  const { source } = args;
  if (source.kind === 'url') return redact(reportJsonUrl({ ...args, url: source.url }).href);
  return `${redact(source.url)}${source.keyPrefix !== undefined ? ` (prefix ${JSON.stringify(source.keyPrefix)})` : ''}`;
}

function resolve(location: string, base: string): string {
  try {
    return new URL(location, base || undefined).href;
  } catch {
    return location;
  }
}

/** A URL without its password, for messages (a Redis URL often carries one). */
function redact(text: string): string {
  try {
    const url = new URL(text);
    if (url.password === '') return text;
    url.password = '***';
    return url.href;
  } catch {
    return text.replace(/\/\/([^/@:]*):[^/@]*@/, '//$1:***@');
  }
}

/** The reason, to be followed by a full stop of the message's own. */
function reason(error: unknown): string {
  return errorText(error).replace(/[.\s]+$/, '');
}

/**
 * The reason in any error: fetch hides it in `cause`, a connection may fail with an AggregateError.
 * Duck-typed, not `instanceof Error`: Node's own errors may come from another realm (as under Jest).
 */
export function errorText(error: unknown): string {
  if (typeof error !== 'object' || error === null) return String(error);
  const { name, message, code, cause, errors } = error as { name?: unknown; message?: unknown; code?: unknown; cause?: unknown; errors?: unknown };
  if (name === 'TimeoutError') return 'it timed out';
  if (Array.isArray(errors) && errors.length > 0) return [...new Set(errors.map(errorText))].join('; ');
  const own = typeof message === 'string' && message !== '' ? message : typeof code === 'string' ? code : String(name ?? error);
  if (cause !== undefined && cause !== error && (own === 'fetch failed' || own === 'terminated')) return errorText(cause);
  return own;
}
