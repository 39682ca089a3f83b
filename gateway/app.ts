// The gateway's Hono app, built from injected dependencies and nothing else, so the same app runs on Node
// (gateway/node.ts), on Workers (gateway/worker.ts), in `luminet dev` and in tests. Every response carries
// `x-request-id`; every error, whatever threw it, leaves through onError as OpenAI's error body.
import { Hono } from "hono";
import { bearerAuth, callerOrgOnly, REQUEST_ID, RUN_AS, type RunEnv, requireScope } from "./auth.ts";
import { requestBodyLimit } from "./body-limit.ts";
import type { GatewayEnv } from "./context.ts";
import { countedRequest } from "./counted-request.ts";
import { dashboardRoutes } from "./dashboard/routes.tsx";
import type { GatewayDeps } from "./deps.ts";
import { errorResponse, payloadTooLarge, routeNotFound, toApiError } from "./errors.ts";
import { GenerationCancelled } from "./generation.ts";
import { idempotency } from "./idempotency.ts";
import { readinessRoute } from "./readiness.ts";
import { adapterRoutes } from "./routes/adapters.ts";
import { batchRoutes } from "./routes/batches.ts";
import { chatCompletions } from "./routes/chat-completions.ts";
import { completions } from "./routes/completions.ts";
import {
  addItemsRoute,
  createConversationRoute,
  deleteConversationRoute,
  deleteItemRoute,
  listItemsRoute,
  retrieveConversationRoute,
  retrieveItemRoute,
  updateConversationRoute,
} from "./routes/conversations.ts";
import { fileRoutes } from "./routes/files.ts";
import { fleetScaleRoute } from "./routes/fleet-scale.ts";
import { keyRoutes } from "./routes/keys.ts";
import { deleteModelRoute, listModelsRoute, retrieveModelRoute } from "./routes/models.ts";
import {
  cancelResponse,
  countInputTokens,
  createResponse,
  deleteStoredResponse,
  listInputItems,
  retrieveResponse,
} from "./routes/responses.ts";
import { storageRoute } from "./routes/storage.ts";
import {
  deleteStoredChatCompletion,
  listStoredChatCompletions,
  listStoredChatMessages,
  retrieveStoredChatCompletion,
  updateStoredChatCompletion,
} from "./routes/stored-chat-completions.ts";
import { detokenize, tokenize } from "./routes/tokenize.ts";
import { usageRoute } from "./routes/usage.ts";
import { webhookRoutes } from "./routes/webhooks.ts";

/** The OpenAI error code of an error answer (its type where it has none). */
async function errorCode(response: Response): Promise<string> {
  const body = (await response.json().catch(() => null)) as {
    error?: { code?: unknown; type?: unknown };
  } | null;
  const { code, type } = body?.error ?? {};
  return typeof code === "string" ? code : typeof type === "string" ? type : "unknown";
}

