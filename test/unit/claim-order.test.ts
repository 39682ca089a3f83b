// The order a batch runner takes due lines in (gateway/claim-order.ts): background responses first, then
// orgs in turns, the one served longest ago first, each org's lines oldest batch first.
import { describe, expect, it } from "vitest";
import { type ClaimTier, ClaimTurns, type DueOrg } from "../../gateway/claim-order.ts";

const at = (minute: number) => new Date(Date.UTC(2026, 0, 1, 0, minute));
const due = (orgId: string, tier: ClaimTier, minute: number): DueOrg => ({ orgId, tier, oldest: at(minute) });
/** `count` lines of an org in a tier, named org:tier:n. */
const lines = (orgId: string, tier: ClaimTier, count: number) =>
  Array.from({ length: count }, (_, n) => ({ orgId, tier, name: `${orgId}:${tier}:${n}` }));

describe("ClaimTurns", () => {
  it("puts background responses first, then one line of each org per round, oldest org first while none was served", () => {
    const turns = new ClaimTurns();
    const orgs = turns.order([
      due("big", "batch", 1),
      due("small", "batch", 5),
      due("late", "background", 9),
    ]);
    expect(orgs.map((o) => o.orgId)).toEqual(["late", "big", "small"]);
    const order = turns.interleave(orgs, [
      ...lines("big", "batch", 4),
      ...lines("small", "batch", 2),
      ...lines("late", "background", 1),
    ]);
    expect(order.map((l) => l.name)).toEqual([
      "late:background:0",
      "big:batch:0",
      "small:batch:0",
      "big:batch:1",
      "small:batch:1",
      "big:batch:2",
      "big:batch:3",
    ]);
  });

  it("serves next the orgs served longest ago, whatever their batches' age", () => {
    const turns = new ClaimTurns();
    const all = [due("a", "batch", 1), due("b", "batch", 2), due("c", "batch", 3)];
    expect(turns.order(all).map((o) => o.orgId)).toEqual(["a", "b", "c"]);
    turns.served(["a"]);
    expect(turns.order(all).map((o) => o.orgId)).toEqual(["b", "c", "a"]);
    turns.served(["c", "b"]);
    expect(turns.order(all).map((o) => o.orgId)).toEqual(["a", "c", "b"]);
    // Background still goes first, even for the org served last.
    expect(turns.order([...all, due("b", "background", 9)]).map((o) => `${o.orgId}:${o.tier}`)).toEqual([
      "b:background",
      "a:batch",
      "c:batch",
      "b:batch",
    ]);
  });

  it("keeps an org's own lines in the order given, and leaves out lines of orgs not in the order", () => {
    const turns = new ClaimTurns();
    const orgs = turns.order([due("a", "batch", 1)]);
    const given = [
      { orgId: "a", tier: "batch" as const, name: "second-batch-line-0" },
      { orgId: "a", tier: "batch" as const, name: "second-batch-line-1" },
      { orgId: "z", tier: "batch" as const, name: "not-looked-at" },
    ];
    expect(turns.interleave(orgs, given).map((l) => l.name)).toEqual([
      "second-batch-line-0",
      "second-batch-line-1",
    ]);
  });
});
