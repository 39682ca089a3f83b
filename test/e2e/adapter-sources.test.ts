// Creating adapters from registered source URLs (the API and `luminet adapters create --source URL`),
// against a gateway served over HTTP whose accepted adapters
// go to an S3-compatible bucket (test/support/s3-server.ts verifies every SigV4 signature and PUT payload).
// The same server plays an http origin holding PEFT folders and .safetensors files, registered and not.
// A created adapter is read back with the workers' own store and loader; every refusal — a 404 or 403
// source, a URL outside the registered prefixes (paths that climb out, another endpoint, a redirect out),
// a malformed file, a file over the cap, a gateway with no sources — answers 400/413 in OpenAI's error
// shape and leaves no row, no object and no scratch file behind.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerAdapters } from "../../cli/commands/adapters.ts";
import { AdapterSources } from "../../gateway/adapter-sources.ts";
import { type ServedApp, serveApp } from "../../gateway/node.ts";
import { NodeAdapterStorage } from "../../gateway/node-adapter-storage.ts";
import { AdapterObject } from "../../schema/adapter-api.ts";
import { adapters } from "../../schema/db.ts";
import { writeRandomAdapter } from "../../scripts/random-adapter.ts";
import { ADAPTER_FILES, openBlobStore, openWritableBlobStore } from "../../worker/adapters/blob-store.ts";
import { loadPeftAdapter } from "../../worker/adapters/peft.ts";
import { loadModelConfig, type ModelConfig } from "../../worker/engine/model-config.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { luminetInProcess } from "../support/luminet-command.ts";
import { type S3Server, startS3Server } from "../support/s3-server.ts";

const CREDENTIALS = { accessKeyId: "AKIDSOURCES", secretAccessKey: "sources-secret" };
const REGION = "test-1";
const ENV = {
  AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
};
const MAX_RANK = 8;
const MAX_BYTES = 256 * 1024;

let harness: GatewayHarness;
let served: ServedApp;
let s3: S3Server;
let root: string;
let origin: string;
let model: ModelConfig;
/** The gateway's upload store, as workers open it with --blobs. */
let uploadsUrl: string;

/** Files the http origin serves, by path. */
const files = new Map<string, Buffer>();

function servePeftFolder(path: string, shape: ModelConfig, rank: number, seed: number): void {
  const dir = join(root, "made", path);
  mkdirSync(dir, { recursive: true });
  writeRandomAdapter(dir, shape, { rank, seed, targetModules: ["q", "v"] });
  for (const file of ADAPTER_FILES) files.set(`${path}/${file}`, readFileSync(join(dir, file)));
}

function sourceObject(key: string, bytes: Buffer): void {
  s3.objects.set(`/sources/${key}`, bytes);
}

