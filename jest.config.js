/**
 * ESM all the way: Nest 12 ships only ES modules, which Jest loads under --experimental-vm-modules.
 *
 * `npm test` runs two phases. The heavy specs (installing the packed library into two apps, and
 * 40,000 large requests in a child process) load both cores for a minute; beside them, tests that
 * time a Redis outage or a PING would measure the machine, not the library. So they run after
 * the others: TEST_PHASE=heavy selects them, and the default phase leaves them out.
 *
 * A third phase, never part of `npm test`: TEST_PHASE=attacks (`npm run attacks`) reruns the
 * reported attacks with real timing (test/attacks/*.attack.ts, which `**\/*.spec.ts` never matches).
 */
const HEAVY = ['<rootDir>/test/package/', '<rootDir>/test/e2e/memory-bounds.e2e.spec.ts'];
const ATTACKS = ['<rootDir>/test/attacks/**/*.attack.ts'];
const heavyPhase = process.env.TEST_PHASE === 'heavy';
const attacksPhase = process.env.TEST_PHASE === 'attacks';

export default {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: attacksPhase
    ? ATTACKS
    : heavyPhase
      ? HEAVY.map((path) => (path.endsWith('/') ? `${path}**/*.spec.ts` : path))
      : ['**/*.spec.ts'],
  // test/package/fixtures are apps the package spec copies elsewhere and installs: never tests here.
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/package/fixtures/', ...(heavyPhase || attacksPhase ? [] : HEAVY)],
  modulePathIgnorePatterns: ['<rootDir>/test/package/fixtures/'],
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json' }],
  },
  testTimeout: 30000,
};
