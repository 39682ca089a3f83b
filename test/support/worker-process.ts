// A real `luminet worker` process on the real NATS for gateway tests: started on a model folder under one
// namespace, ready once it logs "worker ready", stopped with SIGTERM (it drains) or SIGKILL at the end.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const CLI = fileURLToPath(new URL("../../bin/luminet.mjs", import.meta.url));

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

export function startWorkerProcess(options: WorkerProcessOptions): Promise<WorkerProcess> {
  const scratch = mkdtempSync(join(tmpdir(), "luminet-worker-process-"));
  const child: ChildProcess = spawn(
    process.execPath,
    [
      CLI,
      "worker",
      ...["--model", options.modelDir, "--base", options.base, "--worker-id", options.workerId],
      ...[
        "--namespace",
        options.namespace,
        "--threads",
        "1",
        "--max-context",
        String(options.maxContext ?? 256),
      ],
      ...["--slots", "2", "--max-adapters-per-batch", "2", "--max-rank", "4"],
      ...["--blobs", options.blobs ?? join(scratch, "blobs"), "--disk-cache", join(scratch, "cache")],
    ],
    {
      env: { ...process.env, NATS_URL: options.natsUrl, LOG_LEVEL: "info" },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const logs: Record<string, unknown>[] = [];
  let stderr = "";
  child.stderr?.on("data", (data: Buffer) => {
    stderr += data.toString();
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(killer);
    }
    rmSync(scratch, { recursive: true, force: true });
  };
  return new Promise((resolve, reject) => {
    let buffered = "";
    child.stdout?.on("data", (data: Buffer) => {
      buffered += data.toString();
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      for (const line of lines) {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry.msg === "worker ready") resolve({ workerId: options.workerId, logs, stop });
      }
    });
    void exited.then(() => {
      rmSync(scratch, { recursive: true, force: true });
      const logged = logs.map((entry) => JSON.stringify(entry)).join("\n");
      reject(new Error(`luminet worker ${options.workerId} exited before it was ready:\n${stderr}${logged}`));
    });
  });
}
