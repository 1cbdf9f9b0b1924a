import 'reflect-metadata';
import { jest } from '@jest/globals';

// As in an app that does not install the optional peer: importing it fails.
jest.unstable_mockModule('@nestjs/terminus', () => {
  throw Object.assign(new Error("Cannot find package '@nestjs/terminus'"), { code: 'ERR_MODULE_NOT_FOUND' });
});

const { Test } = await import('@nestjs/testing');
const { RateLimitHealthIndicator, RateLimitModule } = await import('../../lib/index.js');

describe('RateLimitHealthIndicator without @nestjs/terminus', () => {
  it('lets the module start, and says what to install when a health check runs', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [RateLimitModule.forRoot()] }).compile();
    const app = await moduleRef.init();
    try {
      const indicator = app.get(RateLimitHealthIndicator);
      await expect(indicator.isHealthy()).rejects.toThrow(
        "RateLimitHealthIndicator needs @nestjs/terminus (11 or later), an optional peer dependency of nestjs-rate-limiting: npm install @nestjs/terminus (Cannot find package '@nestjs/terminus')",
      );
    } finally {
      await app.close();
    }
  });
});
