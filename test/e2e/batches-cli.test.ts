// `luminet batches` against a gateway served over HTTP (PGlite, the in-process bus, a scripted worker) with
// a batch runner on it: create --wait uploads the file, follows the batch and saves both files, all three
// kept for --keep-hours; list, get,
// results and cancel as a user types them; a bad file and a cancel of an ended batch exit 1 with the API's
// message.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerBatches } from "../../cli/commands/batches.ts";
import { BatchRunner } from "../../gateway/batch-runner.ts";
import { type ServedApp, serveApp } from "../../gateway/node.ts";
import type { BatchObject, FileObject } from "../../schema/batch-api.ts";
import { FakeWorker, fakeReplyText } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { type CommandRun, luminetInProcess, spawnLuminet } from "../support/luminet-command.ts";

let h: GatewayHarness;
let worker: FakeWorker;
let served: ServedApp;
let runner: BatchRunner;
let root: string;

beforeAll(async () => {
  h = await createGatewayHarness();
  worker = await FakeWorker.start(h.workerBus, { base: BASE });
  served = await serveApp(h.app, 0, "127.0.0.1");
  runner = new BatchRunner({
    app: h.app,
    db: h.db,
    log: h.deps.log,
    concurrency: 2,
    leaseMs: 60_000,
    pollMs: 50,
    newId: h.deps.newRequestId,
    runnerId: "cli-test",
  });
  runner.start();
  root = mkdtempSync(join(tmpdir(), "luminet-batches-cli-"));
});
afterAll(async () => {
  await runner.stop();
  await served.close();
  await worker.stop();
  await h.close();
  rmSync(root, { recursive: true, force: true });
});

function luminet(args: string[], spawn = false): Promise<CommandRun> {
  const command = ["batches", ...args, "--gateway", served.url];
  const env = { LUMINET_API_KEY: h.keys.acme, LUMINET_GATEWAY: "" };
  return spawn ? spawnLuminet(command, env) : luminetInProcess(registerBatches, command, env);
}

/** A GET on the gateway with the org's key. */
const gatewayGet = (path: string) =>
  fetch(`${served.url}${path}`, { headers: { authorization: `Bearer ${h.keys.acme}` } });

function inputFile(name: string, lines: unknown[]): string {
  const path = join(root, name);
  writeFileSync(path, `${lines.map((line) => JSON.stringify(line)).join("\n")}\n`);
  return path;
}

const line = (customId: string, model: string, maxTokens: number) => ({
  custom_id: customId,
  method: "POST",
  url: "/v1/chat/completions",
  body: { model, messages: [{ role: "user", content: customId }], max_tokens: maxTokens },
});

