// OpenAI's Responses API: POST /v1/responses creates a response (streaming or not), GET and DELETE
// /v1/responses/{id} read and delete a stored one, GET /v1/responses/{id}/input_items lists the items of the
// conversation it answered. A request is served as the chat request it means (gateway/response-request.ts),
// on the same workers, limits and billing; the answer is a message or, with tools, the calls it is (as in
// chat), after a reasoning item where the model reasons (gateway/reasoning.ts). A response is stored unless
// `store` is false (gateway/response-store.ts), so a later request can continue its conversation with
// previous_response_id; a request naming a conversation (gateway/conversation-store.ts) starts from its
// items and adds its turn to it. Responses and conversations belong to the caller's org.
import type { Context, Handler } from "hono";
import type { Db } from "../../db/open.ts";
import {
  type InputItem,
  InputItemsQuery,
  ResponseCreateRequest,
  type ResponseObject,
  RetrieveQuery,
} from "../../schema/responses-api.ts";
import type { TokenLogprob } from "../../schema/wire.ts";
import { AutoCallStream } from "../auto-call-stream.ts";
import { cancelBackgroundJob, queueBackgroundResponse } from "../batches.ts";
import { collectChoices, interleave } from "../choices.ts";
import type { GatewayEnv } from "../context.ts";
import { refuseOverConversationStorage } from "../conversation-storage-quota.ts";
import {
  allItems,
  appendItems,
  conversationTooLarge,
  itemBytes,
  maxConversationBytes,
  refuseTakenIds,
} from "../conversation-store.ts";
import type { GatewayDeps } from "../deps.ts";
import { ApiError, conversationNotFound, invalidBody, invalidRequest, routeNotFound } from "../errors.ts";
import { chatLogprobs } from "../logprobs.ts";
import { resolveModel } from "../models.ts";
import { ReasoningSplit, splitReply } from "../reasoning.ts";
import { readBody } from "../request-body.ts";
import { deleteResponse } from "../response-deletion.ts";
import { followLog, hasLog, RunEventLog, startLog } from "../response-event-log.ts";
import { type NumberedEvent, ResponseEvents } from "../response-events.ts";
import { itemPage, withItemIds } from "../response-items.ts";
import {
  callItems,
  conversationOf,
  finishedResponse,
  itemStatusOf,
  messageItem,
  outputAsInput,
  reasoningItem,
  responseHead,
  responseIds,
  responseKey,
} from "../response-output.ts";
import { maxReferencedBytes, resolveReferences } from "../response-references.ts";
import { admitResponse, refuseTwoContinuations } from "../response-request.ts";
import { refuseOverResponseStorage } from "../response-storage-quota.ts";
import {
  continuedConversation,
  loadResponse,
  markBackground,
  type NewResponse,
  saveBackgroundRun,
  saveResponse,
  storedCreatedAt,
} from "../response-store.ts";
import { serveTier } from "../service-tier.ts";
import { answerCalls, forcedCallStream, type ToolCallDelta } from "../tool-calls.ts";
import { begin, openStream, streamEvents, streamResponse } from "./inference.ts";

function responseNotFound(id: string, param = "response_id"): ApiError {
  return new ApiError(
    404,
    "invalid_request_error",
    `No response found with id '${id}'.`,
    "response_not_found",
    param,
  );
}

/** A stored response of the caller's org, or 404 (another org's is not found either). */
async function storedResponse(deps: GatewayDeps, orgId: string, id: string, param?: string) {
  const stored = await loadResponse(deps.db, orgId, id);
  if (!stored) throw responseNotFound(id, param);
  return stored;
}

const RENEWED =
  "an input item's id was taken in its conversation while the response ran (by an addition meanwhile): added under a new id";

/**
 * A response's turn as added to its conversation: an input item whose id the conversation took while the
 * response ran (checked when it began) gets the id it would have had without one, rather than the turn
 * being lost. The answer is out by then, so refusing is no longer possible.
 */
