// A process's reply inboxes on NATS behind one wildcard subscription. Each inbox's subject is
// `<prefix>.<n>` under a prefix unique to this connection, and its claims arrive on `<prefix>.<n>.claim`;
// one subscription to `<prefix>.>`, made (and flushed to the server) once, routes both by subject. So
// opening or closing an inbox sends nothing to the server: no SUB, no UNSUB and no PING round trip per
// request, which is what per-request subscriptions cost a gateway (a third of its socket writes, and a
// round trip before every request could be published).
import { createInbox, type Msg, type NatsConnection, type Subscription } from "@nats-io/nats-core";
import { ClaimAnswer, decode, encode, inboxOfClaimSubject, Reply, ReplyClaim } from "../schema/wire.ts";
import { type InboxWiring, NOBODY_WAITS, type ReplyInboxQueue } from "./reply-inbox.ts";

export class JetStreamInboxMux {
  readonly #prefix = createInbox();
  readonly #routes = new Map<string, ReplyInboxQueue>();
  #next = 0;
  #listening: Promise<Subscription> | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly onError: (error: unknown) => void,
  ) {}

  /** The wiring of one inbox (ReplyInboxQueue.open): its subjects are routed here until it closes. */
  wiring(): InboxWiring {
    const subjects: string[] = [];
    return {
      newSubject: () => `${this.#prefix}.${++this.#next}`,
      listen: async (inbox, subject) => {
        await this.#listen();
        subjects.push(subject);
        this.#routes.set(subject, inbox);
      },
      unlisten: () => {
        for (const subject of subjects.splice(0)) this.#routes.delete(subject);
      },
    };
  }

  /** Subscribes on first use; a failed attempt is retried by the next inbox. */
  #listen(): Promise<Subscription> {
    this.#listening ??= (async () => {
      const subscription = this.nc.subscribe(`${this.#prefix}.>`, {
        callback: (error, msg) => (error ? this.onError(error) : this.#route(msg)),
      });
      await this.nc.flush();
      return subscription;
    })().catch((error: unknown) => {
      this.#listening = undefined;
      throw error;
    });
    return this.#listening;
  }

  #route(msg: Msg): void {
    try {
      const subject = inboxOfClaimSubject(msg.subject);
      if (subject !== null) {
        const claim = decode(ReplyClaim, msg.data);
        const inbox = this.#routes.get(subject);
        // A closed inbox's claim is refused at once, as "no responders" refused it before: the worker
        // drops the request instead of waiting out its claim timeout.
        msg.respond(encode(ClaimAnswer, inbox ? inbox.answer(claim, subject) : NOBODY_WAITS));
      } else {
        this.#routes.get(msg.subject)?.push(decode(Reply, msg.data), msg.subject);
      }
    } catch (error) {
      this.onError(error);
    }
  }
}
