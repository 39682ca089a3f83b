// Builds the gateway's Cloudflare Workers script: one ES module (esbuild) holding gateway/worker.ts and,
// for each base model served, its config.json and tokenizer files as strings, so the Worker needs no file
// system and no storage binding to tokenize. A tokenizer.json is a few MB at most (Llama 3's is 9 MB),
// within a Worker's script size for a base or two; more bases would rather come from R2 at first use.
//
//   npx tsx scripts/build-worker.ts --model NAME=DIR [--model ...] [--outfile .luminet/worker/index.js]
//
// wrangler.toml's [build] runs this; wrangler then uploads the file as it is (no_bundle).
import { existsSync, readFileSync, statSync } from "node:fs";
import { builtinModules } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build, type Plugin } from "esbuild";
import { type BaseModelSource, parseBaseModelSource } from "../gateway/base-loader.ts";
import type { BundledBase } from "../gateway/worker.ts";

const WORKER_ENTRY = fileURLToPath(new URL("../gateway/worker.ts", import.meta.url));

/**
 * What the database and bus modules import only for Node (PGlite, postgres.js, NATS over TCP). The bundle
 * gets a module in their place that fails when used: the Worker takes the Neon and WebSocket paths, and
 * workerd could neither resolve them nor run their CommonJS requires of node:net.
 */
const NODE_ONLY: Record<string, string> = {
  "@electric-sql/pglite": "",
  postgres: "",
  "drizzle-orm/pglite": "",
  "drizzle-orm/postgres-js": "",
  "@nats-io/transport-node": "export function connect() { fail(); }",
};

const nodeOnlyStubs: Plugin = {
  name: "luminet-node-only",
  setup(build) {
    const filter = new RegExp(`^(${Object.keys(NODE_ONLY).join("|").replaceAll("/", "\\/")})$`);
    build.onResolve({ filter }, (args) => ({ path: args.path, namespace: "node-only" }));
    build.onLoad({ filter: /.*/, namespace: "node-only" }, (args) => {
      const exports = NODE_ONLY[args.path] ?? "";
      const message = `${args.path} is for Node only and is not in the Workers bundle`;
      const fail = `function fail() { throw new Error(${JSON.stringify(message)}); }`;
      // A module with no exports fails as it loads, so a dynamic import() of it rejects with the message.
      return { contents: exports ? `${fail}\n${exports}\n` : `${fail}\nfail();\n`, loader: "js" };
    });
  },
};

export interface WorkerBuildOptions {
  models: readonly BaseModelSource[];
  outfile: string;
  minify?: boolean;
}

/** A model folder's files the Worker needs, read as text; refuses a folder without them. */
export function bundledBase(source: BaseModelSource): BundledBase {
  const read = (file: string) => readFileSync(join(source.dir, file), "utf8");
  const optional = (file: string) => (existsSync(join(source.dir, file)) ? read(file) : undefined);
  for (const file of ["config.json", "tokenizer.json"]) {
    if (!existsSync(join(source.dir, file))) {
      throw new Error(`--model ${source.name}=${source.dir}: no ${file} in the folder`);
    }
  }
  const tokenizerConfig = optional("tokenizer_config.json");
  const generationConfig = optional("generation_config.json");
  const chatTemplate = optional("chat_template.jinja");
  return {
    name: source.name,
    config: read("config.json"),
    tokenizer: {
      tokenizerJson: read("tokenizer.json"),
      ...(tokenizerConfig === undefined ? {} : { tokenizerConfig }),
      ...(generationConfig === undefined ? {} : { generationConfig }),
      ...(chatTemplate === undefined ? {} : { chatTemplate }),
    },
  };
}

export async function buildWorker(options: WorkerBuildOptions): Promise<{ outfile: string; bytes: number }> {
  if (options.models.length === 0) throw new Error("the Worker serves no base model: pass --model NAME=DIR");
  const bases = options.models.map(bundledBase);
  await build({
    stdin: {
      contents:
        `import { createWorkerGateway } from ${JSON.stringify(WORKER_ENTRY)};\n` +
        `export default createWorkerGateway(${JSON.stringify(bases)});\n`,
      resolveDir: process.cwd(),
      sourcefile: "worker-entry.ts",
      loader: "ts",
    },
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    // What wrangler resolves for Workers: packages' worker/browser builds, Node built-ins left to workerd's
    // nodejs_compat.
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["browser", "module", "main"],
    external: ["node:*", ...builtinModules],
    plugins: [nodeOnlyStubs],
    outfile: options.outfile,
    minify: options.minify ?? false,
    logLevel: "warning",
  });
  return { outfile: options.outfile, bytes: statSync(options.outfile).size };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const models: BaseModelSource[] = [];
  let outfile = ".luminet/worker/index.js";
  for (let i = 0; i < args.length; i++) {
    const value = args[i + 1];
    if (args[i] === "--model" && value) models.push(parseBaseModelSource(value));
    else if (args[i] === "--outfile" && value) outfile = value;
    else throw new Error(`unknown argument ${args[i]}: expected --model NAME=DIR or --outfile FILE`);
    i++;
  }
  const built = await buildWorker({ models, outfile, minify: true });
  process.stdout.write(`${built.outfile}: ${(built.bytes / 2 ** 20).toFixed(1)} MiB\n`);
}
