// The gateway side of one reply inbox, shared by both bus implementations so they answer claims alike:
// a queue of replies read as an async iterable, plus the rule that decides which worker (and which copy of
// the request) may stream. Each implementation supplies only the wiring to its transport.
import { type ClaimAnswer, type Reply, type ReplyClaim, WIRE_VERSION } from "../schema/wire.ts";
import type { ReplyInbox } from "./bus.ts";

/** The worker streaming a reply was lost after its tokens went out; the request must not run again. */
export class WorkerLostError extends Error {
  override readonly name = "WorkerLostError";
  constructor(
    readonly requestId: string,
    readonly lostWorkerId: string,
    /** The worker that claimed it next and was refused; null where the gateway saw the worker go silent and leave the live set. */
    readonly refusedWorkerId: string | null,
    readonly chunksReceived: number,
  ) {
    super(
      `worker ${lostWorkerId} was lost after sending ${chunksReceived} chunk(s) of request ${requestId}; ` +
        (refusedWorkerId === null
          ? "its heartbeat stopped"
          : `not restarting it on worker ${refusedWorkerId}`),
    );
  }
}

/** The answer to a claim on an inbox that is closed, or that its process no longer holds. */
export const NOBODY_WAITS: ClaimAnswer = Object.freeze({
  v: WIRE_VERSION,
  granted: false,
  reason: "nobody waits for this reply",
});

type Waiter = { resolve: (result: IteratorResult<Reply>) => void; reject: (error: Error) => void };

/** How a bus implementation connects an inbox to its transport. */
export interface InboxWiring {
  /** A fresh reply subject nobody else uses. */
  newSubject(): string;
  /**
   * Routes replies and claims sent to `subject` to `inbox.push(reply, subject)` and
   * `inbox.answer(claim, subject)`; resolves once listening. Called only while the inbox is open.
   */
  listen(inbox: ReplyInboxQueue, subject: string): Promise<void>;
  /** Called once, when the inbox closes: stop routing every subject it listened on. */
  unlisten(): void;
}

export class ReplyInboxQueue implements ReplyInbox {
  #replies: Reply[] = [];
  #waiters: Waiter[] = [];
  /** The granted claim: which worker, streaming to which copy's subject. */
  #claimant: { workerId: string; incarnation: string | undefined; subject: string } | undefined;
  #claimWaiters: ((workerId: string | null) => void)[] = [];
  #chunks = 0;
  #finished = false;
  #closed = false;
  #failure: Error | undefined;

  private constructor(
    readonly subject: string,
    private readonly wiring: InboxWiring,
  ) {}

  static async open(wiring: InboxWiring): Promise<ReplyInboxQueue> {
    const inbox = new ReplyInboxQueue(wiring.newSubject(), wiring);
    await wiring.listen(inbox, inbox.subject);
    return inbox;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get claimedSubject(): string | null {
    return this.#claimant?.subject ?? null;
  }

  claimed(): Promise<string | null> {
    if (this.#claimant) return Promise.resolve(this.#claimant.workerId);
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => this.#claimWaiters.push(resolve));
  }

  async openCopy(): Promise<string> {
    if (this.#closed) throw new Error(`reply inbox ${this.subject} is closed: no copy can be sent`);
    const subject = this.wiring.newSubject();
    await this.wiring.listen(this, subject);
    return subject;
  }

  /**
   * Takes a reply from the wire, sent to `subject`. Replies after the Final, after close, or to a copy
   * other than the granted one are dropped.
   */
  push(reply: Reply, subject: string = this.subject): void {
    if (this.#finished || this.#closed) return;
    if (this.#claimant && this.#claimant.subject !== subject) return;
    if (reply.type === "chunk") this.#chunks++;
    else this.#finished = true;
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve({ value: reply, done: false });
    else this.#replies.push(reply);
  }

  /** Answers a worker's claim sent to `subject` (this inbox's own, or a copy's). */
  answer(claim: ReplyClaim, subject: string = this.subject): ClaimAnswer {
    const refuse = (reason: string): ClaimAnswer => ({ v: WIRE_VERSION, granted: false, reason });
    if (this.#closed) return NOBODY_WAITS;
    if (this.#finished) return refuse("the reply is complete");
    const claimant = this.#claimant;
    if (claimant && claimant.subject !== subject) {
      return refuse(`another copy of the request went to worker ${claimant.workerId}`);
    }
    // The same process claims again when it resumes a request it paused; a restarted one (same worker_id,
    // new incarnation) starts from nothing, as another worker would.
    const sameProcess = claimant?.workerId === claim.worker_id && claimant.incarnation === claim.incarnation;
    if (claimant && !sameProcess && this.#chunks > 0) {
      this.fail(new WorkerLostError(claim.request_id, claimant.workerId, claim.worker_id, this.#chunks));
      return refuse(`worker ${claimant.workerId} already sent tokens`);
    }
    this.#claimant = { workerId: claim.worker_id, incarnation: claim.incarnation, subject };
    for (const resolve of this.#claimWaiters.splice(0)) resolve(claim.worker_id);
    return { v: WIRE_VERSION, granted: true };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.wiring.unlisten();
    for (const waiter of this.#waiters.splice(0)) waiter.resolve({ value: undefined, done: true });
    for (const resolve of this.#claimWaiters.splice(0)) resolve(null);
  }

  /** Ends the inbox with `error`: a waiting read and every later one reject with it. */
  fail(error: Error): void {
    if (this.#closed) return;
    this.#failure = error;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
    this.close();
  }

  [Symbol.asyncIterator](): AsyncIterator<Reply> {
    return {
      next: () => {
        const reply = this.#replies.shift();
        if (reply) return Promise.resolve({ value: reply, done: false });
        if (this.#failure) return Promise.reject(this.#failure);
        if (this.#finished || this.#closed) {
          this.close();
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
      },
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