export function createApp(deps: GatewayDeps): Hono<GatewayEnv> {
  const app = new Hono<GatewayEnv>();

  app.use("*", async (c, next) => {
    const requestId = (c.env as Partial<RunEnv> | undefined)?.[REQUEST_ID] ?? deps.newRequestId();
    c.set("requestId", requestId);
    const started = performance.now();
    c.set("startedAt", started);
    await next();
    c.res.headers.set("x-request-id", requestId);
    // A batch line's run (the batch runner's own request) is no client's answer: luminet_batch_lines_total
    // counts it, and its retries would read as clients' 429s and 503s here.
    if ((c.env as Partial<RunEnv> | undefined)?.[RUN_AS] !== undefined) return;
    deps.metrics?.observe(
      c.req.routePath,
      c.res.status,
      (performance.now() - started) / 1000,
      c.get("base") ?? "",
    );
    // Every API error answer, whichever handler, middleware or limit made it, is OpenAI's JSON error body.
    if (
      deps.metrics &&
      c.res.status >= 400 &&
      c.res.headers.get("content-type")?.startsWith("application/json")
    ) {
      deps.metrics.errorAnswered(c.req.routePath, await errorCode(c.res.clone()));
    }
  });

  app.get("/healthz", (c) => c.json({ ok: true }));
  app.get("/readyz", readinessRoute(deps));
  app.route("/dashboard", dashboardRoutes(deps));

  // vLLM's tokenizer routes sit beside /v1, as vLLM serves them; they need a key as /v1 does.
  const keyed = ["/v1/*", "/tokenize", "/detokenize"];
  for (const path of keyed) app.use(path, bearerAuth(deps.db, deps.authCache));
  // Before the body limit: uploads are adapters, capped by the adapter storage, and files, capped by
  // maxFileBytes, not by the JSON limit.
  app.route("/v1/adapters", adapterRoutes(deps));
  // Work that runs on no worker counts against the key's requests per minute here; inference counts at
  // admission, with its tokens.
  const counted = countedRequest(deps);
  app.post("/v1/files", counted);
  app.route("/v1/files", fileRoutes(deps, deps.limits.maxFileBytes));
  for (const path of keyed) {
    app.use(
      path,
      requestBodyLimit(deps.limits.maxBodyBytes, () =>
        errorResponse(payloadTooLarge(deps.limits.maxBodyBytes)),
      ),
    );
  }
  app.use("/v1/chat/completions", idempotency(deps));
  app.use("/v1/completions", idempotency(deps));
  app.use("/v1/responses", idempotency(deps));
  app.get("/v1/models", listModelsRoute(deps));
  app.get("/v1/models/:model{.+}", retrieveModelRoute(deps));
  app.delete("/v1/models/:model{.+}", requireScope("admin"), deleteModelRoute(deps));
  app.post("/v1/chat/completions", chatCompletions(deps));
  app.get("/v1/chat/completions", listStoredChatCompletions(deps));
  app.get("/v1/chat/completions/:id", retrieveStoredChatCompletion(deps));
  app.post("/v1/chat/completions/:id", updateStoredChatCompletion(deps));
  app.delete("/v1/chat/completions/:id", deleteStoredChatCompletion(deps));
  app.get("/v1/chat/completions/:id/messages", listStoredChatMessages(deps));
  app.post("/v1/completions", completions(deps));
  app.post("/v1/responses", createResponse(deps));
  // POST /v1/responses/input_tokens, as a parameter: a fixed segment beside /v1/responses/:id/cancel would
  // make Hono's router fall back from its RegExpRouter to the slower TrieRouter for every route.
  app.post("/v1/responses/:action", counted, countInputTokens(deps));
  app.get("/v1/responses/:id", retrieveResponse(deps));
  app.delete("/v1/responses/:id", deleteStoredResponse(deps));
  app.post("/v1/responses/:id/cancel", cancelResponse(deps));
  app.get("/v1/responses/:id/input_items", listInputItems(deps));
  // A create or add retried under its Idempotency-Key must not add items twice.
  app.post("/v1/conversations", counted, idempotency(deps), createConversationRoute(deps));
  app.get("/v1/conversations/:id", retrieveConversationRoute(deps));
  app.post("/v1/conversations/:id", updateConversationRoute(deps));
  app.delete("/v1/conversations/:id", deleteConversationRoute(deps));
  app.post("/v1/conversations/:id/items", counted, idempotency(deps), addItemsRoute(deps));
  app.get("/v1/conversations/:id/items", listItemsRoute(deps));
  app.get("/v1/conversations/:id/items/:item_id", retrieveItemRoute(deps));
  app.delete("/v1/conversations/:id/items/:item_id", deleteItemRoute(deps));
  app.get("/v1/usage", callerOrgOnly, usageRoute(deps));
  app.get("/v1/storage", callerOrgOnly, storageRoute(deps));
  app.route("/v1/keys", keyRoutes(deps));
  app.route("/v1/webhooks", webhookRoutes(deps));
  app.get("/v1/fleet/scale", requireScope("admin"), fleetScaleRoute(deps));
  app.post("/v1/batches", counted);
  app.route("/v1/batches", batchRoutes(deps));
  app.post("/tokenize", counted, tokenize(deps));
  app.post("/detokenize", counted, detokenize(deps));

  app.notFound((c) => errorResponse(routeNotFound(c.req.method, c.req.path)));
  app.onError((error, c) => {
    const apiError = toApiError(error);
    if (apiError.status >= 500 && !(error instanceof GenerationCancelled)) {
      deps.log.error(
        { requestId: c.get("requestId"), err: error instanceof Error ? error.message : String(error) },
        "request failed",
      );
    }
    return errorResponse(apiError);
  });
  return app;
}
