// A Postgres server of a test's own, for tests that stop and start the database: initdb into a temp
// folder and pg_ctl on a free port, with the socket in that folder. Nothing else uses it, so stopping it
// harms nothing. Debian keeps the binaries in /usr/lib/postgresql/<version>/bin; initdb refuses to run as
// root, so as root every command runs as the postgres user through runuser.
import { execFileSync, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface PrivatePostgres {
  /** postgres://postgres@127.0.0.1:<port>/postgres */
  readonly url: string;
  start(): void;
  /** Stops at once, like a crash: open connections break, in-flight transactions roll back. */
  stop(): void;
  /** Stops the server if it runs and removes its folder. */
  destroy(): void;
}

/**
 * The bin folder of the newest Postgres on this machine, or undefined when none is installed (or, as root,
 * when there is no postgres user to run it as).
 */
export function postgresBinaries(): string | undefined {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  if (process.getuid?.() === 0 && spawnSync("id", ["-u", "postgres"]).status !== 0) return undefined;
  const versions = readdirSync(root)
    .filter((version) => existsSync(join(root, version, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : join(root, versions[0], "bin");
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject()));
    });
  });
}

export async function createPrivatePostgres(bin: string): Promise<PrivatePostgres> {
  const root = mkdtempSync(join(tmpdir(), "luminet-pg-"));
  const dataDir = join(root, "data");
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const id = (flag: string) => Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }));
    chownSync(root, id("-u"), id("-g"));
  }
  const run = (tool: string, args: string[]) => {
    const [command, commandArgs] = asRoot
      ? ["runuser", ["-u", "postgres", "--", join(bin, tool), ...args]]
      : [join(bin, tool), args];
    execFileSync(command, commandArgs, { stdio: ["ignore", "ignore", "pipe"] });
  };
  const port = await freePort();
  run("initdb", ["-D", dataDir, "--auth=trust", "-U", "postgres", "--no-sync"]);
  const options = `-p ${port} -k ${root} -c listen_addresses=127.0.0.1 -c fsync=off`;
  let running = false;
  const server: PrivatePostgres = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start() {
      run("pg_ctl", ["-D", dataDir, "-o", options, "-w", "-l", join(root, "log"), "start"]);
      running = true;
    },
    stop() {
      run("pg_ctl", ["-D", dataDir, "-m", "immediate", "-w", "stop"]);
      running = false;
    },
    destroy() {
      if (running) server.stop();
      rmSync(root, { recursive: true, force: true });
    },
  };
  return server;
}
