import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";

function luminet(...args: string[]) {
  return spawnSync(process.execPath, ["bin/luminet.mjs", ...args], { encoding: "utf8" });
}

describe("the luminet command", () => {
  it("lists every role and tool in --help", () => {
    const result = luminet("--help");
    expect(result.status).toBe(0);
    for (const command of [
      "dev",
      "gateway",
      "worker",
      "meter",
      "migrate",
      "model",
      "generate",
      "adapters",
      "keys",
      "usage",
      "bench",
    ]) {
      expect(result.stdout).toMatch(new RegExp(`^  ${command}\\b`, "m"));
    }
  });

  it("rejects an unknown command with a non-zero exit", () => {
    const result = luminet("frobnicate");
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain("unknown command");
  });
});
