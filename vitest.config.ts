// Test projects: unit (pure code), contract (each bus implementation against one suite), integration
// (real NATS + Postgres), e2e (HTTP through the official openai client) and browser (the dashboard in
// headless Chromium; screenshots in test-artifacts/). The global setup provisions
// NATS and Postgres once for the whole run; see test/setup/services.ts.
import { defineConfig } from "vitest/config";

const shared = {
  globalSetup: ["test/setup/services.ts"],
  testTimeout: 60_000,
  hookTimeout: 120_000,
};

export default defineConfig({
  test: {
    reporters: ["default"],
    projects: [
      { test: { ...shared, name: "unit", include: ["test/unit/**/*.test.ts"] } },
      { test: { ...shared, name: "contract", include: ["test/contract/**/*.test.ts"] } },
      {
        test: {
          ...shared,
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          fileParallelism: false,
        },
      },
      { test: { ...shared, name: "e2e", include: ["test/e2e/**/*.test.ts"], fileParallelism: false } },
      {
        test: { ...shared, name: "browser", include: ["test/browser/**/*.test.ts"], fileParallelism: false },
      },
    ],
  },
});
