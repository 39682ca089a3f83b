// How a worker acts on adapter control events, with its tiers replaced by a record of the calls: a create
// is a head start for new adapters only, not for every adapter a late-starting worker sees replayed.
import { describe, expect, it } from "vitest";
import type { AdapterRef } from "../../schema/wire.ts";
import { AdapterControls, type ControlTargets, NEW_ADAPTER_MS } from "../../worker/control.ts";
import { sampleControl } from "../contract/wire-samples.ts";

function recordingTargets() {
  const staged: string[] = [];
  const targets: ControlTargets = {
    pin: async () => {},
    unpin: () => {},
    remove: async () => {},
    prefetch: () => {},
    stageNew: (ref: AdapterRef) => {
      staged.push(ref.name);
    },
    warm: () => [],
    failAdapter: () => {},
  };
  return { targets, staged };
}

describe("AdapterControls", () => {
  it("stages a newly created adapter, but not one created before the window a replay brings back", async () => {
    const { targets, staged } = recordingTargets();
    const controls = new AdapterControls(targets);
    const create = (adapter: string, ageMs: number) =>
      sampleControl({ kind: "create", pinned: false, adapter, at: Date.now() - ageMs });
    controls.apply(create("acme/new", 5));
    controls.apply(create("acme/old", NEW_ADAPTER_MS + 1000));
    controls.apply(sampleControl({ kind: "update", pinned: false, adapter: "acme/updated" }));
    await controls.settled();
    expect(staged).toEqual(["acme/new"]);
  });
});
