// Parses PEFT adapters in a worker thread. loadPeftAdapter reads, converts, checks and hashes an adapter
// synchronously — tens of milliseconds for a 1B model's rank-16 adapter — which on the main thread would
// hold up the step loop just as long. The parsed matrices come back as transferred buffers (no copy).
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import type { ModelConfig } from "../engine/model-config.ts";
import { AdapterError, type LoadedAdapter } from "./peft.ts";

/** What the thread answers per request. */
export type PeftThreadReply =
  | { id: number; adapter: LoadedAdapter }
  | { id: number; error: string; invalid: boolean };

export class PeftThreadError extends Error {
  override name = "PeftThreadError";
}

export class PeftThread {
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (a: LoadedAdapter) => void; reject: (e: Error) => void }
  >();
  private readonly worker: Worker;
  private readonly ready: Promise<void>;
  private failure: Error | null = null;

  constructor(model: ModelConfig, maxRank: number) {
    const entry = fileURLToPath(new URL("./peft-thread-entry.ts", import.meta.url));
    // The entry is TypeScript: load it through tsx in the thread as well.
    this.worker = new Worker(
      `import("tsx/esm/api").then(({ register }) => { register(); return import(${JSON.stringify(entry)}); });`,
      { eval: true, workerData: { model, maxRank } },
    );
    // Idle, the thread must not keep the process alive; it is referenced while a parse is pending.
    this.worker.unref();
    this.ready = new Promise((resolve) => {
      this.worker.once("message", () => resolve());
    });
    this.ready.then(() =>
      this.worker.on("message", (reply: PeftThreadReply) => {
        const call = this.pending.get(reply.id);
        if (!call) return;
        this.settle(reply.id);
        if ("adapter" in reply) call.resolve(reply.adapter);
        else call.reject(reply.invalid ? new AdapterError(reply.error) : new PeftThreadError(reply.error));
      }),
    );
    this.worker.on("error", (error) => this.failAll(error));
    this.worker.on("exit", (code) =>
      this.failAll(new PeftThreadError(`PEFT thread exited with code ${code}`)),
    );
  }

  /** Resolves once the thread has started: benchmarks wait for it so no timing includes the start. */
  started(): Promise<void> {
    return this.ready;
  }

  /**
   * Parses the adapter folder `dir` for this thread's model. Rejects with AdapterError when the adapter
   * is invalid or unsupported, PeftThreadError when it could not be read at all.
   */
  load(dir: string, name: string): Promise<LoadedAdapter> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    if (this.pending.size === 0) this.worker.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, dir, name });
    });
  }

  async close(): Promise<void> {
    this.failure ??= new PeftThreadError("PEFT thread closed");
    await this.worker.terminate();
  }

  private settle(id: number): void {
    this.pending.delete(id);
    if (this.pending.size === 0) this.worker.unref();
  }

  private failAll(error: Error): void {
    this.failure ??= error;
    for (const call of this.pending.values()) call.reject(this.failure);
    this.pending.clear();
  }
}
