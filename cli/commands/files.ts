// `luminet files ...`: the org's files through the gateway's Files API (/v1/files) with an API key of the
// org — batch inputs and the output and error files batches write — so an org nearing its file storage
// (`--max-org-file-storage`) can see what holds it and delete what it no longer needs. Tables for people,
// the API's JSON with --json.
import { writeFileSync } from "node:fs";
import type { Command } from "commander";
import { humanBytes } from "../../core/human-bytes.ts";
import type { FileObject, ListPage } from "../../schema/batch-api.ts";
import { count } from "../flags.ts";
import { callGateway, callGatewayText, type GatewayFlags, gatewayOptions } from "../gateway-client.ts";
import { CliError, runCommand } from "../run-command.ts";
import { instantCell, table } from "../table.ts";

interface FileFlags extends GatewayFlags {
  json?: boolean;
}

interface ListFlags extends FileFlags {
  limit: string;
  after?: string;
  all?: boolean;
}

const run = (command: string, action: () => Promise<void>) => runCommand(`files ${command}`, action);

const when = (seconds: number | null) => (seconds === null ? "never" : instantCell(seconds));

function rows(files: readonly FileObject[]): string {
  return `${table(
    ["ID", "FILENAME", "BYTES", "PURPOSE", "CREATED", "EXPIRES"],
    files.map((f) => [
      f.id,
      f.filename,
      humanBytes(f.bytes),
      f.purpose,
      when(f.created_at),
      when(f.expires_at),
    ]),
  )}\n`;
}

const fileUrl = (id: string) => `/v1/files/${encodeURIComponent(id)}`;

/** A page of the org's files, newest first; with --all every page, followed by `after`. */
async function list(flags: ListFlags): Promise<void> {
  // The API's own bounds, checked here so the refusal names the flag.
  const limit = count("--limit", flags.limit, 1, 100);
  const files: FileObject[] = [];
  let after = flags.after;
  let page: ListPage<FileObject>;
  do {
    const query = new URLSearchParams({ limit: String(limit), ...(after ? { after } : {}) });
    page = (await callGateway(flags, "GET", `/v1/files?${query}`)) as ListPage<FileObject>;
    files.push(...page.data);
    after = page.last_id ?? undefined;
  } while (flags.all && page.has_more);
  if (flags.json) {
    const listed = flags.all ? { ...page, data: files, first_id: files[0]?.id ?? null } : page;
    process.stdout.write(`${JSON.stringify(listed)}\n`);
    return;
  }
  process.stdout.write(rows(files));
  const total = files.reduce((sum, f) => sum + f.bytes, 0);
  const more = page.has_more ? `; more after ${page.last_id} (--after, or --all)` : "";
  process.stderr.write(`${files.length} file(s), ${humanBytes(total)}${more}\n`);
}

export function registerFiles(program: Command): void {
  const files = program
    .command("files")
    .description("the org's files (batch inputs, outputs and errors), through the gateway");
  const withConnection = (command: Command) =>
    gatewayOptions(command, "an API key of the org").option("--json", "print the API's JSON");

  withConnection(
    files
      .command("list")
      .description("the org's files, newest first, and the bytes they hold")
      .option("--limit <n>", "how many a page, 1 to 100", "20")
      .option("--after <id>", "the page after this file")
      .option("--all", "every page"),
  ).action((flags: ListFlags) => run("list", () => list(flags)));

  withConnection(files.command("get <id>").description("one file's details")).action(
    (id: string, flags: FileFlags) =>
      run("get", async () => {
        const file = (await callGateway(flags, "GET", fileUrl(id))) as FileObject;
        process.stdout.write(flags.json ? `${JSON.stringify(file)}\n` : rows([file]));
      }),
  );

  gatewayOptions(
    files
      .command("content <id>")
      .description("a file's content, to stdout or --output")
      .option("--output <path>", "write it to this file instead"),
    "an API key of the org",
  ).action((id: string, flags: GatewayFlags & { output?: string }) =>
    run("content", async () => {
      const text = await callGatewayText(flags, "GET", `${fileUrl(id)}/content`);
      if (flags.output === undefined) {
        process.stdout.write(text);
        return;
      }
      try {
        writeFileSync(flags.output, text);
      } catch (error) {
        throw new CliError(`--output ${flags.output}: ${(error as Error).message}`);
      }
      process.stderr.write(`wrote ${flags.output} (${humanBytes(Buffer.byteLength(text))})\n`);
    }),
  );

  withConnection(
    files.command("delete <id>").description("delete a file; its bytes are freed at once"),
  ).action((id: string, flags: FileFlags) =>
    run("delete", async () => {
      const deleted = await callGateway(flags, "DELETE", fileUrl(id));
      process.stdout.write(flags.json ? `${JSON.stringify(deleted)}\n` : `deleted ${id}\n`);
    }),
  );
}
