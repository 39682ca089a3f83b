// A `luminet <command>` child process (through bin/luminet.mjs): its JSON log lines collected, ready once
// one of them says so, stopped with SIGTERM (gateways close, workers and meters drain) and SIGKILL if it
// has not exited within 10 s, or killed outright (SIGKILL, a crash). Benchmarks and tests start real
// processes with it.
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const CLI = fileURLToPath(new URL("../bin/luminet.mjs", import.meta.url));

export interface LuminetProcessOptions {
  /** The command line after `luminet`, e.g. ["worker", "--model", dir, ...]. */
  args: readonly string[];
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  /** The folder it runs in; this process's by default. */
  cwd?: string;
  /** True for the log line that says the process serves. */
  ready: (entry: Record<string, unknown>) => boolean;
}

export interface LuminetProcess {
  readonly pid: number;
  /** Every JSON line it logged so far. */
  readonly logs: Record<string, unknown>[];
  /** The log line that made it ready. */
  readonly readyEntry: Record<string, unknown>;
  /** Its exit code once it exited (null when a signal ended it). */
  readonly exited: Promise<number | null>;
  /** What it wrote to stderr so far (banners, progress, uncaught errors). */
  stderr(): string;
  /** Sends a signal and returns at once (SIGTERM: a worker starts draining). */
  signal(signal: NodeJS.Signals): void;
  stop(): Promise<void>;
  /** SIGKILL, like a crash: nothing drains or flushes. Resolves once it exited. */
  kill(): Promise<void>;
}

export function startLuminetProcess(options: LuminetProcessOptions): Promise<LuminetProcess> {
  const child: ChildProcess = spawn(process.execPath, [CLI, ...options.args], {
    env: { ...process.env, ...options.env },
    ...(options.cwd ? { cwd: options.cwd } : {}),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = "";
  child.stderr?.on("data", (data: Buffer) => {
    stderr += data.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const running = () => child.exitCode === null && child.signalCode === null;
  const stop = async () => {
    if (running()) {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(killer);
    }
  };
  const kill = async () => {
    if (running()) child.kill("SIGKILL");
    await exited;
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
        if (options.ready(entry)) {
          resolve({
            pid: child.pid!,
            logs,
            readyEntry: entry,
            exited,
            stderr: () => stderr,
            signal: (signal) => child.kill(signal),
            stop,
            kill,
          });
        }
      }
    });
    void exited.then((code) => {
      const logged = logs.map((entry) => JSON.stringify(entry)).join("\n");
      reject(
        new Error(`luminet ${options.args[0]} exited with ${code} before it was ready:\n${stderr}${logged}`),
      );
    });
  });
}
