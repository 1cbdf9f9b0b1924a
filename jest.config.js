/**
 * ESM all the way: Nest 12 ships only ES modules, which Jest loads under --experimental-vm-modules.
 *
 * `npm test` runs two phases. The heavy specs (installing the packed library into two apps, and
 * 40,000 large requests in a child process) load both cores for a minute; beside them, tests that
 * time a Redis outage or a PING would measure the machine, not the library. So they run after
 * the others: TEST_PHASE=heavy selects them, and the default phase leaves them out.
 */
const HEAVY = ['<rootDir>/test/package/', '<rootDir>/test/e2e/memory-bounds.e2e.spec.ts'];
const heavyPhase = process.env.TEST_PHASE === 'heavy';

export default {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: heavyPhase ? HEAVY.map((path) => (path.endsWith('/') ? `${path}**/*.spec.ts` : path)) : ['**/*.spec.ts'],
  // test/package/fixtures are apps the package spec copies elsewhere and installs: never tests here.
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/package/fixtures/', ...(heavyPhase ? [] : HEAVY)],
  modulePathIgnorePatterns: ['<rootDir>/test/package/fixtures/'],
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json' }],
  },
  testTimeout: 30000,
};
