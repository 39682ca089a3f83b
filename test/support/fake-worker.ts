// A scripted worker on a real bus (in-process or NATS) for gateway tests that are about the gateway, not
// the engine: it heartbeats, pulls, claims, streams a fixed reply (or hangs, or fails) and records what it
// received, how its claims were answered and which cancels reached it. It can also stall between pulling
// a request and claiming it, like a process frozen mid-pull. The end-to-end tests run the real worker.
import type { Bus, RequestPuller } from "../../bus/bus.ts";
import type { InferenceRequest, TokenLogprob, WireErrorBody, WorkerHeartbeat } from "../../schema/wire.ts";

/** The words a reply is made of; token ids are 100 + the word's index. */
export const FAKE_WORDS = ["Hello", " from", " a", " fake", " worker", "!", " More", " words", " here", "."];
/** Replies end with "stop" after this many tokens unless max_tokens cuts them shorter ("length"). */
export const FAKE_REPLY_TOKENS = 6;

/**
 * reply: the fixed words; say: these pieces, a token each (ending "stop", or "length" where max_tokens cuts
 * them); hang: nothing until cancelled; partial: some chunks, then nothing until cancelled; error: `after`
 * chunks (default none), then a failed Final.
 */
export type FakeBehaviour =
  | "reply"
  | { say: readonly string[] }
  | "hang"
  | { partial: number }
  | { error: WireErrorBody; after?: number };

export interface FakeWorkerOptions {
  base: string;
  workerId?: string;
  heartbeat?: Partial<Pick<WorkerHeartbeat, "adapters" | "pins" | "free_slots" | "queue_depth" | "running">>;
  behaviour?: (request: InferenceRequest) => FakeBehaviour;
  /** Pull requests but claim none until releaseClaims(). */
  stallClaims?: boolean;
  /** Pull the base's shared queue too; default true. */
  shared?: boolean;
}

export function fakeReplyText(maxTokens: number): string {
  return FAKE_WORDS.slice(0, Math.min(maxTokens, FAKE_REPLY_TOKENS)).join("");
}

function logprobsFor(index: number, top: number, words: readonly string[]): TokenLogprob {
  const token = words[index]!;
  const entry = (t: string, logprob: number) => ({
    token: t,
    bytes: [...new TextEncoder().encode(t)],
    logprob,
  });
  return {
    ...entry(token, -0.25),
    token_id: 100 + index,
    top: Array.from({ length: top }, (_, k) => entry(words[(index + k) % words.length]!, -0.25 - k)),
  };
}

export class FakeWorker {
  readonly received: InferenceRequest[] = [];
  readonly cancels: string[] = [];
  /** How the gateway answered each claim, in order: the request, the copy's reply subject, granted. */
  readonly claims: { requestId: string; reply: string; granted: boolean }[] = [];
  behaviour: (request: InferenceRequest) => FakeBehaviour;
  readonly #cancelWaiters = new Map<string, () => void>();
  readonly #pullWaiters: (() => void)[] = [];
  #running = true;
  #stalled: Promise<void> = Promise.resolve();
  #release: () => void = () => {};

  private constructor(
    private readonly bus: Bus,
    private readonly puller: RequestPuller,
    private readonly heartbeat: WorkerHeartbeat,
    private readonly closeCancels: () => Promise<void>,
    behaviour: FakeWorkerOptions["behaviour"],
  ) {
    this.behaviour = behaviour ?? (() => "reply");
  }