function renewTaken(
  items: readonly InputItem[],
  held: ReadonlySet<string>,
  key: string,
  renewed: (id: string) => void,
): InputItem[] {
  return withItemIds(
    items.map((item) => {
      if (!held.has(item.id!)) return item;
      renewed(item.id!);
      return { ...item, id: undefined };
    }),
    key,
  );
}

/**
 * Refuses to continue a background response that has not ended: a response is stored with a link to what
 * it continues, read back as that one is now, so its history would hold an answer it never saw.
 */
function refuseUnended(previous: ResponseObject): void {
  if (previous.status !== "queued" && previous.status !== "in_progress") return;
  throw invalidRequest(
    `Response '${previous.id}' is still ${previous.status === "queued" ? "queued" : "in progress"}: continue it once it has ended (poll GET /v1/responses/${previous.id}).`,
    "previous_response_id",
    "response_not_ended",
  );
}

/**
 * What a request starts from — the stored response it continues or the conversation it names, then its
 * input with references resolved — and the chat request that makes, admitted. `storing`: it will add its
 * turn to its conversation and (unless `store: false`) keep the response, so an input the org's
 * conversation storage has no room for, or an org whose stored responses hold their limit, is refused first
 * (counting input_tokens stores nothing).
 */
async function prepare(
  c: Context<GatewayEnv>,
  deps: GatewayDeps,
  body: ResponseCreateRequest,
  storing: boolean,
) {
  const { orgId } = c.get("principal");
  const resolved = await resolveModel(deps, c.get("principal"), body.model);
  refuseTwoContinuations(body);
  const previous = body.previous_response_id
    ? await storedResponse(deps, orgId, body.previous_response_id, "previous_response_id")
    : null;
  if (previous) refuseUnended(previous.response);
  // A conversation's items come first (with previous_response_id too, admission refuses the request).
  const conversation = body.previous_response_id ? null : conversationOf(body);
  const conversationItems = conversation ? await allItems(deps.db, orgId, conversation.id) : null;
  if (conversation && !conversationItems) throw conversationNotFound(conversation.id, "conversation");
  const earlier = previous ? continuedConversation(previous) : (conversationItems ?? []);
  const input = await resolveReferences(deps.db, orgId, body.input ?? [], maxReferencedBytes(deps));
  // Refused before it runs: its input would take the conversation past its bound when added after.
  const bound = maxConversationBytes(deps.limits);
  if (conversation && itemBytes(earlier) + itemBytes(input) > bound) {
    throw conversationTooLarge(conversation.id, bound, "input");
  }
  if (conversation && storing) {
    await refuseOverConversationStorage(deps.db, orgId, itemBytes(input), {
      maxOrgBytes: deps.limits.maxOrgConversationBytes,
      param: "input",
    });
  }
  // Before the compile below spends the org's compile time. A background response's run stores over the
  // response already stored queued: never refused here.
  if (storing && body.store !== false && !c.get("responseKey")) {
    await refuseOverResponseStorage(deps, c.get("principal").keyId);
  }
  const admitted = deps.compileTime.admit(orgId, () => admitResponse(body, earlier, input, resolved.base));
  return { resolved, previous, conversation, earlier, input, admitted };
}

/**
 * POST /v1/responses/input_tokens: how many input tokens the request would be billed for (its prompt as
 * the worker would prefill it, what it continues included), without running it.
 */
export function countInputTokens(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    if (c.req.param("action") !== "input_tokens") throw routeNotFound(c.req.method, c.req.path);
    const { admitted } = await prepare(c, deps, await readBody(c, ResponseCreateRequest), false);
    return c.json({ object: "response.input_tokens", input_tokens: admitted.prompts[0]!.tokenIds.length });
  };
}

