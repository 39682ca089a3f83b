// An in-memory work queue with JetStream's delivery rules, for the in-process bus: each message goes to
// one consumer at a time; unacked after the ack wait, or nak'd, it goes back to the front for anyone;
// after maxDeliver deliveries it is dropped; a message id seen within the dedupe window is dropped.
import type { Published } from "./bus.ts";

/** A publish's answer; withdraw() drops the message, as JetStream's delete of a stored message does. */
export interface StoredPublish extends Published {
  withdraw(): void;
}

export interface WorkQueueOptions {
  ackWaitMs: number;
  maxDeliver: number;
  dedupeWindowMs: number;
}

/** One delivery of a stored message; calls on a delivery that has since been handed on do nothing. */
export interface QueueDelivery {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly deliveryCount: number;
  ack(): void;
  nak(delayMs?: number): void;
  working(): void;
  term(): void;
}

export interface QueueConsumer {
  /** The next message whose subject the consumer accepts; null once closed. */
  next(): Promise<QueueDelivery | null>;
  close(): void;
}

interface StoredMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  deliveries: number;
  /** The delivery number that holds the message now; undefined while it waits in the queue. */
  holder: number | undefined;
  timer: ReturnType<typeof setTimeout> | undefined;
}

interface Waiter {
  readonly accepts: (subject: string) => boolean;
  readonly resolve: (delivery: QueueDelivery | null) => void;
}

export class InProcessWorkQueue {
  #ready: StoredMessage[] = [];
  #waiters: Waiter[] = [];
  #seen = new Map<string, number>();
  /** Every message not yet acked, termed or given up: queued, held by a consumer or waiting out a nak. */
  #stored = new Set<StoredMessage>();

  constructor(private readonly options: WorkQueueOptions) {}

  publish(subject: string, id: string, data: Uint8Array): StoredPublish {
    const now = Date.now();
    // Ids are kept in the order they expire (insertion order, one window), so expiry stops at the first
    // live one: a scan of every id per publish made a busy dev stack's publishes grow with its traffic.
    for (const [seenId, expiresAt] of this.#seen) {
      if (expiresAt > now) break;
      this.#seen.delete(seenId);
    }
    if (this.#seen.has(id)) return { duplicate: true, withdraw: () => {} };
    this.#seen.set(id, now + this.options.dedupeWindowMs);
    const message: StoredMessage = { subject, data, deliveries: 0, holder: undefined, timer: undefined };
    this.#stored.add(message);
    this.#offer(message, "back");
    return { duplicate: false, withdraw: () => this.#remove(message) };
  }

  /** Drops a message wherever it is: waiting, held (its holder's ack or term then does nothing) or naked. */
  #remove(message: StoredMessage): void {
    if (!this.#stored.delete(message)) return;
    clearTimeout(message.timer);
    message.timer = undefined;
    message.holder = undefined;
    const waiting = this.#ready.indexOf(message);
    if (waiting >= 0) this.#ready.splice(waiting, 1);
  }

  /** Messages not yet acked whose subject passes `matches`. */
  backlog(matches: (subject: string) => boolean): number {
    let count = 0;
    for (const message of this.#stored) if (matches(message.subject)) count++;
    return count;
  }

  /** The distinct subjects of the messages not yet acked that pass `matches`. */
  subjects(matches: (subject: string) => boolean): string[] {
    return [...new Set([...this.#stored].map((message) => message.subject).filter(matches))];
  }

  /**
   * A consumer of the subjects `accepts` takes. A waiting message whose subject is `urgent` goes out before
   * the others it accepts (a priority lane); each kind in queue order.
   */
  consumer(
    accepts: (subject: string) => boolean,
    urgent: (subject: string) => boolean = () => false,
  ): QueueConsumer {
    const pending = new Set<Waiter>();
    let closed = false;
    return {
      next: () => {
        if (closed) return Promise.resolve(null);
        let index = this.#ready.findIndex((m) => accepts(m.subject) && urgent(m.subject));
        if (index < 0) index = this.#ready.findIndex((m) => accepts(m.subject));
        if (index >= 0) {
          const [message] = this.#ready.splice(index, 1);
          return Promise.resolve(this.#deliver(message!));
        }
        return new Promise((resolve) => {
          const waiter: Waiter = {
            accepts,
            resolve: (delivery) => {
              pending.delete(waiter);
              resolve(delivery);
            },
          };
          pending.add(waiter);
          this.#waiters.push(waiter);
        });
      },
      close: () => {
        closed = true;
        this.#waiters = this.#waiters.filter((w) => !pending.has(w));
        for (const waiter of pending) waiter.resolve(null);
      },
    };
  }

  /** Hands a message to the first waiting consumer that accepts it, else queues it. */
  #offer(message: StoredMessage, end: "front" | "back"): void {
    const index = this.#waiters.findIndex((w) => w.accepts(message.subject));
    if (index >= 0) {
      const [waiter] = this.#waiters.splice(index, 1);
      waiter!.resolve(this.#deliver(message));
    } else if (end === "front") {
      this.#ready.unshift(message);
    } else {
      this.#ready.push(message);
    }
  }

  #deliver(message: StoredMessage): QueueDelivery {
    message.deliveries++;
    const delivery = message.deliveries;
    message.holder = delivery;
    const current = () => message.holder === delivery;
    const release = (afterMs: number | undefined) => {
      clearTimeout(message.timer);
      message.holder = undefined;
      message.timer = undefined;
      if (afterMs === undefined) return;
      message.timer = setTimeout(() => this.#redeliver(message), afterMs);
      message.timer.unref();
    };
    const armAckWait = () => {
      clearTimeout(message.timer);
      message.timer = setTimeout(() => {
        message.holder = undefined;
        this.#redeliver(message);
      }, this.options.ackWaitMs);
      message.timer.unref();
    };
    armAckWait();
    return {
      subject: message.subject,
      data: message.data,
      deliveryCount: delivery,
      ack: () => {
        if (!current()) return;
        release(undefined);
        this.#stored.delete(message);
      },
      term: () => {
        if (!current()) return;
        release(undefined);
        this.#stored.delete(message);
      },
      working: () => {
        if (current()) armAckWait();
      },
      nak: (delayMs = 0) => {
        if (current()) release(Math.max(0, delayMs));
      },
    };
  }

  #redeliver(message: StoredMessage): void {
    message.timer = undefined;
    if (message.deliveries >= this.options.maxDeliver) {
      this.#stored.delete(message);
      return;
    }
    this.#offer(message, "front");
  }
}
