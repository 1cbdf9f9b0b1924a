import { getAlgorithm } from '../algorithms/algorithm-registry.js';
import type { RateLimitRule } from '../rules/rate-limit-rule.js';
import type { RateLimitResult } from './rate-limit-decision.js';
import type { RateLimitCheck, StorageDeadline } from './rate-limit-storage.interface.js';

/** A check waiting for its batch's reply. */
export interface PendingCheck {
  readonly checks: readonly RateLimitCheck[];
  readonly cost: number;
  /** Local clock when the check was made. */
  readonly sentAt: number;
  /** The caller's deadline, if it has one: the batch must decide nothing once it has passed. */
  readonly deadline?: StorageDeadline;
  resolve(result: RateLimitResult): void;
  reject(error: unknown): void;
}

/**
 * The checks made while one batch was open, as the KEYS and ARGV of the check script
 * (see `redis-check.lua.ts`). Each distinct rule is sent once per batch.
 */
export class RedisCheckBatch {
  readonly keys: string[] = [];
  readonly pending: PendingCheck[] = [];
  private readonly rules = new Map<RateLimitRule, number>();
  private readonly ruleArgs: (string | number)[] = [];
  private readonly checkArgs: number[] = [];
  /** The one algorithm code of every rule so far, or null once they differ. */
  private code: string | null | undefined;
  /** Whether a rule of the batch is followed by the limit advisor: the reply then counts attempts. */
  observed = false;
  /** Whether every check so far is the usual one: one rule, cost 1. */
  private usualOnly = true;
  /** The shortest wait of its checks' callers, in ms, once sent; Infinity if none has a deadline. */
  timeoutMs = Infinity;

  constructor(
    /** One instant for the whole batch; undefined lets the script read the server's TIME. */
    readonly now?: number,
    /** The hash tag of its keys on a Cluster; '' elsewhere. */
    readonly group = '',
  ) {}

  add(check: PendingCheck): void {
    const { checks, cost, deadline } = check;
    this.pending.push(check);
    if (deadline !== undefined && deadline.timeoutMs < this.timeoutMs) this.timeoutMs = deadline.timeoutMs;
    const single = checks.length === 1 && cost === 1;
    if (!single) {
      this.checkArgs.push(-checks.length, cost);
      this.usualOnly = false;
    }
    for (const { key, rule } of checks) {
      this.keys.push(key);
      let index = this.rules.get(rule);
      if (index === undefined) {
        const { code } = getAlgorithm(rule.algorithm);
        if (this.code === undefined) this.code = code;
        else if (this.code !== code) this.code = null;
        index = this.rules.size + 1;
        this.rules.set(rule, index);
        this.ruleArgs.push(code, rule.limit, rule.windowMs, rule.burst, rule.capacity, rule.blockMs, rule.observed === true ? 1 : 0);
        if (rule.observed === true) this.observed = true;
      }
      this.checkArgs.push(index);
    }
  }

  /** The algorithm code shared by every rule of the batch, or null if they mix. */
  get algorithmCode(): string | null {
    return this.code ?? null;
  }

  /** Tells the checks' callers the batch goes out now (`performance.now()`): their deadlines run from here. */
  markSent(at: number): void {
    for (const { deadline } of this.pending) if (deadline !== undefined) deadline.sentAt = at;
  }

  /** ARGV, after the keys; `deadline`: the server's time after which the batch must decide nothing, or ''. */
  arguments(deadline: number | string): (string | number)[] {
    // Only usual checks: their rule numbers as one string, a character each (under 128: one byte).
    if (this.usualOnly && this.rules.size < 128) {
      return [this.now ?? '', deadline, -this.rules.size, ...this.ruleArgs, String.fromCharCode(...this.checkArgs)];
    }
    return [this.now ?? '', deadline, this.rules.size, ...this.ruleArgs, ...this.checkArgs];
  }
}
