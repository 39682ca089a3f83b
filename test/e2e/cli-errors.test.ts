// How the `luminet` binary answers a flag it cannot take: commander's one-line error and a hint to --help,
// exit 1, not the command's whole help printed after the error (20-30 lines burying it).
import { describe, expect, it } from "vitest";
import { spawnLuminet } from "../support/luminet-command.ts";

describe("luminet with a bad flag value", () => {
  it("says what is wrong in one line, hints at --help and exits 1", async () => {
    const run = await spawnLuminet(["quota", "set", "--org", "acme", "--monthly-tokens", "abc"]);
    expect(run.code).toBe(1);
    expect(run.stderr.trimEnd().split("\n")).toEqual([
      `error: option '--monthly-tokens <n>' argument 'abc' is invalid. expected a whole number of tokens or "none", got "abc"`,
      "(add --help for the options)",
    ]);
    expect(run.stdout).toBe("");
  });
});
