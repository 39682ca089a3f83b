// What the gateway's middleware puts on each request's Hono context, typed once for every route.
import type { Principal } from "./auth.ts";

export type GatewayEnv = {
  Variables: {
    /** Ours, never the client's: it becomes the bus message id and the billing row's key. */
    requestId: string;
    principal: Principal;
    /** When the request arrived (performance.now()), for the added-latency histogram. */
    startedAt: number;
    /** The base model a generation runs on, once resolved; labels the request metrics. */
    base: string;
    /** Set on a Batch API line the batch runner sends in process (auth.ts RUN_AS). */
    batch: boolean;
    /** Set on a request at the priority service tier (service-tier.ts). */
    priority: boolean;
    /** Set on a background response's run: the id key of the response it answers (auth.ts RESPONSE_KEY). */
    responseKey: string;
    /**
     * How a streamed answer ended, set as its last event goes out (routes/inference.ts streamEvents):
     * "complete", or "failed" (an in-band error, or a Responses API stream that ended response.failed).
     */
    streamOutcome: "complete" | "failed";
  };
};
