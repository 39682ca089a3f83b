// Creating an adapter with an alpha it cannot be served with: one float32 (and so the database's `real`)
// cannot hold is refused with a 400 naming `alpha` (the single-file query or JSON field) or lora_alpha (a
// PEFT folder's config), and one that would scale a module past 10,000 with 400 invalid_adapter naming the
// value — each before anything is stored, where before the first was a 500 and the second was accepted,
// then failed every request with NaN logits.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { archiveStream } from "../../gateway/adapter-archive.ts";
import { ErrorBody } from "../../schema/api.ts";
import { type UploadGateway, uploadGateway } from "../support/adapter-uploads.ts";
import { BASE, type GatewayHarness } from "../support/gateway-harness.ts";

const TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";

let gateway: UploadGateway;
let harness: GatewayHarness;
let root: string;
let blobsDir: string;
let app: UploadGateway["app"];
let source: string;

beforeAll(async () => {
  gateway = await uploadGateway("adapter-alpha", 2 ** 20);
  ({ harness, root, blobsDir, app, source } = gateway);
});

afterAll(async () => {
  await gateway?.close();
});

const auth = () => ({ authorization: `Bearer ${harness.keys.acmeAdmin}` });

async function refusal(response: Response) {
  return { status: response.status, error: ErrorBody.parse(await response.json()).error };
}

/** Uploads the adapter's weights alone, its config in the query. */
async function uploadFile(name: string, alpha: string): Promise<Response> {
  const query = new URLSearchParams({ base: BASE, name, rank: "4", alpha, target_modules: TARGETS });
  return app.request(`/v1/adapters?${query}`, {
    method: "POST",
    headers: { ...auth(), "content-type": "application/octet-stream" },
    body: readFileSync(join(source, "adapter_model.safetensors")),
  });
}

/** Uploads the PEFT folder with its config's lora_alpha set to `alpha`. */
async function uploadFolder(name: string, alpha: number): Promise<Response> {
  const dir = join(root, name);
  mkdirSync(dir);
  const config = JSON.parse(readFileSync(join(source, "adapter_config.json"), "utf8"));
  writeFileSync(join(dir, "adapter_config.json"), JSON.stringify({ ...config, lora_alpha: alpha }));
  const files = [
    { name: "adapter_config.json", path: join(dir, "adapter_config.json") },
    { name: "adapter_model.safetensors", path: join(source, "adapter_model.safetensors") },
  ];
  return app.request(`/v1/adapters?base=${BASE}&name=${name}`, {
    method: "POST",
    headers: { ...auth(), "content-type": "application/x-tar" },
    body: Readable.toWeb(archiveStream(files)) as ReadableStream<Uint8Array>,
    duplex: "half",
  } as RequestInit);
}

const storedNothing = async () => {
  expect(readdirSync(blobsDir)).toEqual([]);
  expect(await harness.liveAdapterNames()).toEqual([]);
};

describe("creating an adapter with an alpha float32 cannot hold", () => {
  it("refuses the single-file alpha query with 400 naming alpha, storing nothing", async () => {
    for (const alpha of ["1e300", "1e-50", "3.5e38"]) {
      const { status, error } = await refusal(await uploadFile("single", alpha));
      expect({ alpha, status, type: error.type, param: error.param }).toEqual({
        alpha,
        status: 400,
        type: "invalid_request_error",
        param: "alpha",
      });
      expect(error.message).toContain(`Invalid 'alpha': expected a positive number float32 holds`);
      expect(error.message).toContain(`got ${Number(alpha)}`);
    }
    await storedNothing();
  });

  it("refuses the alpha of a JSON create from a source with 400 naming alpha, before the source is looked at", async () => {
    const response = await app.request("/v1/adapters", {
      method: "POST",
      headers: { ...auth(), "content-type": "application/json" },
      body: JSON.stringify({
        base: BASE,
        name: "from-source",
        source: "https://adapters.example/a.safetensors",
        rank: 4,
        alpha: 1e300,
        target_modules: ["q_proj"],
      }),
    });
    const { status, error } = await refusal(response);
    expect({ status, param: error.param }).toEqual({ status: 400, param: "alpha" });
    expect(error.message).toContain("got 1e+300");
  });

  it("refuses a PEFT folder's lora_alpha with 400 invalid_adapter naming lora_alpha, storing nothing", async () => {
    const { status, error } = await refusal(await uploadFolder("folder-huge", 1e300));
    expect({ status, code: error.code }).toEqual({ status: 400, code: "invalid_adapter" });
    expect(error.message).toContain("adapter_config.json: lora_alpha must be a number float32 holds");
    expect(error.message).toContain("got 1e+300");
    await storedNothing();
  });
});

describe("creating an adapter whose scale is implausible", () => {
  it("refuses lora_alpha 1e30 with 400 invalid_adapter naming the scale and its alpha, storing nothing", async () => {
    const { status, error } = await refusal(await uploadFolder("alpha1e30", 1e30));
    expect({ status, code: error.code, param: error.param }).toEqual({
      status: 400,
      code: "invalid_adapter",
      param: "file",
    });
    expect(error.message).toContain("has LoRA scale 2.5e+29 (lora_alpha 1e+30 / r 4)");
    expect(error.message).toContain("a scale may be at most 10000 in magnitude");
    await storedNothing();
  });

  it("still creates an adapter whose alpha and scale are in range", async () => {
    const response = await uploadFolder("alpha-fine", 16);
    expect(response.status, await response.clone().text()).toBe(201);
    expect(await response.json()).toMatchObject({ alpha: 16, rank: 4 });
  });
});
