// The worker-thread side of PeftThread: parses one adapter folder per message, in order, and transfers
// the parsed matrices back.
import { parentPort, workerData } from "node:worker_threads";
import type { ModelConfig } from "../engine/model-config.ts";
import { AdapterError, type LoadedAdapter, loadPeftAdapter } from "./peft.ts";
import type { PeftThreadReply } from "./peft-thread.ts";

const port = parentPort!;
const { model, maxRank } = workerData as { model: ModelConfig; maxRank: number };

/** Each matrix's buffer once: a buffer listed twice cannot be transferred. */
function buffers(adapter: LoadedAdapter): ArrayBuffer[] {
  const set = new Set<ArrayBuffer>();
  for (const m of adapter.modules) {
    for (const array of [m.a, m.b, m.bias]) if (array?.buffer instanceof ArrayBuffer) set.add(array.buffer);
  }
  return [...set];
}

port.on("message", ({ id, dir, name }: { id: number; dir: string; name: string }) => {
  let reply: PeftThreadReply;
  let transfer: ArrayBuffer[] = [];
  try {
    const adapter = loadPeftAdapter(dir, model, { name, maxRank });
    transfer = buffers(adapter);
    reply = { id, adapter };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    reply = { id, error: message, invalid: error instanceof AdapterError };
  }
  port.postMessage(reply, transfer);
});
port.postMessage({ ready: true });
