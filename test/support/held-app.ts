// An app for a batch runner whose requests wait until released: a test holds a line (or a background
// response's run) after the runner claimed it and marked it running, changes something, then lets it run.
import type { BatchRunnerOptions } from "../../gateway/batch-runner.ts";

export function heldApp(app: BatchRunnerOptions["app"]): {
  app: BatchRunnerOptions["app"];
  release: () => void;
} {
  let release = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  return {
    app: {
      fetch: async (request, env) => {
        await gate;
        return app.fetch(request, env);
      },
    },
    release,
  };
}
