// The gateway on Cloudflare Workers (wrangler.toml): the same app as gateway/node.ts, wired to Postgres
// through Neon's serverless driver, to NATS over WebSocket, and to base models whose tokenizer files are
// bundled into the script by scripts/build-worker.ts. Nothing here but wiring.
//
// A Worker may not use one request's sockets in another, so each request opens its own database pool and
// NATS connection, and closes them once its response body has been sent. What holds no socket lives for
// the isolate's life: the base catalog and the dependencies' caches (keys, limits, adapters) and sweeps.
//
// Adapters go to the R2 bucket bound as ADAPTER_BLOBS. They are staged and validated by the Node gateway's
// own code (node-adapter-storage.ts): workerd's node:fs gives each request an in-memory /tmp, so the
// upload, its unpacking and the worker's loader run as on Node, within the isolate's memory — hence a
// smaller default size cap here.
import { wsconnect } from "@nats-io/nats-core";
import { neonConfig } from "@neondatabase/serverless";
import type { Bus } from "../bus/bus.ts";
import { connectJetStreamBus } from "../bus/jetstream.ts";
import { type Db, openDb } from "../db/open.ts";
import { parseModelConfig } from "../worker/engine/model-config.ts";
import { type TokenizerFiles, tokenizerFromFiles } from "../worker/engine/tokenizer.ts";
import { AdapterSources, sourcePrefixes } from "./adapter-sources.ts";
import type { AdapterStorage } from "./adapter-storage.ts";
import { DEFAULT_MAX_ORG_ADAPTER_BYTES } from "./adapter-storage-quota.ts";
import { createApp } from "./app.ts";
import { registerBaseModel } from "./base-loader.ts";
import { BaseCatalog } from "./bases.ts";
import { DEFAULT_MAX_ORG_CONVERSATION_BYTES } from "./conversation-storage-quota.ts";
import { type GatewayDeps, type GatewayLog, gatewayDeps } from "./deps.ts";
import { DEFAULT_MAX_ORG_FILE_BYTES } from "./files.ts";
import { type ScaleOptions, scaleDefaults, scaleOptionsProblem } from "./fleet-scale.ts";
import { NodeAdapterStorage } from "./node-adapter-storage.ts";
import { DEFAULT_ORG_COMPILE_MS_PER_MINUTE, OrgCompileTime } from "./org-compile-time.ts";
import { R2BlobStore, type R2BucketBinding } from "./r2-blob-store.ts";
import { DEFAULT_MAX_ORG_RESPONSE_BYTES } from "./response-storage-quota.ts";
import { samplingDefaultsSource } from "./sampling-defaults.ts";
import { SecretBox } from "./secret-box.ts";
import { DEFAULT_RETENTION_DAYS, StoredRetention } from "./stored-retention.ts";

/** The Worker's bindings: secrets DATABASE_URL and NATS_URL, vars from wrangler.toml. */
export interface WorkerEnv {
  /** postgres://… of the Neon (or any Postgres) database. */
  DATABASE_URL: string;
  /** wss://… (or ws://) of a NATS server's WebSocket listener. */
  NATS_URL: string;
  /** The subject and stream prefix the workers use (their --namespace). */
  LUMINET_NAMESPACE?: string;
  /**
   * host:port/path of a plain-WebSocket proxy to Postgres (Neon's wsproxy protocol: `?address=host:port`),
   * for local development and tests against a Postgres that is not Neon. Unset on Neon.
   */
  NEON_WS_PROXY?: string;
  /** Signs the dashboard's session cookies; the same on every isolate, or a session ends where it moves. */
  LUMINET_SESSION_SECRET?: string;
  /** Seals webhook signing secrets at rest (gateway/secret-box.ts): 32 bytes in base64, as on the Node gateways. */
  LUMINET_SECRETS_KEY?: string;
  /** Earlier keys, comma-separated, that still open what they sealed (rotation). */
  LUMINET_SECRETS_KEY_PREVIOUS?: string;
  /** The R2 bucket accepted adapters are stored in; without it adapter creation answers 503. */
  ADAPTER_BLOBS?: R2BucketBinding;
  /** Key prefix inside ADAPTER_BLOBS: the workers read r2://<bucket>/<prefix>. */
  LUMINET_BLOBS_PREFIX?: string;
  /** Largest adapter rank accepted (the workers' --max-rank); default 16. */
  LUMINET_MAX_ADAPTER_RANK?: string;
  /** Largest adapter accepted, in bytes; default 32 MiB, since an isolate holds it in memory. */
  LUMINET_MAX_ADAPTER_BYTES?: string;
  /** Comma-separated URL prefixes adapters may be created from (as the Node gateway's --adapter-sources). */
  LUMINET_ADAPTER_SOURCES?: string;
  /** How long stored responses and chat completions are kept, in days; default 30, 0: until deleted. */
  LUMINET_RESPONSE_RETENTION_DAYS?: string;
  /** "1": webhook endpoints may name a private address (the Node gateways deliver them). */
  LUMINET_ALLOW_PRIVATE_WEBHOOKS?: string;
  /** "openai": the bases' generation_config.json gives no sampling defaults; default "model". */
  LUMINET_SAMPLING_DEFAULTS?: string;
  /** Largest Files API upload (a batch's input), in bytes; default 16 MiB, since an isolate reads it whole. */
  LUMINET_MAX_FILE_BYTES?: string;
  /** Most bytes one org's files may hold together; default 100 GiB. */
  LUMINET_MAX_ORG_FILE_STORAGE?: string;
  /** Most bytes one org's adapters may hold together in R2; default 100 GiB. */
  LUMINET_MAX_ORG_ADAPTER_STORAGE?: string;
  /** Most bytes one org's conversations may hold together; default 10 GiB. */
  LUMINET_MAX_ORG_CONVERSATION_STORAGE?: string;
  /** Most bytes one org's stored responses and chat completions may hold together; default 100 GiB. */
  LUMINET_MAX_ORG_RESPONSE_STORAGE?: string;
  /** Seconds of each minute of an isolate one org's requests may spend compiling grammars and schemas; default 5. */
  LUMINET_ORG_COMPILE_SECONDS?: string;
  /** The autoscaling signal's bounds and headroom, as the Node gateway's --min-workers and the like. */
  LUMINET_MIN_WORKERS?: string;
  LUMINET_MAX_WORKERS?: string;
  LUMINET_TARGET_UTILIZATION?: string;
  /** A worker's tokens/s at full load, as the Node gateway's --worker-tokens-per-s; unset by default. */
  LUMINET_WORKER_TOKENS_PER_S?: string;
}