async function create(body: object, key = harness.keys.acmeAdmin): Promise<Response> {
  return fetch(`${served.url}/v1/adapters`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

const uploaded = () => [...s3.objects.keys()].filter((k) => k.startsWith("/uploads/")).sort();

/** A refused create: its status, error code and message, and nothing stored anywhere. */
async function refused(body: object, status: number, code: string | null, message: RegExp): Promise<void> {
  const rowsBefore = await harness.liveAdapterNames();
  const objectsBefore = uploaded();
  const response = await create(body);
  const error = (await response.json()) as { error: { message: string; type: string; code: string } };
  expect(error.error.message).toMatch(message);
  expect(response.status).toBe(status);
  expect(error.error).toMatchObject({ type: "invalid_request_error", code });
  expect(await harness.liveAdapterNames()).toEqual(rowsBefore);
  expect(uploaded()).toEqual(objectsBefore);
  expect(readdirSync(join(root, "scratch"))).toEqual([]);
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "luminet-adapter-sources-"));
  mkdirSync(join(root, "scratch"));
  s3 = await startS3Server({
    credentials: CREDENTIALS,
    region: REGION,
    buckets: ["uploads", "sources"],
    fallback: (_req, res, path) => {
      // /registered/hop/<path>: a registered URL that redirects to <path> on this origin.
      if (path.startsWith("/registered/hop/")) {
        res.writeHead(302, { location: path.slice("/registered/hop".length) }).end();
        return true;
      }
      // /registered/signed/<path>: a redirect to a signed URL on the "CDN", as Hugging Face answers.
      if (path.startsWith("/registered/signed/")) {
        const location = `/cdn/${path.slice("/registered/signed/".length)}?X-Amz-Signature=abc`;
        res.writeHead(302, { location }).end();
        return true;
      }
      const body = files.get(path);
      if (!body) return false;
      res.writeHead(200, { "content-length": body.length }).end(body);
      return true;
    },
  });
  origin = s3.endpoint;
  harness = await createGatewayHarness();
  model = loadModelConfig(harness.modelDir);
  uploadsUrl = `s3://uploads/luminet?endpoint=${origin}&region=${REGION}`;
  const storage = new NodeAdapterStorage({
    blobs: openWritableBlobStore(uploadsUrl, ENV),
    sources: new AdapterSources(
      [
        `${origin}/registered/`,
        `${origin}/cdn/`,
        `s3://sources/team-a?endpoint=${origin}&region=${REGION}`,
        // A registered bucket whose signatures the server refuses (the wrong region): a 403 source.
        `s3://sources/team-b?endpoint=${origin}&region=elsewhere-1`,
      ],
      ENV,
    ),
    maxRank: MAX_RANK,
    maxBytes: MAX_BYTES,
    scratchDir: join(root, "scratch"),
  });
  served = await serveApp(harness.appWith({ adapterStorage: storage }), 0, "127.0.0.1");

  servePeftFolder("/registered/acme/v1", model, 4, 1);
  servePeftFolder("/private/acme/v1", model, 4, 2);
  servePeftFolder("/cdn/acme/v1", model, 4, 6);
  servePeftFolder("/registered/wide", { ...model, hiddenSize: model.hiddenSize * 2 }, 4, 3);
  const single = join(root, "made", "single");
  mkdirSync(single, { recursive: true });
  writeRandomAdapter(single, model, { rank: 2, seed: 4, targetModules: ["q", "v"] });
  files.set("/registered/single/weights.safetensors", readFileSync(join(single, ADAPTER_FILES[1])));
  files.set("/registered/garbage.safetensors", Buffer.from("not a safetensors file at all"));
  files.set("/registered/huge.safetensors", Buffer.alloc(MAX_BYTES + 1));
  servePeftFolder("/made-for-s3", model, 8, 5);
  for (const file of ADAPTER_FILES) {
    sourceObject(`team-a/acme/v3/${file}`, files.get(`/made-for-s3/${file}`)!);
    sourceObject(`team-b/acme/v3/${file}`, files.get(`/made-for-s3/${file}`)!);
  }
});

afterAll(async () => {
  await served?.close();
  await harness?.close();
  await s3?.close();
  rmSync(root, { recursive: true, force: true });
});

