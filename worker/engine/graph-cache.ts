// The on-disk cache of built graphs. A graph lives in the folder its external data is resolved against:
// the nearest common folder of the model folder and the real paths of its weight files (the model folder
// itself, or a Hugging Face cache repo whose snapshot files link into ../../blobs), so sessions are
// created from the path with no extra options. Its name is a hash of everything the graph depends on.
import { createHash } from "node:crypto";
import { existsSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import type { WeightIndex } from "./safetensors.ts";

function commonFolder(paths: readonly string[]): string {
  let folder = paths[0]!;
  for (const p of paths) {
    while (p !== folder && !p.startsWith(folder.endsWith(sep) ? folder : folder + sep))
      folder = dirname(folder);
  }
  return folder;
}

/**
 * Path of the cached graph for `key` (any JSON value) and these weights; `build` runs only when no graph
 * with that key exists yet, with the folder its external data must be relative to. `ensureData` runs
 * every time, to recreate data files of its own that the graph references.
 */
export function cachedGraphFile(
  modelDir: string,
  weights: WeightIndex,
  key: unknown,
  build: (dataFolder: string) => Uint8Array,
  ensureData?: (dataFolder: string) => void,
): string {
  const weightsDir = realpathSync(weights.dir);
  const files = [...new Set(weights.names().map((n) => weights.info(n).relativeFile))].sort();
  const real = files.map((f) => realpathSync(join(weightsDir, f)));
  const folder = commonFolder([realpathSync(modelDir), weightsDir, ...real]);
  const fileStats = files.map((f, i) => {
    const st = statSync(real[i]!);
    return { file: relative(folder, join(weightsDir, f)), size: st.size, mtimeMs: st.mtimeMs };
  });
  const hash = createHash("sha256")
    .update(JSON.stringify({ key, weightsDir: relative(folder, weightsDir), files: fileStats }))
    .digest("hex");
  const path = join(folder, `.luminet-graph-${hash.slice(0, 24)}.onnx`);
  ensureData?.(folder);
  if (existsSync(path)) return path;
  const bytes = build(folder);
  // Written beside, then renamed: concurrent builders and crashes never leave a partial graph in place.
  const tmp = `${path}.${process.pid}.partial`;
  try {
    writeFileSync(tmp, bytes);
    renameSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
  return path;
}
