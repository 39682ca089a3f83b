// The bench-1b folder `bench engine` (and `bench e2e`) generate once and reuse: a generation interrupted
// part way (Ctrl-C during minutes of weights) leaves no file behind that the next one keeps. Generation
// itself is stubbed: these tests never write bench-1b.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { ensureBenchModel } from "../../scripts/bench-engine.ts";

const generatedInto = vi.hoisted(() => [] as string[]);
vi.mock("../../scripts/tiny-model.ts", async (original) => ({
  ...(await original<typeof import("../../scripts/tiny-model.ts")>()),
  initTinyModel: (dir: string) => {
    generatedInto.push(dir);
    throw new Error("generation stubbed");
  },
}));

const models = mkdtempSync(join(tmpdir(), "luminet-bench-models-"));
afterAll(() => rmSync(models, { recursive: true, force: true }));

describe("the bench-1b cache", () => {
  it("starts an interrupted generation over from an empty folder", () => {
    const dir = join(models, "bench-1b-1l-f32");
    mkdirSync(join(dir, "adapters", "adapter-0"), { recursive: true });
    writeFileSync(join(dir, ".model.safetensors.4242.partial"), "half of the weights");
    writeFileSync(join(dir, "config.json"), "{}");
    expect(() => ensureBenchModel("cpu", 1, () => {}, models)).toThrow("generation stubbed");
    expect(generatedInto).toEqual([dir]);
    // Nothing of the earlier attempt is left for the new one to write beside.
    expect(existsSync(dir)).toBe(false);
    expect(readdirSync(models)).toEqual([]);
  });
});
