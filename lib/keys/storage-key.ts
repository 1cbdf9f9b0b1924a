import { createHash } from 'node:crypto';

// Short, printable, and free of the braces that delimit the Cluster hash tag.
const SAFE_KEY = /^[A-Za-z0-9._:@/+=-]{1,96}$/;

/**
 * A client identity as it may appear in a storage key: kept when short and plain, otherwise the
 * SHA-256 of every UTF-16 code unit, so no two identities collide and no input grows a key.
 * Hashes start with `#`, which plain identities cannot contain.
 */
export function identityKeyPart(identity: string): string {
  if (SAFE_KEY.test(identity)) return identity;
  return `#${createHash('sha256').update(identity, 'utf16le').digest('base64url')}`;
}

/** `<prefix>:{<identity>}:` - every key of one check shares this hash tag, hence one Cluster slot. */
export function storageKeyBase(prefix: string, identity: string): string {
  return `${prefix}:{${identityKeyPart(identity)}}:`;
}
