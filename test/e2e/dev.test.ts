// `luminet dev`: one process with gateway, worker and meter on PGlite and the in-process bus. First start
// generates the model and demo adapters; the printed key works with the openai client; the meter bills
// each request once; SIGTERM exits 0; a second start reuses everything, and with --adapter-sources creates
// an adapter from a registered URL.
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, describe, expect, it } from "vitest";
import { openDb } from "../../db/open.ts";
import { adapters, usageEvents } from "../../schema/db.ts";
import { type LuminetProcess, startLuminetProcess } from "../../scripts/luminet-process.ts";
import { ADAPTER_FILES } from "../../worker/adapters/blob-store.ts";
import { loadTokenizer } from "../../worker/engine/tokenizer.ts";
import { spawnLuminet } from "../support/luminet-command.ts";

const home = mkdtempSync(join(tmpdir(), "luminet-dev-"));
const KEY = `lk_devTestKey${"0".repeat(30)}`;

function startDev(...extra: string[]): Promise<LuminetProcess> {
  return startLuminetProcess({
    args: ["dev", "--data", home, "--port", "0", ...extra],
    env: { LUMINET_DEV_API_KEY: KEY, LOG_LEVEL: "info" },
    ready: (entry) => typeof entry.url === "string",
  });
}

const urlOf = (dev: LuminetProcess) => String(dev.readyEntry.url);

afterAll(() => rmSync(home, { recursive: true, force: true }));