/** An isolate has 128 MB: a file upload is read and checked whole inside it. */
const WORKERS_MAX_FILE_BYTES = 16 * 2 ** 20;

/** The part of the Workers ExecutionContext the gateway uses. */
export interface WorkerContext {
  waitUntil(promise: Promise<unknown>): void;
}

/** A base model as the bundle carries it: config.json and the tokenizer files, as text. */
export interface BundledBase {
  name: string;
  config: string;
  tokenizer: TokenizerFiles;
}

const consoleLog: GatewayLog = {
  info: (fields, message) => console.log(message, JSON.stringify(fields)),
  warn: (fields, message) => console.warn(message, JSON.stringify(fields)),
  error: (fields, message) => console.error(message, JSON.stringify(fields)),
};

function useWebSocketProxy(proxy: string): void {
  neonConfig.wsProxy = (host, port) => `${proxy}?address=${host}:${port}`;
  neonConfig.useSecureWebSocket = false;
  neonConfig.pipelineTLS = false;
  neonConfig.pipelineConnect = false;
}

function integerVar(env: WorkerEnv, name: keyof WorkerEnv, fallback: number, min = 1): number {
  const value = env[name];
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min)
    throw new Error(`${name}: expected an integer ≥ ${min}, got ${value}`);
  return n;
}

function scaleOptions(env: WorkerEnv): ScaleOptions {
  const utilization = env.LUMINET_TARGET_UTILIZATION;
  const options = {
    minWorkers: integerVar(env, "LUMINET_MIN_WORKERS", scaleDefaults.minWorkers, 0),
    maxWorkers: integerVar(env, "LUMINET_MAX_WORKERS", scaleDefaults.maxWorkers),
    targetUtilization:
      utilization === undefined || utilization === "" ? scaleDefaults.targetUtilization : Number(utilization),
    ...(env.LUMINET_WORKER_TOKENS_PER_S
      ? { tokensPerSecondPerWorker: integerVar(env, "LUMINET_WORKER_TOKENS_PER_S", 0) }
      : {}),
  };
  const names = {
    min: "LUMINET_MIN_WORKERS",
    max: "LUMINET_MAX_WORKERS",
    utilization: "LUMINET_TARGET_UTILIZATION",
  };
  const problem = scaleOptionsProblem(options, names, utilization ?? "");
  if (problem) throw new Error(problem);
  return options;
}

function adapterStorage(env: WorkerEnv): AdapterStorage | null {
  if (!env.ADAPTER_BLOBS) return null;
  return new NodeAdapterStorage({
    blobs: new R2BlobStore(env.ADAPTER_BLOBS, "ADAPTER_BLOBS", env.LUMINET_BLOBS_PREFIX ?? ""),
    sources: new AdapterSources(
      sourcePrefixes(env.LUMINET_ADAPTER_SOURCES),
      // Secrets (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) for s3:// and r2:// sources.
      env as unknown as NodeJS.ProcessEnv,
    ),
    maxRank: integerVar(env, "LUMINET_MAX_ADAPTER_RANK", 16),
    maxBytes: integerVar(env, "LUMINET_MAX_ADAPTER_BYTES", 32 * 2 ** 20),
  });
}

