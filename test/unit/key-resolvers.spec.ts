import type { ExecutionContext } from '@nestjs/common';
import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host.js';
import { HeaderKeyResolver, IpKeyResolver, UserKeyResolver } from '../../lib/index.js';
import { identityKeyPart, storageKeyBase } from '../../lib/keys/storage-key.js';

const http = (request: object): ExecutionContext => {
  const context = new ExecutionContextHost([request, {}]);
  context.setType('http');
  return context;
};

describe('built-in key resolvers', () => {
  it('IpKeyResolver keys by the normalized IP', () => {
    expect(new IpKeyResolver().resolve(http({ ip: '::ffff:1.2.3.4' }))).toBe('ip:1.2.3.4');
    expect(new IpKeyResolver().resolve(http({ ip: '2001:db8:1:2::7' }))).toBe('ip:2001:db8:1:2::/64');
  });

  it('HeaderKeyResolver reads x-api-key by default or a named header, and falls back when absent', () => {
    expect(new HeaderKeyResolver().resolve(http({ headers: { 'x-api-key': 'k1' } }))).toBe('x-api-key:k1');
    expect(new HeaderKeyResolver('X-Tenant').resolve(http({ headers: { 'x-tenant': ['t1', 't2'] } }))).toBe('x-tenant:t1');
    expect(new HeaderKeyResolver().resolve(http({ headers: {} }))).toBeUndefined();
    expect(new HeaderKeyResolver().resolve(http({ headers: { 'x-api-key': '' } }))).toBeUndefined();
  });

  it('UserKeyResolver reads req.user.id (or a named property) and falls back when anonymous', () => {
    expect(new UserKeyResolver().resolve(http({ user: { id: 42 } }))).toBe('user:42');
    expect(new UserKeyResolver('sub').resolve(http({ user: { sub: 'abc' } }))).toBe('user:abc');
    expect(new UserKeyResolver().resolve(http({ user: null }))).toBeUndefined();
    expect(new UserKeyResolver().resolve(http({}))).toBeUndefined();
  });
});

describe('storage keys', () => {
  it('keeps short plain identities readable', () => {
    expect(storageKeyBase('rl', 'ip:1.2.3.4')).toBe('rl:{ip:1.2.3.4}:');
    expect(identityKeyPart('user:u-1')).toBe('user:u-1');
  });

  it('hashes long, binary, control-character and brace-carrying values to a bounded key', () => {
    const hostile = ['x'.repeat(64 * 1024), 'a\u0000b', 'line\r\nbreak', '}{evil}', 'ü', '\ud800', ' '];
    for (const value of hostile) {
      const part = identityKeyPart(value);
      expect(part).toMatch(/^#[A-Za-z0-9_-]{43}$/);
      expect(storageKeyBase('rl', value)).not.toMatch(/\{.*[{}].*\}/);
    }
  });

  it('never maps two different identities to one key', () => {
    const values = ['\ud800', '\ud801', '\ufffd', 'a'.repeat(97), 'a'.repeat(98), `#${'a'.repeat(10)}`];
    const parts = values.map(identityKeyPart);
    expect(new Set(parts).size).toBe(values.length);
  });
});
