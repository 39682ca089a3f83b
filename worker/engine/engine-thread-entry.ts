// The worker-thread side of EngineThread: builds the engine for the device (create-engine.ts) and serves
// calls one at a time, in order, so a step and an adapter write never interleave.
import { parentPort, workerData } from "node:worker_threads";
import { createEngine } from "./create-engine.ts";
import type { CudaEngineOptions } from "./cuda/cuda-engine.ts";
import type { EngineTraits, ThreadReply } from "./engine-thread.ts";

const port = parentPort!;

type Method =
  | "writeAdapter"
  | "clearSlot"
  | "warmUp"
  | "prefill"
  | "prefillTogether"
  | "decode"
  | "decodePicking"
  | "logitsOf"
  | "release"
  | "prefixCacheStats"
  | "reusedPromptTokens"
  | "cachedPrefixLength"
  | "close";

function transferables(result: unknown): ArrayBuffer[] {
  const arrays = result instanceof Map ? [...result.values()] : Array.isArray(result) ? result : [];
  const buffers = new Set<ArrayBuffer>();
  for (const a of arrays)
    if (a instanceof Float32Array && a.buffer instanceof ArrayBuffer) buffers.add(a.buffer);
  return [...buffers];
}

try {
  const engine = await createEngine(workerData as CudaEngineOptions);
  const ready: EngineTraits = {
    model: engine.model,
    padsPrefills: engine.padsPrefills,
    prefixReadyAfterPrefill: engine.prefixReadyAfterPrefill,
    parksSequences: engine.park !== undefined && engine.resume !== undefined,
  };
  port.postMessage({ ready });
  let queue = Promise.resolve();
  port.on("message", (message: { id: number; method: Method; args: unknown[] }) => {
    queue = queue.then(async () => {
      let reply: ThreadReply;
      let transfer: ArrayBuffer[] = [];
      try {
        const method = engine[message.method] as (...args: unknown[]) => unknown;
        const result = await method.apply(engine, message.args);
        transfer = transferables(result);
        reply = { id: message.id, result };
      } catch (error) {
        const e = error instanceof Error ? error : new Error(String(error));
        reply = { id: message.id, error: e.message, name: e.name };
      }
      try {
        port.postMessage(reply, transfer);
      } catch (error) {
        // A result that cannot cross (a detached buffer) fails its call, not the thread: an uncaught
        // rejection here would end the thread and leave every later call waiting behind it.
        const e = error instanceof Error ? error : new Error(String(error));
        port.postMessage({ id: message.id, error: `${message.method}: ${e.message}`, name: e.name });
      }
    });
  });
} catch (error) {
  port.postMessage({ error: error instanceof Error ? error.message : String(error) });
}
