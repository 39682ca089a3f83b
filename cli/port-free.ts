// Whether a command's listening port is free, asked before it spends seconds loading models and starting
// workers: a port already taken is then one line naming the flag, not a stack trace after the setup.
import { createServer } from "node:net";
import { CliError } from "./run-command.ts";

/** Resolves when `port` on `host` can be listened on now (0, any free port, always can). */
export async function assertPortFree(host: string, port: number): Promise<void> {
  if (port === 0) return;
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "EADDRINUSE") {
        reject(
          new CliError(
            `--port ${port}: ${host}:${port} is already in use; pass another --port or stop what holds it`,
          ),
        );
      } else if (error.code === "EADDRNOTAVAIL") {
        reject(new CliError(`--host ${host}: no interface of this machine has that address`));
      } else reject(error);
    });
    probe.listen(port, host, () => probe.close(() => resolve()));
  });
}
