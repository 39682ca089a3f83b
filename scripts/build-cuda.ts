// Builds the native CUDA backend (worker/engine/cuda/native/) into build/luminet-cuda.node with nvcc:
// each source to an object, then one shared library with the CUDA runtime linked in statically, so the
// addon needs only the NVIDIA driver and a libcublas at run time (cublas-loader.cpp opens it).
//
//   npm run build:cuda [-- --if-available] [--archs 80,90]
//
// nvcc: $NVCC, else nvcc on PATH, else $CUDA_HOME/bin/nvcc or /usr/local/cuda/bin/nvcc. --if-available
// exits 0 with a note where none is found (CI builds it only where it can). --archs (or
// LUMINET_CUDA_ARCHS) picks the GPU generations: 80 = A100, 90 = H100/H200; PTX of the newest is added so
// later GPUs can JIT it.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { CUDA_ADDON_PATH as ADDON } from "../worker/engine/cuda/native.ts";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const SOURCES = join(ROOT, "worker", "engine", "cuda", "native");
const OBJECTS = join(ROOT, "build", "cuda-objects");

function findNvcc(): string | null {
  const candidates = [
    process.env.NVCC,
    "nvcc",
    process.env.CUDA_HOME && join(process.env.CUDA_HOME, "bin", "nvcc"),
    "/usr/local/cuda/bin/nvcc",
  ];
  for (const candidate of candidates) {
    if (!candidate) continue;
    try {
      execFileSync(candidate, ["--version"], { stdio: "ignore" });
      return candidate;
    } catch {
      // not this one
    }
  }
  return null;
}

function includeDirs(): string[] {
  const require = createRequire(import.meta.url);
  const headers = join(dirname(require.resolve("node-api-headers/package.json")), "include");
  const addonApi = dirname(require.resolve("node-addon-api/package.json"));
  return [headers, addonApi];
}

function archFlags(archs: string[]): string[] {
  const flags = archs.flatMap((a) => ["-gencode", `arch=compute_${a},code=sm_${a}`]);
  const newest = archs.at(-1)!;
  return [...flags, "-gencode", `arch=compute_${newest},code=compute_${newest}`];
}

function run(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "inherit", "inherit"] });
    child.on("error", reject);
    child.on("exit", (code) =>
      code === 0 ? resolve() : reject(new Error(`${command} exited with ${code} (${args.at(-1)})`)),
    );
  });
}

/** True when the addon is older than one of its sources. */
function stale(target: string, sources: string[]): boolean {
  if (!existsSync(target)) return true;
  const built = statSync(target).mtimeMs;
  return sources.some((s) => statSync(s).mtimeMs > built);
}

async function build(nvcc: string, archs: string[]): Promise<void> {
  mkdirSync(OBJECTS, { recursive: true });
  const files = readdirSync(SOURCES).sort();
  const units = files.filter((f) => f.endsWith(".cu") || f.endsWith(".cpp"));
  const everySource = files.map((f) => join(SOURCES, f));
  const common = [
    "-std=c++17",
    "-O3",
    "-Xcompiler",
    "-fPIC,-Wall",
    ...includeDirs().flatMap((d) => ["-I", d]),
    "-DNAPI_VERSION=8",
    "-DNODE_ADDON_API_CPP_EXCEPTIONS",
  ];
  const objects: string[] = [];
  const compiles: Promise<void>[] = [];
  for (const [i, unit] of units.entries()) {
    const object = join(OBJECTS, `${unit}.o`);
    objects.push(object);
    if (!stale(object, everySource)) continue;
    const device = unit.endsWith(".cu") ? archFlags(archs) : [];
    console.log(`[${i + 1}/${units.length}] nvcc ${unit}`);
    compiles.push(run(nvcc, [...common, ...device, "-c", "-o", object, join(SOURCES, unit)]));
  }
  await Promise.all(compiles);
  console.log(`linking ${ADDON}`);
  await run(nvcc, ["-shared", "--cudart", "static", ...archFlags(archs), "-o", ADDON, ...objects, "-ldl"]);
}

async function main(): Promise<void> {
  const program = new Command()
    .name("build-cuda")
    .description("Build the native CUDA backend with nvcc")
    .option("--if-available", "exit 0 with a note where nvcc is not installed")
    .option("--archs <list>", "SM versions, comma-separated", process.env.LUMINET_CUDA_ARCHS ?? "80,90")
    .parse();
  const options = program.opts<{ ifAvailable?: boolean; archs: string }>();
  const nvcc = findNvcc();
  if (!nvcc) {
    const message = "nvcc not found (set NVCC or CUDA_HOME): the CUDA backend is not built";
    if (options.ifAvailable) {
      console.log(`${message}; --device cuda will say so when asked for.`);
      return;
    }
    throw new Error(message);
  }
  const archs = options.archs.split(",").map((a) => a.trim());
  if (!archs.every((a) => /^\d{2,3}$/.test(a)))
    throw new Error(`--archs takes numbers like 80,90, not ${options.archs}`);
  await build(nvcc, archs);
  console.log(`built ${ADDON}`);
}

main().catch((error: unknown) => {
  console.error(`build-cuda: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
