// A nats-server with JetStream of a test's own, on a free port and a fresh store folder, that the test may
// stop and start again on the same port and store (a restart): what JetStream stored survives, every
// client reconnects. The run-wide server of test/setup/services.ts is shared and must never be stopped.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, natsServerBinary } from "./nats-websocket.ts";

export interface PrivateNats {
  /** nats://127.0.0.1:<port> */
  readonly url: string;
  readonly port: number;
  /** Starts the server and resolves once it reports ready. */
  start(): Promise<void>;
  /** Stops the server (SIGTERM): every client connection drops at once. */
  stop(): Promise<void>;
  /** Stops the server if it runs and removes its store. */
  destroy(): Promise<void>;
}

export async function createPrivateNats(): Promise<PrivateNats> {
  const binary = natsServerBinary();
  const storeDir = mkdtempSync(join(tmpdir(), "luminet-nats-"));
  const port = await freePort();
  let child: ChildProcess | undefined;
  const server: PrivateNats = {
    url: `nats://127.0.0.1:${port}`,
    port,
    start() {
      const started = spawn(binary, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storeDir], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      child = started;
      return new Promise((resolve, reject) => {
        let log = "";
        started.stderr?.on("data", (data: Buffer) => {
          log += data.toString();
          if (log.includes("Server is ready")) resolve();
        });
        started.once("exit", (code) =>
          reject(new Error(`nats-server exited with ${code} before it was ready:\n${log}`)),
        );
      });
    },
    stop() {
      const running = child;
      child = undefined;
      if (!running || running.exitCode !== null || running.signalCode !== null) return Promise.resolve();
      return new Promise((resolve) => {
        running.once("exit", () => resolve());
        running.kill("SIGTERM");
      });
    },
    async destroy() {
      await server.stop();
      rmSync(storeDir, { recursive: true, force: true });
    },
  };
  return server;
}
