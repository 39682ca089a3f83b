// `luminet files` against a gateway served over HTTP (PGlite, the in-process bus): list a page or every
// page with the bytes they hold, get one, save its content, delete it (gone from the list and its bytes
// freed); another org's file is a 404, as the API answers; a bad --limit exits 1 naming the flag.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerFiles } from "../../cli/commands/files.ts";
import { type ServedApp, serveApp } from "../../gateway/node.ts";
import type { FileObject, ListPage } from "../../schema/batch-api.ts";
import { createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { type CommandRun, luminetInProcess } from "../support/luminet-command.ts";

let h: GatewayHarness;
let served: ServedApp;
let root: string;
const uploaded: FileObject[] = [];
let theirs: FileObject;

async function upload(key: string, name: string, text: string): Promise<FileObject> {
  const form = new FormData();
  form.append("purpose", "batch");
  form.append("file", new Blob([text]), name);
  const res = await fetch(`${served.url}/v1/files`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}` },
    body: form,
  });
  expect(res.status).toBe(200);
  return (await res.json()) as FileObject;
}

beforeAll(async () => {
  h = await createGatewayHarness();
  served = await serveApp(h.app, 0, "127.0.0.1");
  root = mkdtempSync(join(tmpdir(), "luminet-files-cli-"));
  const line = (n: number) =>
    `${JSON.stringify({ custom_id: `c${n}`, method: "POST", url: "/v1/chat/completions", body: {} })}\n`;
  for (const n of [1, 2, 3]) uploaded.push(await upload(h.keys.acme, `in-${n}.jsonl`, line(n).repeat(n)));
  theirs = await upload(h.keys.other, "theirs.jsonl", line(9));
});
afterAll(async () => {
  await served.close();
  await h.close();
  rmSync(root, { recursive: true, force: true });
});

function luminet(args: string[], key = h.keys.acme): Promise<CommandRun> {
  return luminetInProcess(registerFiles, ["files", ...args, "--gateway", served.url], {
    LUMINET_API_KEY: key,
    LUMINET_GATEWAY: "",
  });
}

describe("luminet files", () => {
  it("lists a page, or every page, of the org's own files with the bytes they hold", async () => {
    const page = await luminet(["list", "--limit", "2", "--json"]);
    expect(page.code, page.stderr).toBe(0);
    const first = JSON.parse(page.stdout) as ListPage<FileObject>;
    expect(first.data.map((f) => f.id)).toEqual([uploaded[2]!.id, uploaded[1]!.id]);
    expect(first.has_more).toBe(true);

    const all = await luminet(["list", "--limit", "2", "--all", "--json"]);
    const every = JSON.parse(all.stdout) as ListPage<FileObject>;
    expect(every.data.map((f) => f.id)).toEqual([...uploaded].reverse().map((f) => f.id));
    expect(every.has_more).toBe(false);

    const table = await luminet(["list", "--all"]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout.split("\n")[0]).toMatch(/^ID\s+FILENAME\s+BYTES\s+PURPOSE\s+CREATED\s+EXPIRES$/);
    for (const file of uploaded) expect(table.stdout).toContain(file.id);
    expect(table.stdout).not.toContain(theirs.id);
    const bytes = uploaded.reduce((sum, f) => sum + f.bytes, 0);
    expect(table.stderr).toContain(`3 file(s), ${bytes} B`);
  });

  it("gets one, saves its content, and deletes it, freeing its bytes", async () => {
    const [file] = uploaded;
    const got = await luminet(["get", file!.id, "--json"]);
    expect(JSON.parse(got.stdout)).toMatchObject({ id: file!.id, filename: "in-1.jsonl" });
    const saved = join(root, "saved.jsonl");
    const content = await luminet(["content", file!.id, "--output", saved]);
    expect(content.code, content.stderr).toBe(0);
    expect(readFileSync(saved, "utf8")).toContain('"custom_id":"c1"');

    const deleted = await luminet(["delete", file!.id]);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(deleted.stdout).toBe(`deleted ${file!.id}\n`);
    const left = JSON.parse((await luminet(["list", "--all", "--json"])).stdout) as ListPage<FileObject>;
    expect(left.data.map((f) => f.id)).not.toContain(file!.id);
    const storage = await fetch(`${served.url}/v1/storage`, {
      headers: { authorization: `Bearer ${h.keys.acme}` },
    });
    const held = ((await storage.json()) as { files: { bytes: number } }).files.bytes;
    expect(held).toBe(uploaded[1]!.bytes + uploaded[2]!.bytes);
  });

  it("refuses another org's file as the API does, and a bad --limit naming the flag", async () => {
    for (const command of ["get", "content", "delete"]) {
      const run = await luminet([command, theirs.id]);
      expect(run.code, command).toBe(1);
      expect(run.stderr).toContain(`luminet files ${command}:`);
      expect(run.stderr).toContain("No such File object");
    }
    const bad = await luminet(["list", "--limit", "abc"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('--limit must be an integer from 1 to 100, got "abc"');
    const unwritable = await luminet([
      "content",
      uploaded[2]!.id,
      "--output",
      join(root, "no", "such", "dir"),
    ]);
    expect(unwritable.code).toBe(1);
    expect(unwritable.stderr).toContain(`--output ${join(root, "no", "such", "dir")}: ENOENT`);
  });
});