export function createResponse(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const body = await readBody(c, ResponseCreateRequest);
    const { orgId } = c.get("principal");
    const { resolved, previous, conversation, earlier, input, admitted } = await prepare(c, deps, body, true);
    // The response's ids come from its id key: this request's id, or, when this is a background
    // response's run, the key the response was created under.
    const key = c.get("responseKey") ?? c.get("requestId");
    const ids = responseIds(key);
    const inputItems = withItemIds(input, key);
    // What it continues was read whole for the prompt: its ids are the ones taken, in a conversation and
    // in a chain of responses alike (input_items pages by them).
    refuseTakenIds(new Set(earlier.map((item) => item.id!)), inputItems, "input");
    // A response in a conversation is stored with the conversation so far, so it stands on its own
    // (previous_response_id can continue it even once the conversation is gone).
    const storedItems = conversation ? [...earlier, ...inputItems] : inputItems;
    const store = body.store !== false;
    const nowSeconds = () => Math.floor(deps.now() / 1000);
    // A background response's run keeps the created_at it was queued with, in its events as in its row.
    const queuedAt = c.get("responseKey") ? await storedCreatedAt(deps.db, orgId, ids.response) : null;
    const head = {
      ...responseHead(body, resolved.model, ids.response, queuedAt ?? nowSeconds(), store, admitted.sampling),
      ...(await serveTier(c, deps, body.service_tier)),
    };
    if (body.background === true && !c.get("responseKey")) {
      // Checked in full above; stored queued and run later by a batch runner (gateway/batch-runner.ts).
      // Streamed, its events go through its log (gateway/response-event-log.ts), which this stream follows.
      const queued: ResponseObject = { ...head, status: "queued" };
      const { keyId } = c.get("principal");
      await deps.db.transaction(async (tx) => {
        await saveResponse(tx, orgId, { response: queued, items: storedItems, previous });
        if (body.stream === true) await startLog(tx, queued);
        // Run as the version drawn for it, so the response stored queued and its run name the same model.
        const run = { ...body, model: resolved.model };
        await queueBackgroundResponse(tx, { orgId, keyId }, key, run, new Date(deps.now()));
      });
      deps.batchLinesQueued.dispatchEvent(new Event("queued"));
      return body.stream === true ? followedStream(c, deps, queued.id, -1) : c.json(queued);
    }
    // A background response created to be streamed: its run writes its events into its log.
    const runLog = c.get("responseKey") && admitted.stream ? new RunEventLog(deps.db, ids.response) : null;
    await runLog?.open();
    const wantLogprobs = admitted.sampling.logprobs;
    const tools = admitted.tools ?? null;
    /**
     * Kept before it is answered, so a client that reads the answer can continue from it at once, and its
     * input and output added to its conversation. A failure to keep it is logged, not thrown: the answer
     * was generated and billed, and losing it would be worse than a later 404 for its id.
     */
    const keep = async (response: ResponseObject, finalEvents: readonly NumberedEvent[] = []) => {
      const requestId = c.get("requestId");
      const failed = (what: string) => (error: unknown) =>
        deps.log.error({ requestId, err: error instanceof Error ? error.message : String(error) }, what);
      /** Adds its input and output to its conversation; a failure is logged (in a transaction, rolled back to before it). */
      const addTurn = async (db: Pick<Db, "transaction" | "select">) => {
        if (!conversation) return;
        const items = [...inputItems, ...outputAsInput(response.output)];
        const added = await appendItems(db, orgId, conversation.id, {
          items,
          createdAt: new Date(deps.now()),
          taken: (held) => renewTaken(items, held, key, (id) => deps.log.warn({ requestId, id }, RENEWED)),
        }).catch(failed("could not add a response to its conversation"));
        if (added === null) {
          deps.log.warn({ requestId }, "a response's conversation was deleted before the response ended");
        }
      };
      const saved: NewResponse = { response, items: storedItems, previous };
      if (c.get("responseKey")) {
        // A background response's run stores over the response created queued, with its stream's final
        // events where it has a log, and adds its turn to its conversation in the same transaction: one
        // cancelled or deleted meanwhile is left as it is and adds nothing (its answer is dropped). In a
        // conversation its items are those it ran on: the conversation as it stood when it ran.
        const save = async (tx: Pick<Db, "update" | "transaction" | "select">) => {
          const stored = await saveBackgroundRun(tx, orgId, saved, conversation !== null);
          if (stored) await addTurn(tx);
          return stored;
        };
        await (runLog ? runLog.finish(save, finalEvents) : deps.db.transaction(save)).catch(
          failed("could not store a response"),
        );
      } else {
        await addTurn(deps.db);
        if (!store) return;
        await saveResponse(deps.db, orgId, saved).catch(failed("could not store a response"));
      }
      await deps.storedRetention.afterStoringResponse(deps.db, deps.log, { requestId });
    };

    const reasoning = admitted.reasoning ?? null;

    if (!admitted.stream) {
      const [reply] = await collectChoices(await begin(c, deps, resolved, admitted));
      const { text, pieces, logprobs, final } = reply!;
      const itemStatus = itemStatusOf(final);
      // A reasoning model's reasoning is an item of its own before the answer (gateway/reasoning.ts).
      const split = reasoning ? splitReply(pieces, reasoning) : null;
      const answer = split ? split.content : text;
      // As streamed: a reasoning item only where the answer reasoned.
      const thought = split?.reasoning ? [reasoningItem(ids.reasoning, split.reasoning, itemStatus)] : [];
      // The message's logprobs are its own tokens': a reasoning token's are not reported.
      const answerLogprobs = split ? logprobs.filter((_, i) => !split.isReasoning[i]) : logprobs;
      // With tools the answer may be calls (a forced custom tool's answer is its input: gateway/tool-calls.ts).
      const calls = tools ? answerCalls(tools, answer, ids.callId) : null;
      // A required call cut before its name is an empty message, as streamed (never the call's JSON).
      const output =
        calls && calls.length > 0
          ? callItems(calls, ids, itemStatus)
          : [
              messageItem(
                ids.message,
                calls ? "" : answer,
                wantLogprobs ? chatLogprobs(calls ? [] : answerLogprobs) : null,
                itemStatus,
              ),
            ];
      const response = finishedResponse(
        head,
        [...thought, ...output],
        final,
        nowSeconds(),
        split?.reasoningTokens ?? 0,
      );
      await keep(response);
      return c.json(response);
    }

    const { opening } = await openStream(c, deps, resolved, admitted);
    async function* events(): AsyncGenerator<NumberedEvent> {
      const { choices } = await opening;
      const writer = new ResponseEvents(head, ids, wantLogprobs);
      yield* writer.start();
      // As in chat: a required call streams as it is generated; with "auto" the text is held while it may
      // still be calls and its calls stream once one begins (gateway/auto-call-stream.ts), its logprobs
      // held with it.
      const required = forcedCallStream(tools, ids.callId);
      const auto = tools && !tools.forced ? new AutoCallStream(tools, ids.callId) : null;
      const callEvents = (deltas: ToolCallDelta[]) =>
        deltas.flatMap((delta) => {
          const [kind, name, piece] =
            "custom" in delta
              ? (["custom", delta.custom.name, delta.custom.input] as const)
              : (["function", delta.function.name, delta.function.arguments] as const);
          return [
            ...(delta.id !== undefined && name !== undefined ? writer.callStart(delta.id, name, kind) : []),
            ...(piece ? writer.callArguments(piece) : []),
          ];
        });
      const held: TokenLogprob[] = [];
      const split = reasoning ? new ReasoningSplit(reasoning.opened) : null;
      /** The answer's text after any reasoning: a required call's arguments, or output text (held while it may be a call). */
      function* answer(text: string): Generator<NumberedEvent> {
        if (required) {
          held.length = 0;
          yield* callEvents(required.push(text));
          return;
        }
        if (auto) {
          const out = auto.push(text);
          if (out.calls.length > 0) {
            held.length = 0;
            yield* callEvents(out.calls);
          } else if (out.text !== "") yield* writer.text(out.text, chatLogprobs(held.splice(0)));
          return;
        }
        if (text !== "" || (wantLogprobs && held.length > 0))
          yield* writer.text(text, chatLogprobs(held.splice(0)));
        else held.length = 0;
      }
      for await (const { step } of interleave(choices)) {
        if (step.done) {
          if (split) {
            const rest = split.end();
            if (rest.reasoning !== "") yield* writer.reasoningText(rest.reasoning);
            if (rest.content !== "") yield* answer(rest.content);
          }
          if (required) yield* callEvents(required.end());
          const end = auto?.end();
          if (end && "calls" in end) yield* callEvents(end.calls);
          else if (end && end.text !== "") yield* writer.text(end.text, chatLogprobs(held.splice(0)));
          const finished = writer.finish(step.value, nowSeconds(), split?.reasoningTokens ?? 0);
          await keep(finished.response, finished.events);
          yield* finished.events;
          return;
        }
        if (split) {
          const out = split.push(step.value.text, step.value.token_ids.length);
          if (!out.reasoningTokens) held.push(...(step.value.logprobs ?? []));
          if (out.reasoning !== "") yield* writer.reasoningText(out.reasoning);
          if (out.content !== "") yield* answer(out.content);
          continue;
        }
        held.push(...(step.value.logprobs ?? []));
        yield* answer(step.value.text);
      }
    }
    if (runLog) {
      // A background run answers its batch runner with the response; its events went into its log.
      let last: NumberedEvent | undefined;
      try {
        for await (const event of events()) {
          runLog.push([event]);
          last = event;
        }
      } finally {
        await runLog.close();
      }
      return c.json((last as { response: ResponseObject }).response);
    }
    return streamResponse(c, deps, opening, events(), "responses");
  };
}

