// How a long-running command (dev, gateway, worker, meter) runs and ends: a failure is a structured log
// line (its consumers read logs, not a terminal) and exit code 1; at SIGTERM or SIGINT it logs what it is
// doing, runs its own shutdown (drain, close) and resolves; a failed shutdown is logged and exits 1.
import { logger } from "../core/logger.ts";
import { CliError } from "./run-command.ts";

/** Resolves once a signal came and `shutdown` has finished; `what` names the step in the logs. */
export function stopOnSignal(what: string, shutdown: () => Promise<void>): Promise<void> {
  return new Promise<void>((done) => {
    let stopping = false;
    // Handlers stay for the whole shutdown: a second signal (a supervisor's repeated SIGTERM, a second
    // Ctrl-C) must not fall back to Node's default and kill a drain half way. SIGKILL still ends it.
    const stop = (signal: string) => {
      if (stopping) {
        logger.warn({ signal }, `${what}: already under way, letting it finish`);
        return;
      }
      stopping = true;
      logger.info({ signal }, what);
      shutdown().then(done, (error: Error) => {
        logger.error({ err: error }, `${what} failed`);
        process.exitCode = 1;
        done();
      });
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
  });
}

/**
 * A service command's action: runs it, and logs a failure as an error line with exit code 1; bad flags or
 * settings (CliError) as their message alone, since a stack would only bury what to fix.
 */
export function serviceAction<F>(run: (flags: F) => Promise<void>): (flags: F) => Promise<void> {
  return async (flags) => {
    try {
      await run(flags);
    } catch (error) {
      if (error instanceof CliError) logger.error(error.message);
      else logger.error({ err: error }, error instanceof Error ? error.message : String(error));
      process.exitCode = 1;
    }
  };
}
