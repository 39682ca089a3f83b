// A worker's request puller over JetStream pull consumers: its own durable (`infer.<base>.<worker>`), the
// base's shared durable (`infer.<base>.any`) and the priority lane of each (`….priority`). A work-queue
// stream allows one consumer per subject, so the workers of a base share one durable for `any`; the server
// gives each message to one of them.
//
// next() pulls from every consumer at once, one message each, only while a caller waits. When several
// answer, the extras are held for the next calls; if nobody asks for one within `holdMs` it is nak'd so
// another worker can take it, rather than idling here until its ack wait runs out. The consumers come in
// the order the worker prefers them (priority lanes first): a held message goes out before a later
// consumer's. So behind a backlog a priority request waits for at most one request per queue already
// pulled, not for the whole queue.
//
// A pull cannot be withdrawn from the server, so close() waits for the pulls in flight to end (at most
// pullExpiresMs), nak'ing whatever they still bring. Once it resolves, nothing of this puller can take a
// message: what the caller hands back after it goes to the next puller, not into a dying one.
//
// A pull that fails asks `restore` whether its consumer is gone (bus/jetstream-durables.ts), which creates it
// again. While one cannot be created, the puller retries with a growing pause and, from the third failed
// try, problem() says why: the worker reports not ready and stops heartbeating until it is back.
import type { Consumer, JsMsg } from "@nats-io/jetstream";
import { decode, InferenceRequest } from "../schema/wire.ts";
import type { Delivery, RequestPuller } from "./bus.ts";
import type { Restored } from "./jetstream-durables.ts";

export interface JetStreamPullerOptions {
  /** How long one pull request waits at the server before it is renewed (the client's minimum is 1 s). */
  pullExpiresMs: number;
  holdMs: number;
  onError: (error: Error) => void;
  /** After a failed pull: creates the consumer again if it is gone; rejects if it cannot. */
  restore: (consumer: Consumer) => Promise<Restored>;
}

type Waiter = (delivery: Delivery<InferenceRequest> | null) => void;

interface Held {
  delivery: Delivery<InferenceRequest>;
  msg: JsMsg;
  /** The index of the consumer it came from: lower goes out first. */
  rank: number;
  timer: ReturnType<typeof setTimeout>;
}

/** The pause before pulling again after a pull failed (a server restart, a consumer being recreated). */
const RETRY_MS = 250;
/** The longest pause between tries to create a gone consumer again. */
const RESTORE_RETRY_MAX_MS = 4_000;
/** Failed tries to create a gone consumer again before problem() reports it. */
const RESTORE_TRIES_BEFORE_PROBLEM = 3;

export class JetStreamRequestPuller implements RequestPuller {
  #waiters: Waiter[] = [];
  #held: Held[] = [];
  #pulling = new Map<Consumer, Promise<void>>();
  /** Consumers found gone and not created again yet: failed tries, and the last failure. */
  #unrestored = new Map<Consumer, { tries: number; error: Error }>();
  #closed = false;
  #wakeOnClose: () => void = () => {};
  readonly #closing = new Promise<void>((resolve) => {
    this.#wakeOnClose = resolve;
  });

  constructor(
    /** In the order their messages are preferred. */
    private readonly consumers: Consumer[],
    private readonly options: JetStreamPullerOptions,
  ) {}

  next(): Promise<Delivery<InferenceRequest> | null> {
    if (this.#closed) return Promise.resolve(null);
    const held = this.#takeHeld();
    if (held) {
      clearTimeout(held.timer);
      return Promise.resolve(held.delivery);
    }
    return new Promise((resolve) => {
      this.#waiters.push(resolve);
      for (const consumer of this.consumers) {
        if (!this.#pulling.has(consumer)) this.#startPulling(consumer);
      }
    });
  }

  problem(): string | null {
    for (const { tries, error } of this.#unrestored.values()) {
      if (tries >= RESTORE_TRIES_BEFORE_PROBLEM) return error.message;
    }
    return null;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#wakeOnClose();
    for (const waiter of this.#waiters.splice(0)) waiter(null);
    for (const held of this.#held.splice(0)) {
      clearTimeout(held.timer);
      held.msg.nak();
    }
    await Promise.all(this.#pulling.values());
  }

  /** Called with a waiter queued, so #pull awaits a pull before its `finally` can run. */
  #startPulling(consumer: Consumer): void {
    this.#pulling.set(consumer, this.#pull(consumer));
  }

  async #pull(consumer: Consumer): Promise<void> {
    try {
      while (!this.#closed && this.#waiters.length > 0) {
        let msg: JsMsg | null;
        try {
          msg = await consumer.next({ expires: this.options.pullExpiresMs });
        } catch (error) {
          if (this.#closed) return;
          await this.#afterFailedPull(consumer, error as Error);
          continue;
        }
        this.#unrestored.delete(consumer);
        if (!msg) continue;
        if (this.#closed) {
          msg.nak();
          return;
        }
        const delivery = this.#decode(msg);
        if (!delivery) continue;
        const waiter = this.#waiters.shift();
        if (waiter) waiter(delivery);
        else this.#hold(delivery, msg, this.consumers.indexOf(consumer));
      }
    } finally {
      // In the same turn as the loop's end: a next() right after sees no pull running and starts one.
      this.#pulling.delete(consumer);
    }
  }

  /**
   * Brings the consumer back if it is gone; a failure that was not its absence is reported as before. The
   * pause before the next pull grows while the consumer cannot be created (the failure is logged each time).
   */
  async #afterFailedPull(consumer: Consumer, error: Error): Promise<void> {
    let pauseMs = RETRY_MS;
    try {
      const restored = await this.options.restore(consumer);
      if (restored !== "unknown") this.#unrestored.delete(consumer);
      if (restored !== "recreated") this.options.onError(error);
    } catch (failure) {
      const tries = (this.#unrestored.get(consumer)?.tries ?? 0) + 1;
      this.#unrestored.set(consumer, { tries, error: failure as Error });
      pauseMs = Math.min(RESTORE_RETRY_MAX_MS, RETRY_MS * 2 ** tries);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([new Promise((resolve) => (timer = setTimeout(resolve, pauseMs))), this.#closing]);
    clearTimeout(timer);
  }

  /** The held message of the most preferred consumer (each consumer holds at most one). */
  #takeHeld(): Held | undefined {
    if (this.#held.length === 0) return undefined;
    const first = this.#held.reduce((best, held) => (held.rank < best.rank ? held : best));
    this.#held = this.#held.filter((held) => held !== first);
    return first;
  }

  #hold(delivery: Delivery<InferenceRequest>, msg: JsMsg, rank: number): void {
    const entry: Held = {
      delivery,
      msg,
      rank,
      timer: setTimeout(() => {
        this.#held = this.#held.filter((h) => h !== entry);
        msg.nak();
      }, this.options.holdMs),
    };
    this.#held.push(entry);
  }

  /** A message that does not decode can never be served: it is termed, not retried. */
  #decode(msg: JsMsg): Delivery<InferenceRequest> | null {
    try {
      return jsDelivery(msg, decode(InferenceRequest, msg.data));
    } catch (error) {
      msg.term();
      this.options.onError(error as Error);
      return null;
    }
  }
}

function jsDelivery<T>(msg: JsMsg, message: T): Delivery<T> {
  return {
    message,
    deliveryCount: msg.info.deliveryCount,
    ack: async () => {
      await msg.ackAck();
    },
    nak: (delayMs) => msg.nak(delayMs),
    working: () => msg.working(),
    term: () => msg.term(),
  };
}