async function loadCatalog(db: Db, bundled: readonly BundledBase[], env: WorkerEnv): Promise<BaseCatalog> {
  const samplingDefaults = samplingDefaultsSource(
    env.LUMINET_SAMPLING_DEFAULTS || "model",
    "LUMINET_SAMPLING_DEFAULTS",
  );
  return new BaseCatalog(
    await Promise.all(
      bundled.map((base) =>
        registerBaseModel(
          db,
          {
            name: base.name,
            config: parseModelConfig(JSON.parse(base.config)),
            tokenizer: tokenizerFromFiles({ source: `bundled base ${base.name}`, ...base.tokenizer }),
            generationConfig: base.tokenizer.generationConfig,
          },
          { samplingDefaults },
        ),
      ),
    ),
  );
}

/** Closes the request's connections once the body has gone out (or the client went away). */
function releaseAfterBody(response: Response, release: () => Promise<void>, ctx: WorkerContext): Response {
  if (!response.body) {
    ctx.waitUntil(release());
    return response;
  }
  const { readable, writable } = new TransformStream();
  ctx.waitUntil(
    response.body
      .pipeTo(writable)
      .catch(() => {})
      .then(release),
  );
  return new Response(readable, response);
}

/** The Worker's default export, for the bases bundled into the script. */
export function createWorkerGateway(bundled: readonly BundledBase[]) {
  /** The first request's dependencies: later requests reuse every cache in them, with their own sockets. */
  let shared: GatewayDeps | undefined;
  return {
    async fetch(request: Request, env: WorkerEnv, ctx: WorkerContext): Promise<Response> {
      if (env.NEON_WS_PROXY) useWebSocketProxy(env.NEON_WS_PROXY);
      const db = await openDb(env.DATABASE_URL, { driver: "neon" });
      let bus: Bus | undefined;
      const release = async () => {
        await bus?.close();
        await db.close();
      };
      try {
        bus = await connectJetStreamBus({
          servers: env.NATS_URL,
          connect: wsconnect,
          // Workers and Node gateways create the streams; checking them on every request costs round trips.
          setUp: false,
          connectionName: "luminet-gateway-workers",
          ...(env.LUMINET_NAMESPACE ? { namespace: env.LUMINET_NAMESPACE } : {}),
        });
        let deps: GatewayDeps;
        if (shared) deps = { ...shared, db, bus };
        else {
          deps = gatewayDeps({
            db,
            bus,
            bases: await loadCatalog(db, bundled, env),
            adapterStorage: adapterStorage(env),
            scale: scaleOptions(env),
            storedRetention: StoredRetention.days(
              integerVar(env, "LUMINET_RESPONSE_RETENTION_DAYS", DEFAULT_RETENTION_DAYS, 0),
            ),
            allowPrivateWebhooks: env.LUMINET_ALLOW_PRIVATE_WEBHOOKS === "1",
            secrets: SecretBox.fromEnv(env),
            log: consoleLog,
            compileTime: new OrgCompileTime(
              integerVar(env, "LUMINET_ORG_COMPILE_SECONDS", DEFAULT_ORG_COMPILE_MS_PER_MINUTE / 1000) * 1000,
            ),
            limits: {
              maxFileBytes: integerVar(env, "LUMINET_MAX_FILE_BYTES", WORKERS_MAX_FILE_BYTES),
              maxOrgFileBytes: integerVar(env, "LUMINET_MAX_ORG_FILE_STORAGE", DEFAULT_MAX_ORG_FILE_BYTES),
              maxOrgAdapterBytes: integerVar(
                env,
                "LUMINET_MAX_ORG_ADAPTER_STORAGE",
                DEFAULT_MAX_ORG_ADAPTER_BYTES,
              ),
              maxOrgConversationBytes: integerVar(
                env,
                "LUMINET_MAX_ORG_CONVERSATION_STORAGE",
                DEFAULT_MAX_ORG_CONVERSATION_BYTES,
              ),
              maxOrgResponseBytes: integerVar(
                env,
                "LUMINET_MAX_ORG_RESPONSE_STORAGE",
                DEFAULT_MAX_ORG_RESPONSE_BYTES,
              ),
            },
            ...(env.LUMINET_SESSION_SECRET ? { sessionSecret: env.LUMINET_SESSION_SECRET } : {}),
          });
          shared = deps;
        }
        return releaseAfterBody(await createApp(deps).fetch(request), release, ctx);
      } catch (error) {
        ctx.waitUntil(release());
        throw error;
      }
    },
  };
}
