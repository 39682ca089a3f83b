// The monthly token quota end to end with the real worker and meter (`luminet dev`'s stack: PGlite, the
// in-process bus, the tiny model on the CPU): of 8 parallel requests only those whose prompt + max_tokens
// fit are admitted, and once the meter has billed them the dashboard's quota card shows exactly the
// tokens their responses reported as used and nothing still held.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { migrate } from "../../db/migrate.ts";
import { openDb } from "../../db/open.ts";
import { ensureOrg } from "../../gateway/api-keys.ts";
import { DEV_ORG, type DevStack, startDevStack } from "../../gateway/dev-stack.ts";
import { setMonthlyTokenQuota } from "../../meter/token-quota.ts";
import type { Completion, ErrorBody } from "../../schema/api.ts";

const MAX_TOKENS = 8;
const PARALLEL = 8;
const FITS = 3;
/** Token ids: exactly 3 prompt tokens, so each request reserves 3 + max_tokens. */
const PROMPT = [5, 6, 7];
const RESERVES = PROMPT.length + MAX_TOKENS;
/** Room for 3 reservations and most of a 4th. */
const QUOTA = FITS * RESERVES + RESERVES - 1;

describe("the monthly quota with a real worker", () => {
  const home = mkdtempSync(join(tmpdir(), "luminet-quota-"));
  let stack: DevStack;

  beforeAll(async () => {
    // The stack's own database, prepared before it opens it: PGlite allows one process at a time.
    const db = await openDb(`pglite:${join(home, "db")}`);
    await migrate(db);
    await ensureOrg(db, DEV_ORG, "Demo");
    await setMonthlyTokenQuota(db, DEV_ORG, QUOTA);
    await db.close();
    stack = await startDevStack({ home, port: 0, hostname: "127.0.0.1" });
  });

  afterAll(async () => {
    await stack?.close();
    rmSync(home, { recursive: true, force: true });
  });

  function complete(): Promise<Response> {
    return fetch(`${stack.url}/v1/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: stack.models[0],
        prompt: PROMPT,
        max_tokens: MAX_TOKENS,
        temperature: 0,
      }),
    });
  }

  it("admits what fits and settles to the tokens the responses reported", async () => {
    const responses = await Promise.all(Array.from({ length: PARALLEL }, () => complete()));
    const bodies = await Promise.all(responses.map((r) => r.json() as Promise<Completion | ErrorBody>));
    const admitted = bodies.filter((_, i) => responses[i]!.status === 200) as Completion[];
    expect(admitted).toHaveLength(FITS);
    const refused = bodies.filter((_, i) => responses[i]!.status === 429) as ErrorBody[];
    expect(refused).toHaveLength(PARALLEL - FITS);
    expect(refused[0]!.error.code).toBe("insufficient_quota");

    const used = admitted.reduce((sum, body) => sum + body.usage!.total_tokens, 0);
    expect(admitted.every((body) => body.usage!.prompt_tokens === PROMPT.length)).toBe(true);
    const signIn = await fetch(`${stack.url}/dashboard/login`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: stack.url },
      body: new URLSearchParams({ api_key: stack.apiKey }).toString(),
      redirect: "manual",
    });
    const cookie = (signIn.headers.get("set-cookie") ?? "").split(";")[0]!;
    await vi.waitFor(
      async () => {
        const html = await (await fetch(`${stack.url}/dashboard`, { headers: { cookie } })).text();
        expect(html).toContain(`data-remaining="${QUOTA - used}"`);
        expect(html).toContain(" 0 held by requests in flight");
      },
      { timeout: 20_000, interval: 200 },
    );
  });
});
