// Runs a command's action and turns a failure into "luminet <command>: <message>" on stderr and exit code 1,
// the one way every command reports what went wrong.

/** A failure whose message is all a person needs: no stack, no log line. */
export class CliError extends Error {
  override name = "CliError";
}

/**
 * Reads a setting through code shared with the Workers entry, which throws a plain Error naming what is
 * wrong; here that message is all a person needs, so it becomes a CliError.
 */
export function setting<T>(read: () => T): T {
  try {
    return read();
  } catch (error) {
    throw new CliError(error instanceof Error ? error.message : String(error));
  }
}

export async function runCommand(command: string, action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (error) {
    process.stderr.write(`luminet ${command}: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}
