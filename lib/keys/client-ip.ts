import { isIPv6 } from 'node:net';

export interface AddressedRequest {
  ip?: string;
  socket?: { remoteAddress?: string };
}

/**
 * The client address as the platform resolved it (`req.ip`, so Express's `trust proxy` decides
 * which forwarded hop counts), normalized by {@link normalizeIp}.
 */
export function clientIp(request: AddressedRequest): string {
  return normalizeIp(requestAddress(request)) ?? 'unknown';
}

/** The address an HTTP request (Express's or Fastify's) came from, before normalization. */
export function requestAddress(request: AddressedRequest | undefined): string | undefined {
  return request?.ip ?? request?.socket?.remoteAddress;
}

/**
 * IPv4 stays as is; IPv4-mapped IPv6 becomes IPv4; any other IPv6 address becomes its /64 prefix,
 * since one subscriber usually owns a whole /64 and could rotate through it.
 */
export function normalizeIp(address: string | undefined): string | undefined {
  if (!address) return undefined;
  if (!address.includes(':')) return address;
  const zone = address.indexOf('%');
  const bare = (zone === -1 ? address : address.slice(0, zone)).toLowerCase();
  if (!isIPv6(bare)) return bare;
  const groups = expandIPv6(bare);
  if (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
    return `${groups[6] >> 8}.${groups[6] & 0xff}.${groups[7] >> 8}.${groups[7] & 0xff}`;
  }
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(':')}::/64`;
}

/** Eight 16-bit groups of a valid IPv6 address, `::` and a dotted IPv4 tail expanded. */
function expandIPv6(address: string): number[] {
  const [head, tail] = address.includes('::') ? address.split('::') : [address, undefined];
  const toGroups = (part: string | undefined): number[] => {
    if (!part) return [];
    return part.split(':').flatMap((group) => {
      if (!group.includes('.')) return [parseInt(group, 16)];
      const [a, b, c, d] = group.split('.').map(Number);
      return [(a << 8) | b, (c << 8) | d];
    });
  };
  const first = toGroups(head);
  const last = toGroups(tail);
  const zeros = tail === undefined ? 0 : 8 - first.length - last.length;
  return [...first, ...new Array<number>(zeros).fill(0), ...last];
}
