// Parses PEFT adapters in a worker thread. loadPeftAdapter reads, converts, checks and hashes an adapter
// synchronously — tens of milliseconds for a 1B model's rank-16 adapter — which on the main thread would
// hold up the step loop just as long. The parsed matrices come back in shared memory (no copy).
import type { Worker } from "node:worker_threads";
import { typeScriptWorker } from "../../core/typescript-worker.ts";
import type { ModelConfig } from "../engine/model-config.ts";
import { AdapterError, type LoadedAdapter } from "./peft.ts";

/** What the thread answers per request. */
export type PeftThreadReply =
  | { id: number; adapter: LoadedAdapter }
  | { id: number; error: string; invalid: boolean };

export class PeftThreadError extends Error {
  override name = "PeftThreadError";
}

interface Call {
  resolve: (adapter: LoadedAdapter) => void;
  reject: (error: Error) => void;
}

export class PeftThread {
  private nextId = 1;
  private readonly pending = new Map<number, Call>();
  /** The running thread; null after it died, until the next load starts a fresh one. */
  private current: { worker: Worker; ready: Promise<void> } | null = null;
  private closed = false;

  constructor(
    private readonly model: ModelConfig,
    private readonly maxRank: number,
  ) {
    this.current = this.spawn();
  }

  /** Resolves once the thread runs; rejects when it cannot start. */
  started(): Promise<void> {
    this.current ??= this.spawn();
    return this.current.ready;
  }

  /**
   * Parses the adapter folder `dir` for this thread's model. Rejects with AdapterError when the adapter
   * is invalid or unsupported, PeftThreadError when it could not be read or the thread died.
   */
  async load(dir: string, name: string): Promise<LoadedAdapter> {
    if (this.closed) throw new PeftThreadError("PEFT thread closed");
    this.current ??= this.spawn();
    const { worker, ready } = this.current;
    await ready;
    const id = this.nextId++;
    if (this.pending.size === 0) worker.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, dir, name });
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const current = this.current;
    this.current = null;
    this.rejectAll(new PeftThreadError("PEFT thread closed"));
    await current?.worker.terminate();
  }

  private spawn(): { worker: Worker; ready: Promise<void> } {
    const worker = typeScriptWorker(new URL("./peft-thread-entry.ts", import.meta.url), {
      workerData: { model: this.model, maxRank: this.maxRank },
    });
    // Idle, the thread must not keep the process alive; it is referenced while a parse is pending.
    worker.unref();
    const ready = new Promise<void>((resolve, reject) => {
      worker.once("message", () => resolve());
      worker.once("error", reject);
      worker.once("exit", (code) => reject(new PeftThreadError(`PEFT thread exited with code ${code}`)));
    });
    // Whoever awaits `ready` sees a failed start; nobody else has to.
    ready.catch(() => {});
    worker.on("message", (reply: PeftThreadReply | { ready: true }) => {
      if (!("id" in reply)) return;
      const call = this.pending.get(reply.id);
      if (!call) return;
      this.pending.delete(reply.id);
      if (this.pending.size === 0) worker.unref();
      if ("adapter" in reply) call.resolve(reply.adapter);
      else call.reject(reply.invalid ? new AdapterError(reply.error) : new PeftThreadError(reply.error));
    });
    worker.on("error", (error) => this.lost(worker, error));
    worker.on("exit", (code) =>
      this.lost(worker, new PeftThreadError(`PEFT thread exited with code ${code}`)),
    );
    return { worker, ready };
  }

  /** A thread died: its parses fail, and the next load starts a fresh thread rather than failing too. */
  private lost(worker: Worker, error: Error): void {
    if (this.current?.worker !== worker) return;
    this.current = null;
    this.rejectAll(error);
  }

  private rejectAll(error: Error): void {
    for (const call of this.pending.values()) call.reject(error);
    this.pending.clear();
  }
}
