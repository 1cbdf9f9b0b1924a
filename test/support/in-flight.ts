import { get, type IncomingHttpHeaders } from 'node:http';

interface Deferred {
  readonly promise: Promise<void>;
  resolve(): void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve };
}

/**
 * Requests that handlers (or key resolvers) hold in flight until the test lets them go, by id: no
 * sleeping to keep a request in flight, nor to know it got there.
 */
export class InFlight {
  private readonly arrivals = new Map<string, Deferred>();
  private readonly gates = new Map<string, Deferred>();
  private readonly closes = new Map<string, Deferred>();

  private of(map: Map<string, Deferred>, id: string): Deferred {
    let entry = map.get(id);
    if (entry === undefined) map.set(id, (entry = deferred()));
    return entry;
  }

  /** For the handler: reports its arrival, then waits until the test calls `release(id)`. */
  hold(id: string): Promise<void> {
    this.of(this.arrivals, id).resolve();
    return this.of(this.gates, id).promise;
  }

  /** For the handler: reports `id`'s arrival without waiting. */
  arrive(id: string): void {
    this.of(this.arrivals, id).resolve();
  }

  /** For the handler: reports when `response` (a Node response) closes. */
  watchClose(id: string, response: { once(event: 'close', listener: () => void): unknown }): void {
    response.once('close', () => this.of(this.closes, id).resolve());
  }

  /** Resolves once the handler of `id` has called `hold` or `arrive`. */
  arrived(id: string): Promise<void> {
    return this.of(this.arrivals, id).promise;
  }

  /** Lets the handler of `id` go on. */
  release(id: string): void {
    this.of(this.gates, id).resolve();
  }

  /** Resolves once the server-side response of `id` has closed. */
  closed(id: string): Promise<void> {
    return this.of(this.closes, id).promise;
  }

  clear(): void {
    for (const gate of this.gates.values()) gate.resolve(); // nothing stays held past a test
    this.arrivals.clear();
    this.gates.clear();
    this.closes.clear();
  }
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** A GET on its own connection (no keep-alive), which the test may abort: the server sees the socket close. */
export function sendGet(port: number, path: string, headers: Record<string, string> = {}): { answer: Promise<HttpAnswer>; abort(): void } {
  const request = get({ host: '127.0.0.1', port, path, headers, agent: false });
  const answer = new Promise<HttpAnswer>((resolve, reject) => {
    request.on('response', (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers, body }));
      response.on('error', reject);
    });
    request.on('error', reject);
  });
  answer.catch(() => undefined); // an aborted request's rejection is expected; the test awaits what it needs
  return { answer, abort: () => request.destroy() };
}
