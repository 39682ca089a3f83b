// The bus on NATS JetStream. At connect it creates, or updates to this build's settings, what it needs:
//  - <NS>_REQUESTS: work-queue stream over `infer.>` (a message leaves once acked), with a dedupe window so
//    a republished request id is dropped, and a max age: a request nobody took in time is worthless.
//  - <NS>_USAGE: work-queue stream over `usage.>` with a 10-minute dedupe window; the meter's durable
//    consumer never gives up on an event (billing must not drop one).
//  - <NS>_CONTROL: stream over `control.>` keeping only the latest event per adapter, so a worker that
//    starts later replays every adapter's current state (pins, deletions) without a database. Core NATS
//    would lose events published while a worker is down.
//  - <NS>_heartbeats: KV bucket in memory whose max age is the heartbeat TTL: a silent worker vanishes.
//    Readers keep a live view of it (bus/jetstream-heartbeats.ts).
// Replies and cancels are core NATS: they matter only while someone listens, so storing them buys nothing.
// A process's reply inboxes share one wildcard subscription (bus/jetstream-inbox-mux.ts).
// The client reconnects by itself; while it is disconnected, publishing a request or opening a reply inbox
// or reading the live heartbeats fails at once with BusUnavailableError, and the open inboxes fail with it
// (their replies are lost).
// A durable consumer deleted under a running worker or meter (or with its stream) is created again, as at
// connect, and pulling resumes (bus/jetstream-durables.ts); each time says so in the log.
import {
  type Consumer,
  type ConsumerMessages,
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import { type ConnectionOptions, type NatsConnection, RequestError, TimeoutError } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import type { z } from "zod";
import { logger } from "../core/logger.ts";
import {
  AdapterControl,
  ANY_WORKER,
  Cancel,
  ClaimAnswer,
  cancelSubject,
  claimSubject,
  controlFilter,
  controlSubject,
  decode,
  encode,
  encodeToken,
  encodeWorkerId,
  heartbeatKey,
  InferenceRequest,
  inferBasePrefix,
  inferSubject,
  Reply,
  ReplyClaim,
  UsageEvent,
  usageSubject,
  WorkerHeartbeat,
  workersOfInferQueues,
} from "../schema/wire.ts";
import {
  type Bus,
  type BusOptions,
  BusUnavailableError,
  type Published,
  type PullRequestsOptions,
  type QueuedRequest,
  type ReplyInbox,
  type RequestPuller,
  type ResolvedBusOptions,
  requestMessageId,
  resolveBusOptions,
  type Subscription,
} from "./bus.ts";
import { type DurableConfig, JetStreamDurables } from "./jetstream-durables.ts";
import { JetStreamHeartbeatView } from "./jetstream-heartbeats.ts";
import { JetStreamInboxMux } from "./jetstream-inbox-mux.ts";
import { JetStreamRequestPuller } from "./jetstream-puller.ts";
import { ReplyInboxQueue } from "./reply-inbox.ts";

export interface JetStreamBusOptions extends BusOptions {
  /** NATS server URL(s), e.g. "nats://127.0.0.1:4222". */
  servers: string | string[];
  /**
   * Prefixes every subject (`<ns>.infer.>`), stream, consumer and bucket, so deployments (or test runs)
   * sharing one server stay apart. Letters, digits, "-" and "_". Unset: bare subjects, "LUMINET" names.
   */
  namespace?: string;
  /**
   * Copies of each stream and bucket in a JetStream cluster; default LUMINET_STREAM_REPLICAS, else 1. Every
   * process of a deployment must say the same: each brings the streams to its own setting at start.
   */
  replicas?: number;
  /** How long a queued request is kept when no worker takes it; default 15 minutes. */
  requestMaxAgeMs?: number;
  /** How long a worker's claim waits for the gateway's answer before giving up; default 5 s. */
  claimTimeoutMs?: number;
  /** Shown by the server as the connection's name. */
  connectionName?: string;
  /**
   * Opens the NATS connection; default @nats-io/transport-node's TCP `connect`. Cloudflare Workers pass
   * @nats-io/nats-core's `wsconnect` (NATS over WebSocket: a Worker cannot open raw TCP to NATS).
   */
  connect?: (options: ConnectionOptions) => Promise<NatsConnection>;
  /**
   * Create or update the streams and the heartbeat bucket at connect; default true. False trusts that they
   * exist (workers and Node gateways create them), for a gateway on Workers that connects per request.
   */
  setUp?: boolean;
}

/** NATS could not be reached, or it runs without JetStream. */
export class BusConnectError extends Error {
  override readonly name = "BusConnectError";
}

const ms = (millis: number) => millis * 1_000_000;
/**
 * A worker's own durable consumer outlives a restart, but not a worker that is gone for good. A base's
 * shared durable never expires: with no worker left it is where requests wait for one to start, and where
 * an autoscaler (KEDA's JetStream scaler) reads their lag; there is one per base.
 */
const CONSUMER_INACTIVE_MS = 60 * 60_000;
/**
 * How long a pull waits at the server before the puller renews it: the client's minimum. A pull cannot be
 * withdrawn, so closing a puller (a worker's drain, a test's teardown) waits for this; idle, a worker
 * renews its four pulls (its queue, the shared one, and their priority lanes) once a second each, which NATS does not notice.
 */
const PULL_EXPIRES_MS = 1_000;
const METER_DURABLE = "meter";
/**
 * How each meter subscription pulls: a deleted consumer ends its iteration (rather than nats.js waiting,
 * silently, for it to come back) so the subscription creates it again.
 */
const USAGE_CONSUME = { max_messages: 16, abort_on_missing_resource: true } as const;
/** The longest pause between a meter subscription's tries to create its vanished consumer again. */
const USAGE_RESTORE_RETRY_MAX_MS = 4_000;
const DRAIN_LIMIT_MS = 2_000;
/** How long close() waits for the consumers to stop. */
const CLOSE_LIMIT_MS = 10_000;
/** JetStream's "stream name already in use with a different configuration". */
const STREAM_NAME_IN_USE = 10058;

export async function connectJetStreamBus(options: JetStreamBusOptions): Promise<Bus> {
  const namespace = options.namespace;
  if (namespace !== undefined && !/^[A-Za-z0-9_-]+$/.test(namespace)) {
    throw new BusConnectError(`namespace "${namespace}" may only hold letters, digits, "-" and "_"`);
  }
  const replicas = options.replicas ?? replicasFromEnv();
  let nc: NatsConnection;
  try {
    nc = await (options.connect ?? connect)({
      servers: options.servers,
      name: options.connectionName ?? "luminet",
      maxReconnectAttempts: -1,
      // Without it every request and JetStream publish makes an Error up front, for a stack trace nobody
      // reads: several percent of a gateway's CPU per inference request.
      noAsyncTraces: true,
    });
  } catch (error) {
    throw new BusConnectError(`cannot reach NATS at ${String(options.servers)}: ${(error as Error).message}`);
  }
  let jsm: JetStreamManager;
  try {
    jsm = await jetstreamManager(nc);
  } catch (error) {
    await nc.close();
    throw new BusConnectError(
      `NATS at ${String(options.servers)} does not serve JetStream (start nats-server with -js): ${(error as Error).message}`,
    );
  }
  const bus = new JetStreamBus(nc, jsm, jetstream(nc), { ...options, replicas });
  if (options.setUp === false) return bus;
  try {
    await bus.setUp();
  } catch (error) {
    await nc.close();
    throw new BusConnectError(`cannot set up Luminet's streams on NATS: ${(error as Error).message}`);
  }
  return bus;
}

/** LUMINET_STREAM_REPLICAS: 1 to 5 copies of each stream (a JetStream cluster's nodes hold them). */
function replicasFromEnv(): number {
  const value = globalThis.process?.env?.LUMINET_STREAM_REPLICAS;
  if (value === undefined || value === "") return 1;
  const replicas = Number(value);
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) {
    throw new BusConnectError(`LUMINET_STREAM_REPLICAS must be an integer from 1 to 5, got "${value}"`);
  }
  return replicas;
}

