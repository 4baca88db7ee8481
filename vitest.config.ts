import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'spec/**/*.spec.ts'],
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // default output for people, plus the plain `N passed, N failed` line CI reads
    reporters: ['default', './test/helpers/summary-reporter.ts'],
  },
});
