// An alias splits its requests among its versions by the traffic weights set through the admin API: within
// ±3 % over 2,000 resolutions at 90/10; an exact version name always runs that version; weight 0 takes a
// version out of the alias's traffic and 100 against 0 gives one version all of it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Principal } from "../../gateway/auth.ts";
import { parseModelId } from "../../gateway/model-id.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

const DRAWS = 2000;
const caller: Principal = { keyId: "k", orgId: "acme", prefix: "lk_test", scopes: [] };
let harness: GatewayHarness;

async function setWeight(name: string, weight: number): Promise<void> {
  const response = await harness.app.request(`/v1/adapters/acme/${name}`, {
    method: "PATCH",
    headers: { authorization: `Bearer ${harness.keys.acmeAdmin}`, "content-type": "application/json" },
    body: JSON.stringify({ traffic_weight: weight }),
  });
  expect(response.status, await response.text()).toBe(200);
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
