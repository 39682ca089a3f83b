// Builds the native CUDA backend (worker/engine/cuda/native/) into build/luminet-cuda.node with nvcc:
// each source to an object, then one shared library with the CUDA runtime linked in statically, so the
// addon needs only the NVIDIA driver and a libcublas at run time (cublas-loader.cpp opens it).
//
//   npm run build:cuda [-- --if-available] [--archs 80,90] [--emulate]
//
// nvcc: $NVCC, else nvcc on PATH, else $CUDA_HOME/bin/nvcc or /usr/local/cuda/bin/nvcc. --if-available
// exits 0 with a note where it cannot build (CI builds only where it can). --archs (or LUMINET_CUDA_ARCHS)
// picks the GPU generations: 80 = A100, 90 = H100/H200; PTX of the newest is added so later GPUs can JIT it.
// --emulate builds build/luminet-cuda-emulated.node instead: the same sources compiled by the host C++
// compiler against the CPU emulator (cpu-emulation.h), which needs only the CUDA headers.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { CUDA_ADDON_PATH, CUDA_EMULATED_ADDON_PATH } from "../worker/engine/cuda/native.ts";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const SOURCES = join(ROOT, "worker", "engine", "cuda", "native");

class BuildUnavailable extends Error {}

function works(command: string): boolean {
  try {
    execFileSync(command, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function cudaHomes(): string[] {
  return [process.env.CUDA_HOME, "/usr/local/cuda"].filter((d): d is string => Boolean(d));
}

function findNvcc(): string {
  const candidates = [process.env.NVCC, "nvcc", ...cudaHomes().map((home) => join(home, "bin", "nvcc"))];
  const nvcc = candidates.find((c): c is string => Boolean(c) && works(c!));
  if (!nvcc) throw new BuildUnavailable("nvcc not found (set NVCC or CUDA_HOME)");
  return nvcc;
}

/** The CUDA headers the emulated build compiles against (vector_types.h, driver_types.h, cuda_fp16.h). */
function findCudaHeaders(): string {
  const include = cudaHomes()
    .map((home) => join(home, "include"))
    .find((dir) => existsSync(join(dir, "cuda_fp16.h")));
  if (!include) throw new BuildUnavailable("CUDA headers not found (set CUDA_HOME)");
  return include;
}

function nodeApiIncludes(): string[] {
  const require = createRequire(import.meta.url);
  const headers = join(dirname(require.resolve("node-api-headers/package.json")), "include");
  const addonApi = dirname(require.resolve("node-addon-api/package.json"));
  return [headers, addonApi].flatMap((d) => ["-I", d]);
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

/** True when `target` is missing or older than one of `sources`. */
function stale(target: string, sources: string[]): boolean {
  if (!existsSync(target)) return true;
  const built = statSync(target).mtimeMs;
  return sources.some((s) => statSync(s).mtimeMs > built);
}

interface Toolchain {
  /** Compiles one source to an object. */
  compile(source: string, object: string): [string, string[]];
  link(objects: string[], output: string): [string, string[]];
}

function nvccToolchain(archs: string[]): Toolchain {
  const nvcc = findNvcc();
  const common = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC,-Wall", ...nodeApiIncludes()];
  const defines = ["-DNAPI_VERSION=8", "-DNODE_ADDON_API_CPP_EXCEPTIONS"];
  return {
    compile: (source, object) => [
      nvcc,
      [
        ...common,
        ...defines,
        ...(source.endsWith(".cu") ? archFlags(archs) : []),
        "-c",
        "-o",
        object,
        source,
      ],
    ],
    link: (objects, output) => [
      nvcc,
      ["-shared", "--cudart", "static", ...archFlags(archs), "-o", output, ...objects, "-ldl"],
    ],
  };
}

function emulationToolchain(): Toolchain {
  const cxx = process.env.CXX ?? "g++";
  if (!works(cxx)) throw new BuildUnavailable(`no C++ compiler (${cxx})`);
  const flags = [
    "-std=c++20",
    "-O2",
    "-fPIC",
    "-Wall",
    "-Wno-unknown-pragmas",
    // Kernels read halves through 16-byte vector loads, which nvcc allows and strict aliasing does not.
    "-fno-strict-aliasing",
    // The emulator's fibers switch stacks with _longjmp, which fortified builds refuse.
    "-U_FORTIFY_SOURCE",
    "-DLUMINET_CPU_EMULATION",
    "-DNAPI_VERSION=8",
    "-DNODE_ADDON_API_CPP_EXCEPTIONS",
    "-I",
    findCudaHeaders(),
    ...nodeApiIncludes(),
  ];
  return {
    compile: (source, object) => [cxx, [...flags, "-x", "c++", "-c", "-o", object, source]],
    link: (objects, output) => [cxx, ["-shared", "-o", output, ...objects]],
  };
}

async function build(toolchain: Toolchain, objectDir: string, output: string): Promise<void> {
  mkdirSync(objectDir, { recursive: true });
  const files = readdirSync(SOURCES).sort();
  const units = files.filter((f) => f.endsWith(".cu") || f.endsWith(".cpp"));
  const everySource = files.map((f) => join(SOURCES, f));
  const objects = units.map((unit) => join(objectDir, `${unit}.o`));
  await Promise.all(
    units.map((unit, i) => {
      if (!stale(objects[i]!, everySource)) return Promise.resolve();
      console.log(`[${i + 1}/${units.length}] compiling ${unit}`);
      return run(...toolchain.compile(join(SOURCES, unit), objects[i]!));
    }),
  );
  if (!stale(output, objects)) return;
  console.log(`linking ${output}`);
  await run(...toolchain.link(objects, output));
}

async function main(): Promise<void> {
  const options = new Command()
    .name("build-cuda")
    .description("Build the native CUDA backend")
    .option("--if-available", "exit 0 with a note where the toolchain is missing")
    .option("--archs <list>", "SM versions, comma-separated", process.env.LUMINET_CUDA_ARCHS ?? "80,90")
    .option("--emulate", "build for the CPU emulator instead of a GPU")
    .parse()
    .opts<{ ifAvailable?: boolean; archs: string; emulate?: boolean }>();
  const archs = options.archs.split(",").map((a) => a.trim());
  if (!archs.every((a) => /^\d{2,3}$/.test(a)))
    throw new Error(`--archs takes numbers like 80,90, not ${options.archs}`);
  const output = options.emulate ? CUDA_EMULATED_ADDON_PATH : CUDA_ADDON_PATH;
  try {
    const toolchain = options.emulate ? emulationToolchain() : nvccToolchain(archs);
    const objects = join(dirname(output), options.emulate ? "cuda-emulated-objects" : "cuda-objects");
    await build(toolchain, objects, output);
  } catch (error) {
    if (error instanceof BuildUnavailable && options.ifAvailable) {
      console.log(`${error.message}: ${output} not built; what needs it says so or is skipped.`);
      return;
    }
    throw error;
  }
  console.log(`built ${output}`);
}

main().catch((error: unknown) => {
  console.error(`build-cuda: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
