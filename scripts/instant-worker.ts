// A stand-in worker for the gateway benchmark (../shared/BENCH.md: "a worker that answers at once"): it keeps
// a heartbeat for its base, pulls every request, claims it and answers one token and the Final at once,
// several requests at a time, so what a benchmark times around it is the gateway and the bus. `busDirect`
// is the same request sent to it straight over the bus, the baseline the gateway's time is measured against.
import type { Bus } from "../bus/bus.ts";
import { greedySampling, type InferenceRequest } from "../schema/wire.ts";

export interface InstantWorker {
  /** Requests answered so far. */
  readonly answered: () => number;
  /** The first error an answer met (a claim or reply the bus refused), if any. */
  readonly firstError: () => string | null;
  stop(): Promise<void>;
}

/** Heartbeats are put this often; the bus forgets a worker after its TTL (5 s by default). */
const HEARTBEAT_EVERY_MS = 1_000;

export async function startInstantWorker(bus: Bus, base: string, workerId: string): Promise<InstantWorker> {
  const heartbeat = () =>
    bus.putHeartbeat({
      v: 1,
      worker_id: workerId,
      base,
      version: "bench",
      adapters: { slot: [], ram: [], disk: [] },
      pins: [],
      free_slots: 1,
      queue_depth: 0,
      running: 0,
      tokens_per_s: 0,
      at: Date.now(),
    });
  await heartbeat();
  const beating = setInterval(() => void heartbeat().catch(() => {}), HEARTBEAT_EVERY_MS);
  beating.unref();
  const puller = await bus.pullRequests({ base, workerId });
  let answered = 0;
  let firstError: string | null = null;
  const answer = async (request: InferenceRequest) => {
    if (!(await bus.claimReply(request.reply, { v: 1, request_id: request.id, worker_id: workerId }))) return;
    bus.publishReply(request.reply, {
      v: 1,
      type: "chunk",
      request_id: request.id,
      seq: 0,
      token_ids: [65],
      text: "A",
    });
    bus.publishReply(request.reply, {
      v: 1,
      type: "final",
      request_id: request.id,
      seq: 1,
      finish_reason: "length",
      usage: { prompt_tokens: request.prompt_token_ids.length, completion_tokens: 1 },
    });
    answered++;
  };
  const pulling = (async () => {
    for (;;) {
      const delivery = await puller.next();
      if (!delivery) return;
      // Not awaited: a claim is a round trip to the gateway, and requests must not queue behind it.
      void answer(delivery.message)
        .catch((error: unknown) => {
          firstError ??= String(error);
        })
        .then(() => delivery.ack())
        .catch(() => {});
    }
  })();
  return {
    answered: () => answered,
    firstError: () => firstError,
    stop: async () => {
      clearInterval(beating);
      await puller.close();
      await pulling;
      await bus.removeHeartbeat(base, workerId);
    },
  };
}

export interface BusDirectOptions {
  base: string;
  workerId: string;
  org: string;
  apiKeyId: string;
  promptTokenIds: number[];
  timeoutMs: number;
}

/** Sends one max_tokens-1 request straight to the worker's queue and resolves at its Final, per call. */
export function busDirect(bus: Bus, o: BusDirectOptions): () => Promise<void> {
  let n = 0;
  return async () => {
    const inbox = await bus.openReplyInbox();
    const now = Date.now();
    const request: InferenceRequest = {
      v: 1,
      id: `direct-${n++}`,
      org: o.org,
      api_key_id: o.apiKeyId,
      base: o.base,
      adapter: null,
      prompt_token_ids: o.promptTokenIds,
      sampling: greedySampling(1),
      reply: inbox.subject,
      created_at: now,
      deadline: now + o.timeoutMs,
    };
    try {
      await bus.publishRequest(request, o.workerId);
      for await (const reply of inbox) if (reply.type === "final") return;
      throw new Error("the reply inbox closed before the Final");
    } finally {
      inbox.close();
    }
  };
}
