/** ESM all the way: Nest 12 ships only ES modules, which Jest loads under --experimental-vm-modules. */
export default {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.spec.ts'],
  // test/package/fixtures are apps the package spec copies elsewhere and installs: never tests here.
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/package/fixtures/'],
  modulePathIgnorePatterns: ['<rootDir>/test/package/fixtures/'],
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json' }],
  },
  testTimeout: 30000,
};
