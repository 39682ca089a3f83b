// The gateway on Node: opens the database and NATS named by the caller, loads the base models' tokenizers,
// builds the app and serves it with @hono/node-server. Nothing here but wiring.
import { Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { hostname } from "node:os";
import { serve } from "@hono/node-server";
import type { Hono } from "hono";
import type { Bus } from "../bus/bus.ts";
import { connectJetStreamBus } from "../bus/jetstream.ts";
import { logger } from "../core/logger.ts";
import { requireMigrated } from "../db/migrate.ts";
import { type Db, describeDatabaseUrl, openDb } from "../db/open.ts";
import { type Meter, startMeter } from "../meter/meter.ts";
import { meterMetricsOnGatewayRegistry } from "../meter/metrics.ts";
import { openWritableBlobStore } from "../worker/adapters/blob-store.ts";
import { AdapterSources } from "./adapter-sources.ts";
import { createApp } from "./app.ts";
import { type BaseModelSource, type LoadBaseOptions, loadBaseModel } from "./base-loader.ts";
import { BaseCatalog } from "./bases.ts";
import { batchRoom, DEFAULT_BATCH_FILL } from "./batch-room.ts";
import { BatchRunner } from "./batch-runner.ts";
import type { GatewayEnv } from "./context.ts";
import { type GatewayDeps, type GatewayDepsInput, gatewayDeps } from "./deps.ts";
import type { ScaleOptions } from "./fleet-scale.ts";
import { NodeAdapterStorage } from "./node-adapter-storage.ts";
import { OrgCompileTime } from "./org-compile-time.ts";
import { mountMetricsRoute, prometheusMetrics } from "./prometheus.ts";
import type { SamplingDefaultsSource } from "./sampling-defaults.ts";
import { SecretBox } from "./secret-box.ts";
import { StoredRetention } from "./stored-retention.ts";
import { answerUnparsedRequest } from "./unparsed-request.ts";
import { WebhookSender } from "./webhook-sender.ts";

export interface ServedApp {
  /** e.g. "http://127.0.0.1:8080" */
  url: string;
  /**
   * Stops taking connections at once, lets the requests in flight finish for up to `graceMs` (streams
   * included), closing each keep-alive connection as its request ends, then cuts what is left.
   */
  close(graceMs?: number): Promise<void>;
}

/** How long a closing gateway lets its requests in flight finish: as long as the batch runner's lines get. */
export const DRAIN_GRACE_MS = 30_000;

/**
 * How long an idle keep-alive connection stays open. Node's default, 5 s, is shorter than the idle timeout of
 * the load balancers a gateway sits behind (AWS's: 60 s): one that sends a request on a connection just as
 * the gateway closes it gets a reset and answers its client 502. Longer than theirs, the balancer always
 * closes first. Clients are told (`Keep-Alive: timeout=65`) and close before it too.
 */
export const KEEP_ALIVE_TIMEOUT_MS = 65_000;

/** Serves any Hono app on a port (0 picks a free one) until close(). */
export function serveApp(app: Hono<GatewayEnv>, port: number, hostname = "0.0.0.0"): Promise<ServedApp> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, port, hostname }, (info: AddressInfo) => {
      const host = info.address === "0.0.0.0" || info.address === "::" ? "127.0.0.1" : info.address;
      resolve({
        url: `http://${host}:${info.port}`,
        close: (graceMs = DRAIN_GRACE_MS) =>
          new Promise<void>((done) => {
            if (!(server instanceof HttpServer)) {
              server.close(() => done());
              return;
            }
            // A connection whose request ended is idle: closed, so the client sends its next one elsewhere.
            const idle = setInterval(() => server.closeIdleConnections(), 100);
            // Past the grace, streams still open would hold close() forever; their generations are cancelled
            // as they drop.
            const cut = setTimeout(() => server.closeAllConnections(), graceMs);
            server.close(() => {
              clearInterval(idle);
              clearTimeout(cut);
              done();
            });
            server.closeIdleConnections();
          }),
      });
    });
    if (server instanceof HttpServer) {
      server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
      // Node wants the headers timeout above the keep-alive one, or a request on a reused connection can be cut.
      server.headersTimeout = KEEP_ALIVE_TIMEOUT_MS + 1_000;
      server.on("clientError", answerUnparsedRequest);
    }
    server.once("error", reject);
  });
}

