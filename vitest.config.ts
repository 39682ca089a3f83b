// Test projects: unit (pure code), contract (each bus implementation against one suite), integration
// (real NATS + Postgres), e2e (HTTP through the official openai client) and browser (the dashboard in
// headless Chromium; screenshots in test-artifacts/). The global setup provisions
// NATS and Postgres once for the whole run; see test/setup/services.ts.
// Unit and contract files run two at a time: Vitest's default on a 2-core machine is one, and a file's
// import and its waits then leave a core idle (the suite took ~12 min one at a time, ~7.5 two at a time).
// Integration, e2e and browser files mostly wait (on processes they start, private services, timers): they
// run two at a time too, after the unit and contract files (sequence.groupOrder), so that a CPU-heavy unit
// file never shares the machine with a drill's timing.
import { defineConfig } from "vitest/config";

const shared = {
  globalSetup: ["test/setup/services.ts"],
  testTimeout: 60_000,
  hookTimeout: 120_000,
};

const afterUnits = { maxWorkers: 2, sequence: { groupOrder: 1 } };

export default defineConfig({
  test: {
    reporters: ["default"],
    projects: [
      { test: { ...shared, name: "unit", include: ["test/unit/**/*.test.ts"], maxWorkers: 2 } },
      { test: { ...shared, name: "contract", include: ["test/contract/**/*.test.ts"], maxWorkers: 2 } },
      {
        test: {
          ...shared,
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          ...afterUnits,
        },
      },
      { test: { ...shared, name: "e2e", include: ["test/e2e/**/*.test.ts"], ...afterUnits } },
      {
        test: { ...shared, name: "browser", include: ["test/browser/**/*.test.ts"], ...afterUnits },
      },
    ],
  },
});
