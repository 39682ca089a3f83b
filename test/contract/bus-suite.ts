// The one contract every Bus implementation meets. Each test builds a fresh, isolated bus system (its own
// broker, or its own NATS namespace) and connects as many handles as it needs: one handle per process.
import { afterEach, describe, expect, it } from "vitest";
import type { Bus, BusOptions, Delivery } from "../../bus/bus.ts";
import { WorkerLostError } from "../../bus/reply-inbox.ts";
import type { AdapterControl, Cancel, InferenceRequest, Reply, UsageEvent } from "../../schema/wire.ts";
import { ANY_WORKER, SubjectTokenError, WireFormatError } from "../../schema/wire.ts";
import {
  sampleChunk,
  sampleControl,
  sampleFinal,
  sampleHeartbeat,
  sampleRequest,
  sampleUsage,
} from "./wire-samples.ts";

/** A bus system: every handle it connects sees the same queues, inboxes and buckets. */
export interface BusSystem {
  connect(): Promise<Bus>;
}

export type MakeBusSystem = (options: BusOptions) => BusSystem;

const BASE = "meta-llama/Llama-3.1-8B-Instruct";

async function eventually<T>(read: () => Promise<T> | T, accept: (value: T) => boolean, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (accept(value)) return value;
    if (Date.now() > deadline)
      throw new Error(`condition not met within ${timeoutMs} ms: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Resolves once `count` items have arrived through `push`. */
function collector<T>(count: number) {
  const items: T[] = [];
  let done: (items: T[]) => void = () => {};
  const all = new Promise<T[]>((resolve) => {
    done = resolve;
  });
  return {
    items,
    all,
    push: (item: T) => {
      items.push(item);
      if (items.length === count) done(items);
    },
  };
}

export function busContract(name: string, makeSystem: MakeBusSystem): void {
  describe(`bus contract: ${name}`, () => {
    const handles: Bus[] = [];
    const errors: Error[] = [];

    function system(options: BusOptions = {}) {
      const made = makeSystem({ onError: (error) => errors.push(error), ...options });
      return {
        connect: async () => {
          const bus = await made.connect();
          handles.push(bus);
          return bus;
        },
      };
    }

    afterEach(async () => {
      await Promise.all(handles.splice(0).map((bus) => bus.close()));
      expect(errors.splice(0)).toEqual([]);
    });

    it("delivers each request to exactly one worker when several pull", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const workers = ["w1", "w2", "w3"];
      const shared = Array.from({ length: 12 }, (_, i) => sampleRequest({ id: `shared-${i}`, base: BASE }));
      const addressed = workers.map((w) => sampleRequest({ id: `for-${w}`, base: BASE }));
      const expected = shared.length + addressed.length;
      const received = collector<{ worker: string; id: string; deliveryCount: number }>(expected);

      const pullers = await Promise.all(
        workers.map(async (workerId) => {
          const bus = await sys.connect();
          return { workerId, puller: await bus.pullRequests({ base: BASE, workerId }) };
        }),
      );
      const loops = pullers.map(async ({ workerId, puller }) => {
        for (;;) {
          const delivery = await puller.next();
          if (!delivery) return;
          received.push({ worker: workerId, id: delivery.message.id, deliveryCount: delivery.deliveryCount });
          await delivery.ack();
        }
      });
      for (const request of shared) await gateway.publishRequest(request, ANY_WORKER);
      for (const [i, request] of addressed.entries()) await gateway.publishRequest(request, workers[i]!);

      const all = await received.all;
      await Promise.all(pullers.map(({ puller }) => puller.close()));
      await Promise.all(loops);

      const ids = all.map((r) => r.id).sort();
      expect(ids).toEqual([...shared, ...addressed].map((r) => r.id).sort());
      expect(all.every((r) => r.deliveryCount === 1)).toBe(true);
      for (const w of workers) expect(all.find((r) => r.id === `for-${w}`)?.worker).toBe(w);
      expect(received.items).toHaveLength(expected);
    });

    it("drops a republished request id", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const request = sampleRequest({ id: "dup-request", base: BASE });
      expect(await gateway.publishRequest(request, ANY_WORKER)).toMatchObject({ duplicate: false });
      expect(await gateway.publishRequest(request, ANY_WORKER)).toMatchObject({ duplicate: true });
      await gateway.publishRequest(sampleRequest({ id: "after-dup", base: BASE }), ANY_WORKER);

      const puller = await (await sys.connect()).pullRequests({ base: BASE, workerId: "w1" });
      const first = await puller.next();
      await first?.ack();
      const second = await puller.next();
      await second?.ack();
      expect([first?.message.id, second?.message.id]).toEqual(["dup-request", "after-dup"]);
    });

    it("redelivers a request whose worker died without acking to another worker", async () => {
      const sys = system({ ackWaitMs: 500 });
      const gateway = await sys.connect();
      await gateway.publishRequest(sampleRequest({ id: "orphan", base: BASE }), ANY_WORKER);

      const doomed = await sys.connect();
      const first = await (await doomed.pullRequests({ base: BASE, workerId: "doomed" })).next();
      expect(first?.message.id).toBe("orphan");
      expect(first?.deliveryCount).toBe(1);
      await doomed.close();

      const survivor = await (await sys.connect()).pullRequests({ base: BASE, workerId: "survivor" });
      const again = await survivor.next();
      expect(again?.message.id).toBe("orphan");
      expect(again?.deliveryCount).toBe(2);
      await again?.ack();
    });

    it("lets a live worker adopt the queue of a worker that died", async () => {
      const sys = system({ ackWaitMs: 500 });
      const gateway = await sys.connect();
      await gateway.publishRequest(sampleRequest({ id: "pulled-then-lost", base: BASE }), "w-dead");
      await gateway.publishRequest(sampleRequest({ id: "never-pulled", base: BASE }), "w-dead");

      const doomed = await sys.connect();
      const lost = await (await doomed.pullRequests({ base: BASE, workerId: "w-dead" })).next();
      expect(lost?.message.id).toBe("pulled-then-lost");
      await doomed.close();

      const adopter = await (await sys.connect()).pullRequests({
        base: BASE,
        workerId: "w-dead",
        shared: false,
      });
      const got: Delivery<InferenceRequest>[] = [];
      for (let i = 0; i < 2; i++) {
        const delivery = await adopter.next();
        if (delivery) got.push(delivery);
        await delivery?.ack();
      }
      expect(got.map((d) => d.message.id).sort()).toEqual(["never-pulled", "pulled-then-lost"]);
      expect(got.find((d) => d.message.id === "pulled-then-lost")?.deliveryCount).toBe(2);
    });

    it("gives up on a request after maxDeliver deliveries", async () => {
      const sys = system({ maxDeliver: 2 });
      const gateway = await sys.connect();
      await gateway.publishRequest(sampleRequest({ id: "poison", base: BASE }), ANY_WORKER);
      const puller = await (await sys.connect()).pullRequests({ base: BASE, workerId: "w1" });

      const first = await puller.next();
      first?.nak();
      const second = await puller.next();
      expect([first?.message.id, second?.deliveryCount]).toEqual(["poison", 2]);
      second?.nak();
      await gateway.publishRequest(sampleRequest({ id: "healthy", base: BASE }), ANY_WORKER);
      const third = await puller.next();
      expect(third?.message.id).toBe("healthy");
      await third?.ack();
    });

    it("counts a base's requests queued or pulled and not yet acked as its backlog", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const other = `${BASE}-other`;
      expect(await gateway.requestBacklog(BASE)).toBe(0);
      for (const id of ["q1", "q2", "q3"]) {
        await gateway.publishRequest(sampleRequest({ id, base: BASE }), ANY_WORKER);
      }
      await gateway.publishRequest(sampleRequest({ id: "own", base: BASE }), "w1");
      await gateway.publishRequest(sampleRequest({ id: "elsewhere", base: other }), ANY_WORKER);
      expect(await gateway.requestBacklog(BASE)).toBe(4);
      expect(await gateway.requestBacklog(other)).toBe(1);

      const puller = await (await sys.connect()).pullRequests({ base: BASE, workerId: "w1" });
      const running = await puller.next();
      expect(await gateway.requestBacklog(BASE)).toBe(4);
      await running?.ack();
      expect(
        await eventually(
          () => gateway.requestBacklog(BASE),
          (n) => n === 3,
        ),
      ).toBe(3);
      await puller.close();
    });

    it("withdraws a queued request: it leaves the backlog and is never delivered", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const puller = await (await sys.connect()).pullRequests({ base: BASE, workerId: "w1" });
      const held = await gateway.publishRequest(sampleRequest({ id: "held", base: BASE }), ANY_WORKER);
      const pulled = await puller.next();
      expect(pulled?.message.id).toBe("held");
      const withdrawn = await gateway.publishRequest(sampleRequest({ id: "withdrawn", base: BASE }), "w2");
      const kept = sampleRequest({ id: "kept", base: BASE });
      await gateway.publishRequest(kept, ANY_WORKER);
      const duplicate = await gateway.publishRequest(kept, ANY_WORKER);
      expect(await gateway.requestBacklog(BASE)).toBe(3);

      await withdrawn.withdraw();
      // A pulled message goes too; its holder's ack then finds nothing and does not fail.
      await held.withdraw();
      // A duplicate publish's withdraw leaves the message it duplicated.
      await duplicate.withdraw();
      expect(await gateway.requestBacklog(BASE)).toBe(1);
      await pulled?.ack();

      const next = await puller.next();
      expect(next?.message.id).toBe("kept");
      await next?.ack();
      expect(
        await eventually(
          () => gateway.requestBacklog(BASE),
          (n) => n === 0,
        ),
      ).toBe(0);
      // Withdrawing twice, or after the ack, does nothing and does not fail.
      await withdrawn.withdraw();
      await puller.close();
    });

    it("names the workers whose own queue holds requests", async () => {
      const sys = system();
      const gateway = await sys.connect();
      expect(await gateway.queuedWorkers(BASE)).toEqual([]);
      await gateway.publishRequest(sampleRequest({ id: "mine", base: BASE }), "w 1");
      await gateway.publishRequest(sampleRequest({ id: "shared", base: BASE }), ANY_WORKER);
      await gateway.publishRequest(sampleRequest({ id: "theirs", base: `${BASE}-other` }), "w2");
      expect(await gateway.queuedWorkers(BASE)).toEqual(["w 1"]);

      const puller = await (await sys.connect()).pullRequests({ base: BASE, workerId: "w 1", shared: false });
      const running = await puller.next();
      expect(await gateway.queuedWorkers(BASE)).toEqual(["w 1"]);
      await running?.ack();
      expect(
        await eventually(
          () => gateway.queuedWorkers(BASE),
          (ids) => ids.length === 0,
        ),
      ).toEqual([]);
      await puller.close();
    });

    it("serves priority requests ahead of the queue behind them", async () => {
      const sys = system();
      const gateway = await sys.connect();
      for (let i = 0; i < 6; i++) {
        await gateway.publishRequest(sampleRequest({ id: `own-${i}`, base: BASE }), "w1");
        await gateway.publishRequest(sampleRequest({ id: `shared-${i}`, base: BASE }), ANY_WORKER);
      }
      await gateway.publishRequest(sampleRequest({ id: "own-priority", base: BASE, priority: true }), "w1");
      await gateway.publishRequest(
        sampleRequest({ id: "shared-priority", base: BASE, priority: true }),
        ANY_WORKER,
      );
      expect(await gateway.requestBacklog(BASE)).toBe(14);

      const puller = await (await sys.connect()).pullRequests({ base: BASE, workerId: "w1" });
      const order: string[] = [];
      for (let i = 0; i < 14; i++) {
        const delivery = await puller.next();
        order.push(delivery?.message.id ?? "none");
        await delivery?.ack();
      }
      await puller.close();
      // A pull of every queue is already under way when the lanes' messages come back, so one earlier
      // request may go first; never the twelve queued before them.
      expect(order.slice(0, 3)).toEqual(expect.arrayContaining(["own-priority", "shared-priority"]));
      expect(order.filter((id) => id.startsWith("own-") && id !== "own-priority")).toEqual(
        Array.from({ length: 6 }, (_, i) => `own-${i}`),
      );
      expect(order.filter((id) => id.startsWith("shared-") && id !== "shared-priority")).toEqual(
        Array.from({ length: 6 }, (_, i) => `shared-${i}`),
      );
    });

    it("counts a worker's priority lane as its queue, and an adopter drains it", async () => {
      const sys = system({ ackWaitMs: 500 });
      const gateway = await sys.connect();
      await gateway.publishRequest(sampleRequest({ id: "urgent", base: BASE, priority: true }), "w-dead");
      await gateway.publishRequest(sampleRequest({ id: "routine", base: BASE }), "w-dead");
      expect(await gateway.queuedWorkers(BASE)).toEqual(["w-dead"]);
      expect(await gateway.requestBacklog(BASE)).toBe(2);

      const adopter = await (await sys.connect()).pullRequests({
        base: BASE,
        workerId: "w-dead",
        shared: false,
      });
      const got: string[] = [];
      for (let i = 0; i < 2; i++) {
        const delivery = await adopter.next();
        got.push(delivery?.message.id ?? "none");
        await delivery?.ack();
      }
      await adopter.close();
      expect(got.sort()).toEqual(["routine", "urgent"]);
      expect(
        await eventually(
          () => gateway.queuedWorkers(BASE),
          (ids) => ids.length === 0,
        ),
      ).toEqual([]);
    });

    it("does not let a slow worker block the others", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const slow = await (await sys.connect()).pullRequests({ base: BASE, workerId: "slow" });
      const fast = await (await sys.connect()).pullRequests({ base: BASE, workerId: "fast" });

      await gateway.publishRequest(sampleRequest({ id: "held", base: BASE }), ANY_WORKER);
      const held = await slow.next();
      expect(held?.message.id).toBe("held");
      held?.working();

      const rest = ["r1", "r2", "r3"];
      for (const id of rest) await gateway.publishRequest(sampleRequest({ id, base: BASE }), ANY_WORKER);
      await gateway.publishRequest(sampleRequest({ id: "own", base: BASE }), "fast");
      const got: string[] = [];
      while (got.length < rest.length + 1) {
        const delivery = await fast.next();
        if (!delivery) break;
        got.push(delivery.message.id);
        await delivery.ack();
      }
      expect(got.sort()).toEqual([...rest, "own"].sort());
      await held?.ack();
    });

    it("streams reply chunks to the inbox in order, ending with the final", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const worker = await sys.connect();
      const inbox = await gateway.openReplyInbox();
      const chunks = Array.from({ length: 50 }, (_, seq) =>
        sampleChunk({ request_id: "streamed", seq, token_ids: [seq], text: `t${seq}` }),
      );
      const final = sampleFinal({ request_id: "streamed", seq: chunks.length });
      for (const chunk of chunks) worker.publishReply(inbox.subject, chunk);
      worker.publishReply(inbox.subject, final);

      const replies: Reply[] = [];
      for await (const reply of inbox) replies.push(reply);
      expect(replies).toEqual([...chunks, final]);
    });

    it("grants the reply to one worker and refuses a second once tokens went out", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const worker = await sys.connect();
      const inbox = await gateway.openReplyInbox();
      const claim = (worker_id: string) =>
        worker.claimReply(inbox.subject, { v: 1, request_id: "r", worker_id });

      expect(await claim("w1")).toBe(true);
      // Before any token, a redelivered request may start over on another worker.
      expect(await claim("w2")).toBe(true);
      worker.publishReply(inbox.subject, sampleChunk({ request_id: "r", seq: 0 }));
      const iterator = inbox[Symbol.asyncIterator]();
      expect((await iterator.next()).value).toMatchObject({ type: "chunk", seq: 0 });

      expect(await claim("w2")).toBe(true);
      expect(await claim("w3")).toBe(false);
      await expect(iterator.next()).rejects.toThrow(WorkerLostError);
    });

    it("tells a running worker its reply is still wanted, and not once the gateway's inbox or whole connection is gone", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const worker = await sys.connect();
      const claim = { v: 1 as const, request_id: "r", worker_id: "w1", incarnation: "i" };
      const inbox = await gateway.openReplyInbox();
      expect(await worker.claimReply(inbox.subject, claim)).toBe(true);
      expect(await worker.replyWanted(inbox.subject, claim)).toBe(true);
      inbox.close();
      expect(await worker.replyWanted(inbox.subject, claim)).toBe(false);
      // The gateway process dies: nothing answers on its inboxes at all.
      const doomed = await sys.connect();
      const orphan = await doomed.openReplyInbox();
      expect(await worker.claimReply(orphan.subject, claim)).toBe(true);
      await doomed.close();
      expect(await worker.replyWanted(orphan.subject, claim)).toBe(false);
    });

    it("refuses a worker restarted under the same id once tokens went out, and lets the same process claim again", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const worker = await sys.connect();
      const inbox = await gateway.openReplyInbox();
      const claim = (incarnation: string) =>
        worker.claimReply(inbox.subject, { v: 1, request_id: "r", worker_id: "w1", incarnation });

      expect(await claim("first")).toBe(true);
      worker.publishReply(inbox.subject, sampleChunk({ request_id: "r", seq: 0 }));
      const iterator = inbox[Symbol.asyncIterator]();
      expect((await iterator.next()).value).toMatchObject({ type: "chunk", seq: 0 });
      // The same process resuming a paused request.
      expect(await claim("first")).toBe(true);
      // Restarted: what it generated is gone, so the request does not start over on it.
      expect(await claim("restarted")).toBe(false);
      await expect(iterator.next()).rejects.toThrow(WorkerLostError);
    });

    it("tells the gateway which worker claimed the reply, or null when the inbox closes unclaimed", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const worker = await sys.connect();
      const inbox = await gateway.openReplyInbox();
      const claimed = inbox.claimed();
      expect(await worker.claimReply(inbox.subject, { v: 1, request_id: "r", worker_id: "w1" })).toBe(true);
      expect(await claimed).toBe("w1");
      expect(await inbox.claimed()).toBe("w1");

      const unclaimed = await gateway.openReplyInbox();
      const never = unclaimed.claimed();
      unclaimed.close();
      expect(await never).toBeNull();
    });

    it("serves the first copy of a request claimed and refuses every claim on another copy", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const worker = await sys.connect();
      const inbox = await gateway.openReplyInbox();
      const copy = await inbox.openCopy();
      expect(copy).not.toBe(inbox.subject);
      const claim = (subject: string, worker_id: string) =>
        worker.claimReply(subject, { v: 1, request_id: "r", worker_id });

      expect(await claim(copy, "w2")).toBe(true);
      expect(await inbox.claimed()).toBe("w2");
      // The original, taken late by its worker or by the same worker: refused, tokens or not.
      expect(await claim(inbox.subject, "w1")).toBe(false);
      expect(await claim(inbox.subject, "w2")).toBe(false);
      worker.publishReply(inbox.subject, sampleChunk({ request_id: "r", seq: 0, text: "from the original" }));
      const chunk = sampleChunk({ request_id: "r", seq: 0, text: "from the copy" });
      const final = sampleFinal({ request_id: "r", seq: 1 });
      worker.publishReply(copy, chunk);
      worker.publishReply(copy, final);
      const replies: Reply[] = [];
      for await (const reply of inbox) replies.push(reply);
      expect(replies).toEqual([chunk, final]);
    });

    it("queues a copy with another reply subject as a message of its own", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const inbox = await gateway.openReplyInbox();
      const request = sampleRequest({ id: "copied", base: BASE, reply: inbox.subject });
      expect(await gateway.publishRequest(request, "w-stalled")).toMatchObject({ duplicate: false });
      const copy = { ...request, reply: await inbox.openCopy() };
      expect(await gateway.publishRequest(copy, ANY_WORKER)).toMatchObject({ duplicate: false });
      expect(await gateway.publishRequest(copy, ANY_WORKER)).toMatchObject({ duplicate: true });

      const puller = await (await sys.connect()).pullRequests({ base: BASE, workerId: "w2" });
      const delivery = await puller.next();
      await delivery?.ack();
      expect(delivery?.message).toEqual(copy);
    });

    it("refuses claims on an inbox nobody waits on", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const worker = await sys.connect();
      const inbox = await gateway.openReplyInbox();
      inbox.close();
      expect(await worker.claimReply(inbox.subject, { v: 1, request_id: "gone", worker_id: "w1" })).toBe(
        false,
      );
    });

    it("delivers a cancel to the workers of its base only", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const worker = await sys.connect();
      const cancels = collector<Cancel>(1);
      const others: Cancel[] = [];
      await worker.onCancel(BASE, cancels.push);
      await worker.onCancel("other/base", (cancel) => others.push(cancel));

      gateway.publishCancel(BASE, { v: 1, request_id: "stop-me" });
      expect(await cancels.all).toEqual([{ v: 1, request_id: "stop-me" }]);
      expect(others).toEqual([]);
    });

    it("collapses duplicate usage events into one", async () => {
      const sys = system();
      const worker = await sys.connect();
      const first = sampleUsage({ request_id: "u1" });
      expect(await worker.publishUsage(first)).toEqual({ duplicate: false });
      expect(await worker.publishUsage(first)).toEqual({ duplicate: true });
      expect(await worker.publishUsage({ ...first, output_tokens: 99 })).toEqual({ duplicate: true });
      const second = sampleUsage({ request_id: "u2" });
      await worker.publishUsage(second);

      const meter = await sys.connect();
      const seen = collector<UsageEvent>(2);
      await meter.consumeUsage(async (event) => seen.push(event));
      expect(await seen.all).toEqual([first, second]);
    });

    it("counts the usage events no meter has acked as unbilled", async () => {
      const sys = system();
      const worker = await sys.connect();
      expect(await worker.usageBacklog()).toBe(0);
      for (const id of ["b1", "b2", "b3"]) await worker.publishUsage(sampleUsage({ request_id: id }));
      expect(await worker.usageBacklog()).toBe(3);

      const meter = await sys.connect();
      const billed = collector<string>(2);
      const held: (() => void)[] = [];
      await meter.consumeUsage(async (event) => {
        // The last event stays with its handler (one at a time): taken, not acked, still unbilled.
        if (event.request_id === "b3") await new Promise<void>((resolve) => held.push(resolve));
        else billed.push(event.request_id);
      });
      expect(await billed.all).toEqual(["b1", "b2"]);
      // b3 may still be on its way to its handler: released only once it is held there, or it never would be.
      await eventually(
        () => held.length,
        (n) => n === 1,
      );
      expect(
        await eventually(
          () => worker.usageBacklog(),
          (n) => n === 1,
        ),
      ).toBe(1);
      for (const release of held) release();
      expect(
        await eventually(
          () => worker.usageBacklog(),
          (n) => n === 0,
        ),
      ).toBe(0);
    });

    it("redelivers a usage event whose handler threw", async () => {
      const sys = system({ usageRetryDelayMs: 50 });
      const worker = await sys.connect();
      await worker.publishUsage(sampleUsage({ request_id: "flaky" }));
      await worker.publishUsage(sampleUsage({ request_id: "steady" }));

      const meter = await sys.connect();
      const attempts = collector<string>(3);
      const failedErrors: Error[] = [];
      let failed = false;
      await meter.consumeUsage(async (event) => {
        attempts.push(event.request_id);
        if (event.request_id === "flaky" && !failed) {
          failed = true;
          const error = new Error("database unavailable");
          failedErrors.push(error);
          throw error;
        }
      });
      expect((await attempts.all).sort()).toEqual(["flaky", "flaky", "steady"]);
      expect(errors.splice(0)).toEqual(failedErrors);
    });

    it("shows live heartbeats and forgets a worker that stops sending them", async () => {
      const sys = system({ heartbeatTtlMs: 1_000 });
      const worker = await sys.connect();
      const gateway = await sys.connect();
      await worker.putHeartbeat(sampleHeartbeat({ worker_id: "w1", base: BASE, queue_depth: 1 }));
      await worker.putHeartbeat(sampleHeartbeat({ worker_id: "w1", base: BASE, queue_depth: 2 }));
      await worker.putHeartbeat(sampleHeartbeat({ worker_id: "w9", base: "other/base" }));

      const live = await gateway.liveHeartbeats(BASE);
      expect(live.map((h) => [h.worker_id, h.queue_depth])).toEqual([["w1", 2]]);
      expect((await gateway.liveHeartbeats()).map((h) => h.worker_id).sort()).toEqual(["w1", "w9"]);

      await eventually(
        () => gateway.liveHeartbeats(),
        (hs) => hs.length === 0,
      );
      await worker.putHeartbeat(sampleHeartbeat({ worker_id: "w1", base: BASE }));
      const back = await eventually(
        () => gateway.liveHeartbeats(BASE),
        (hs) => hs.length > 0,
      );
      expect(back.map((h) => h.worker_id)).toEqual(["w1"]);
    });

    it("forgets a removed heartbeat at once, well before its TTL", async () => {
      const sys = system({ heartbeatTtlMs: 60_000 });
      const worker = await sys.connect();
      const gateway = await sys.connect();
      await worker.putHeartbeat(sampleHeartbeat({ worker_id: "w1", base: BASE }));
      await worker.putHeartbeat(sampleHeartbeat({ worker_id: "w2", base: BASE }));
      await eventually(
        () => gateway.liveHeartbeats(BASE),
        (hs) => hs.length === 2,
      );
      await worker.removeHeartbeat(BASE, "w1");
      const left = await eventually(
        () => gateway.liveHeartbeats(BASE),
        (hs) => hs.length === 1,
      );
      expect(left.map((h) => h.worker_id)).toEqual(["w2"]);
    });

    it("replays the latest control event per adapter to a late subscriber, then live ones", async () => {
      const sys = system();
      const gateway = await sys.connect();
      const blob = sampleControl().blob;
      await gateway.publishControl(
        sampleControl({ base: BASE, adapter: "acme/a", kind: "pin", pinned: true }),
      );
      await gateway.publishControl(
        sampleControl({ base: BASE, adapter: "acme/b", kind: "update", pinned: false }),
      );
      await gateway.publishControl(
        sampleControl({ base: BASE, adapter: "acme/a", kind: "unpin", pinned: false }),
      );
      await gateway.publishControl(sampleControl({ base: "other/base", adapter: "acme/a", kind: "pin" }));

      const worker = await sys.connect();
      const seen = collector<AdapterControl>(3);
      await worker.onControl(BASE, seen.push);
      await eventually(
        () => seen.items.length,
        (n) => n >= 2,
      );
      await gateway.publishControl(
        sampleControl({ base: BASE, adapter: "acme/b", kind: "delete", pinned: false, blob: null }),
      );
      const events = await seen.all;
      expect(events.map((e) => [e.adapter, e.kind])).toEqual([
        ["acme/b", "update"],
        ["acme/a", "unpin"],
        ["acme/b", "delete"],
      ]);
      expect(events[0]?.blob).toEqual(blob);
    });

    it("refuses a worker named like the shared queue", async () => {
      const bus = await system().connect();
      await expect(bus.pullRequests({ base: BASE, workerId: ANY_WORKER })).rejects.toThrow(SubjectTokenError);
    });

    it("refuses to publish an invalid message", async () => {
      const bus = await system().connect();
      await expect(bus.publishRequest(sampleRequest({ prompt_token_ids: [] }), ANY_WORKER)).rejects.toThrow(
        WireFormatError,
      );
      await expect(bus.publishUsage(sampleUsage({ input_tokens: -1 }))).rejects.toThrow(/input_tokens/);
      await expect(
        bus.publishUsage(sampleUsage({ input_tokens: 3, cached_input_tokens: 4 })),
      ).rejects.toThrow(/cached_input_tokens exceeds input_tokens/);
    });
  });
}