describe("luminet batches", () => {
  it("create --wait uploads, follows the batch to its end and saves its output and error files", async () => {
    const file = inputFile("night.jsonl", [
      line("a", BASE, 3),
      line("b", `${BASE}:acme/none`, 2),
      line("c", BASE, 5),
    ]);
    const output = join(root, "out.jsonl");
    const errors = join(root, "err.jsonl");
    const run = await luminet(
      [
        "create",
        "--file",
        file,
        "--wait",
        "--poll-seconds",
        "0.1",
        "--output",
        output,
        "--errors",
        errors,
        "--metadata",
        "job=night",
        "--keep-hours",
        "2",
      ],
      true,
    );
    expect(run.stderr).toMatch(/uploaded file-\S+ \(\d+ bytes\); created batch_\S+/);
    // Without a terminal, progress comes as lines: the status as it changes, the last one the end.
    const progress = run.stderr.split("\n").filter((l) => / requests, /.test(l));
    expect(progress[0]).toMatch(/^batch_\S+: 0\/3 requests, (validating|in_progress)$/);
    expect(progress.at(-1)).toMatch(/^batch_\S+: 3\/3 requests, completed$/);
    // Not every line was answered: a script learns so from the exit code.
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("luminet batches create: 1 line(s) failed (see the error file)");
    expect(run.stdout).toMatch(/^batch_\S+ completed: 2 of 3 answered, 1 failed\n$/);
    const answers = readFileSync(output, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(answers.map((a) => a.custom_id)).toEqual(["a", "c"]);
    expect(answers[1].response.body.choices[0].message.content).toBe(fakeReplyText(5));
    const failed = readFileSync(errors, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(failed).toMatchObject([{ custom_id: "b", response: { status_code: 404 } }]);

    const id = run.stdout.split(" ")[0]!;
    const got = await luminet(["get", id, "--json"]);
    const batch = JSON.parse(got.stdout) as BatchObject;
    expect(batch.metadata).toEqual({ job: "night" });
    // --keep-hours 2: the input and what the batch wrote go two hours after they were made.
    for (const fileId of [batch.input_file_id, batch.output_file_id!, batch.error_file_id!]) {
      const file = (await (await gatewayGet(`/v1/files/${fileId}`)).json()) as FileObject;
      expect(file.expires_at! - file.created_at).toBe(7200);
    }
    const listed = await luminet(["list"]);
    // Its one batch under the header, the last row ended by a newline like every line; its instant to the
    // second, as every list writes one.
    expect(listed.stdout).toMatch(
      new RegExp(
        `^ID\\s+STATUS\\s+ENDPOINT\\s+ANSWERED\\s+FAILED\\s+CREATED\n${id}\\s+completed\\s+/v1/chat/completions\\s+2/3\\s+1\\s+\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ\n$`,
      ),
    );
    const again = join(root, "again.jsonl");
    const saved = await luminet([
      "results",
      id,
      "--output",
      again,
      "--errors",
      join(root, "again-err.jsonl"),
    ]);
    expect(saved.code).toBe(0);
    expect(readFileSync(again, "utf8")).toBe(readFileSync(output, "utf8"));
    const cancel = await luminet(["cancel", id]);
    expect(cancel.code).toBe(1);
    expect(cancel.stderr).toContain("Cannot cancel a batch with status completed.");
  });

  it("leaves no uploaded file behind when the batch is refused, and reports the refusal", async () => {
    const inputFiles = async () => {
      const page = (await (await gatewayGet("/v1/files?purpose=batch&limit=100")).json()) as {
        data: FileObject[];
      };
      return page.data.map((f) => f.id);
    };
    const before = await inputFiles();
    const notJson = join(root, "not-json.jsonl");
    writeFileSync(notJson, "this is not JSON\n");
    for (const [args, refusal] of [
      [["--file", inputFile("twice.jsonl", [line("a", BASE, 2), line("a", BASE, 2)])], 'custom_id "a"'],
      [
        ["--file", inputFile("url.jsonl", [{ ...line("a", BASE, 2), url: "/v1/completions" }])],
        "url /v1/completions is not the batch's endpoint",
      ],
      [["--file", notJson], "Line 1 of the input file: not valid JSON."],
      [
        ["--file", inputFile("tagged.jsonl", [line("a", BASE, 2)]), "--metadata", "job"],
        "expected KEY=VALUE",
      ],
      [
        ["--file", inputFile("chat.jsonl", [line("a", BASE, 2)]), "--endpoint", "/v1/responses"],
        "is not the batch's endpoint /v1/responses",
      ],
      [
        ["--file", inputFile("unwaited.jsonl", [line("a", BASE, 2)]), "--output", "out.jsonl"],
        "--output and --errors say where --wait saves the files",
      ],
    ] as const) {
      const run = await luminet(["create", ...args]);
      expect(run.code, run.stderr).toBe(1);
      expect(run.stderr).toContain(refusal);
    }
    expect(await inputFiles()).toEqual(before);
    for (const limit of ["abc", "0", "101"]) {
      const listed = await luminet(["list", "--limit", limit]);
      expect(listed.code).toBe(1);
      expect(listed.stderr).toContain(`--limit must be an integer from 1 to 100, got "${limit}"`);
    }
  });

  it("refuses a file with a bad line, naming it, an unknown endpoint, a missing file and a keep outside the API's bounds", async () => {
    const bad = inputFile("bad.jsonl", [line("a", BASE, 2), line("a", BASE, 2)]);
    const run = await luminet(["create", "--file", bad]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('Line 2 of the input file: custom_id "a" is used by an earlier line.');
    const endpoint = await luminet(["create", "--file", bad, "--endpoint", "/v1/embeddings"]);
    expect(endpoint.code).toBe(1);
    expect(endpoint.stderr).toContain("--endpoint /v1/embeddings: expected one of");
    const missing = await luminet(["create", "--file", join(root, "nope.jsonl")]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("--file");
    const keep = await luminet(["create", "--file", bad, "--keep-hours", "0.5"]);
    expect(keep.code).toBe(1);
    expect(keep.stderr).toContain("--keep-hours 0.5: expected hours from 1 to 720");
  });
});
