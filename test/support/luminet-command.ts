// One `luminet` command run to its end for CLI tests, its exit code and output captured: as a child process
// (the real binary, without blocking this process, which may serve the gateway it talks to), or in this
// process with the same commander registration, still over real HTTP and a real database. A process per
// command costs seconds of TypeScript loading on a busy machine, so most tests run in process.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Command, CommanderError } from "commander";

const CLI = fileURLToPath(new URL("../../bin/luminet.mjs", import.meta.url));

export interface CommandRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Variables to set for the run; undefined removes one. */
export type EnvChanges = Record<string, string | undefined>;

export function spawnLuminet(args: readonly string[], env: EnvChanges = {}): Promise<CommandRun> {
  const childEnv = { ...process.env };
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) delete childEnv[name];
    else childEnv[name] = value;
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: childEnv,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * The command in this process: `register` adds it to a fresh program; stdout, stderr and the exit code are
 * captured and the environment changed for the call only.
 */
export async function luminetInProcess(
  register: (program: Command) => void,
  args: readonly string[],
  env: EnvChanges = {},
): Promise<CommandRun> {
  const program = new Command("luminet").exitOverride();
  register(program);
  const out = { stdout: "", stderr: "" };
  const writes = { stdout: process.stdout.write, stderr: process.stderr.write };
  const saved = Object.fromEntries(Object.keys(env).map((name) => [name, process.env[name]]));
  const apply = (changes: EnvChanges) => {
    for (const [name, value] of Object.entries(changes)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
  process.exitCode = undefined;
  apply(env);
  process.stdout.write = ((chunk: string) => {
    out.stdout += chunk;
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string) => {
    out.stderr += chunk;
    return true;
  }) as typeof process.stderr.write;
  try {
    await program.parseAsync([...args], { from: "user" });
  } catch (error) {
    // Refused arguments: commander has written its message to stderr; the binary exits with its code.
    if (!(error instanceof CommanderError)) throw error;
    process.exitCode = error.exitCode;
  } finally {
    process.stdout.write = writes.stdout;
    process.stderr.write = writes.stderr;
    apply(saved);
  }
  const code = process.exitCode ?? 0;
  process.exitCode = undefined;
  return { code: Number(code), ...out };
}