/**
 * The stream of a background response created with `stream: true`, from after `startingAfter`: its log
 * replayed and followed until it ends. Leaving it stops the following, not the run.
 */
function followedStream(
  c: Context<GatewayEnv>,
  deps: GatewayDeps,
  responseId: string,
  startingAfter: number,
): Response {
  let stopped = false;
  const events = followLog(deps.db, responseId, startingAfter, {
    pollMs: deps.limits.backgroundStreamPollMs,
    stopped: () => stopped,
  });
  return streamEvents(c, deps, events, "responses", () => {
    stopped = true;
  });
}

/**
 * GET /v1/responses/{id}: the response as stored; with `stream=true`, a background response created
 * streamed is streamed again from after `starting_after` (default: from its start) and followed until it
 * ends.
 */
export function retrieveResponse(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const query = RetrieveQuery.safeParse(c.req.query());
    if (!query.success) throw invalidBody(query.error);
    const stored = await storedResponse(deps, c.get("principal").orgId, c.req.param("id")!);
    if (query.data.stream !== "true") return c.json(stored.response);
    if (!(await hasLog(deps.db, stored.response.id))) {
      throw invalidRequest(
        "Only a response created with background and stream true can be streamed; retrieve this one without stream.",
        "stream",
      );
    }
    return followedStream(c, deps, stored.response.id, query.data.starting_after ?? -1);
  };
}

