// Drill: kill -9 a worker mid-batch, with streams on several adapters running on it and another worker live.
// Expected (docs/OPERATIONS.md, "Failure drills"): once the dead worker's heartbeat expires, the survivor
// adopts its queue and takes the redelivered requests; a stream that had tokens out is refused a second run
// and ends with an in-band 502 `worker_lost` error, and the gateway bills the tokens it delivered, once.
// Requests the dead worker had not started, and requests routed to it after it died, are served in full.
// When the killed worker was the base's only one, nobody takes its requests over: the gateway ends a stream
// that had tokens out once its worker has been silent for 10 s and out of the live set, and the
// replacement, under a new id, drops those requests.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { rendezvous } from "../../../core/rendezvous.ts";
import { expectBilledAsTold } from "../../support/drill-billing.ts";
import { type ChatOutcome, startStreams } from "../../support/drill-client.ts";
import { DRILL_BASE, DRILL_ORG, type DrillStack, startDrillStack } from "../../support/drill-stack.ts";
import { postgresBinaries } from "../../support/private-postgres.ts";

const bin = postgresBinaries();
/** Long enough to be running when the worker dies. */
const LONG = 900;

describe("drill: a worker killed mid-batch", () => {
  if (!bin) {
    it.skip("needs PostgreSQL's server binaries (apt-get install postgresql)", () => {});
    return;
  }
  let stack: DrillStack;
  /** Every request of the file's drills: the billing check covers the org's every row. */
  const sent: ChatOutcome[] = [];

  beforeAll(async () => {
    stack = await startDrillStack(bin, { adapters: 8 });
    await Promise.all([stack.startWorker("a"), stack.startWorker("b")]);
    await stack.liveWorkers(2);
  }, 120_000);

  afterAll(async () => {
    await stack?.close();
  });

  it("ends its started streams with worker_lost, bills them once, and serves the rest elsewhere", async () => {
    // A cold adapter goes to its rendezvous worker: the victim is the worker most adapters land on.
    const live = await stack.bus.liveHeartbeats(DRILL_BASE);
    const landingOn = (id: string) =>
      stack.adapterNames.flatMap((name, i) => (rendezvous(name, live)?.worker_id === id ? [i] : []));
    const [victim, survivor] = landingOn("a").length >= landingOn("b").length ? ["a", "b"] : ["b", "a"];
    const [onVictim, onSurvivor] = [landingOn(victim!), landingOn(survivor!)];
    expect(onVictim.length).toBeGreaterThanOrEqual(3);
    expect(onSurvivor.length).toBeGreaterThanOrEqual(1);
    // Warm them on the victim first: a burst of cold adapters spreads by load (what the gateway sent a
    // worker since its heartbeat counts), while requests for resident ones stay where the adapter is.
    for (const i of onVictim.slice(0, 3)) {
      sent.push(await stack.send({ model: stack.adapterModel(i), maxTokens: 1, stream: false }));
    }
    const names = onVictim.slice(0, 3).map((i) => stack.adapterNames[i]!);
    await vi.waitFor(
      async () => {
        const beat = (await stack.bus.liveHeartbeats(DRILL_BASE)).find((b) => b.worker_id === victim);
        expect(names.every((name) => beat?.adapters.slot.includes(name))).toBe(true);
      },
      { timeout: 10_000, interval: 100 },
    );

    const victimStreams = startStreams(
      stack.send,
      onVictim.slice(0, 3).map((i) => ({ model: stack.adapterModel(i), maxTokens: LONG })),
    );
    const victimWhole = stack.send({
      model: stack.adapterModel(onVictim[0]!),
      maxTokens: LONG,
      stream: false,
    });
    const survivorStream = stack.send({ model: stack.adapterModel(onSurvivor[0]!), maxTokens: 40 });
    await victimStreams.streaming;
    await stack.workers.get(victim!)!.process.kill();
    // Its heartbeat is still live for a few seconds: these go to its queue, and on to the survivor.
    const afterKill = onVictim
      .slice(0, 2)
      .map((i) => stack.send({ model: stack.adapterModel(i), maxTokens: 20 }));

    const lost = await Promise.all(victimStreams.outcomes);
    for (const outcome of lost) {
      expect(outcome.contentChunks).toBeGreaterThan(0);
      expect(outcome.error).toMatchObject({ code: "worker_lost", type: "server_error" });
    }
    // Not streamed, so it may not have started when the worker died: then it is served elsewhere.
    const whole = await victimWhole;
    if (whole.error) expect(whole).toMatchObject({ status: 502, error: { code: "worker_lost" } });
    else expect(whole.usage?.completion_tokens).toBe(LONG);
    const served = await Promise.all([survivorStream, ...afterKill]);
    for (const outcome of served) expect(outcome.usage?.completion_tokens).toBe(outcome.maxTokens);

    sent.push(...lost, whole, ...served);
    await expectBilledAsTold(stack.db, DRILL_ORG, sent);
  });

  it("ends the streams of the base's only worker, killed, with no replacement to take them over; the replacement drops them", async () => {
    await stack.liveWorkers(1);
    const [beat] = await stack.bus.liveHeartbeats(DRILL_BASE);
    const only = stack.workers.get(beat!.worker_id);
    const streams = startStreams(
      stack.send,
      [0, 1, 2].map((i) => ({ model: stack.adapterModel(i), maxTokens: LONG })),
    );
    await streams.streaming;
    await only!.process.kill();
    // No other worker will claim them: the gateway sees their worker silent and out of the live set.
    const lost = await Promise.all(streams.outcomes);
    for (const outcome of lost) {
      expect(outcome.contentChunks).toBeGreaterThan(0);
      expect(outcome.error).toMatchObject({ code: "worker_lost", type: "server_error" });
    }
    // The replacement starts under another id and adopts the dead worker's queue: nobody waits for those
    // requests any more, so it drops them, unbilled.
    await stack.liveWorkers(0);
    await stack.startWorker("replacement");
    const after = await stack.send({ model: stack.adapterModel(0), maxTokens: 10 });
    expect(after.usage?.completion_tokens).toBe(10);
    sent.push(...lost, after);
    await expectBilledAsTold(stack.db, DRILL_ORG, sent);
  });
});
