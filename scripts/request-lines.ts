// Bench load: a fixed number of requests kept in flight at one service tier through the bus, each replaced
// as soon as it ends, with a count of the tokens they stream (the benchmarks' background traffic).
import type { Bus } from "../bus/bus.ts";
import { type BenchTier, readReply, sendRequest } from "./bench-long-prompt.ts";

/** Keeps `count` requests in flight at one tier, each replaced when it ends, and counts the tokens they stream. */
export class RequestLines {
  private tokens = 0;
  private sent = 0;
  private stopping = false;
  private firstTokens = 0;
  private onFirst: (() => void) | null = null;
  private readonly running: Promise<void>[] = [];

  constructor(
    private readonly gateway: Bus,
    private readonly count: number,
    private readonly prompt: () => number[],
    /** Each request's max_tokens (a function, so lengths can vary). */
    private readonly maxTokens: () => number,
    private readonly tier: BenchTier,
  ) {
    for (let i = 0; i < count; i++) this.running.push(this.keepOne());
  }

  /** Resolves once every line of the first round has streamed a token (a full batch, when they fit one). */
  started(): Promise<void> {
    if (this.firstTokens >= this.count) return Promise.resolve();
    return new Promise((resolve) => {
      this.onFirst = resolve;
    });
  }

  /** Counts tokens from now on. */
  window(): { tokensPerSecond(): number; seconds(): number } {
    const fromTokens = this.tokens;
    const from = performance.now();
    return {
      seconds: () => (performance.now() - from) / 1000,
      tokensPerSecond: () => ((this.tokens - fromTokens) * 1000) / (performance.now() - from),
    };
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.running);
  }

  private async keepOne(): Promise<void> {
    while (!this.stopping) {
      const id = `${this.tier}-line-${this.sent++}`;
      let first = true;
      const started = () => {
        if (!first) return;
        first = false;
        if (++this.firstTokens === this.count) this.onFirst?.();
      };
      await readReply(
        await sendRequest(this.gateway, id, this.prompt(), this.maxTokens(), this.tier),
        id,
        () => {
          this.tokens++;
          started();
        },
      );
      started(); // a line that ended at once (an end-of-sequence token first) has had its turn too
    }
  }
}