/**
 * POST /v1/responses/{id}/cancel: a background response not yet ended stops — not started, it never runs;
 * running, its answer is dropped — and says cancelled. One that has ended is answered as it is; a response
 * that was not created in the background cannot be cancelled (400).
 */
export function cancelResponse(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const { orgId } = c.get("principal");
    const id = c.req.param("id")!;
    const stored = await storedResponse(deps, orgId, id);
    if (!stored.response.background) {
      throw new ApiError(
        400,
        "invalid_request_error",
        "Only background responses can be cancelled.",
        null,
        "response_id",
      );
    }
    if (stored.response.status === "queued" || stored.response.status === "in_progress") {
      await cancelBackgroundJob(deps.db, responseKey(id), new Date(deps.now()));
      await markBackground(deps.db, id, "cancelled");
    }
    return c.json((await storedResponse(deps, orgId, id)).response);
  };
}

export function deleteStoredResponse(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const id = c.req.param("id")!;
    // A background response deleted before it ran never runs.
    if (!(await deleteResponse(deps.db, c.get("principal").orgId, id, new Date(deps.now())))) {
      throw responseNotFound(id);
    }
    return c.json({ id, object: "response", deleted: true });
  };
}

export function listInputItems(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const query = InputItemsQuery.safeParse(c.req.query());
    if (!query.success) throw invalidBody(query.error);
    const stored = await storedResponse(deps, c.get("principal").orgId, c.req.param("id")!);
    return c.json(itemPage(stored.conversation, query.data));
  };
}
