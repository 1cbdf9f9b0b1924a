import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Transport, type GrpcOptions } from '@nestjs/microservices';

const PROTO_FILE = 'quotes.proto';

/**
 * The absolute path of `sample-app/proto/quotes.proto`, found from where this module runs. tsc
 * copies no `.proto` files, so a build (`dist/app/sample-app/quotes/`, or the tests'
 * `.test-build/<run>/sample-app/quotes/`) has none beside it: the nearest directory up the tree
 * holding `proto/quotes.proto` (the sources, or a build the proto was copied into) or
 * `sample-app/proto/quotes.proto` (the project root, above any build) has it.
 */
export function quotesProtoPath(moduleUrl: string | URL = import.meta.url): string {
  const start = dirname(fileURLToPath(moduleUrl));
  for (let dir = start; ; dir = dirname(dir)) {
    for (const candidate of [join(dir, 'proto', PROTO_FILE), join(dir, 'sample-app', 'proto', PROTO_FILE)]) {
      if (existsSync(candidate)) return candidate;
    }
    if (dirname(dir) === dir) throw new Error(`sample-app/proto/${PROTO_FILE} not found in ${start} or any directory above it`);
  }
}

/**
 * The sample app's gRPC server: package `quotes` of quotes.proto on `host:port`. One function for
 * main.ts and the tests, so both serve the same thing. Connect it with `{ inheritAppConfig: true }`:
 * the HTTP app's global guard, filter and pipes then apply to the calls too.
 */
export function quotesGrpcOptions(port: number, host = '0.0.0.0'): GrpcOptions {
  return {
    transport: Transport.GRPC,
    options: { package: 'quotes', protoPath: quotesProtoPath(), url: `${host}:${port}` },
  };
}
