import { clientIp, normalizeIp } from '../../lib/index.js';

describe('normalizeIp', () => {
  it.each([
    ['1.2.3.4', '1.2.3.4'],
    ['::ffff:1.2.3.4', '1.2.3.4'],
    ['::FFFF:10.0.0.1', '10.0.0.1'],
    ['::ffff:7f00:1', '127.0.0.1'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:db8:1:2::99', '2001:db8:1:2::/64'],
    ['2001:DB8:0001:0002:ffff:ffff:ffff:ffff', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['64:ff9b::1.2.3.4', '64:ff9b:0:0::/64'],
  ])('%s → %s', (input, expected) => {
    expect(normalizeIp(input)).toBe(expected);
  });

  it('puts every address of one /64 in one budget and neighbouring /64s in others', () => {
    const inside = ['2001:db8:a:b::1', '2001:db8:a:b:ffff::2', '2001:db8:a:b:1:2:3:4'].map(normalizeIp);
    expect(new Set(inside).size).toBe(1);
    expect(normalizeIp('2001:db8:a:c::1')).not.toBe(inside[0]);
  });

  it('leaves what is not an IP untouched (it is hashed later if odd) and maps absence to undefined', () => {
    expect(normalizeIp('not:an:ip')).toBe('not:an:ip');
    expect(normalizeIp(undefined)).toBeUndefined();
    expect(normalizeIp('')).toBeUndefined();
  });
});

describe('clientIp', () => {
  it('reads req.ip, falls back to the socket, then to "unknown"', () => {
    expect(clientIp({ ip: '::ffff:9.9.9.9' })).toBe('9.9.9.9');
    expect(clientIp({ socket: { remoteAddress: '2001:db8::5' } })).toBe('2001:db8:0:0::/64');
    expect(clientIp({})).toBe('unknown');
  });
});
