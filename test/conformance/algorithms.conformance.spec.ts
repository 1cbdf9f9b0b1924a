import { startRedis, type TestRedis } from '../support/redis-server.js';
import { memoryTarget, redisTarget } from '../support/storage-targets.js';
import { describeConformance } from './conformance-suite.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

describe('conformance on memory storage', () => {
  describeConformance(() => memoryTarget, async () => undefined);
});

describe('conformance on redis storage', () => {
  describeConformance(() => redisTarget(() => redis), () => redis.flush());
});
