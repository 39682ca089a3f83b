// Everything the gateway app is built from, injected by its entry (gateway/node.ts, gateway/worker.ts,
// `luminet dev`, tests): database, bus, base models, caches, clock and limits. The caches are separate so
// an entry that builds an app per request (Workers) can keep them across requests.
import type { Bus } from "../bus/bus.ts";
import type { Db } from "../db/open.ts";
import type { Usage } from "../schema/wire.ts";
import { AdapterResolver } from "./adapter-resolver.ts";
import type { AdapterStorage } from "./adapter-storage.ts";
import { DEFAULT_MAX_ORG_ADAPTER_BYTES } from "./adapter-storage-quota.ts";
import { AuthCache } from "./auth.ts";
import type { BaseCatalog } from "./bases.ts";
import { CallerLimitsCache } from "./caller-limits.ts";
import { DEFAULT_MAX_ORG_CONVERSATION_BYTES } from "./conversation-storage-quota.ts";
import { DueSweep } from "./due-sweep.ts";
import { DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_ORG_FILE_BYTES, sweepFiles } from "./files.ts";
import type { ScaleOptions } from "./fleet-scale.ts";
import type { ColdStartOutcome } from "./generation.ts";
import { sweepIdempotencyKeys } from "./idempotency-keys.ts";
import { DEFAULT_ORG_COMPILE_MS_PER_MINUTE, OrgCompileTime } from "./org-compile-time.ts";
import { RecentRoutes } from "./recent-routes.ts";
import { DEFAULT_MAX_ORG_RESPONSE_BYTES } from "./response-storage-quota.ts";
import type { RouteOutcome, RoutingOptions } from "./routing.ts";
import { SecretBox } from "./secret-box.ts";
import { DEFAULT_RETENTION_DAYS, StoredRetention } from "./stored-retention.ts";

