// An alias splits its requests among its versions by the traffic weights set through the admin API: within
// ±3 % over 2,000 resolutions at 90/10; an exact version name always runs that version; weight 0 takes a
// version out of the alias's traffic and 100 against 0 gives one version all of it; with every version at 0
// the alias answers a 404 that says so. DELETE /v1/models refuses a version carrying traffic and says how to
// force it; a PATCH that is not exactly one valid change names its field, and one over the body limit is 413.
// The lookup answers a name no adapter can have without a query, and keeps a bounded number of lookups.
// An org's pin limit (set by the operator) refuses its pins past it on a base, and only its own.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdapterResolver } from "../../gateway/adapter-resolver.ts";
import { createApiKey } from "../../gateway/api-keys.ts";
import type { Principal } from "../../gateway/auth.ts";
import { parseModelId } from "../../gateway/model-id.ts";
import { setPinLimit } from "../../gateway/orgs.ts";
import { ErrorBody } from "../../schema/api.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

const DRAWS = 2000;
const caller: Principal = { keyId: "k", orgId: "acme", prefix: "lk_test", scopes: [] };
let harness: GatewayHarness;

async function patch(
  name: string,
  body: unknown,
  org = "acme",
  key = harness.keys.acmeAdmin,
): Promise<Response> {
  return harness.app.request(`/v1/adapters/${org}/${name}`, {
    method: "PATCH",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function setWeight(name: string, weight: number): Promise<void> {
  const response = await patch(name, { traffic_weight: weight });
  expect(response.status, await response.text()).toBe(200);
}

/** The OpenAI error body of a refused request, with its status. */
async function refused(response: Response): Promise<{ status: number; error: ErrorBody["error"] }> {
  return { status: response.status, error: ErrorBody.parse(await response.json()).error };
}

/** How many of DRAWS resolutions of `model` ran each version (by its org-less name). */
async function split(model: string): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < DRAWS; i++) {
    const ref = await harness.deps.adapters.resolve(harness.db, caller, parseModelId(model), model);
    const name = ref!.name.split("/")[1]!;
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}

beforeAll(async () => {
  harness = await createGatewayHarness();
  await harness.addAdapter({ name: "support-v2", alias: "support" });
  await harness.addAdapter({ name: "support-v3", alias: "support" });
});

afterAll(async () => {
  await harness?.close();
});

describe("alias traffic split", () => {
  it("splits an alias 90/10 within ±3 % over 2,000 resolutions", async () => {
    await setWeight("support-v2", 90);
    await setWeight("support-v3", 10);
    const counts = await split(`${BASE}:acme/support`);
    expect(Math.abs((counts["support-v2"] ?? 0) / DRAWS - 0.9)).toBeLessThanOrEqual(0.03);
    expect(Math.abs((counts["support-v3"] ?? 0) / DRAWS - 0.1)).toBeLessThanOrEqual(0.03);
  });

  it("runs the exact version named, whatever its weight", async () => {
    await setWeight("support-v3", 0);
    expect(await split(`${BASE}:acme/support-v3`)).toEqual({ "support-v3": DRAWS });
  });

  it("demotes a version at weight 0 and promotes one at 100", async () => {
    await setWeight("support-v2", 100);
    await setWeight("support-v3", 0);
    expect(await split(`${BASE}:acme/support`)).toEqual({ "support-v2": DRAWS });
    await setWeight("support-v2", 0);
    await setWeight("support-v3", 100);
    expect(await split(`${BASE}:acme/support`)).toEqual({ "support-v3": DRAWS });
  });
});

describe("an alias with no version taking traffic", () => {
  it("answers 404 model_not_found saying every version is at weight 0 and how to give one traffic", async () => {
    await setWeight("support-v2", 0);
    await setWeight("support-v3", 0);
    const model = `${BASE}:acme/support`;
    const response = await harness.app.request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${harness.keys.acme}`, "content-type": "application/json" },
      body: JSON.stringify({ model, messages: [{ role: "user", content: "Hi" }] }),
    });
    const { status, error } = await refused(response);
    expect(status).toBe(404);
    expect(error).toMatchObject({ type: "invalid_request_error", code: "model_not_found", param: "model" });
    expect(error.message).not.toContain("does not exist");
    expect(error.message).toContain("alias acme/support");
    expect(error.message).toContain("acme/support-v2, acme/support-v3");
    expect(error.message).toContain("traffic weight 0");
    expect(error.message).toContain("luminet adapters set-traffic acme/support-v3 --weight 100");
    // A version named exactly still runs, and an unknown name is still plainly not found.
    expect(await split(`${BASE}:acme/support-v2`)).toEqual({ "support-v2": DRAWS });
    await expect(
      harness.deps.adapters.resolve(harness.db, caller, parseModelId(`${BASE}:acme/nope`), "nope"),
    ).rejects.toMatchObject({ code: "model_not_found", message: expect.stringContaining("does not exist") });
  });
});

describe("deleting a version that carries traffic", () => {
  it("DELETE /v1/models refuses it with 409 adapter_in_use, pointing at the force only /v1/adapters has", async () => {
    await setWeight("support-v2", 50);
    const model = `${BASE}:acme/support-v2`;
    const response = await harness.app.request(`/v1/models/${encodeURIComponent(model)}?force=true`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${harness.keys.acmeAdmin}` },
    });
    const { status, error } = await refused(response);
    expect({ status, code: error.code }).toEqual({ status: 409, code: "adapter_in_use" });
    expect(error.message).toContain("set it to 0 first (luminet adapters set-traffic acme/support-v2");
    expect(error.message).toContain("luminet adapters delete acme/support-v2 --force");
    expect(error.message).toContain("DELETE /v1/adapters/acme/support-v2?force=true");
    expect(await split(model)).toEqual({ "support-v2": DRAWS });
  });
});

