// The gateway side of one reply inbox, shared by both bus implementations so they answer claims alike:
// a queue of replies read as an async iterable, plus the rule that decides which worker may stream.
import { type ClaimAnswer, type Reply, type ReplyClaim, WIRE_VERSION } from "../schema/wire.ts";
import type { ReplyInbox } from "./bus.ts";

/** The worker streaming a reply was lost after its tokens went out; the request must not run again. */
export class WorkerLostError extends Error {
  override readonly name = "WorkerLostError";
  constructor(
    readonly requestId: string,
    readonly lostWorkerId: string,
    readonly refusedWorkerId: string,
    readonly chunksReceived: number,
  ) {
    super(
      `worker ${lostWorkerId} was lost after sending ${chunksReceived} chunk(s) of request ${requestId}; ` +
        `not restarting it on worker ${refusedWorkerId}`,
    );
  }
}

type Waiter = { resolve: (result: IteratorResult<Reply>) => void; reject: (error: Error) => void };

export class ReplyInboxQueue implements ReplyInbox {
  #replies: Reply[] = [];
  #waiters: Waiter[] = [];
  #claimant: string | undefined;
  #chunks = 0;
  #finished = false;
  #closed = false;
  #failure: Error | undefined;

  constructor(
    readonly subject: string,
    private readonly onClose: () => void,
  ) {}

  get closed(): boolean {
    return this.#closed;
  }

  /** Takes a reply from the wire. Replies after the Final, or after close, are dropped. */
  push(reply: Reply): void {
    if (this.#finished || this.#closed) return;
    if (reply.type === "chunk") this.#chunks++;
    else this.#finished = true;
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve({ value: reply, done: false });
    else this.#replies.push(reply);
  }

  answer(claim: ReplyClaim): ClaimAnswer {
    const refuse = (reason: string): ClaimAnswer => ({ v: WIRE_VERSION, granted: false, reason });
    if (this.#closed) return refuse("nobody waits for this reply");
    if (this.#finished) return refuse("the reply is complete");
    if (this.#claimant !== undefined && this.#claimant !== claim.worker_id && this.#chunks > 0) {
      this.#fail(new WorkerLostError(claim.request_id, this.#claimant, claim.worker_id, this.#chunks));
      return refuse(`worker ${this.#claimant} already sent tokens`);
    }
    this.#claimant = claim.worker_id;
    return { v: WIRE_VERSION, granted: true };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.onClose();
    for (const waiter of this.#waiters.splice(0)) waiter.resolve({ value: undefined, done: true });
  }

  #fail(error: Error): void {
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
