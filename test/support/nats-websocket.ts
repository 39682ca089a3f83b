// A nats-server of a test's own with JetStream and a WebSocket listener (what a gateway on Workers connects
// to), beside the usual TCP port for workers. The run-wide server of test/setup/services.ts has no
// WebSocket listener, and its flags cannot add one: that takes a config file.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface NatsWithWebSocket {
  /** nats://127.0.0.1:<port> */
  readonly url: string;
  /** ws://127.0.0.1:<port> */
  readonly wsUrl: string;
  stop(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject()));
    });
  });
}

async function answers(port: number, deadline: number): Promise<void> {
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = new Socket();
      socket.once("connect", () => socket.end(() => resolve(true)));
      socket.once("error", () => resolve(false));
      socket.connect(port, "127.0.0.1");
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`nats-server did not listen on port ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export function natsServerBinary(): string {
  for (const candidate of ["nats-server", "/usr/sbin/nats-server", "/usr/local/bin/nats-server"]) {
    if (spawnSync(candidate, ["--version"]).status === 0) return candidate;
  }
  throw new Error("nats-server is not installed (Debian: apt-get install nats-server)");
}

export async function startNatsWithWebSocket(): Promise<NatsWithWebSocket> {
  const binary = natsServerBinary();
  const dir = mkdtempSync(join(tmpdir(), "luminet-nats-ws-"));
  const [port, wsPort] = [await freePort(), await freePort()];
  const config = join(dir, "nats.conf");
  writeFileSync(
    config,
    [
      `listen: 127.0.0.1:${port}`,
      `jetstream { store_dir: ${JSON.stringify(join(dir, "js"))} }`,
      `websocket { host: 127.0.0.1, port: ${wsPort}, no_tls: true }`,
    ].join("\n"),
  );
  const child: ChildProcess = spawn(binary, ["-c", config], { stdio: "ignore" });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + 10_000;
    await answers(port, deadline);
    await answers(wsPort, deadline);
  } catch (error) {
    await stop();
    throw error;
  }
  return { url: `nats://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${wsPort}`, stop };
}
