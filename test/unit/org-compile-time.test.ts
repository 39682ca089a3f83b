// Each org's budget of a gateway process's compile time (gateway/org-compile-time.ts, compile-clock.ts):
// what its admissions' compiles took is charged to it; once it has spent its minute, an admission that asks
// for a compile gets a 429, one that compiles nothing goes on, other orgs go on, and the next minute starts
// again.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { timedCompile } from "../../gateway/compile-clock.ts";
import { ApiError } from "../../gateway/errors.ts";
import { OrgCompileTime } from "../../gateway/org-compile-time.ts";

// The clock compiles are timed by moves only when a compile says it ran, so each charge is exact: a loaded
// machine pausing the process mid-compile cannot make a test of the budget's edges flaky.
let clockMs = 0;
beforeEach(() => {
  clockMs = 0;
  vi.spyOn(performance, "now").mockImplementation(() => clockMs);
});
afterEach(() => {
  vi.restoreAllMocks();
});

/** A compile that keeps the event loop for `ms`, as a costly schema would. */
const compileFor = (ms: number) =>
  timedCompile(() => {
    clockMs += ms;
    return "compiled";
  });

const minute = Date.UTC(2026, 11, 2, 10, 0);

describe("OrgCompileTime", () => {
  it("charges an org's compiles and refuses its next compile once the minute's budget is spent", () => {
    let now = minute + 20_000;
    const budget = new OrgCompileTime(30, () => now);
    expect(budget.admit("acme", () => compileFor(20))).toBe("compiled");
    expect(budget.admit("acme", () => compileFor(20))).toBe("compiled");
    let refused: unknown;
    try {
      budget.admit("acme", () => compileFor(1));
    } catch (error) {
      refused = error;
    }
    expect(refused).toBeInstanceOf(ApiError);
    expect(refused).toMatchObject({ status: 429, code: "rate_limit_exceeded", type: "rate_limit_error" });
    expect((refused as ApiError).headers["retry-after"]).toBe("40");
    // A request that compiles nothing, and another org, go on.
    expect(budget.admit("acme", () => "no schema")).toBe("no schema");
    expect(budget.admit("globex", () => compileFor(1))).toBe("compiled");
    // The next minute starts again.
    now = minute + 60_000;
    expect(budget.admit("acme", () => compileFor(1))).toBe("compiled");
  });

  it("charges a compile that failed, and a compile inside another once", () => {
    const now = minute;
    const budget = new OrgCompileTime(25, () => now);
    expect(() =>
      budget.admit("acme", () =>
        timedCompile(() => {
          compileFor(15);
          compileFor(15);
          throw new Error("bad schema");
        }),
      ),
    ).toThrow("bad schema");
    // 30 ms were charged (not 60): the budget of 25 is spent.
    expect(() => budget.admit("acme", () => compileFor(1))).toThrow(ApiError);
    // Charged once, the two leave room in a budget of 31; charged twice (60 ms) they would not.
    const roomy = new OrgCompileTime(31, () => now);
    roomy.admit("acme", () => timedCompile(() => [compileFor(15), compileFor(15)]));
    expect(roomy.admit("acme", () => compileFor(1))).toBe("compiled");
  });

  it("charges nobody for compiles outside an admission", () => {
    const budget = new OrgCompileTime(10, () => minute);
    compileFor(20);
    expect(budget.admit("acme", () => compileFor(1))).toBe("compiled");
  });
});
