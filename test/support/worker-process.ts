// A real `luminet worker` process on the real NATS for gateway tests: started on a model folder under one
// namespace, ready once it logs "worker ready", stopped with SIGTERM (it drains) or SIGKILL at the end.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startLuminetProcess } from "../../scripts/luminet-process.ts";

export interface WorkerProcessOptions {
  natsUrl: string;
  namespace: string;
  modelDir: string;
  base: string;
  workerId: string;
  maxContext?: number;
  /** Its --blobs folder; default a fresh folder of its own. */
  blobs?: string;
}

export interface WorkerProcess {
  readonly workerId: string;
  /** Every JSON line it logged so far. */
  readonly logs: Record<string, unknown>[];
  /** SIGTERM, then SIGKILL if it has not exited within 10 s; removes its cache folder. */
  stop(): Promise<void>;
}

export async function startWorkerProcess(options: WorkerProcessOptions): Promise<WorkerProcess> {
  const scratch = mkdtempSync(join(tmpdir(), "luminet-worker-process-"));
  try {
    const worker = await startLuminetProcess({
      args: [
        "worker",
        ...["--model", options.modelDir, "--base", options.base, "--worker-id", options.workerId],
        ...["--namespace", options.namespace, "--threads", "1"],
        ...["--max-context", String(options.maxContext ?? 256)],
        ...["--slots", "2", "--max-adapters-per-batch", "2", "--max-rank", "4"],
        ...["--blobs", options.blobs ?? join(scratch, "blobs"), "--disk-cache", join(scratch, "cache")],
        ...["--usage-spool", join(scratch, "usage-spool")],
      ],
      env: { NATS_URL: options.natsUrl, LOG_LEVEL: "info" },
      ready: (entry) => entry.msg === "worker ready",
    });
    return {
      workerId: options.workerId,
      logs: worker.logs,
      stop: async () => {
        await worker.stop();
        rmSync(scratch, { recursive: true, force: true });
      },
    };
  } catch (error) {
    rmSync(scratch, { recursive: true, force: true });
    throw error;
  }
}
