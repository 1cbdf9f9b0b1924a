import type { RateLimitCheck } from '../storage/rate-limit-storage.interface.js';

/** One rule set's cached checks, by client identity. */
export type ChecksByIdentity = Map<string, readonly RateLimitCheck[]>;

/** Entries all rule sets of one app keep together; at about 0.5 kB each, a few MB at most. */
const DEFAULT_CAPACITY = 16_384;

/**
 * The one bound on every rule set's cache of client checks: the app keeps at most `capacity`
 * entries in all, forgetting the oldest first. Rule sets come and go with rate functions, so a
 * bound per rule set would multiply; this one does not. Each entry is bounded in bytes by the
 * rule set (it caches only short identities), so the whole cache is bounded in bytes.
 */
export class ChecksCache {
  private readonly owners: (ChecksByIdentity | undefined)[];
  private readonly identities: (string | undefined)[];
  private next = 0;

  constructor(readonly capacity = DEFAULT_CAPACITY) {
    this.owners = new Array<ChecksByIdentity | undefined>(capacity);
    this.identities = new Array<string | undefined>(capacity);
  }

  /** Adds an entry to `owner`, dropping the oldest entry of any rule set when full. */
  add(owner: ChecksByIdentity, identity: string, checks: readonly RateLimitCheck[]): void {
    const at = this.next;
    this.next = at + 1 === this.capacity ? 0 : at + 1;
    const evicted = this.owners[at];
    if (evicted !== undefined) evicted.delete(this.identities[at] as string);
    owner.set(identity, checks);
    this.owners[at] = owner;
    this.identities[at] = identity;
  }
}