/** The part of a pino logger the gateway uses; callers log key prefixes, never keys. */
export interface GatewayLog {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/** Per-request measurements; the Node entry feeds them to prom-client. */
export interface GatewayMetrics {
  /** A response's status and time; `base` is "" for routes that run no generation. */
  observe(route: string, status: number, seconds: number, base: string): void;
  /** An error answer, by its OpenAI error code (its type where it has none): why requests are refused. */
  errorAnswered(route: string, code: string): void;
  /** The gateway's own time before the request was queued for a worker (auth, limits, tokenizing, routing). */
  added(base: string, seconds: number): void;
  routed(base: string, outcome: RouteOutcome): void;
  /** A generation started (+1) or ended (-1). */
  inFlight(base: string, stream: boolean, delta: 1 | -1): void;
  /** The scale signal's answer for a base (GET /v1/fleet/scale). */
  desiredWorkers(base: string, workers: number): void;
  /** The base's workers beating now, read with the desired count. */
  liveWorkers(base: string, workers: number): void;
  /** Whether the last reading of the autoscaling signal failed (the gauges then hold their last values). */
  scaleSignalStale(stale: boolean): void;
  /** Lines of running batches for a base not yet sent to a worker, read with the scale signal. */
  batchLinesWaiting(base: string, lines: number): void;
  /** How a request's wait for a worker of a base with none live ended. */
  coldStart(base: string, outcome: ColdStartOutcome): void;
  /** A run's Final arrived, with the tokens its worker counted (and bills), whatever its finish reason. */
  tokens(base: string, usage: Usage): void;
  /** A batch line this process ran: answered 200, failed (any other answer), retried later, or handed back on stop. */
  batchLine(outcome: BatchLineOutcome): void;
  /** A batch this process ended, by its final status. */
  batchEnded(status: "completed" | "expired" | "cancelled"): void;
  /** A webhook delivery attempt this process made: delivered (2xx), retried later, or given up. */
  webhookDelivery(outcome: WebhookOutcome): void;
}

export type WebhookOutcome = "delivered" | "retried" | "failed";

export type BatchLineOutcome = "answered" | "failed" | "retried" | "handed_back";

export interface GatewayDeps {
  db: Db;
  bus: Bus;
  bases: BaseCatalog;
  authCache: AuthCache;
  /** Keys' per-minute limits and orgs' monthly quotas, cached like the keys themselves. */
  callerLimits: CallerLimitsCache;
  /** Each org's share of this process's time compiling its requests' grammars and schemas. */
  compileTime: OrgCompileTime;
  adapters: AdapterResolver;
  /** Where the admin API stages, validates and stores uploaded adapters; null: uploads are refused (503). */
  adapterStorage: AdapterStorage | null;
  /** How long stored responses and chat completions are kept, and this process's sweeps of older ones. */
  storedRetention: StoredRetention;
  /** This process's sweep of files past their expires_at. */
  fileExpiry: DueSweep;
  /** This process's sweep of Idempotency-Keys past their day. */
  idempotencyExpiry: DueSweep;
  routing: RoutingOptions;
  /** What this gateway sent each worker since its last heartbeat (routing counts it as queued there). */
  recentRoutes: RecentRoutes;
  /** Capacity assumptions of the autoscaling signal (GET /v1/fleet/scale). */
  scale: ScaleOptions;
  log: GatewayLog;
  metrics: GatewayMetrics | null;
  now: () => number;
  /**
   * Signs the dashboard's session cookies. Every gateway process serving the dashboard needs the same one
   * (LUMINET_SESSION_SECRET); the default, random per process, ends sessions when the process restarts.
   */
  sessionSecret: string;
  /**
   * Seals the secrets the gateway keeps and must read back (webhook signing secrets) under the operator's
   * LUMINET_SECRETS_KEY; the default has no key and keeps them as they are.
   */
  secrets: SecretBox;
  /** A fresh request id: unguessable and unique, since it keys the billing row. */
  newRequestId: () => string;
  /**
   * Told ("queued") when this process queues batch lines (a batch, a background response): its batch runner,
   * where it has one, claims them at once instead of at its next look.
   */
  batchLinesQueued: EventTarget;
  /**
   * Whether a webhook endpoint may name this host or a private address (gateway/webhook-address.ts): off,
   * such URLs are refused, so an org cannot make the gateway call into the operator's network.
   */
  allowPrivateWebhooks: boolean;
  limits: {
    /** Larger bodies get 413 before they are read whole. */
    maxBodyBytes: number;
    /** A request still running after this is cancelled and answered with 504. */
    requestTimeoutMs: number;
    /** Retry-After of the 503 sent when no worker serves a base. */
    retryAfterSeconds: number;
    /**
     * How long a request for a base with no live worker waits in the base's shared queue for a worker to
     * start and claim it (scaling from zero) before 503; within the request timeout. 0: 503 at once.
     */
    coldStartTimeoutMs: number;
    /**
     * A stream whose first token has not come within this (a cold start, a long prompt) answers 200 and
     * its headers at once, and tells a later error in-band; a quicker error keeps its own HTTP status.
     */
    streamHeadersAfterMs: number;
    /** While a stream waits for its next event, an SSE comment goes out this often. */
    keepAliveMs: number;
    /** Largest file the Files API takes (a batch's input). */
    maxFileBytes: number;
    /** Most bytes an org's files may hold together (files.ts saveUpload). */
    maxOrgFileBytes: number;
    /** Most bytes an org's adapters may hold together in the blob store (adapter-storage-quota.ts). */
    maxOrgAdapterBytes: number;
    /** Most bytes an org's conversations may hold together (conversation-storage-quota.ts). */
    maxOrgConversationBytes: number;
    /** Most bytes an org's stored responses and chat completions may hold together (response-storage-quota.ts). */
    maxOrgResponseBytes: number;
    /** How often a background response's stream reads its event log while nothing new has come. */
    backgroundStreamPollMs: number;
  };
}

export type GatewayDepsInput = Pick<GatewayDeps, "db" | "bus" | "bases"> &
  Partial<Omit<GatewayDeps, "limits">> & { limits?: Partial<GatewayDeps["limits"]> };

const silent: GatewayLog = { info() {}, warn() {}, error() {} };

export function gatewayDeps(input: GatewayDepsInput): GatewayDeps {
  const now = input.now ?? Date.now;
  return {
    authCache: new AuthCache({ now }),
    callerLimits: new CallerLimitsCache({ now }),
    compileTime: new OrgCompileTime(DEFAULT_ORG_COMPILE_MS_PER_MINUTE, now),
    adapters: new AdapterResolver({ now }),
    adapterStorage: null,
    idempotencyExpiry: new DueSweep(sweepIdempotencyKeys, now),
    storedRetention: StoredRetention.days(DEFAULT_RETENTION_DAYS, now),
    fileExpiry: new DueSweep(sweepFiles, now),
    routing: {},
    recentRoutes: new RecentRoutes(now),
    scale: {},
    log: silent,
    metrics: null,
    newRequestId: () => crypto.randomUUID().replaceAll("-", ""),
    batchLinesQueued: new EventTarget(),
    allowPrivateWebhooks: false,
    secrets: new SecretBox(undefined),
    sessionSecret: Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) =>
      b.toString(16).padStart(2, "0"),
    ).join(""),
    ...input,
    now,
    limits: {
      maxBodyBytes: 4 * 1024 * 1024,
      requestTimeoutMs: 10 * 60_000,
      retryAfterSeconds: 5,
      coldStartTimeoutMs: 120_000,
      streamHeadersAfterMs: 10_000,
      keepAliveMs: 15_000,
      maxFileBytes: DEFAULT_MAX_FILE_BYTES,
      maxOrgFileBytes: DEFAULT_MAX_ORG_FILE_BYTES,
      maxOrgAdapterBytes: DEFAULT_MAX_ORG_ADAPTER_BYTES,
      maxOrgConversationBytes: DEFAULT_MAX_ORG_CONVERSATION_BYTES,
      maxOrgResponseBytes: DEFAULT_MAX_ORG_RESPONSE_BYTES,
      backgroundStreamPollMs: 100,
      ...input.limits,
    },
  };
}
