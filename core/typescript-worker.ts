// A worker thread whose entry is a TypeScript module: the thread registers tsx, as bin/luminet.mjs does for
// the main thread, then imports the entry. tsx and the tsconfig are the package's, not found from the
// working directory, so `luminet` runs from any folder (a bare "tsx" in the thread's eval'd code resolves
// from the cwd).
import { fileURLToPath } from "node:url";
import { Worker, type WorkerOptions } from "node:worker_threads";

const TSX_API = import.meta.resolve("tsx/esm/api");
const TSCONFIG = fileURLToPath(new URL("../tsconfig.json", import.meta.url));

/** Starts a thread running the TypeScript module at `entry` (a file: URL) with `options` (workerData, …). */
export function typeScriptWorker(entry: URL, options: Omit<WorkerOptions, "eval"> = {}): Worker {
  const code = `import(${JSON.stringify(TSX_API)}).then(({ register }) => { register({ tsconfig: ${JSON.stringify(TSCONFIG)} }); return import(${JSON.stringify(entry.href)}); });`;
  return new Worker(code, { ...options, eval: true });
}
