/** A storage's answer to a request for a concurrency slot. */
export interface ConcurrencyDecision {
  readonly allowed: boolean;
  readonly limit: number;
  /** Leases held under the key now, this one included when it was granted. */
  readonly inFlight: number;
}