describe("luminet dev", () => {
  it("serves the demo adapters with the printed key, bills each request, and restarts on the same data", async () => {
    const first = await startDev();
    let cachedTokens = 0;
    try {
      // The banner (stderr) follows the log line that made it ready.
      await expect.poll(() => first.stderr()).toContain(KEY);
      expect(first.stderr()).toContain("curl ");
      // How to point the CLI at it: dev's port is not the management commands' default gateway.
      expect(first.stderr()).toContain(`export LUMINET_GATEWAY=${urlOf(first)} LUMINET_API_KEY=${KEY}`);
      const client = new OpenAI({ apiKey: KEY, baseURL: `${urlOf(first)}/v1`, maxRetries: 0 });
      const ids: string[] = [];
      for await (const model of client.models.list()) ids.push(model.id);
      expect(ids).toHaveLength(9);
      const answers = await Promise.all(
        [0, 3, 7].map((i) =>
          client.chat.completions.create({
            model: `tiny:demo/adapter-${i}`,
            messages: [{ role: "user", content: "Hello!" }],
            max_tokens: 6,
          }),
        ),
      );
      for (const a of answers) expect(a.usage?.completion_tokens).toBeGreaterThan(0);
      // vLLM's ignore_eos: with the end-of-text token forced (logit_bias) an answer ends at its first token,
      // unless ignore_eos is set: then it runs to max_tokens.
      const [eos] = loadTokenizer(join(home, "model")).eosTokenIds;
      const forced = {
        model: "tiny",
        messages: [{ role: "user" as const, content: "Hello!" }],
        max_tokens: 5,
        logit_bias: { [String(eos)]: 100 },
      };
      const stopped = await client.chat.completions.create(forced);
      expect(stopped.choices[0]?.finish_reason).toBe("stop");
      expect(stopped.usage?.completion_tokens).toBe(1);
      const ignored = await client.chat.completions.create({
        ...forced,
        ignore_eos: true,
      } as OpenAI.ChatCompletionCreateParamsNonStreaming);
      expect(ignored.choices[0]?.finish_reason).toBe("length");
      expect(ignored.usage?.completion_tokens).toBe(5);
      const eosCached = [stopped, ignored].reduce(
        (sum, a) => sum + (a.usage?.prompt_tokens_details?.cached_tokens ?? 0),
        0,
      );
      const metrics = await (await fetch(`${urlOf(first)}/metrics`)).text();
      expect(metrics).toContain("luminet_gateway_requests_total");
      expect(metrics).toContain("luminet_tokens_generated_total");
      // Two chats with the same system prompt on one adapter: the second prefills only what differs, and
      // its usage says how many of its prompt tokens the prefix cache covered (whole 16-token blocks).
      const system = "You are the support assistant of Acme. Answer briefly, politely and in English.";
      const usages = [];
      for (const question of ["Where is my order?", "Can I change my address?"]) {
        const answer = await client.chat.completions.create({
          model: "tiny:demo/adapter-3",
          messages: [
            { role: "system", content: system },
            { role: "user", content: question },
          ],
          max_tokens: 2,
        });
        usages.push(answer.usage!);
      }
      expect(usages[0]!.prompt_tokens_details?.cached_tokens).toBe(0);
      const cached = usages[1]!.prompt_tokens_details!.cached_tokens!;
      expect(cached).toBeGreaterThan(0);
      expect(cached % 16).toBe(0);
      expect(cached).toBeLessThan(usages[1]!.prompt_tokens);
      cachedTokens = cached + eosCached;
      await expect
        .poll(async () => {
          const text = await (await fetch(`${urlOf(first)}/metrics`)).text();
          return Number(/^luminet_prefix_cache_reused_tokens_total (\d+)/m.exec(text)?.[1] ?? 0);
        })
        .toBeGreaterThan(0);
      // The meter inside dev adds its series beside the gateway's: it has billed what came so far.
      await expect
        .poll(async () => {
          const text = await (await fetch(`${urlOf(first)}/metrics`)).text();
          return Number(/^luminet_meter_events_total\{outcome="billed"\} (\d+)/m.exec(text)?.[1] ?? 0);
        })
        .toBeGreaterThan(0);
    } finally {
      first.signal("SIGTERM");
    }
    expect(await first.exited).toBe(0);

    const db = await openDb(`pglite:${join(home, "db")}`);
    try {
      // The demo adapters are registered as an upload of their folders would be: the bytes of both files,
      // and the alpha their config gives the worker.
      const demo = await db.select().from(adapters);
      expect(demo).toHaveLength(8);
      for (const a of demo) {
        const folder = join(home, "model", "adapters", a.name);
        const files = ADAPTER_FILES.map((file) => statSync(join(folder, file)).size);
        expect(a.bytes).toBe(files[0]! + files[1]!);
        expect(a.alpha).toBe(
          JSON.parse(readFileSync(join(folder, "adapter_config.json"), "utf8")).lora_alpha,
        );
      }
      const rows = await db.select().from(usageEvents);
      expect(rows).toHaveLength(7);
      expect(rows.map((r) => r.adapter ?? "(base)").sort()).toEqual([
        "(base)",
        "(base)",
        "demo/adapter-0",
        "demo/adapter-3",
        "demo/adapter-3",
        "demo/adapter-3",
        "demo/adapter-7",
      ]);
      // The billing rows keep what the prefix cache covered: the second system-prompt chat's tokens (and
      // any the second forced-eos chat reused of the first).
      expect(rows.reduce((sum, r) => sum + r.cachedInputTokens, 0)).toBe(cachedTokens);
    } finally {
      await db.close();
    }

    // An http origin with a copy of a demo adapter, registered on the second start.
    const origin = createServer((req, res) => {
      const file = ADAPTER_FILES.find((name) => req.url === `/registered/copy/${name}`);
      if (!file) return res.writeHead(404).end();
      res.writeHead(200).end(readFileSync(join(home, "model", "adapters", "adapter-1", file)));
    });
    await new Promise<void>((listening) => origin.listen(0, "127.0.0.1", listening));
    const sources = `http://127.0.0.1:${(origin.address() as AddressInfo).port}/registered/`;
    const second = await startDev("--adapter-sources", sources);
    try {
      const client = new OpenAI({ apiKey: KEY, baseURL: `${urlOf(second)}/v1`, maxRetries: 0 });
      const answer = await client.chat.completions.create({
        model: "tiny",
        messages: [{ role: "user", content: "Again" }],
        max_tokens: 3,
      });
      expect(answer.usage?.completion_tokens).toBeGreaterThan(0);
      const created = await fetch(`${urlOf(second)}/v1/adapters`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ base: "tiny", name: "from-url", source: `${sources}copy/` }),
      });
      expect(created.status).toBe(201);
      const served = await client.chat.completions.create({
        model: "tiny:demo/from-url",
        messages: [{ role: "user", content: "Hello!" }],
        max_tokens: 3,
      });
      expect(served.usage?.completion_tokens).toBeGreaterThan(0);
    } finally {
      second.signal("SIGTERM");
      origin.close();
    }
    expect(await second.exited).toBe(0);
  });
});

describe("luminet dev on a port already taken", () => {
  it("says so in one line and exits 1 before it builds anything", async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const taken = (holder.address() as AddressInfo).port;
    const empty = mkdtempSync(join(tmpdir(), "luminet-dev-taken-"));
    try {
      const run = await spawnLuminet(["dev", "--data", empty, "--port", String(taken)], {
        LUMINET_DEV_API_KEY: KEY,
      });
      expect(run.code).toBe(1);
      expect(`${run.stdout}${run.stderr}`).toContain(
        `--port ${taken}: 127.0.0.1:${taken} is already in use; pass another --port or stop what holds it`,
      );
      expect(`${run.stdout}${run.stderr}`).not.toContain("    at ");
      // Nothing was built: no model, no database.
      expect(readdirSync(empty)).toEqual([]);
    } finally {
      holder.close();
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