describe("POST /v1/adapters with a source URL", () => {
  it("fetches a PEFT folder from a registered https-style URL, validates it and stores it in the bucket", async () => {
    const source = `${origin}/registered/acme/v1/`;
    const response = await create({ base: BASE, name: "acme/from-url", alias: "acme/customer", source });
    const created = AdapterObject.parse(await response.json());
    expect(response.status).toBe(201);
    expect(created).toMatchObject({
      id: "acme/from-url",
      alias: "customer",
      rank: 4,
      target_modules: ["q_proj", "v_proj"],
      source,
      status: "ready",
    });
    const [row] = await harness.db.select().from(adapters).where(eq(adapters.name, "from-url"));
    expect(row?.sourceUrl).toBe(source);
    expect(readdirSync(join(root, "scratch"))).toEqual([]);

    // Every request to the upload bucket was signed correctly (the server refuses the rest).
    const puts = s3.requests.filter((r) => r.method === "PUT");
    expect(puts.map((r) => [r.path, r.signature])).toEqual(
      ADAPTER_FILES.map((f) => [`/uploads/luminet/${row!.blobKey}/${f}`, "valid"]),
    );
    // A worker's --blobs reads it back, byte for byte, and its loader accepts it with the same sha256.
    const back = join(root, "back");
    mkdirSync(back);
    await openBlobStore(uploadsUrl, ENV).fetchAdapter(row!.blobKey, back);
    for (const file of ADAPTER_FILES) {
      expect(readFileSync(join(back, file)).equals(files.get(`/registered/acme/v1/${file}`)!)).toBe(true);
    }
    expect(loadPeftAdapter(back, model, { maxRank: MAX_RANK }).sha256).toBe(created.sha256);
  });

  it("fetches a single .safetensors with its config from the body", async () => {
    const response = await create({
      base: BASE,
      name: "single",
      source: `${origin}/registered/single/weights.safetensors`,
      rank: 2,
      alpha: 4,
      target_modules: ["q_proj", "v_proj"],
    });
    expect(response.status).toBe(201);
    expect(AdapterObject.parse(await response.json())).toMatchObject({ rank: 2, alpha: 4 });
  });

  it("fetches from a registered s3:// prefix with the gateway's credentials", async () => {
    const source = `s3://sources/team-a/acme/v3?endpoint=${origin}&region=${REGION}`;
    const response = await create({ base: BASE, name: "from-s3", source });
    expect(response.status).toBe(201);
    expect(AdapterObject.parse(await response.json())).toMatchObject({ rank: 8, source });
    const gets = s3.requests.filter((r) => r.method === "GET" && r.path.startsWith("/sources/team-a/"));
    expect(gets.map((r) => r.signature)).toEqual(["valid", "valid"]);
  });

  it("answers what an unavailable source said: a 404 and a 403", async () => {
    await refused(
      { base: BASE, name: "missing", source: `${origin}/registered/acme/nope/` },
      400,
      "source_unavailable",
      /Could not fetch the adapter from .*: GET .*\/registered\/acme\/nope\/adapter_config\.json: 404 not found/,
    );
    await refused(
      {
        base: BASE,
        name: "forbidden",
        source: `s3://sources/team-b/acme/v3?endpoint=${origin}&region=elsewhere-1`,
      },
      400,
      "source_unavailable",
      /GET s3:\/\/sources\/team-b\/acme\/v3\/adapter_config\.json: 403 Forbidden <Error><Code>SignatureDoesNotMatch/,
    );
  });

  it("refuses URLs outside the registered prefixes, however they are written, without fetching them", async () => {
    const before = s3.requests.length;
    const outside = [
      `${origin}/private/acme/v1/`,
      `${origin}/registered/../private/acme/v1/`,
      `${origin}/registered/%2e%2e/private/acme/v1/`,
      `${origin}/registered-not/acme/v1/`,
      `http://localhost:${new URL(origin).port}/registered/acme/v1/`,
      // The bucket's endpoint is where the gateway connects: another one is another source.
      `s3://sources/team-a/acme/v3?endpoint=http://169.254.169.254&region=${REGION}`,
      `s3://sources/team-a/acme/v3?region=${REGION}`,
      `s3://sources/team-ab/acme/v3?endpoint=${origin}&region=${REGION}`,
    ];
    for (const source of outside) {
      await refused(
        { base: BASE, name: "outside", source },
        400,
        "source_not_registered",
        /is not under a URL prefix this gateway's operator registered/,
      );
    }
    await refused(
      { base: BASE, name: "local", source: "file:///etc/passwd" },
      400,
      null,
      /must be an https:\/\/, s3:\/\/ or r2:\/\/ URL/,
    );
    await refused({ base: BASE, name: "nonsense", source: "not a url" }, 400, null, /is not a URL/);
    expect(s3.requests.length).toBe(before);
  });

  it("follows a registered URL's redirect only to another registered location", async () => {
    await refused(
      { base: BASE, name: "hop", source: `${origin}/registered/hop/private/acme/v1/` },
      400,
      "source_unavailable",
      /redirected to http:\/\/127\.0\.0\.1:\d+\/private\/acme\/v1\/adapter_config\.json, which is not an allowed location/,
    );
    const signed = await create({
      base: BASE,
      name: "via-cdn",
      source: `${origin}/registered/signed/acme/v1/`,
    });
    expect(signed.status).toBe(201);
    const response = await create({
      base: BASE,
      name: "hop-ok",
      source: `${origin}/registered/hop/registered/acme/v1/`,
    });
    expect(response.status).toBe(201);
  });

  it("refuses a malformed file, a file for another base, a file over the cap, and config for a folder", async () => {
    const config = { rank: 4, alpha: 8, target_modules: ["q_proj"] };
    await refused(
      { base: BASE, name: "garbage", source: `${origin}/registered/garbage.safetensors`, ...config },
      400,
      "invalid_adapter",
      /Invalid adapter: .*(header|safetensors)/,
    );
    await refused(
      { base: BASE, name: "wide", source: `${origin}/registered/wide/` },
      400,
      "invalid_adapter",
      /has shape \[4, 128\], expected \[4, 64\]/,
    );
    await refused(
      { base: BASE, name: "huge", source: `${origin}/registered/huge.safetensors`, ...config },
      413,
      "request_too_large",
      new RegExp(`larger than the cap of ${MAX_BYTES} bytes`),
    );
    await refused(
      { base: BASE, name: "folder-config", source: `${origin}/registered/acme/v1/`, ...config },
      400,
      "invalid_adapter",
      /rank, alpha and target_modules are only for a single \.safetensors/,
    );
  });

  it("refuses a body that is not a create, and a key without the admin scope", async () => {
    await refused({ base: BASE, name: "x" }, 400, null, /Invalid value for 'source'/);
    await refused(
      { base: BASE, name: "x", source: `${origin}/registered/acme/v1/`, rank: 4 },
      400,
      null,
      /Give rank, alpha and target_modules together/,
    );
    const unscoped = await create(
      { base: BASE, name: "x", source: `${origin}/registered/acme/v1/` },
      harness.keys.acme,
    );
    expect(unscoped.status).toBe(403);
    expect(await harness.liveAdapterNames()).not.toContain("x");
  });

  it("a gateway with no registered sources says how to register them", async () => {
    const storage = new NodeAdapterStorage({
      blobs: openWritableBlobStore(join(root, "folder-blobs")),
      maxRank: MAX_RANK,
      maxBytes: MAX_BYTES,
    });
    const response = await harness.appWith({ adapterStorage: storage }).request("/v1/adapters", {
      method: "POST",
      headers: { authorization: `Bearer ${harness.keys.acmeAdmin}`, "content-type": "application/json" },
      body: JSON.stringify({ base: BASE, name: "nowhere", source: `${origin}/registered/acme/v1/` }),
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({
      error: { code: "source_not_registered", message: expect.stringMatching(/--adapter-sources/) },
    });
    expect(await harness.liveAdapterNames()).not.toContain("nowhere");
  });

  it("deleting an adapter removes its objects from the bucket", async () => {
    const [row] = await harness.db.select().from(adapters).where(eq(adapters.name, "single"));
    expect(uploaded().filter((k) => k.includes(row!.blobKey))).toHaveLength(2);
    const response = await fetch(`${served.url}/v1/adapters/acme/single`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${harness.keys.acmeAdmin}` },
    });
    expect(response.status).toBe(200);
    expect(uploaded().filter((k) => k.includes(row!.blobKey))).toEqual([]);
  });
});

describe("luminet adapters create --source URL", () => {
  const luminet = (args: string[]) =>
    luminetInProcess(
      registerAdapters,
      ["adapters", "create", "--base", BASE, ...args, "--gateway", served.url],
      {
        LUMINET_API_KEY: harness.keys.acmeAdmin,
        LUMINET_GATEWAY: "",
      },
    );

  it("sends the URL for the gateway to fetch, a folder or a .safetensors with its config", async () => {
    const folder = `${origin}/registered/acme/v1`;
    const run = await luminet([
      "--name",
      "acme/cli-url",
      "--source",
      folder,
      "--alias",
      "acme/customer",
      "--json",
    ]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(AdapterObject.parse(JSON.parse(run.stdout))).toMatchObject({
      id: "acme/cli-url",
      alias: "customer",
      source: folder,
      rank: 4,
    });
    const single = `${origin}/registered/single/weights.safetensors`;
    const flags = ["--rank", "2", "--alpha", "4", "--target-modules", "q_proj,v_proj"];
    const file = await luminet(["--name", "cli-single", "--source", single, ...flags]);
    expect(file.stderr).toBe("");
    expect(file.stdout).toMatch(
      /^created acme\/cli-single on tiny from http:\/\/.*weights\.safetensors: rank 2, q_proj,v_proj/,
    );
  });

  it("exits 1 with the gateway's message for a source it does not fetch, storing nothing", async () => {
    const before = uploaded();
    const run = await luminet(["--name", "cli-private", "--source", `${origin}/private/acme/v1/`]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /adapters create: Invalid 'source': .* is not under a URL prefix this gateway's operator registered/,
    );
    const partial = await luminet([
      "--name",
      "cli-partial",
      "--source",
      `${origin}/registered/single/weights.safetensors`,
      "--rank",
      "2",
    ]);
    expect(partial.code).toBe(1);
    expect(partial.stderr).toMatch(/give --rank, --alpha and --target-modules together/);
    expect(await harness.liveAdapterNames()).not.toContain("cli-private");
    expect(uploaded()).toEqual(before);
  });
});
