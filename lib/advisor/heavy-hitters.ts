import { createHmac } from 'node:crypto';
import type { AdvisorTopIdentity } from './advisor-report.js';

/** One sketch's view: what it counted per identity, and the most an identity it lost could have. */
export interface SketchView {
  readonly entries: readonly { readonly identity: string; readonly count: number; readonly error: number }[];
  /** The smallest count once full (SpaceSaving.floor), 0 before. */
  readonly floor: number;
}

/**
 * Sketches of several instances or hours as one: counts add up, and an identity a sketch does
 * not follow may have had up to that sketch's floor there, which goes into its error. An
 * identity above 1/k of the whole traffic is above 1/k of some sketch's, so it is followed there.
 */
export function mergeSketches(views: readonly SketchView[]): AdvisorTopIdentity[] {
  const merged = new Map<string, { requests: number; error: number }>();
  for (const view of views) {
    for (const { identity, count, error } of view.entries) {
      const known = merged.get(identity);
      if (known === undefined) merged.set(identity, { requests: count, error });
      else {
        known.requests += count;
        known.error += error;
      }
    }
  }
  const followed = views.map((view) => new Set(view.entries.map((entry) => entry.identity)));
  const out: AdvisorTopIdentity[] = [];
  for (const [identity, { requests, error }] of merged) {
    let absent = 0;
    for (let i = 0; i < views.length; i++) if (!followed[i].has(identity)) absent += views[i].floor;
    out.push({ identity, requests, error: error + absent });
  }
  return out.sort((a, b) => b.requests - a.requests || (a.identity < b.identity ? -1 : 1));
}

/** The client identity in a storage key `<prefix>:{<identity>}:<rule>`, as the policy keys it. */
export function identityOfKey(key: string): string {
  const open = key.indexOf('{');
  const close = key.indexOf('}', open + 1);
  return open < 0 || close < 0 ? key : key.slice(open + 1, close);
}

/** A keyed hash shown in place of an identity (`redactIdentities`): stable for one key, not reversible without it. */
export function redactIdentity(identity: string, key: Buffer): string {
  return `h:${createHmac('sha256', key).update(identity, 'utf8').digest('base64url').slice(0, 22)}`;
}
