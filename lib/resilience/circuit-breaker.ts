export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit. Default 5. */
  failureThreshold?: number;
  /** How long an open circuit refuses calls before one probe may try again. Default 500 ms. */
  cooldownMs?: number;
}

export type CircuitState = 'closed' | 'open' | 'half-open';

/**
 * Closed: calls pass. After `failureThreshold` failures in a row it opens: calls are refused at
 * once, paying no timeout. After `cooldownMs` one probe passes; its success closes the circuit,
 * its failure opens it for another cool-down.
 */
export class CircuitBreaker {
  private failures = 0;
  private openUntil = 0;
  private probing = false;
  private readonly threshold: number;
  private readonly cooldownMs: number;

  constructor(options: CircuitBreakerOptions = {}, private readonly clock: () => number = Date.now) {
    this.threshold = options.failureThreshold ?? 5;
    this.cooldownMs = options.cooldownMs ?? 500;
    if (!(this.threshold >= 1) || !(this.cooldownMs >= 0)) {
      throw new Error('RateLimitModule: circuitBreaker needs failureThreshold >= 1 and cooldownMs >= 0');
    }
  }

  get isOpen(): boolean {
    return this.failures >= this.threshold;
  }

  /** `half-open` once the cool-down is over: the next call (or the one in flight) is a probe. */
  get state(): CircuitState {
    if (!this.isOpen) return 'closed';
    return this.probing || this.clock() >= this.openUntil ? 'half-open' : 'open';
  }

  /** ms until the next probe may pass; 0 when the circuit is closed. */
  get retryInMs(): number {
    return this.isOpen ? Math.max(0, this.openUntil - this.clock()) : 0;
  }

  /** Whether a call may go out now. In the open state only one probe at a time passes. */
  allow(): boolean {
    if (!this.isOpen) return true;
    if (this.probing || this.clock() < this.openUntil) return false;
    this.probing = true;
    return true;
  }

  success(): void {
    this.failures = 0;
    this.probing = false;
  }

  failure(): void {
    this.failures++;
    this.probing = false;
    if (this.isOpen) this.openUntil = this.clock() + this.cooldownMs;
  }
}
