// `luminet dev` started again on the same data: its worker pins what the database says is pinned (the
// in-process bus forgot the pins with the last process), and a demo adapter deleted before stays deleted —
// not in the banner or the start log's models, its blob not written back.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { AdapterObject } from "../../schema/adapter-api.ts";
import { type LuminetProcess, startLuminetProcess } from "../../scripts/luminet-process.ts";

const home = mkdtempSync(join(tmpdir(), "luminet-dev-restart-"));
const KEY = `lk_devRestartKey${"0".repeat(30)}`;
/** A pin takes a load from the blob folder and the next heartbeat (every second) to show. */
const POLL = { timeout: 15_000 };
let dev: LuminetProcess | undefined;

afterAll(async () => {
  await dev?.stop();
  rmSync(home, { recursive: true, force: true });
});

function startDev(): Promise<LuminetProcess> {
  return startLuminetProcess({
    args: ["dev", "--data", home, "--port", "0"],
    env: { LUMINET_DEV_API_KEY: KEY, LOG_LEVEL: "info" },
    ready: (entry) => typeof entry.url === "string",
  });
}

function adapterApi(name: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${dev!.readyEntry.url}/v1/adapters/${name}`, {
    ...init,
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
  });
}

/** Where the dev worker holds the adapter now: "slot", "ram", "disk", or undefined. */
async function tierOf(name: string): Promise<string | undefined> {
  const adapter = (await (await adapterApi(name)).json()) as AdapterObject;
  return adapter.resident.find((r) => r.worker_id === "dev")?.tier;
}

const pin = (name: string) => adapterApi(name, { method: "PATCH", body: JSON.stringify({ pinned: true }) });

// Two starts of dev, the first generating the demo model: longer than one test usually takes.
describe("luminet dev started again on the same data", () => {
  it("pins on its worker what the database says is pinned, and leaves a deleted demo adapter deleted", async () => {
    dev = await startDev();
    expect((await pin("adapter-1")).status).toBe(200);
    expect((await pin("adapter-2")).status).toBe(200);
    await expect.poll(() => tierOf("adapter-1"), POLL).toBe("slot");
    expect((await adapterApi("adapter-6", { method: "DELETE" })).status).toBe(200);
    const blob = join(home, "blobs", "demo", "adapter-6");
    expect(existsSync(blob)).toBe(false);
    await dev.stop();

    dev = await startDev();
    expect(existsSync(blob)).toBe(false);
    const models = dev.readyEntry.models as string[];
    expect(models).toHaveLength(7);
    expect(models).not.toContain("tiny:demo/adapter-6");
    await expect
      .poll(() => dev!.stderr())
      .toContain("Models: tiny, tiny:demo/adapter-0 … tiny:demo/adapter-7");
    await expect.poll(() => tierOf("adapter-1"), POLL).toBe("slot");
    await expect.poll(() => tierOf("adapter-2"), POLL).toBe("slot");
  }, 120_000);
});