/** Builds the Node app (with /metrics, behind LUMINET_METRICS_TOKEN when set) from dependencies the caller opened. */
export function createNodeApp(input: GatewayDepsInput): { app: Hono<GatewayEnv>; deps: GatewayDeps } {
  const sessionSecret = process.env.LUMINET_SESSION_SECRET;
  const deps = gatewayDeps({
    log: logger,
    metrics: prometheusMetrics(),
    ...(sessionSecret ? { sessionSecret } : {}),
    secrets: input.secrets ?? SecretBox.fromEnv(process.env),
    ...input,
  });
  const app = createApp(deps);
  mountMetricsRoute(app, deps, process.env.LUMINET_METRICS_TOKEN || undefined);
  return { app, deps };
}

/** Starts this process's webhook sender (gateway/webhook-sender.ts), which every Node gateway runs. */
export function startWebhookSender(deps: GatewayDeps): WebhookSender {
  const sender = new WebhookSender({
    db: deps.db,
    log: deps.log,
    metrics: deps.metrics,
    allowPrivate: deps.allowPrivateWebhooks,
    secrets: deps.secrets,
    now: deps.now,
  });
  sender.start();
  return sender;
}

/** Lines of batches one gateway process runs at once by default (`--batch-concurrency`). */
export const DEFAULT_BATCH_CONCURRENCY = 64;

/**
 * Starts this process's batch runner on the app (gateway/batch-runner.ts); null when concurrency is 0. A
 * claimed line is taken again after the request timeout and a minute more, when this process died.
 */
export function startBatchRunner(
  app: Hono<GatewayEnv>,
  deps: GatewayDeps,
  concurrency = DEFAULT_BATCH_CONCURRENCY,
  fill = DEFAULT_BATCH_FILL,
  pollMs?: number,
): BatchRunner | null {
  if (concurrency === 0) return null;
  const runner = new BatchRunner({
    app,
    db: deps.db,
    log: deps.log,
    metrics: deps.metrics,
    concurrency,
    leaseMs: deps.limits.requestTimeoutMs + 60_000,
    newId: deps.newRequestId,
    runnerId: `${hostname()}-${process.pid}`,
    now: deps.now,
    fileExpiry: deps.fileExpiry,
    room: async () => batchRoom(await deps.bus.liveHeartbeats(), fill),
    ...(pollMs !== undefined ? { pollMs } : {}),
  });
  deps.batchLinesQueued.addEventListener("queued", () => runner.nudge());
  runner.start();
  return runner;
}

export async function loadBaseCatalog(
  db: Db,
  models: readonly BaseModelSource[],
  options: LoadBaseOptions = {},
): Promise<BaseCatalog> {
  return new BaseCatalog(await Promise.all(models.map((m) => loadBaseModel(db, m, options))));
}

export interface NodeGatewayOptions {
  port: number;
  hostname?: string;
  databaseUrl: string;
  natsUrl: string;
  /** NATS subject/stream prefix shared with the workers (LUMINET_NAMESPACE). */
  namespace?: string;
  /** The base models served, each with the folder holding its tokenizer and config. */
  models: readonly BaseModelSource[];
  /** Whether a request's sampling defaults come from each base's generation_config.json; default "model". */
  samplingDefaults?: SamplingDefaultsSource;
  /** Also run the usage meter (NATS usage events into billing rows) in this process. */
  withMeter?: boolean;
  /**
   * Where accepted adapters go, the workers' --blobs: a folder, s3://bucket/prefix or r2://bucket/prefix
   * (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); default .luminet/blobs.
   */
  blobs?: string;
  /** URL prefixes adapters may be created from (POST /v1/adapters with "source"); default none. */
  adapterSources?: readonly string[];
  /** Largest adapter rank accepted at upload (the workers' --max-rank); default 16. */
  maxAdapterRank?: number;
  /** Largest adapter upload in bytes; default 1 GiB. */
  maxAdapterBytes?: number;
  /** How long a request for a base with no live worker waits for one to start; default 120 s, 0: 503 at once. */
  coldStartTimeoutMs?: number;
  /** When a stream with no first token answers 200 anyway (then errors go in-band); default 10 s. */
  streamHeadersAfterMs?: number;
  /** How often a waiting stream gets an SSE keep-alive comment; default 15 s. */
  keepAliveMs?: number;
  /** How long stored responses and chat completions are kept; default 30 days, 0: until deleted. */
  responseRetentionDays?: number;
  /** Most lines of batches this process runs at once; default 64, 0: this process runs none. */
  batchConcurrency?: number;
  /** The share of each worker's places batch lines may fill, in (0, 1]; default 0.75. */
  batchFill?: number;
  /** Largest file the Files API takes; default 64 MiB. */
  maxFileBytes?: number;
  /** Most bytes one org's files may hold together; default 100 GiB. */
  maxOrgFileBytes?: number;
  /** Most bytes one org's adapters may hold together; default 100 GiB. */
  maxOrgAdapterBytes?: number;
  /** Most bytes one org's conversations may hold together; default 10 GiB. */
  maxOrgConversationBytes?: number;
  /** Most bytes one org's stored responses and chat completions may hold together; default 100 GiB. */
  maxOrgResponseBytes?: number;
  /** Each org's compile time per minute in this process (org-compile-time.ts); default 5 s. */
  orgCompileMsPerMinute?: number;
  /** Webhook endpoints may name this host or a private address; default false. */
  allowPrivateWebhooks?: boolean;
  /** Seals webhook signing secrets; default: the one LUMINET_SECRETS_KEY(_PREVIOUS) make (createNodeApp). */
  secrets?: SecretBox;
  /** The autoscaling signal's bounds and headroom (GET /v1/fleet/scale). */
  scale?: ScaleOptions;
}