  /** From now on, requests pulled are claimed only after releaseClaims(). */
  stallClaims(): void {
    this.#stalled = new Promise((resolve) => {
      this.#release = resolve;
    });
  }

  /** Lets stalled claims go to the gateway, and later ones go at once. */
  releaseClaims(): void {
    this.#release();
  }

  /** Puts the heartbeat again, for tests that outlast the heartbeat TTL. */
  beat(): Promise<void> {
    return this.bus.putHeartbeat({ ...this.heartbeat, at: Date.now() });
  }

  /** Resolves once this worker has pulled `count` requests in all. */
  async pulled(count: number): Promise<void> {
    while (this.received.length < count)
      await new Promise<void>((resolve) => this.#pullWaiters.push(resolve));
  }

  static async start(bus: Bus, options: FakeWorkerOptions): Promise<FakeWorker> {
    const workerId = options.workerId ?? "fake-1";
    const beat: WorkerHeartbeat = {
      v: 1,
      worker_id: workerId,
      base: options.base,
      version: "test",
      adapters: { slot: [], ram: [], disk: [] },
      pins: [],
      free_slots: 8,
      queue_depth: 0,
      running: 0,
      tokens_per_s: 0,
      at: Date.now(),
      ...options.heartbeat,
    };
    let worker: FakeWorker | undefined;
    const cancels = await bus.onCancel(options.base, (cancel) => worker?.onCancel(cancel.request_id));
    const puller = await bus.pullRequests({ base: options.base, workerId, shared: options.shared ?? true });
    worker = new FakeWorker(bus, puller, beat, () => cancels.close(), options.behaviour);
    if (options.stallClaims) worker.stallClaims();
    await bus.putHeartbeat(beat);
    void worker.loop();
    return worker;
  }

  get workerId(): string {
    return this.heartbeat.worker_id;
  }

  /** Resolves once a cancel for this request id has reached the worker. */
  cancelled(requestId: string): Promise<void> {
    if (this.cancels.includes(requestId)) return Promise.resolve();
    return new Promise((resolve) => this.#cancelWaiters.set(requestId, resolve));
  }

  private onCancel(requestId: string): void {
    this.cancels.push(requestId);
    this.#cancelWaiters.get(requestId)?.();
  }

  private async loop(): Promise<void> {
    while (this.#running) {
      const delivery = await this.puller.next();
      if (!delivery) return;
      const request = delivery.message;
      this.received.push(request);
      for (const wake of this.#pullWaiters.splice(0)) wake();
      void this.serve(request).finally(() => delivery.ack());
    }
  }

  private async serve(request: InferenceRequest): Promise<void> {
    await this.#stalled;
    const granted = await this.bus.claimReply(request.reply, {
      v: 1,
      request_id: request.id,
      worker_id: this.workerId,
    });
    this.claims.push({ requestId: request.id, reply: request.reply, granted });
    if (!granted) return;
    const behaviour = this.behaviour(request);
    const prompt = request.prompt_token_ids.length;
    if (behaviour === "hang" || (typeof behaviour === "object" && "partial" in behaviour)) {
      const chunks = behaviour === "hang" ? 0 : behaviour.partial;
      for (let i = 0; i < chunks; i++) this.#chunk(request, i);
      await this.cancelled(request.id);
      this.bus.publishReply(request.reply, {
        v: 1,
        type: "final",
        request_id: request.id,
        seq: chunks,
        finish_reason: "cancelled",
        usage: { prompt_tokens: prompt, completion_tokens: chunks },
      });
      return;
    }
    if (typeof behaviour === "object" && "error" in behaviour) {
      const chunks = behaviour.after ?? 0;
      for (let i = 0; i < chunks; i++) this.#chunk(request, i);
      this.bus.publishReply(request.reply, {
        v: 1,
        type: "final",
        request_id: request.id,
        seq: chunks,
        finish_reason: "error",
        usage: { prompt_tokens: prompt, completion_tokens: chunks },
        error: behaviour.error,
      });
      return;
    }
    const words = typeof behaviour === "object" ? behaviour.say : FAKE_WORDS.slice(0, FAKE_REPLY_TOKENS);
    const n = Math.min(request.sampling.max_tokens, words.length);
    for (let i = 0; i < n; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      this.#chunk(request, i, words);
    }
    this.bus.publishReply(request.reply, {
      v: 1,
      type: "final",
      request_id: request.id,
      seq: n,
      finish_reason: request.sampling.max_tokens <= words.length ? "length" : "stop",
      usage: { prompt_tokens: prompt, completion_tokens: n },
    });
  }

  #chunk(request: InferenceRequest, i: number, words: readonly string[] = FAKE_WORDS): void {
    this.bus.publishReply(request.reply, {
      v: 1,
      type: "chunk",
      request_id: request.id,
      seq: i,
      token_ids: [100 + i],
      text: words[i]!,
      ...(request.sampling.logprobs
        ? { logprobs: [logprobsFor(i, request.sampling.top_logprobs, words)] }
        : {}),
    });
  }

  async stop(): Promise<void> {
    this.#running = false;
    await this.puller.close();
    await this.closeCancels();
  }
}
