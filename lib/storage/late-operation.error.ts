/**
 * The store ran an operation after its caller's deadline had passed, and so did nothing: the
 * caller has reported it failed (or is about to), and a failure it reported must never take
 * effect later. Counts as a timeout for the failure policy and the circuit breaker.
 */
export class LateOperationError extends Error {
  constructor(what: string) {
    super(`the rate-limit storage ran ${what} after its deadline and did nothing`);
    this.name = 'LateOperationError';
  }
}
