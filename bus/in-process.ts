// The bus inside one process, for `luminet dev`: the same semantics as JetStream (one consumer per
// request, redelivery after the ack wait, usage dedupe by id, heartbeats that expire, latest control event
// per adapter) without a server. Messages still go through the wire codec, so a bad message fails here as
// it would on NATS. A broker holds the state; each connect() is one process's handle onto it.
import type { z } from "zod";
import {
  AdapterControl,
  ANY_WORKER,
  Cancel,
  ClaimAnswer,
  controlSubject,
  decode,
  encode,
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
  type Delivery,
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
import { InProcessWorkQueue, type QueueConsumer } from "./in-process-queue.ts";
import { ReplyInboxQueue } from "./reply-inbox.ts";

type Listener<T> = (message: T) => void;

export class InProcessBroker {
  readonly options: ResolvedBusOptions;
  readonly requests: InProcessWorkQueue;
  readonly usage: InProcessWorkQueue;
  readonly inboxes = new Map<string, ReplyInboxQueue>();
  readonly cancels = new Map<string, Set<Listener<Uint8Array>>>();
  readonly heartbeats = new Map<string, { heartbeat: WorkerHeartbeat; expiresAt: number }>();
  /** The latest control event per adapter, by control subject, and the live listeners per base. */
  readonly controls = new Map<string, { base: string; data: Uint8Array }>();
  readonly controlListeners = new Map<string, Set<Listener<Uint8Array>>>();
  #inboxCount = 0;

  constructor(options: BusOptions = {}) {
    this.options = resolveBusOptions(options);
    this.requests = new InProcessWorkQueue({
      ackWaitMs: this.options.ackWaitMs,
      maxDeliver: this.options.maxDeliver,
      dedupeWindowMs: this.options.requestDedupeWindowMs,
    });
    this.usage = new InProcessWorkQueue({
      ackWaitMs: this.options.usageAckWaitMs,
      maxDeliver: Number.POSITIVE_INFINITY,
      dedupeWindowMs: this.options.usageDedupeWindowMs,
    });
  }

  nextInbox(): string {
    this.#inboxCount++;
    return `_INBOX.inprocess.${this.#inboxCount}`;
  }

  connect(): Bus {
    return new InProcessBus(this);
  }
}

/** Runs a listener after the publisher's turn, as a network hop would, so it cannot re-enter the publisher. */
function later<T>(listener: Listener<T>, message: T): void {
  queueMicrotask(() => listener(message));
}

class InProcessBus implements Bus {
  #closers = new Set<() => void>();
  readonly #onError: (error: Error) => void;

  constructor(private readonly broker: InProcessBroker) {
    this.#onError = broker.options.onError;
  }

  /** Registers something close() must stop; returns its own stop function. */
  #track(stop: () => void): () => void {
    const once = () => {
      this.#closers.delete(once);
      stop();
    };
    this.#closers.add(once);
    return once;
  }

  async publishRequest(request: InferenceRequest, workerId: string): Promise<QueuedRequest> {
    const data = encode(InferenceRequest, request);
    const stored = this.broker.requests.publish(
      inferSubject(request.base, workerId, request.priority === true),
      requestMessageId(request),
      data,
    );
    return { duplicate: stored.duplicate, withdraw: async () => stored.withdraw() };
  }

  async pullRequests({ base, workerId, shared = true }: PullRequestsOptions): Promise<RequestPuller> {
    encodeWorkerId(workerId);
    const lanes = (priority: boolean) => [
      inferSubject(base, workerId, priority),
      ...(shared ? [inferSubject(base, ANY_WORKER, priority)] : []),
    ];
    const normal = new Set(lanes(false));
    const priority = new Set(lanes(true));
    const consumer = this.broker.requests.consumer(
      (s) => normal.has(s) || priority.has(s),
      (s) => priority.has(s),
    );
    const stop = this.#track(() => consumer.close());
    return {
      next: () => this.#nextDecoded(consumer, InferenceRequest),
      // An in-process queue cannot vanish under its consumer.
      problem: () => null,
      close: async () => stop(),
    };
  }

  async requestBacklog(base: string): Promise<number> {
    const prefix = inferBasePrefix(base);
    return this.broker.requests.backlog((subject) => subject.startsWith(prefix));
  }

  async queuedWorkers(base: string): Promise<string[]> {
    const prefix = inferBasePrefix(base);
    return workersOfInferQueues(
      this.broker.requests.subjects((subject) => subject.startsWith(prefix)),
      prefix,
    );
  }

  /** The next delivery that decodes; one that does not can never succeed, so it is termed and reported. */
  async #nextDecoded<T>(consumer: QueueConsumer, schema: z.ZodType<T>): Promise<Delivery<T> | null> {
    for (;;) {
      const delivery = await consumer.next();
      if (!delivery) return null;
      try {
        return {
          message: decode(schema, delivery.data),
          deliveryCount: delivery.deliveryCount,
          ack: async () => delivery.ack(),
          nak: (delayMs?: number) => delivery.nak(delayMs),
          working: () => delivery.working(),
          term: () => delivery.term(),
        };
      } catch (error) {
        delivery.term();
        this.#onError(error as Error);
      }
    }
  }

  async openReplyInbox(): Promise<ReplyInbox> {
    const subjects: string[] = [];
    let stop = () => {};
    const inbox = await ReplyInboxQueue.open({
      newSubject: () => this.broker.nextInbox(),
      listen: async (target, subject) => {
        subjects.push(subject);
        this.broker.inboxes.set(subject, target);
      },
      unlisten: () => stop(),
    });
    stop = this.#track(() => {
      for (const subject of subjects) this.broker.inboxes.delete(subject);
      inbox.close();
    });
    return inbox;
  }

  async claimReply(inbox: string, claim: ReplyClaim): Promise<boolean> {
    const request = decode(ReplyClaim, encode(ReplyClaim, claim));
    const target = this.broker.inboxes.get(inbox);
    if (!target) return false;
    return decode(ClaimAnswer, encode(ClaimAnswer, target.answer(request, inbox))).granted;
  }

  replyWanted(inbox: string, claim: ReplyClaim): Promise<boolean> {
    return this.claimReply(inbox, claim);
  }

  publishReply(inbox: string, reply: Reply): void {
    const data = encode(Reply, reply);
    const target = this.broker.inboxes.get(inbox);
    if (!target) return;
    try {
      target.push(decode(Reply, data), inbox);
    } catch (error) {
      this.#onError(error as Error);
    }
  }

  publishCancel(base: string, cancel: Cancel): void {
    const data = encode(Cancel, cancel);
    for (const listener of this.broker.cancels.get(base) ?? []) later(listener, data);
  }

  async onCancel(base: string, handler: (cancel: Cancel) => void): Promise<Subscription> {
    return this.#listen(this.broker.cancels, base, Cancel, handler);
  }

  /** In one process nothing drops: never called. */
  onReconnect(_listener: () => void): Subscription {
    return { close: async () => {} };
  }

  async publishUsage(event: UsageEvent): Promise<Published> {
    const stored = this.broker.usage.publish(
      usageSubject(event.base),
      event.request_id,
      encode(UsageEvent, event),
    );
    return { duplicate: stored.duplicate };
  }

  async usageBacklog(): Promise<number> {
    return this.broker.usage.backlog(() => true);
  }

  async consumeUsage(handler: (event: UsageEvent) => Promise<void>): Promise<Subscription> {
    const consumer = this.broker.usage.consumer(() => true);
    const stop = this.#track(() => consumer.close());
    const loop = async () => {
      for (;;) {
        const delivery = await this.#nextDecoded(consumer, UsageEvent);
        if (!delivery) return;
        try {
          await handler(delivery.message);
          await delivery.ack();
        } catch (error) {
          delivery.nak(this.broker.options.usageRetryDelayMs);
          this.#onError(error as Error);
        }
      }
    };
    void loop();
    return { close: async () => stop() };
  }

  // Decoded once when put, as JetStream's heartbeat view decodes once when received: the gateway reads
  // them on every request.
  async putHeartbeat(heartbeat: WorkerHeartbeat): Promise<void> {
    this.broker.heartbeats.set(heartbeatKey(heartbeat.base, heartbeat.worker_id), {
      heartbeat: decode(WorkerHeartbeat, encode(WorkerHeartbeat, heartbeat)),
      expiresAt: Date.now() + this.broker.options.heartbeatTtlMs,
    });
  }

  async removeHeartbeat(base: string, workerId: string): Promise<void> {
    this.broker.heartbeats.delete(heartbeatKey(base, workerId));
  }

  async liveHeartbeats(base?: string): Promise<WorkerHeartbeat[]> {
    const now = Date.now();
    const live: WorkerHeartbeat[] = [];
    for (const [key, { heartbeat, expiresAt }] of this.broker.heartbeats) {
      if (expiresAt <= now) this.broker.heartbeats.delete(key);
      else if (base === undefined || heartbeat.base === base) live.push(heartbeat);
    }
    return live;
  }

  async publishControl(event: AdapterControl): Promise<void> {
    const data = encode(AdapterControl, event);
    const subject = controlSubject(event.base, event.adapter);
    // Re-inserting moves the adapter to the end: a replay runs in order of each adapter's latest event.
    this.broker.controls.delete(subject);
    this.broker.controls.set(subject, { base: event.base, data });
    for (const listener of this.broker.controlListeners.get(event.base) ?? []) later(listener, data);
  }

  async onControl(base: string, handler: (event: AdapterControl) => void): Promise<Subscription> {
    const subscription = this.#listen(this.broker.controlListeners, base, AdapterControl, handler);
    for (const entry of this.broker.controls.values()) {
      if (entry.base === base) this.#deliverTo(AdapterControl, handler, entry.data);
    }
    return subscription;
  }

  #deliverTo<T>(schema: z.ZodType<T>, handler: (message: T) => void, data: Uint8Array): void {
    try {
      handler(decode(schema, data));
    } catch (error) {
      this.#onError(error as Error);
    }
  }

  #listen<T>(
    registry: Map<string, Set<Listener<Uint8Array>>>,
    base: string,
    schema: z.ZodType<T>,
    handler: (message: T) => void,
  ): Subscription {
    const listener: Listener<Uint8Array> = (data) => this.#deliverTo(schema, handler, data);
    let listeners = registry.get(base);
    if (!listeners) {
      listeners = new Set();
      registry.set(base, listeners);
    }
    listeners.add(listener);
    const stop = this.#track(() => listeners.delete(listener));
    return { close: async () => stop() };
  }

  async close(): Promise<void> {
    for (const stop of [...this.#closers]) stop();
  }
}
