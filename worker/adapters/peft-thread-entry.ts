// The worker-thread side of PeftThread: parses one adapter folder per message, in order. The parsed
// matrices are SharedArrayBuffers, so the reply carries them without a copy; after each reply the thread
// makes the next adapter's shared memory ready (prefaulted-memory.ts).
import { parentPort, workerData } from "node:worker_threads";
import type { ModelConfig } from "../engine/model-config.ts";
import { AdapterError, loadPeftAdapter } from "./peft.ts";
import type { PeftThreadReply } from "./peft-thread.ts";
import { PrefaultedMemory } from "./prefaulted-memory.ts";

const port = parentPort!;
const { model, maxRank } = workerData as { model: ModelConfig; maxRank: number };
const memory = new PrefaultedMemory();

port.on("message", ({ id, dir, name }: { id: number; dir: string; name: string }) => {
  let reply: PeftThreadReply;
  try {
    reply = { id, adapter: loadPeftAdapter(dir, model, { name, maxRank, memory: memory.take }) };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    reply = { id, error: message, invalid: error instanceof AdapterError };
  }
  port.postMessage(reply);
  memory.prepare();
});
port.postMessage({ ready: true });