export async function startNodeGateway(options: NodeGatewayOptions): Promise<ServedApp> {
  const db = await openDb(options.databaseUrl);
  let bus: Bus | undefined;
  let meter: Meter | undefined;
  try {
    await requireMigrated(db, describeDatabaseUrl(options.databaseUrl));
    bus = await connectJetStreamBus({
      servers: options.natsUrl,
      connectionName: "luminet-gateway",
      ...(options.namespace ? { namespace: options.namespace } : {}),
    });
    const bases = await loadBaseCatalog(db, options.models, { samplingDefaults: options.samplingDefaults });
    if (options.withMeter) {
      meter = await startMeter({ bus, db, logger, metrics: meterMetricsOnGatewayRegistry() });
    }
    const adapterStorage = new NodeAdapterStorage({
      blobs: openWritableBlobStore(options.blobs ?? ".luminet/blobs"),
      sources: new AdapterSources(options.adapterSources ?? []),
      maxRank: options.maxAdapterRank ?? 16,
      maxBytes: options.maxAdapterBytes ?? 1024 ** 3,
    });
    const { app, deps } = createNodeApp({
      db,
      bus,
      bases,
      adapterStorage,
      ...(options.scale ? { scale: options.scale } : {}),
      allowPrivateWebhooks: options.allowPrivateWebhooks === true,
      ...(options.secrets ? { secrets: options.secrets } : {}),
      ...(options.orgCompileMsPerMinute !== undefined
        ? { compileTime: new OrgCompileTime(options.orgCompileMsPerMinute) }
        : {}),
      ...(options.responseRetentionDays !== undefined
        ? { storedRetention: StoredRetention.days(options.responseRetentionDays) }
        : {}),
      limits: {
        ...(options.coldStartTimeoutMs !== undefined
          ? { coldStartTimeoutMs: options.coldStartTimeoutMs }
          : {}),
        ...(options.streamHeadersAfterMs !== undefined
          ? { streamHeadersAfterMs: options.streamHeadersAfterMs }
          : {}),
        ...(options.keepAliveMs !== undefined ? { keepAliveMs: options.keepAliveMs } : {}),
        ...(options.maxFileBytes !== undefined ? { maxFileBytes: options.maxFileBytes } : {}),
        ...(options.maxOrgFileBytes !== undefined ? { maxOrgFileBytes: options.maxOrgFileBytes } : {}),
        ...(options.maxOrgAdapterBytes !== undefined
          ? { maxOrgAdapterBytes: options.maxOrgAdapterBytes }
          : {}),
        ...(options.maxOrgConversationBytes !== undefined
          ? { maxOrgConversationBytes: options.maxOrgConversationBytes }
          : {}),
        ...(options.maxOrgResponseBytes !== undefined
          ? { maxOrgResponseBytes: options.maxOrgResponseBytes }
          : {}),
      },
    });
    const served = await serveApp(app, options.port, options.hostname);
    const runner = startBatchRunner(app, deps, options.batchConcurrency, options.batchFill);
    const sender = startWebhookSender(deps);
    const openBus = bus;
    const openMeter = meter;
    return {
      url: served.url,
      close: async () => {
        // Requests in flight and batch lines in flight finish together (each within its grace), then what
        // they need goes: the meter, the bus, the database.
        await Promise.all([served.close(), runner?.stop(), sender.stop()]);
        await openMeter?.stop();
        await openBus.close();
        await db.close();
      },
    };
  } catch (error) {
    await meter?.stop();
    await bus?.close();
    await db.close();
    throw error;
  }
}
