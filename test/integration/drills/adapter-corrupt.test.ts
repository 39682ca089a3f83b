// Drill: corrupt an adapter's weights in a worker's --disk-cache, restart the worker so the disk copy is
// what it loads from; then corrupt the blob store's copy of another adapter as well.
// Expected (docs/OPERATIONS.md, "Failure drills"): loading from disk checks the weights' sha256, drops the
// corrupt copy and fetches the adapter again from the blob store; the request succeeds and the disk holds
// a good copy again. When the blob store's copy is corrupt too, requests for that adapter fail with 502
// `adapter_unavailable` naming the blob and the mismatch, billed zero output tokens; requests for other
// adapters, served in the same batches, are unaffected.
import {
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  statSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { usageEvents } from "../../../schema/db.ts";
import { sha256OfFile } from "../../../worker/adapters/file-hash.ts";
import { expectBilledAsTold } from "../../support/drill-billing.ts";
import type { ChatOutcome } from "../../support/drill-client.ts";
import { DRILL_BASE, DRILL_ORG, type DrillStack, startDrillStack } from "../../support/drill-stack.ts";
import { postgresBinaries } from "../../support/private-postgres.ts";

const bin = postgresBinaries();
const WEIGHTS = "adapter_model.safetensors";

/** Flips bytes near the end of a file (tensor data, so the header still parses), keeping its size. */
function corrupt(path: string): void {
  const fd = openSync(path, "r+");
  try {
    const at = statSync(path).size - 64;
    const bytes = Buffer.alloc(32);
    readSync(fd, bytes, 0, bytes.length, at);
    for (let i = 0; i < bytes.length; i++) bytes[i]! ^= 0x5a;
    writeSync(fd, bytes, 0, bytes.length, at);
  } finally {
    closeSync(fd);
  }
}

describe("drill: a corrupt adapter in a worker's disk cache", () => {
  if (!bin) {
    it.skip("needs PostgreSQL's server binaries (apt-get install postgresql)", () => {});
    return;
  }
  let stack: DrillStack;
  const blobWeights = (i: number) => join(stack.blobsDir, `adapter-${i}`, WEIGHTS);

  beforeAll(async () => {
    stack = await startDrillStack(bin, { adapters: 3 });
    await stack.startWorker("a");
    await stack.liveWorkers(1);
  }, 120_000);

  afterAll(async () => {
    await stack?.close();
  });

  it("is caught by its sha256, fetched again from the blob store, and the request succeeds", async () => {
    const outcomes: ChatOutcome[] = [];
    // Every adapter once, so the worker's disk cache holds each.
    for (const i of [0, 1, 2])
      outcomes.push(await stack.send({ model: stack.adapterModel(i), maxTokens: 4 }));
    const shas = await Promise.all([0, 1, 2].map((i) => sha256OfFile(blobWeights(i))));
    // Each adapter's folder in the disk cache: the one whose entry file names its weights.
    const cacheDir = stack.workers.get("a")!.cacheDir;
    const folders = readdirSync(cacheDir).filter((f) => existsSync(join(cacheDir, f, "entry.json")));
    const shaOf = (f: string) => JSON.parse(readFileSync(join(cacheDir, f, "entry.json"), "utf8")).sha256;
    const cached = (i: number) => join(cacheDir, folders.find((f) => shaOf(f) === shas[i])!, WEIGHTS);
    for (const i of [0, 1, 2]) expect(await sha256OfFile(cached(i))).toBe(shas[i]);

    // A restarted worker has nothing in RAM: it loads from its disk cache.
    await stack.workers.get("a")!.process.stop();
    corrupt(cached(0));
    corrupt(cached(1));
    corrupt(blobWeights(1));
    await stack.startWorker("a");
    await stack.liveWorkers(1);

    const [healed, broken, beside, base] = await Promise.all([
      stack.send({ model: stack.adapterModel(0), maxTokens: 12 }),
      stack.send({ model: stack.adapterModel(1), maxTokens: 12 }),
      stack.send({ model: stack.adapterModel(2), maxTokens: 12 }),
      stack.send({ model: DRILL_BASE, maxTokens: 12 }),
    ]);
    outcomes.push(healed, broken, beside, base);
    expect(healed.usage?.completion_tokens).toBe(12);
    expect(await sha256OfFile(cached(0))).toBe(shas[0]);
    expect(broken.status).toBe(502);
    expect(broken.error?.code).toBe("adapter_unavailable");
    expect(broken.error?.message).toContain(`blob adapter-1`);
    expect(broken.error?.message).toContain(`expected ${shas[1]}`);
    for (const fine of [beside, base]) expect(fine.usage?.completion_tokens).toBe(12);
    await vi.waitFor(async () => {
      const rows = await stack.db
        .select()
        .from(usageEvents)
        .where(eq(usageEvents.requestId, broken.requestId));
      expect(rows).toMatchObject([{ outputTokens: 0, finishReason: "error" }]);
    });

    await expectBilledAsTold(stack.db, DRILL_ORG, outcomes);
  });
});
