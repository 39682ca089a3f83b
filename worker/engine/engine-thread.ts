// Hosts an Engine in a worker thread: onnxruntime-node's session.run is a synchronous native call that
// would block the event loop for a whole step. The main thread calls the same methods through messages;
// logits come back as transferred buffers, adapters go over as structured clones.
import type { Worker } from "node:worker_threads";
import { typeScriptWorker } from "../../core/typescript-worker.ts";
import type { LoadedAdapter } from "../adapters/peft.ts";
import type { CudaEngineOptions } from "./cuda/cuda-engine.ts";
import type { DecodeChoice, DecodeRow } from "./decode-row.ts";
import type { PrefillPrompt } from "./engine.ts";
import type { ModelConfig } from "./model-config.ts";
import type { PrefixCacheStats } from "./prefix-cache.ts";

/** What the thread answers: the call's result or its error message. */
/** What the thread tells of its engine once it is up: the engine's fixed properties (ServingEngine). */
export interface EngineTraits {
  model: ModelConfig;
  padsPrefills: boolean;
  prefixReadyAfterPrefill: boolean;
  /** The engine parks sequences (ServingEngine.park). */
  parksSequences: boolean;
}

export type ThreadReply = { id: number; result: unknown } | { id: number; error: string; name: string };

export class EngineThreadError extends Error {}

export class EngineThread {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /** Why the thread answers no more (it failed or exited); null while it runs. */
  private endedWith: Error | null = null;
  private closing = false;
  private tellEnded: (error: Error) => void = () => {};
  /**
   * Resolves with why the thread ended when it ends other than through close() (an uncaught error in it,
   * its exit): the engine is gone, and its owner should stop serving.
   */
  readonly ended = new Promise<Error>((resolve) => {
    this.tellEnded = resolve;
  });

  readonly model: ModelConfig;
  readonly padsPrefills: boolean;
  readonly prefixReadyAfterPrefill: boolean;
  /** ServingEngine.park and resume, present where the thread's engine has them. */
  readonly park?: (id: string) => Promise<void>;
  readonly resume?: (id: string, slot: number) => Promise<void>;

  private constructor(
    private readonly worker: Worker,
    traits: EngineTraits,
  ) {
    this.model = traits.model;
    this.padsPrefills = traits.padsPrefills;
    this.prefixReadyAfterPrefill = traits.prefixReadyAfterPrefill;
    if (traits.parksSequences) {
      this.park = (id) => this.call("park", [id]) as Promise<void>;
      this.resume = (id, slot) => this.call("resume", [id, slot]) as Promise<void>;
    }
    worker.on("message", (reply: ThreadReply) => {
      const call = this.pending.get(reply.id);
      if (!call) return;
      this.pending.delete(reply.id);
      if ("error" in reply) {
        const error = new EngineThreadError(reply.error);
        error.name = reply.name;
        call.reject(error);
      } else call.resolve(reply.result);
    });
    worker.on("error", (error) => this.failAll(error));
    worker.on("exit", (code) =>
      this.failAll(new EngineThreadError(`engine thread exited with code ${code}`)),
    );
  }

  /** Options for either engine: `createEngine` picks the CUDA one for device cuda (CudaEngineOptions). */
  static async start(options: CudaEngineOptions): Promise<EngineThread> {
    const worker = typeScriptWorker(new URL("./engine-thread-entry.ts", import.meta.url), {
      workerData: options,
    });
    const ready = new Promise<EngineTraits>((resolve, reject) => {
      worker.once("message", (m: { ready?: EngineTraits; error?: string }) =>
        m.ready
          ? resolve(m.ready)
          : reject(new EngineThreadError(m.error ?? "engine thread failed to start")),
      );
      worker.once("error", reject);
    });
    return new EngineThread(worker, await ready);
  }

  writeAdapter(slot: number, adapter: LoadedAdapter): Promise<void> {
    return this.call("writeAdapter", [slot, adapter]) as Promise<void>;
  }

  clearSlot(slot: number): Promise<void> {
    return this.call("clearSlot", [slot]) as Promise<void>;
  }

  warmUp(): Promise<void> {
    return this.call("warmUp", []) as Promise<void>;
  }

  prefill(id: string, tokens: readonly number[], slot: number): Promise<Float32Array[]> {
    return this.call("prefill", [id, tokens, slot]) as Promise<Float32Array[]>;
  }

  prefillTogether(prompts: readonly PrefillPrompt[]): Promise<Float32Array[]> {
    return this.call("prefillTogether", [prompts]) as Promise<Float32Array[]>;
  }

  decode(tokens: ReadonlyMap<string, number>): Promise<Map<string, Float32Array>> {
    return this.call("decode", [tokens]) as Promise<Map<string, Float32Array>>;
  }

  decodePicking(
    tokens: ReadonlyMap<string, number>,
    choices: ReadonlyMap<string, DecodeChoice>,
  ): Promise<Map<string, DecodeRow>> {
    return this.call("decodePicking", [tokens, choices]) as Promise<Map<string, DecodeRow>>;
  }

  logitsOf(id: string): Promise<Float32Array> {
    return this.call("logitsOf", [id]) as Promise<Float32Array>;
  }

  release(id: string): Promise<void> {
    return this.call("release", [id]) as Promise<void>;
  }

  cachedPrefixLength(prompt: Pick<PrefillPrompt, "tokens" | "slot" | "prefixScope">): Promise<number> {
    return this.call("cachedPrefixLength", [prompt]) as Promise<number>;
  }

  reusedPromptTokens(ids: readonly string[]): Promise<number[]> {
    return this.call("reusedPromptTokens", [ids]) as Promise<number[]>;
  }

  prefixCacheStats(): Promise<PrefixCacheStats | null> {
    return this.call("prefixCacheStats", []) as Promise<PrefixCacheStats | null>;
  }

  async close(): Promise<void> {
    this.closing = true;
    // A thread that already ended has nothing to close.
    if (!this.endedWith) await this.call("close", []);
    await this.worker.terminate();
  }

  private call(method: string, args: unknown[]): Promise<unknown> {
    // A thread that ended answers nothing more: its calls fail at once instead of waiting for good.
    if (this.endedWith) return Promise.reject(this.endedWith);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, method, args });
    });
  }

  private failAll(error: Error): void {
    if (!this.endedWith && !this.closing) this.tellEnded(error);
    this.endedWith ??= error;
    for (const call of this.pending.values()) call.reject(error);
    this.pending.clear();
  }
}