/**
 * How nats.js ends a consume() with abort_on_missing_resource: a 409 "consumer deleted" status, or the
 * "consumer not found" / "stream not found" of its own check after missed heartbeats (it matches on these
 * messages itself).
 */
function consumerVanished(error: unknown): boolean {
  return (
    error instanceof Error && /^(consumer deleted|consumer not found|stream not found)$/.test(error.message)
  );
}

class JetStreamBus implements Bus {
  readonly #options: ResolvedBusOptions;
  readonly #prefix: string;
  readonly #names: { requests: string; usage: string; control: string; heartbeats: string };
  readonly #replicas: number;
  readonly #claimTimeoutMs: number;
  readonly #requestMaxAgeMs: number;
  #heartbeats: KV | undefined;
  /** Started by the first liveHeartbeats call: only gateways pay for it. */
  #heartbeatView: Promise<JetStreamHeartbeatView> | undefined;
  /** Stops the view's consumer (and forgets the view, so the next liveHeartbeats starts another). */
  #stopHeartbeatView: (() => Promise<void>) | undefined;
  #closers = new Set<() => Promise<void>>();
  #connected = true;
  readonly #openInboxes = new Set<ReplyInboxQueue>();
  readonly #reconnectListeners = new Set<() => void>();
  readonly #inboxes: JetStreamInboxMux;
  readonly #durables: JetStreamDurables;

  constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    options: JetStreamBusOptions,
  ) {
    this.#options = resolveBusOptions(options);
    this.#prefix = options.namespace ? `${options.namespace}.` : "";
    const stem = options.namespace ?? "LUMINET";
    this.#names = {
      requests: `${stem}_REQUESTS`,
      usage: `${stem}_USAGE`,
      control: `${stem}_CONTROL`,
      heartbeats: `${stem}_heartbeats`,
    };
    this.#replicas = options.replicas ?? 1;
    this.#claimTimeoutMs = options.claimTimeoutMs ?? 5_000;
    this.#requestMaxAgeMs = options.requestMaxAgeMs ?? 15 * 60_000;
    this.#inboxes = new JetStreamInboxMux(nc, (error) => this.#report(error));
    this.#durables = new JetStreamDurables(jsm, js, () => this.setUp(), {
      recreated: ({ stream, consumer, gone }) =>
        logger.warn(
          { stream, consumer },
          gone === "stream"
            ? "the JetStream stream was gone (deleted?): created the streams and this consumer again; consuming resumes"
            : "the JetStream consumer was gone (deleted?): created it again; consuming resumes",
        ),
      failed: (error) => this.#report(error),
    });
    void this.#followConnection();
  }

  async #followConnection(): Promise<void> {
    for await (const status of this.nc.status()) {
      if (status.type === "disconnect") {
        this.#connected = false;
        const lost = this.#unavailable("the connection dropped");
        for (const inbox of this.#openInboxes) inbox.fail(lost);
      } else if (status.type === "reconnect") {
        this.#connected = true;
        void this.#afterReconnect();
        for (const listener of this.#reconnectListeners) listener();
      }
    }
  }

  /**
   * A server restarted loses what it kept in memory: the heartbeat bucket. Each process creates it again
   * when it reconnects (the streams are on disk and stay), and a gateway reads it afresh: its view's
   * consumer followed the bucket that is gone and would hear nothing of the new one, so every worker would
   * look dead, requests would wait in the shared queue and the fleet signal would read 0.
   */
  async #afterReconnect(): Promise<void> {
    try {
      await this.#ensureHeartbeats();
      const stop = this.#stopHeartbeatView;
      if (stop) {
        this.#heartbeatView = undefined;
        this.#stopHeartbeatView = undefined;
        await stop();
      }
    } catch (error) {
      this.#report(error as Error);
    }
  }

  #unavailable(why: string): BusUnavailableError {
    return new BusUnavailableError(`not connected to NATS (${why}); reconnecting`);
  }

  /** Runs a call only while connected; a drop during the call rejects it the same way. */
  async #whileConnected<T>(call: () => Promise<T>): Promise<T> {
    if (!this.#connected) throw this.#unavailable("disconnected");
    try {
      return await call();
    } catch (error) {
      // The client rejects what was waiting on the server with a RequestError when the connection drops.
      if (!this.#connected || error instanceof RequestError) {
        throw this.#unavailable((error as Error).message);
      }
      throw error;
    }
  }

  async setUp(): Promise<void> {
    const p = this.#prefix;
    await this.#ensureStream({
      name: this.#names.requests,
      subjects: [`${p}infer.>`],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: this.#replicas,
      max_age: ms(this.#requestMaxAgeMs),
      duplicate_window: ms(Math.min(this.#options.requestDedupeWindowMs, this.#requestMaxAgeMs)),
    });
    await this.#ensureStream({
      name: this.#names.usage,
      subjects: [`${p}usage.>`],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: this.#replicas,
      duplicate_window: ms(this.#options.usageDedupeWindowMs),
    });
    await this.#ensureStream({
      name: this.#names.control,
      subjects: [`${p}control.>`],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      num_replicas: this.#replicas,
      max_msgs_per_subject: 1,
    });
    await this.#ensureHeartbeats();
  }

  /** Creates the heartbeat bucket, or binds to it where it is. */
  async #ensureHeartbeats(): Promise<void> {
    this.#heartbeats = await new Kvm(this.js).create(this.#names.heartbeats, {
      ttl: this.#options.heartbeatTtlMs,
      history: 1,
      storage: StorageType.Memory,
      replicas: this.#replicas,
    });
  }

  /** Creates the stream, or brings an existing one to this configuration; safe when processes race. */
  async #ensureStream(config: Partial<StreamConfig> & { name: string }): Promise<void> {
    try {
      await this.jsm.streams.add(config);
    } catch (error) {
      if (!(error instanceof JetStreamApiError) || error.code !== STREAM_NAME_IN_USE) throw error;
      await this.jsm.streams.update(config.name, config);
    }
  }

  #track(stop: () => Promise<void>): () => Promise<void> {
    const once = async () => {
      this.#closers.delete(once);
      await stop();
    };
    this.#closers.add(once);
    return once;
  }

  #report(error: unknown): void {
    this.#options.onError(error instanceof Error ? error : new Error(String(error)));
  }

  async publishRequest(request: InferenceRequest, workerId: string): Promise<QueuedRequest> {
    const ack = await this.#whileConnected(() =>
      this.js.publish(
        this.#prefix + inferSubject(request.base, workerId, request.priority === true),
        encode(InferenceRequest, request),
        {
          msgID: requestMessageId(request),
        },
      ),
    );
    const withdraw = async () => {
      if (ack.duplicate) return;
      // Fails when the message is gone already (acked, or termed by a refused worker) or the broker is
      // unreachable; then a worker that pulls it later is refused at its claim, so nothing is lost.
      await this.jsm.streams.deleteMessage(this.#names.requests, ack.seq, false).catch(() => {});
    };
    return { duplicate: ack.duplicate, withdraw };
  }

  async requestBacklog(base: string): Promise<number> {
    // A work-queue stream keeps a message until it is acked, so its count per subject is pending plus
    // ack pending, including a gone worker's queue that no consumer reads any more.
    const info = await this.jsm.streams.info(this.#names.requests, {
      subjects_filter: `${this.#prefix}${inferBasePrefix(base)}>`,
    });
    return Object.values(info.state.subjects ?? {}).reduce((sum, n) => sum + n, 0);
  }

  async queuedWorkers(base: string): Promise<string[]> {
    const prefix = this.#prefix + inferBasePrefix(base);
    const info = await this.jsm.streams.info(this.#names.requests, { subjects_filter: `${prefix}>` });
    return workersOfInferQueues(Object.keys(info.state.subjects ?? {}), prefix);
  }

  async pullRequests({ base, workerId, shared = true }: PullRequestsOptions): Promise<RequestPuller> {
    const settings = { ack_wait: ms(this.#options.ackWaitMs), max_deliver: this.#options.maxDeliver };
    const baseToken = encodeToken(base);
    const workerToken = encodeWorkerId(workerId);
    // In the order the puller prefers them: the priority lanes first.
    const configs: DurableConfig[] = [];
    for (const priority of [true, false]) {
      const lane = priority ? "p" : "";
      configs.push({
        ...settings,
        inactive_threshold: ms(CONSUMER_INACTIVE_MS),
        durable_name: `w${lane}__${baseToken}__${workerToken}`,
        filter_subject: this.#prefix + inferSubject(base, workerId, priority),
      });
      if (shared) {
        configs.push({
          ...settings,
          durable_name: `any${lane}__${baseToken}`,
          filter_subject: this.#prefix + inferSubject(base, ANY_WORKER, priority),
        });
      }
    }
    const configOf = new Map<Consumer, DurableConfig>();
    for (const config of configs) {
      configOf.set(await this.#durables.create(this.#names.requests, config), config);
    }
    const puller = new JetStreamRequestPuller([...configOf.keys()], {
      pullExpiresMs: PULL_EXPIRES_MS,
      holdMs: this.#options.ackWaitMs / 2,
      onError: (error) => this.#report(error),
      restore: (consumer) => this.#durables.restore(this.#names.requests, configOf.get(consumer)!),
    });
    const stop = this.#track(() => puller.close());
    return { next: () => puller.next(), problem: () => puller.problem(), close: stop };
  }

  async openReplyInbox(): Promise<ReplyInbox> {
    const wiring = this.#inboxes.wiring();
    let stop = async () => {};
    const inbox = await this.#whileConnected(() =>
      ReplyInboxQueue.open({ ...wiring, unlisten: () => void stop() }),
    ).catch((error: unknown) => {
      wiring.unlisten();
      throw error;
    });
    this.#openInboxes.add(inbox);
    stop = this.#track(async () => {
      this.#openInboxes.delete(inbox);
      wiring.unlisten();
      inbox.close();
    });
    return inbox;
  }

  async claimReply(inbox: string, claim: ReplyClaim): Promise<boolean> {
    try {
      return await this.#sendClaim(inbox, claim);
    } catch (error) {
      // Nobody listening, or nobody answering in time: either way no one will read the reply.
      if (error instanceof RequestError || error instanceof TimeoutError) return false;
      throw error;
    }
  }

  async replyWanted(inbox: string, claim: ReplyClaim): Promise<boolean> {
    try {
      return await this.#sendClaim(inbox, claim);
    } catch (error) {
      // No responders: the process that opened the inbox is gone. Anything else (a timeout, a lost
      // connection) says nothing about it.
      return !(error instanceof RequestError && error.isNoResponders());
    }
  }

  /** Whether the inbox grants `claim`; throws what the request to it throws (no responders, a timeout). */
  async #sendClaim(inbox: string, claim: ReplyClaim): Promise<boolean> {
    const answer = await this.nc.request(claimSubject(inbox), encode(ReplyClaim, claim), {
      timeout: this.#claimTimeoutMs,
    });
    return decode(ClaimAnswer, answer.data).granted;
  }

  publishReply(inbox: string, reply: Reply): void {
    this.nc.publish(inbox, encode(Reply, reply));
  }

  publishCancel(base: string, cancel: Cancel): void {
    this.nc.publish(this.#prefix + cancelSubject(base), encode(Cancel, cancel));
  }

  onReconnect(listener: () => void): Subscription {
    this.#reconnectListeners.add(listener);
    return { close: async () => void this.#reconnectListeners.delete(listener) };
  }

  async onCancel(base: string, handler: (cancel: Cancel) => void): Promise<Subscription> {
    const sub = this.nc.subscribe(this.#prefix + cancelSubject(base), {
      callback: (error, msg) => {
        if (error) return this.#report(error);
        this.#handle(Cancel, handler, msg.data);
      },
    });
    await this.nc.flush();
    return { close: this.#track(async () => sub.unsubscribe()) };
  }

  #handle<T>(schema: z.ZodType<T>, handler: (message: T) => void, data: Uint8Array): void {
    try {
      handler(decode(schema, data));
    } catch (error) {
      this.#report(error);
    }
  }

  /** Fails at once while disconnected: its callers retry, and a drain need not wait out a timeout. */
  async publishUsage(event: UsageEvent): Promise<Published> {
    const ack = await this.#whileConnected(() =>
      this.js.publish(this.#prefix + usageSubject(event.base), encode(UsageEvent, event), {
        msgID: event.request_id,
      }),
    );
    return { duplicate: ack.duplicate };
  }

  async usageBacklog(): Promise<number> {
    // A work-queue stream: an acked event is removed, so what it holds is what is not billed yet.
    const info = await this.#whileConnected(() => this.jsm.streams.info(this.#names.usage));
    return info.state.messages;
  }

  async consumeUsage(handler: (event: UsageEvent) => Promise<void>): Promise<Subscription> {
    const stream = this.#names.usage;
    const config: DurableConfig = {
      durable_name: METER_DURABLE,
      ack_wait: ms(this.#options.usageAckWaitMs),
      max_deliver: -1,
    };
    let messages: ConsumerMessages = await (await this.#durables.create(stream, config)).consume(
      USAGE_CONSUME,
    );
    let closed = false;
    let wakeOnClose: () => void = () => {};
    const closing = new Promise<void>((resolve) => {
      wakeOnClose = resolve;
    });
    const pause = async (pauseMs: number) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([new Promise((resolve) => (timer = setTimeout(resolve, pauseMs))), closing]);
      clearTimeout(timer);
    };
    /** A fresh iteration once the consumer is back (created again if gone); null once closed. */
    const consumeAgain = async (): Promise<ConsumerMessages | null> => {
      for (let tries = 0; !closed; tries++) {
        try {
          // Another subscription of this meter may have created it again already: then it is "present".
          await this.#durables.restore(stream, config);
          const next = await (await this.js.consumers.get(stream, METER_DURABLE)).consume(USAGE_CONSUME);
          if (!closed) return next;
          await next.close();
        } catch (error) {
          // A DurableRestoreError was reported once for every subscription waiting on that try.
          if ((error as Error).name !== "DurableRestoreError") this.#report(error);
          await pause(Math.min(USAGE_RESTORE_RETRY_MAX_MS, 250 * 2 ** tries));
        }
      }
      return null;
    };
    const loop = (async () => {
      for (;;) {
        try {
          for await (const msg of messages) await this.#meterOne(msg, handler);
          return;
        } catch (error) {
          if (closed) return;
          // Its consumer or stream was deleted: consumeAgain's restore logs that once for the meter.
          if (!consumerVanished(error)) this.#report(error);
        }
        const next = await consumeAgain();
        if (!next) return;
        messages = next;
      }
    })();
    return {
      close: this.#track(async () => {
        closed = true;
        wakeOnClose();
        await messages.close();
        await loop.catch((error) => this.#report(error));
      }),
    };
  }

  /** Decodes and hands one usage event to the meter; acks once the handler resolved. */
  async #meterOne(msg: JsMsg, handler: (event: UsageEvent) => Promise<void>): Promise<void> {
    let event: UsageEvent;
    try {
      event = decode(UsageEvent, msg.data);
    } catch (error) {
      msg.term();
      this.#report(error);
      return;
    }
    try {
      await handler(event);
      await msg.ackAck();
    } catch (error) {
      // The event stays in the stream and comes back; so does one whose ack found its consumer deleted, or
      // reached a consumer created again under its name that never delivered it. Its row, keyed by request
      // id, is not written twice.
      msg.nak(this.#options.usageRetryDelayMs);
      this.#report(error);
    }
  }

  async putHeartbeat(heartbeat: WorkerHeartbeat): Promise<void> {
    const put = () =>
      this.#kv().put(heartbeatKey(heartbeat.base, heartbeat.worker_id), encode(WorkerHeartbeat, heartbeat));
    try {
      await put();
    } catch (error) {
      // Connected, yet the put failed: the bucket may be gone (deleted, or the server restarted before this
      // process noticed). Create it again and try once more.
      if (!this.#connected) throw error;
      await this.#ensureHeartbeats();
      await put();
    }
  }

  async removeHeartbeat(base: string, workerId: string): Promise<void> {
    // A delete marker, which every heartbeat view applies when it arrives.
    await this.#kv().delete(heartbeatKey(base, workerId));
  }

  async liveHeartbeats(base?: string): Promise<WorkerHeartbeat[]> {
    // A disconnected view only ages: every worker would look dead.
    if (!this.#connected) throw this.#unavailable("disconnected");
    this.#heartbeatView ??= JetStreamHeartbeatView.start(
      this.js,
      this.#names.heartbeats,
      this.#options.heartbeatTtlMs,
      (error) => this.#report(error),
    ).then(
      ({ view, stop }) => {
        this.#stopHeartbeatView = this.#track(stop);
        return view;
      },
      (error: unknown) => {
        // Not kept: the next call tries again (the bucket may be back by then).
        this.#heartbeatView = undefined;
        throw error;
      },
    );
    return (await this.#heartbeatView).live(base);
  }

  #kv(): KV {
    if (!this.#heartbeats) throw new Error("the bus is not set up: use connectJetStreamBus");
    return this.#heartbeats;
  }

  async publishControl(event: AdapterControl): Promise<void> {
    await this.js.publish(
      this.#prefix + controlSubject(event.base, event.adapter),
      encode(AdapterControl, event),
    );
  }

  async onControl(base: string, handler: (event: AdapterControl) => void): Promise<Subscription> {
    const consumer = await this.js.consumers.get(this.#names.control, {
      filter_subjects: this.#prefix + controlFilter(base),
      deliver_policy: DeliverPolicy.LastPerSubject,
    });
    const messages = await consumer.consume();
    const loop = (async () => {
      for await (const msg of messages) this.#handle(AdapterControl, handler, msg.data);
    })();
    return {
      close: this.#track(async () => {
        await messages.close();
        await loop.catch((error) => this.#report(error));
      }),
    };
  }

  async close(): Promise<void> {
    // A consumer that followed a stream the server lost (a restart without its memory) may never end: the
    // process still exits, after a bounded wait.
    const stopped = Promise.all([...this.#closers].map((stop) => stop()));
    if ((await withinMs(stopped, CLOSE_LIMIT_MS)) === "late") {
      logger.warn(
        { waitedMs: CLOSE_LIMIT_MS },
        "a NATS consumer did not stop in time; closing the connection",
      );
    }
    // Draining flushes what was published (acks, replies); while the server is unreachable it would wait
    // for a reconnect, so it gets a bounded time before the connection is simply closed.
    await withinMs(
      this.nc.drain().catch(() => {}),
      DRAIN_LIMIT_MS,
    );
    if (!this.nc.isClosed()) await this.nc.close();
  }
}

/** Waits for `work` at most `ms`: "done" when it ended in time, else "late" (it goes on unwaited). */
async function withinMs(work: Promise<unknown>, ms: number): Promise<"done" | "late"> {
  let limit: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => {
    limit = setTimeout(() => resolve("late"), ms);
  });
  try {
    return await Promise.race([work.then(() => "done" as const), late]);
  } finally {
    clearTimeout(limit);
  }
}