describe("the adapter lookup", () => {
  /** The harness's database, counting the queries made through it. */
  function countingDb() {
    const counted = { selects: 0 };
    const db = new Proxy(harness.db, {
      get(target, property, receiver) {
        if (property === "select") counted.selects++;
        return Reflect.get(target, property, receiver);
      },
    });
    return { db, counted };
  }

  it("answers a name no adapter can have 404 without a query, and keeps a bounded number of lookups", async () => {
    const { db, counted } = countingDb();
    const resolver = new AdapterResolver({ maxEntries: 2 });
    const resolve = (name: string) => {
      const model = `${BASE}:acme/${name}`;
      return resolver.resolve(db, caller, parseModelId(model), model);
    };
    for (const name of ["x".repeat(65), "no spaces", "-leading-dash"]) {
      await expect(resolve(name)).rejects.toMatchObject({ status: 404, code: "model_not_found" });
    }
    expect(counted.selects).toBe(0);

    await resolve("support-v2");
    await resolve("support-v2");
    expect(counted.selects).toBe(1);
    // Two more names push the oldest lookup out: the next one queries again.
    await expect(resolve("missing-1")).rejects.toMatchObject({ status: 404 });
    await expect(resolve("missing-2")).rejects.toMatchObject({ status: 404 });
    expect(counted.selects).toBe(3);
    await resolve("support-v2");
    expect(counted.selects).toBe(4);
  });
});

describe("PATCH /v1/adapters/NAME", () => {
  it("names the field of a body that is not exactly one valid change", async () => {
    const cases: [unknown, string | null, RegExp][] = [
      [{}, null, /^Give exactly one of traffic_weight \(0-100\) or pinned \(true\|false\)\.$/],
      [{ pinned: "yes" }, "pinned", /'pinned': must be true or false/],
      [{ pinned: true, traffic_weight: 5 }, null, /one change at a time: traffic_weight or pinned, not both/],
      [{ traffic_weight: 150 }, "traffic_weight", /'traffic_weight': must be an integer from 0 to 100/],
      [{ traffic_weight: "50" }, "traffic_weight", /'traffic_weight': must be an integer from 0 to 100/],
      [{ weight: 5 }, "weight", /Unknown field 'weight'\. Give exactly one of traffic_weight/],
      [[], null, /^Give exactly one of traffic_weight/],
    ];
    for (const [body, param, message] of cases) {
      const { status, error } = await refused(await patch("support-v2", body));
      expect({ body, status, type: error.type, param: error.param }).toEqual({
        body,
        status: 400,
        type: "invalid_request_error",
        param,
      });
      expect(error.message).toMatch(message);
    }
  });

  it("refuses a body over the request limit with 413, chunked or not, before reading it whole", async () => {
    const limit = harness.deps.limits.maxBodyBytes;
    const oversized = JSON.stringify({ traffic_weight: 5, padding: "x".repeat(limit) });
    const sent = (body: string | ReadableStream<Uint8Array>, extra: Record<string, string> = {}) =>
      harness.app.request("/v1/adapters/acme/support-v2", {
        method: "PATCH",
        headers: {
          authorization: `Bearer ${harness.keys.acmeAdmin}`,
          "content-type": "application/json",
          ...extra,
        },
        body,
        ...({ duplex: "half" } as object),
      });
    const whole = await refused(await sent(oversized));
    const chunked = await refused(
      await sent(new Blob([oversized]).stream(), { "transfer-encoding": "chunked" }),
    );
    for (const answer of [whole, chunked]) {
      expect(answer).toMatchObject({ status: 413, error: { type: "invalid_request_error" } });
    }
  });
});

describe("an org's pin limit", () => {
  it("refuses with 409 org_pin_limit a pin past the org's limit on a base, leaves other orgs alone, and frees the place on unpin", async () => {
    await harness.addAdapter({ name: "pin-a" });
    await harness.addAdapter({ name: "pin-b" });
    await harness.addAdapter({ name: "theirs", orgId: "other" });
    const otherAdmin = (await createApiKey(harness.db, { orgId: "other", name: "admin", scopes: ["admin"] }))
      .key;
    await setPinLimit(harness.db, "acme", 1);
    await setPinLimit(harness.db, "other", 1);
    try {
      expect((await patch("pin-a", { pinned: true })).status).toBe(200);
      const second = await refused(await patch("pin-b", { pinned: true }));
      expect(second).toMatchObject({ status: 409, error: { code: "org_pin_limit" } });
      expect(second.error.message).toContain(`may have 1 adapter pinned on the base ${BASE}`);
      // Another org's pins are its own.
      expect((await patch("theirs", { pinned: true }, "other", otherAdmin)).status).toBe(200);
      // Unpinning frees the place.
      expect((await patch("pin-a", { pinned: false })).status).toBe(200);
      expect((await patch("pin-b", { pinned: true })).status).toBe(200);
      // No limit of its own: only the base's.
      await setPinLimit(harness.db, "acme", null);
      expect((await patch("pin-a", { pinned: true })).status).toBe(200);
    } finally {
      await setPinLimit(harness.db, "acme", null);
      await setPinLimit(harness.db, "other", null);
    }
  });
});
