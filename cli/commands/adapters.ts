// `luminet adapters ...`: an org's adapters through the gateway's admin API (/v1/adapters) over HTTP, with
// an admin-scoped key. --gateway and --api-key win over LUMINET_GATEWAY and LUMINET_API_KEY. A PEFT folder
// is uploaded as a streamed tar of its adapter_config.json and adapter_model.safetensors; a single
// .safetensors as itself, its config from --rank/--alpha/--target-modules or from the file's metadata. A
// --source URL (https://, s3://, r2://) is not read here: the gateway fetches it, if its operator registered it.
// Tables for people, --json for scripts; a refusal exits 1 with the API's message.
import { createReadStream, existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { Readable, Transform } from "node:stream";
import { SingleBar } from "cli-progress";
import type { Command } from "commander";
import { humanBytes } from "../../core/human-bytes.ts";
import { parseTrafficWeight } from "../../core/traffic-weight.ts";
import { archiveSize, archiveStream } from "../../gateway/adapter-archive.ts";
import { type AdapterList, AdapterObject } from "../../schema/adapter-api.ts";
import { ADAPTER_FILES } from "../../worker/adapters/blob-store.ts";
import { callGateway, type GatewayFlags, gatewayOptions, jsonBody } from "../gateway-client.ts";
import { CliError, runCommand } from "../run-command.ts";
import { table } from "../table.ts";

interface ConnectionFlags extends GatewayFlags {
  json?: boolean;
}

/** The path of an adapter written `org/name` or `name`. */
function adapterPath(name: string): string {
  return `/v1/adapters/${name.split("/").map(encodeURIComponent).join("/")}`;
}

function row(a: AdapterObject): string[] {
  return [
    a.id,
    a.base,
    a.alias ? `${a.org}/${a.alias}` : "-",
    a.alias ? String(a.traffic_weight) : "-",
    a.pinned ? "yes" : "no",
    String(a.rank),
    a.target_modules.join(","),
    humanBytes(a.bytes),
    a.status,
    a.resident.map((r) => `${r.worker_id}:${r.tier}`).join(",") || "-",
  ];
}

const HEADER = ["NAME", "BASE", "ALIAS", "WEIGHT", "PINNED", "RANK", "TARGETS", "SIZE", "STATUS", "RESIDENT"];

function print(flags: ConnectionFlags, adapter: unknown, summary: (a: AdapterObject) => string): void {
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(adapter)}\n`);
    return;
  }
  process.stdout.write(`${summary(AdapterObject.parse(adapter))}\n`);
}

/** Counts bytes through to a progress bar on stderr when it is a terminal. */
function progress(total: number, label: string): Transform {
  const bar = process.stderr.isTTY
    ? new SingleBar({
        format: `${label} [{bar}] {percentage}% | {value}/{total} bytes`,
        stream: process.stderr,
        hideCursor: true,
      })
    : null;
  bar?.start(total, 0);
  let sent = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      sent += chunk.length;
      bar?.update(sent);
      done(null, chunk);
    },
    flush(done) {
      bar?.stop();
      done();
    },
  });
}

interface CreateFlags extends ConnectionFlags {
  base: string;
  name: string;
  source: string;
  alias?: string;
  rank?: string;
  alpha?: string;
  targetModules?: string;
}

/** A --source the gateway fetches itself, rather than a local path this command uploads. */
const SOURCE_URL = /^(https?|s3|r2):\/\//i;

/** How many of --rank, --alpha and --target-modules were given. */
const configFlagsGiven = (flags: CreateFlags) =>
  [flags.rank, flags.alpha, flags.targetModules].filter((f) => f !== undefined).length;

/** --rank, --alpha and --target-modules, for a single .safetensors: all three or none. */
function singleFileConfig(
  flags: CreateFlags,
): { rank: number; alpha: number; targetModules: string[] } | null {
  const given = configFlagsGiven(flags);
  if (given === 0) return null;
  if (given < 3) throw new CliError("give --rank, --alpha and --target-modules together");
  const number = (flag: string, value: string) => {
    const n = Number(value);
    if (!Number.isFinite(n)) throw new CliError(`${flag}: expected a number, got ${value}`);
    return n;
  };
  return {
    rank: number("--rank", flags.rank!),
    alpha: number("--alpha", flags.alpha!),
    targetModules: flags.targetModules!.split(",").map((t) => t.trim()),
  };
}

function uploadOf(flags: CreateFlags): {
  body: Readable;
  type: string;
  length: number;
  query: URLSearchParams;
} {
  const query = new URLSearchParams({ base: flags.base, name: flags.name });
  if (flags.alias) query.set("alias", flags.alias);
  if (!existsSync(flags.source)) throw new CliError(`--source ${flags.source} does not exist`);
  if (statSync(flags.source).isDirectory()) {
    if (configFlagsGiven(flags) > 0)
      throw new CliError("--rank, --alpha and --target-modules are for a single .safetensors");
    const files = ADAPTER_FILES.map((name) => ({ name, path: join(flags.source, name) }));
    const missing = files.find((f) => !existsSync(f.path));
    if (missing)
      throw new CliError(`--source ${flags.source}: no ${missing.name} (a PEFT adapter folder has both)`);
    return { body: archiveStream(files), type: "application/x-tar", length: archiveSize(files), query };
  }
  if (!flags.source.endsWith(".safetensors")) {
    throw new CliError(`--source ${flags.source}: expected a PEFT folder or a .safetensors file`);
  }
  const config = singleFileConfig(flags);
  if (config) {
    query.set("rank", String(config.rank));
    query.set("alpha", String(config.alpha));
    query.set("target_modules", config.targetModules.join(","));
  }
  return {
    body: createReadStream(flags.source),
    type: "application/octet-stream",
    length: statSync(flags.source).size,
    query,
  };
}

/** Asks the gateway to fetch the adapter from the --source URL. */
function createFromSource(flags: CreateFlags): Promise<unknown> {
  const config = singleFileConfig(flags);
  return callGateway(
    flags,
    "POST",
    "/v1/adapters",
    jsonBody({
      base: flags.base,
      name: flags.name,
      ...(flags.alias ? { alias: flags.alias } : {}),
      source: flags.source,
      ...(config ? { rank: config.rank, alpha: config.alpha, target_modules: config.targetModules } : {}),
    }),
  );
}

function createByUpload(flags: CreateFlags): Promise<unknown> {
  const upload = uploadOf(flags);
  const stream = upload.body.pipe(progress(upload.length, `uploading ${flags.name}`));
  return callGateway(flags, "POST", `/v1/adapters?${upload.query}`, {
    body: Readable.toWeb(stream) as ReadableStream<Uint8Array>,
    headers: { "content-type": upload.type, "content-length": String(upload.length) },
  });
}

async function create(flags: CreateFlags): Promise<void> {
  const created = SOURCE_URL.test(flags.source) ? await createFromSource(flags) : await createByUpload(flags);
  print(
    flags,
    created,
    (a) =>
      `created ${a.id} on ${a.base}${a.source ? ` from ${a.source}` : ""}: rank ${a.rank}, ${a.target_modules.join(",")}, ${humanBytes(a.bytes)}, sha256 ${a.sha256}\nmodel: ${a.model}`,
  );
}

const run = (command: string, action: () => Promise<void>) => runCommand(`adapters ${command}`, action);

export function registerAdapters(program: Command): void {
  const adapters = program
    .command("adapters")
    .description("manage LoRA adapters through the gateway (LUMINET_GATEWAY, LUMINET_API_KEY)");
  const common = (cmd: Command) =>
    gatewayOptions(cmd, "an API key with the admin scope").option(
      "--json",
      "print the API's JSON instead of a table",
    );

  common(
    adapters
      .command("create")
      .description(
        "create an adapter from a PEFT folder or a single .safetensors, uploaded or fetched by the gateway from a URL",
      )
      .requiredOption("--base <base>", "the base model it was trained on")
      .requiredOption("--name <org/name>", "its name, e.g. my-org/customer-acme-v3")
      .requiredOption(
        "--source <path|url>",
        "a PEFT adapter folder or a .safetensors file, here or at a URL the gateway has registered (https://, s3://, r2://)",
      )
      .option("--alias <org/name>", "an alias whose requests its versions split by traffic weight")
      .option("--rank <r>", "LoRA rank, for a .safetensors without config metadata")
      .option("--alpha <alpha>", "LoRA alpha, for a .safetensors without config metadata")
      .option("--target-modules <list>", "e.g. q_proj,v_proj, for a .safetensors without config metadata"),
  ).action((flags: CreateFlags) => run("create", () => create(flags)));

  common(adapters.command("list").description("list the org's adapters")).action((flags: ConnectionFlags) =>
    run("list", async () => {
      const list = (await callGateway(flags, "GET", "/v1/adapters")) as AdapterList;
      if (flags.json) process.stdout.write(`${JSON.stringify(list)}\n`);
      else
        process.stdout.write(
          `${table(
            HEADER,
            list.data.map((a) => row(AdapterObject.parse(a))),
          )}\n`,
        );
    }),
  );

  common(adapters.command("get <name>").description("show one adapter")).action(
    (name: string, flags: ConnectionFlags) =>
      run("get", async () => {
        print(flags, await callGateway(flags, "GET", adapterPath(name)), (a) => table(HEADER, [row(a)]));
      }),
  );

  common(
    adapters
      .command("set-traffic <name>")
      .description("a version's share of its alias's requests: 0 takes it out, 100 gives it all")
      .requiredOption("--weight <0-100>", "traffic weight"),
  ).action((name: string, flags: ConnectionFlags & { weight: string }) =>
    run("set-traffic", async () => {
      const weight = parseTrafficWeight(flags.weight);
      if (weight === undefined) {
        throw new CliError(`--weight: expected an integer from 0 to 100, got ${flags.weight}`);
      }
      const updated = await callGateway(
        flags,
        "PATCH",
        adapterPath(name),
        jsonBody({ traffic_weight: weight }),
      );
      print(flags, updated, (a) => `${a.id}: traffic weight ${a.traffic_weight} within ${a.org}/${a.alias}`);
    }),
  );

  common(
    adapters
      .command("set-pinned <name>")
      .description("keep an adapter resident on every worker of its base (at most 16 per base)")
      .option("--off", "unpin it"),
  ).action((name: string, flags: ConnectionFlags & { off?: boolean }) =>
    run("set-pinned", async () => {
      const updated = await callGateway(
        flags,
        "PATCH",
        adapterPath(name),
        jsonBody({ pinned: flags.off !== true }),
      );
      print(flags, updated, (a) => `${a.id}: ${a.pinned ? "pinned" : "unpinned"} on ${a.base}`);
    }),
  );

  common(
    adapters
      .command("delete <name>")
      .description("delete an adapter: its requests fail at once and workers evict it")
      .option("--force", "even if it is pinned or carries part of its alias's traffic"),
  ).action((name: string, flags: ConnectionFlags & { force?: boolean }) =>
    run("delete", async () => {
      const deleted = await callGateway(
        flags,
        "DELETE",
        `${adapterPath(name)}${flags.force ? "?force=true" : ""}`,
      );
      if (flags.json) process.stdout.write(`${JSON.stringify(deleted)}\n`);
      else process.stdout.write(`deleted ${(deleted as { id: string }).id}\n`);
    }),
  );
}
