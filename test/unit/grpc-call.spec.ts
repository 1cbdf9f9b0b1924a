import { grpcPeerAddress, statusWithRetryInfo } from '../../lib/contexts/grpc-call.js';
import { routeName } from '../../lib/rules/route-name.js';

describe('grpcPeerAddress', () => {
  it.each([
    ['ipv4:10.0.0.1:5000', '10.0.0.1'],
    ['ipv6:[::1]:5000', '::1'],
    ['ipv6:[2001:db8::7]:443', '2001:db8::7'],
    ['ipv6:[::ffff:10.0.0.1]:1', '::ffff:10.0.0.1'],
    ['10.0.0.2:80', '10.0.0.2'],
    ['unix:/tmp/grpc.sock', undefined],
    ['ipv6:[', undefined],
    [undefined, undefined],
  ])('%s gives %s', (peer, address) => {
    expect(grpcPeerAddress(peer)).toBe(address);
  });
});

describe('statusWithRetryInfo', () => {
  it('encodes google.rpc.Status { code, message, details: [Any(RetryInfo)] } byte for byte', () => {
    const typeUrl = 'type.googleapis.com/google.rpc.RetryInfo';
    // RetryInfo { retry_delay: Duration { seconds: 300 } }: 300 is the varint ac 02
    const retryInfo = Buffer.from([0x0a, 0x03, 0x08, 0xac, 0x02]);
    const any = Buffer.concat([Buffer.from([0x0a, typeUrl.length]), Buffer.from(typeUrl), Buffer.from([0x12, retryInfo.length]), retryInfo]);
    const expected = Buffer.concat([Buffer.from([0x08, 0x08, 0x12, 0x02]), Buffer.from('no'), Buffer.from([0x1a, any.length]), any]);
    expect(statusWithRetryInfo(8, 'no', 300).equals(expected)).toBe(true);
  });
});

describe('routeName', () => {
  it('names a method by the property holding it, also when a decorator left its function nameless', () => {
    class Quotes {
      quote() {}
    }
    const wrapped = (() => function () {})();
    Object.defineProperty(wrapped, 'name', { value: '' });
    Object.defineProperty(Quotes.prototype, 'watch', { value: wrapped });
    expect(routeName(Quotes, Quotes.prototype.quote)).toBe('Quotes.quote');
    expect(routeName(Quotes, wrapped)).toBe('Quotes.watch');
  });
});
