// The whole adapter path through S3, with real processes: `luminet gateway --blobs s3://… --adapter-sources
// …` fetches an adapter from a registered URL and PUTs it into an S3-compatible bucket
// (test/support/s3-server.ts, which checks every SigV4 signature and PUT payload); a real `luminet worker
// --blobs s3://…` reads it from there with signed GETs and generates with it. Credentials come from the
// processes' environment, as in production.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { migrate } from "../../db/migrate.ts";
import { openDb } from "../../db/open.ts";
import { createApiKey, ensureOrg } from "../../gateway/api-keys.ts";
import { AdapterObject } from "../../schema/adapter-api.ts";
import { type LuminetProcess, startLuminetProcess } from "../../scripts/luminet-process.ts";
import { writeRandomAdapter } from "../../scripts/random-adapter.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { ADAPTER_FILES } from "../../worker/adapters/blob-store.ts";
import { loadModelConfig } from "../../worker/engine/model-config.ts";
import { type S3Server, startS3Server } from "../support/s3-server.ts";

const BASE = "tiny";
const CONTEXT = 256;
const CREDENTIALS = { accessKeyId: "AKIDGATEWAYS3", secretAccessKey: "gateway-s3-secret" };
const REGION = "test-1";

let root: string;
let s3: S3Server;
let gateway: LuminetProcess | undefined;
let worker: LuminetProcess | undefined;
let gatewayUrl: string;
let adminKey: string;
/** Files the origin beside the bucket serves, by path. */
const files = new Map<string, Buffer>();

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "luminet-gateway-s3-"));
  // No end-of-text token: every request generates exactly max_tokens.
  const tiny = { shape: "tiny", adapters: 0, rank: 4, seed: 9, endOfText: false } as const;
  const modelDir = initTinyModel(join(root, "model"), tiny).dir;
  const adapterDir = join(root, "adapter");
  mkdirSync(adapterDir);
  writeRandomAdapter(adapterDir, loadModelConfig(modelDir), { rank: 4, seed: 12, targetModules: ["q", "v"] });
  for (const file of ADAPTER_FILES) {
    files.set(`/registered/acme/v1/${file}`, readFileSync(join(adapterDir, file)));
  }
  s3 = await startS3Server({
    credentials: CREDENTIALS,
    region: REGION,
    buckets: ["uploads"],
    fallback: (_req, res, path) => {
      const body = files.get(path);
      if (!body) return false;
      res.writeHead(200, { "content-length": body.length }).end(body);
      return true;
    },
  });

  const databaseUrl = inject("postgresUrl") || `pglite:${join(root, "db")}`;
  const db = await openDb(databaseUrl);
  try {
    await migrate(db);
    await ensureOrg(db, "acme");
    adminKey = (await createApiKey(db, { orgId: "acme", name: "s3", scopes: ["admin"] })).key;
  } finally {
    await db.close();
  }

  const blobs = `s3://uploads/luminet?endpoint=${s3.endpoint}&region=${REGION}`;
  const env = {
    NATS_URL: inject("natsUrl"),
    DATABASE_URL: databaseUrl,
    LUMINET_NAMESPACE: `s3_${process.pid}_${Date.now()}`,
    AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
  };
  [gateway, worker] = await Promise.all([
    startLuminetProcess({
      args: [
        "gateway",
        ...["--port", "0", "--host", "127.0.0.1", "--model", `${BASE}=${modelDir}`],
        ...["--blobs", blobs, "--adapter-sources", `${s3.endpoint}/registered/`, "--max-adapter-rank", "4"],
      ],
      env,
      ready: (line) => typeof line.url === "string",
    }),
    startLuminetProcess({
      args: [
        "worker",
        ...["--model", modelDir, "--base", BASE, "--worker-id", "s3-w1", "--threads", "1"],
        ...[
          "--slots",
          "2",
          "--max-adapters-per-batch",
          "2",
          "--max-rank",
          "4",
          "--max-context",
          String(CONTEXT),
        ],
        ...["--blobs", blobs, "--disk-cache", join(root, "cache")],
        ...["--usage-spool", join(root, "usage-spool")],
      ],
      env,
      ready: (line) => line.msg === "worker ready",
    }),
  ]);
  gatewayUrl = String(gateway.readyEntry.url);
}, 120_000);

afterAll(async () => {
  await Promise.all([gateway?.stop(), worker?.stop()]);
  await s3?.close();
  rmSync(root, { recursive: true, force: true });
});

describe("luminet gateway --blobs s3:// --adapter-sources", () => {
  it("creates an adapter from a registered URL into the bucket, and a worker serves it from there", async () => {
    const source = `${s3.endpoint}/registered/acme/v1/`;
    const response = await fetch(`${gatewayUrl}/v1/adapters`, {
      method: "POST",
      headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json" },
      body: JSON.stringify({ base: BASE, name: "from-url", source }),
    });
    const created = AdapterObject.parse(await response.json());
    expect(response.status).toBe(201);
    expect(created).toMatchObject({ id: "acme/from-url", source, rank: 4 });
    const puts = s3.requests.filter((r) => r.method === "PUT");
    expect(puts.map((r) => r.signature)).toEqual(["valid", "valid"]);
    const blobPrefix = puts[0]!.path.replace(/\/adapter_config\.json$/, "");
    expect(blobPrefix).toMatch(/^\/uploads\/luminet\/adapters\/acme\//);

    const client = new OpenAI({ apiKey: adminKey, baseURL: `${gatewayUrl}/v1`, maxRetries: 0 });
    const answer = await client.chat.completions.create({
      model: created.model,
      messages: [{ role: "user", content: "hello" }],
      max_tokens: 3,
      temperature: 0,
    });
    expect(answer.choices[0]?.finish_reason).toBe("length");
    // The worker fetched both files from the bucket, signed with its own environment's credentials.
    const workerGets = s3.requests.filter((r) => r.method === "GET" && r.path.startsWith(blobPrefix));
    expect(workerGets.map((r) => [r.path.slice(blobPrefix.length), r.signature])).toEqual(
      ADAPTER_FILES.map((f) => [`/${f}`, "valid"]),
    );
  });

  it("refuses a URL outside the registered prefixes", async () => {
    const response = await fetch(`${gatewayUrl}/v1/adapters`, {
      method: "POST",
      headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json" },
      body: JSON.stringify({ base: BASE, name: "internal", source: "http://169.254.169.254/latest/" }),
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({
      error: { code: "source_not_registered", param: "source" },
    });
  });
});
