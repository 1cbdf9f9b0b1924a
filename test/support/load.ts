/** One request's fate under load. */
export interface Sample {
  readonly path: string;
  readonly sentAt: number;
  readonly ms: number;
  readonly status: number;
  readonly retryAfter: string | null;
}

/**
 * Keeps `concurrency` requests in flight against `base` until `stop()`; bounded by `maxRequests`
 * so a stuck test cannot loop forever. Only for loopback servers the test started itself.
 */
export function startLoad(base: string, paths: readonly string[], concurrency = 8, maxRequests = 20_000) {
  const samples: Sample[] = [];
  let running = true;
  let sent = 0;
  const worker = async (n: number) => {
    while (running && sent < maxRequests) {
      const path = paths[(sent + n) % paths.length];
      sent++;
      const sentAt = performance.now();
      const response = await fetch(base + path);
      await response.arrayBuffer();
      samples.push({ path, sentAt, ms: performance.now() - sentAt, status: response.status, retryAfter: response.headers.get('retry-after') });
    }
  };
  const done = Promise.all(Array.from({ length: concurrency }, (_, n) => worker(n)));
  return {
    samples,
    async stop(): Promise<Sample[]> {
      running = false;
      await done;
      return samples;
    },
  };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
