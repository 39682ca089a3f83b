// Adapter uploads that must be refused as bad adapters (400 invalid_adapter), storing nothing: a tar entry
// that names the folder itself rather than a file (it was a 500, the write hitting the folder), and an
// adapter_config.json past 1 MiB (it was accepted: parsed on the gateway and on every worker of the base).
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { archiveStream } from "../../gateway/adapter-archive.ts";
import { ErrorBody } from "../../schema/api.ts";
import { MAX_CONFIG_BYTES } from "../../worker/adapters/peft.ts";
import { type UploadGateway, uploadGateway } from "../support/adapter-uploads.ts";
import { BASE, type GatewayHarness } from "../support/gateway-harness.ts";

let gateway: UploadGateway;
let harness: GatewayHarness;
let root: string;
let blobsDir: string;
let app: UploadGateway["app"];
let source: string;

beforeAll(async () => {
  gateway = await uploadGateway("upload-refusals", 8 * 2 ** 20);
  ({ harness, root, blobsDir, app, source } = gateway);
});

afterAll(async () => {
  await gateway?.close();
});

async function upload(name: string, files: { name: string; path: string }[]) {
  const response = await app.request(`/v1/adapters?base=${BASE}&name=${name}`, {
    method: "POST",
    headers: { authorization: `Bearer ${harness.keys.acmeAdmin}`, "content-type": "application/x-tar" },
    body: Readable.toWeb(archiveStream(files)) as ReadableStream<Uint8Array>,
    duplex: "half",
  } as RequestInit);
  return { status: response.status, error: ErrorBody.parse(await response.json()).error };
}

const adapterFiles = () => [
  { name: "adapter_config.json", path: join(source, "adapter_config.json") },
  { name: "adapter_model.safetensors", path: join(source, "adapter_model.safetensors") },
];

describe("adapter uploads refused as bad adapters", () => {
  it("refuses a tar entry that names the folder rather than a file", async () => {
    for (const entry of ["./", "."]) {
      const { status, error } = await upload("dot", [
        ...adapterFiles(),
        { name: entry, path: join(source, "adapter_config.json") },
      ]);
      expect({ entry, status, code: error.code }).toEqual({ entry, status: 400, code: "invalid_adapter" });
      expect(error.message).toContain(`archive entry "${entry}" names no file`);
    }
    expect(readdirSync(blobsDir)).toEqual([]);
    expect(await harness.liveAdapterNames()).toEqual([]);
  });

  it("refuses an adapter_config.json over 1 MiB, naming the limit", async () => {
    const config = JSON.parse(readFileSync(join(source, "adapter_config.json"), "utf8"));
    const padded = join(root, "padded-config.json");
    writeFileSync(padded, JSON.stringify({ ...config, notes: "x".repeat(MAX_CONFIG_BYTES) }));
    const { status, error } = await upload("big-config", [
      { name: "adapter_config.json", path: padded },
      { name: "adapter_model.safetensors", path: join(source, "adapter_model.safetensors") },
    ]);
    expect({ status, code: error.code }).toEqual({ status: 400, code: "invalid_adapter" });
    expect(error.message).toContain(`more than an adapter config may hold (${MAX_CONFIG_BYTES})`);
    expect(readdirSync(blobsDir)).toEqual([]);
    expect(await harness.liveAdapterNames()).toEqual([]);
  });

  it("still takes the same adapter with its own config", async () => {
    const response = await app.request(`/v1/adapters?base=${BASE}&name=plain`, {
      method: "POST",
      headers: { authorization: `Bearer ${harness.keys.acmeAdmin}`, "content-type": "application/x-tar" },
      body: Readable.toWeb(archiveStream(adapterFiles())) as ReadableStream<Uint8Array>,
      duplex: "half",
    } as RequestInit);
    expect(response.status).toBe(201);
    expect(await harness.liveAdapterNames()).toEqual(["plain"]);
  });
});
