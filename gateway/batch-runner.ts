// Runs the Batch API's batches: each Node gateway process (and `luminet dev`) claims lines of running
// batches from the database, each base's only into the room its workers leave (batch-room.ts), and runs
// each as the request it names through the gateway's own app in process — as the key that created the
// batch, within that key's limits, billed as any request — then stores the answer on the line. Background
// responses go first, then orgs take turns (claim-order.ts): no batch holds back other orgs' work until it
// ends. A line is claimed with a lease (FOR UPDATE SKIP LOCKED, so two runners never take the same one);
// a runner that dies leaves its lines to be taken again once the lease runs out, under the same request
// id, so no accepted line is lost and none is billed twice. Transient refusals (rate limits, no worker, an
// unreachable bus or database) put the line back with a growing delay. When a batch has no line left to
// run, one runner writes its output and error files and ends it, in one transaction with the webhook event
// that tells of it (gateway/webhooks.ts).
import {
  and,
  asc,
  eq,
  exists,
  gte,
  inArray,
  isNull,
  lt,
  lte,
  notExists,
  or,
  type SQL,
  sql,
} from "drizzle-orm";
import { sha256Hex } from "../core/sha256.ts";
import type { Db } from "../db/open.ts";
import { waiveUsage } from "../meter/waived-usage.ts";
import type { ErrorBody } from "../schema/api.ts";
import type { BatchOutputLine } from "../schema/batch-api.ts";
import { batches, batchRequests, orgs, storedResponses } from "../schema/db.ts";
import type { WebhookEventType } from "../schema/webhook-api.ts";
import { principalOfKey, REQUEST_ID, RESPONSE_KEY, RUN_AS, type RunEnv } from "./auth.ts";
import type { BaseRoom } from "./batch-room.ts";
import { type ClaimTier, ClaimTurns } from "./claim-order.ts";
import type { BatchLineOutcome, GatewayLog, GatewayMetrics } from "./deps.ts";
import type { DueSweep } from "./due-sweep.ts";
import { ApiError } from "./errors.ts";
import { expiryOf, saveFile } from "./files.ts";
import { Pause } from "./pause.ts";
import { outputLogged } from "./response-event-log.ts";
import { responseId } from "./response-output.ts";
import { markBackground } from "./response-store.ts";
import { queueEvent } from "./webhooks.ts";

export interface BatchRunnerOptions {
  /** The gateway's app: a line runs as `app.fetch(request, env)` would run an HTTP request. */
  app: { fetch(request: Request, env?: object): Response | Promise<Response> };
  db: Db;
  log: GatewayLog;
  /** Counts lines by outcome and batches by how they ended (Prometheus on Node). */
  metrics?: GatewayMetrics | null;
  /** Lines this process runs at once. */
  concurrency: number;
  /** A claimed line not finished after this is taken again: longer than the longest request may run. */
  leaseMs: number;
  /** Wait between looks for work while there is none. */
  pollMs?: number;
  /** Ids for the files a batch ends with. */
  newId: () => string;
  runnerId: string;
  now?: () => number;
  /** Swept each pass when due, so that expired files go even while nobody uploads. */
  fileExpiry?: DueSweep | null;
  /**
   * The room batch lines have on each base's workers (batch-room.ts), read before each claim; a base's
   * lines are sent only into it. Null: no fleet view, `concurrency` alone limits.
   */
  room?: (() => Promise<ReadonlyMap<string, BaseRoom>>) | null;
}

/** Due lines looked at per free place, so that lines of a base with room are found behind a full one's. */
const CANDIDATES_PER_PLACE = 4;

/** How long stop() lets lines in flight finish before it cancels them and hands them back. */
export const DEFAULT_STOP_GRACE_MS = 30_000;

/**
 * Whether a line's answer says to try it again later rather than fail it: nothing ran, and waiting can
 * help (no worker yet, the bus or database out of reach, or a 429 that says when to try again: a rate
 * limit, the org's compile time). A 429 without Retry-After is one waiting cannot help: a spent monthly
 * quota, or a request larger than its key's whole tokens-per-minute limit.
 */
function transient(statusCode: number, retryAfter: string | null): boolean {
  if (statusCode === 429) return retryAfter !== null;
  return statusCode === 500 || statusCode === 502 || statusCode === 503;
}
const MAX_RETRY_DELAY_MS = 60_000;

/**
 * Whether a line may run again: any line but a background response's whose output began streaming into
 * its log (gateway/response-event-log.ts outputLogged), which would then show its text twice. That one
 * fails instead, as a live stream does when its worker is lost after tokens went out.
 */
async function rerunnable(db: Db, background: string | null): Promise<boolean> {
  return background === null || !(await outputLogged(db, background));
}

/** The error a streamed background response fails with when its run cannot be run again: why, then that. */
function notRunAgain(why: string): ErrorBody {
  return new ApiError(
    503,
    "server_error",
    `${why} Its output had begun streaming, and a second run would repeat it, so it was not run again; create the response again.`,
    "run_interrupted",
  ).body;
}

interface Claimed {
  batchId: string;
  line: number;
  base: string;
  customId: string;
  body: unknown;
  attempts: number;
}

/** A due line, locked for this pass's transaction, that the runner may claim. */
interface Candidate {
  orgId: string;
  tier: ClaimTier;
  batchId: string;
  keyId: string;
  line: number;
  base: string;
  /** "running": a line whose runner's lease ran out (it died), taken again as a new attempt. */
  status: string;
}

/**
 * Up to `share` due lines of each of these orgs' in-progress batches of one tier (batches.kind), each org's
 * oldest batch first and in line order, locked (FOR UPDATE SKIP LOCKED: lines another runner is claiming
 * are passed over, never taken twice).
 */
async function dueLinesOf(
  tx: Pick<Db, "select">,
  tier: ClaimTier,
  orgIds: string[],
  due: SQL | undefined,
  share: number,
): Promise<Candidate[]> {
  const lines = tx
    .select({
      batchId: batchRequests.batchId,
      keyId: batches.keyId,
      line: batchRequests.line,
      base: batchRequests.base,
      status: batchRequests.status,
      createdAt: batches.createdAt,
    })
    .from(batchRequests)
    .innerJoin(batches, eq(batches.id, batchRequests.batchId))
    .where(and(eq(batches.orgId, orgs.id), eq(batches.kind, tier), eq(batches.status, "in_progress"), due))
    .orderBy(asc(batches.createdAt), asc(batchRequests.batchId), asc(batchRequests.line))
    .limit(share)
    .for("update", { of: batchRequests, skipLocked: true })
    .as("due_line");
  const rows = await tx
    .select({
      orgId: orgs.id,
      batchId: lines.batchId,
      keyId: lines.keyId,
      line: lines.line,
      base: lines.base,
      status: lines.status,
    })
    .from(orgs)
    .innerJoinLateral(lines, sql`true`)
    .where(inArray(orgs.id, orgIds))
    .orderBy(asc(orgs.id), asc(lines.createdAt), asc(lines.batchId), asc(lines.line));
  return rows.map((row) => ({ ...row, tier }));
}

/**
 * The request id a line's attempt goes under: the same for the same batch, line and attempt, so an attempt
 * is billed once however often its usage event is delivered — the meter keeps one row per request id.
 * Every attempt the runner runs again, the one before it is waived (meter/waived-usage.ts): a line is
 * billed for the attempt that answered. Unguessable and unique as the batch's own id is.
 */
function lineRequestId(batchId: string, line: number, attempts: number): string {
  return sha256Hex(`${batchId}:${line}:${attempts}`).slice(0, 32);
}

export class BatchRunner {
  readonly #options: Required<BatchRunnerOptions>;
  #running = false;
  #inFlight = new Set<Promise<void>>();
  /**
   * Cancels the lines in flight once stop()'s grace is over. One for the runner, not one per line: a line
   * claimed before the stop but still reading its key when the grace ends sees it too, and never sends.
   */
  #cancelLines = new AbortController();
  #loop: Promise<void> | null = null;
  readonly #pause = new Pause();
  readonly #turns = new ClaimTurns();

  constructor(options: BatchRunnerOptions) {
    this.#options = {
      pollMs: 1_000,
      now: Date.now,
      metrics: null,
      fileExpiry: null,
      room: null,
      ...options,
    };
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop = this.#run();
  }

  /** Looks for lines now (new ones were queued) rather than at the end of its poll interval. */
  nudge(): void {
    this.#pause.wake();
  }

  /**
   * Stops claiming and waits up to `graceMs` for the lines in flight to finish (their answers are stored);
   * those still running then are cancelled and handed back, for this or another process to run again.
   */
  async stop(graceMs = DEFAULT_STOP_GRACE_MS): Promise<void> {
    this.#running = false;
    this.#pause.wake();
    await this.#loop;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const graceOver = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, graceMs);
    });
    await Promise.race([Promise.all(this.#inFlight), graceOver]);
    clearTimeout(timer);
    this.#cancelLines.abort();
    await Promise.all(this.#inFlight);
    // Every line has ended: a later start() or drain() runs lines again.
    this.#cancelLines = new AbortController();
  }

  async #run(): Promise<void> {
    while (this.#running) {
      let claimed = 0;
      try {
        await this.#expire();
        claimed = await this.#claimAndStart();
        await this.#finishEnded();
        const swept = await this.#options.fileExpiry?.ifDue(this.#options.db);
        if (swept) this.#options.log.info({ deleted: swept }, "deleted files past their expires_at");
      } catch (error) {
        this.#options.log.warn(
          { err: error instanceof Error ? error.message : String(error) },
          "batch runner pass failed",
        );
      }
      // Full, or nothing to do: wait for a line to finish or for the next look.
      if (claimed === 0 || this.#inFlight.size >= this.#options.concurrency) {
        await this.#pause.sleep(this.#options.pollMs);
      }
    }
  }

  /** One pass over what is due, for tests: expire, claim and run lines to the end, finish batches. */
  async drain(): Promise<void> {
    for (;;) {
      await this.#expire();
      const claimed = await this.#claimAndStart();
      await Promise.all(this.#inFlight);
      await this.#finishEnded();
      if (claimed === 0) return;
    }
  }

  /** Lines of batches past their window will not run; stale claims of cancelled batches are let go. */
  async #expire(): Promise<void> {
    const { db } = this.#options;
    const now = new Date(this.#options.now());
    const overdue = db
      .select({ id: batches.id })
      .from(batches)
      .where(and(eq(batches.status, "in_progress"), lt(batches.expiresAt, now)));
    await db
      .update(batchRequests)
      .set({ status: "expired" })
      .where(and(inArray(batchRequests.batchId, overdue), eq(batchRequests.status, "pending")));
    const cancelling = db.select({ id: batches.id }).from(batches).where(eq(batches.status, "cancelling"));
    await db
      .update(batchRequests)
      .set({ status: "cancelled" })
      .where(
        and(
          inArray(batchRequests.batchId, cancelling),
          eq(batchRequests.status, "running"),
          lt(batchRequests.claimedAt, this.#staleBefore()),
        ),
      );
  }

  #staleBefore(): Date {
    return new Date(this.#options.now() - this.#options.leaseMs);
  }

  /** Claims up to the free places' worth of due lines and starts each; how many it claimed. */
  async #claimAndStart(): Promise<number> {
    const { db, concurrency, runnerId } = this.#options;
    const room = concurrency - this.#inFlight.size;
    if (room <= 0) return 0;
    const now = new Date(this.#options.now());
    const fleet = this.#options.room ? await this.#options.room() : null;
    const wanted = fleet ? room * CANDIDATES_PER_PLACE : room;
    const { claimed, looked } = await db.transaction(async (tx) => {
      const due = or(
        // Pending lines, unless put back until later (claimedAt is then when they may run).
        and(
          eq(batchRequests.status, "pending"),
          or(isNull(batchRequests.claimedAt), lte(batchRequests.claimedAt, now)),
        ),
        and(eq(batchRequests.status, "running"), lt(batchRequests.claimedAt, this.#staleBefore())),
      );
      const dueOrgs = await tx
        .select({
          orgId: batches.orgId,
          tier: sql<ClaimTier>`${batches.kind}`,
          oldest: sql<Date>`min(${batches.createdAt})`.mapWith(batches.createdAt),
        })
        .from(batches)
        .where(
          and(
            eq(batches.status, "in_progress"),
            exists(
              tx
                .select({ one: sql`1` })
                .from(batchRequests)
                .where(and(eq(batchRequests.batchId, batches.id), due)),
            ),
          ),
        )
        .groupBy(batches.orgId, batches.kind);
      // The orgs whose turn it is, each asked for twice its even share of the lines wanted, so that one with
      // fewer leaves room to the others, while the lines looked at (and locked) stay about 2 × wanted.
      const looked = this.#turns.order(dueOrgs).slice(0, wanted);
      const share = Math.ceil((2 * wanted) / Math.max(1, looked.length));
      const candidates: Candidate[] = [];
      for (const tier of ["background", "batch"] as const) {
        const orgIds = looked.filter((org) => org.tier === tier).map((org) => org.orgId);
        if (orgIds.length > 0) candidates.push(...(await dueLinesOf(tx, tier, orgIds, due, share)));
      }
      const mayGo = await this.#budget(tx, fleet, new Set(candidates.map((c) => c.base)));
      const out: Claimed[] = [];
      for (const candidate of this.#turns.interleave(looked, candidates)) {
        const { batchId, line, base } = candidate;
        if (out.length >= room) break;
        if (!mayGo(base)) continue;
        // A line whose runner died runs again as a new attempt; the dead runner's is waived (a background
        // response's only once it is known to run again: #runLine).
        const stale = candidate.status === "running";
        const [row] = await tx
          .update(batchRequests)
          .set({
            status: "running",
            claimedBy: runnerId,
            claimedAt: now,
            ...(stale ? { attempts: sql`${batchRequests.attempts} + 1` } : {}),
          })
          .where(and(eq(batchRequests.batchId, batchId), eq(batchRequests.line, line)))
          .returning({
            body: batchRequests.body,
            customId: batchRequests.customId,
            attempts: batchRequests.attempts,
          });
        if (stale && candidate.tier === "batch") await this.#waive(tx, candidate, row!.attempts - 1);
        out.push({
          batchId,
          line,
          base,
          customId: row!.customId,
          body: row!.body,
          attempts: row!.attempts,
        });
      }
      return { claimed: out, looked };
    });
    // Every org looked at had its turn, lines claimed or not (all for bases without room): the next pass
    // looks at the others first, so orgs behind them are not held back by bases they do not use.
    this.#turns.served(looked.map((org) => org.orgId));
    for (const line of claimed) {
      const done: Promise<void> = this.#runLine(line)
        .catch((error) =>
          this.#options.log.error(
            {
              batch: line.batchId,
              line: line.line,
              err: error instanceof Error ? error.message : String(error),
            },
            "batch line failed to run",
          ),
        )
        .finally(() => {
          this.#inFlight.delete(done);
          this.#pause.wake();
        });
      this.#inFlight.add(done);
    }
    return claimed.length;
  }

  /**
   * Whether one more line of a base may go now (each yes counts against the base): within the room its
   * workers reported, less the lines every runner claimed since (their heartbeats do not count those yet);
   * one at a time for a base with no live worker, which waits in the base's queue where the autoscaler sees
   * it. Without a fleet view, always. `bases`: those of the lines about to be claimed.
   */
  async #budget(
    tx: Pick<Db, "select">,
    fleet: ReadonlyMap<string, BaseRoom> | null,
    bases: ReadonlySet<string>,
  ): Promise<(base: string) => boolean> {
    if (!fleet || bases.size === 0) return () => true;
    const inFlight = await tx
      .select({ base: batchRequests.base, claimedAt: batchRequests.claimedAt })
      .from(batchRequests)
      .where(
        and(
          inArray(batchRequests.base, [...bases]),
          eq(batchRequests.status, "running"),
          gte(batchRequests.claimedAt, this.#staleBefore()),
        ),
      );
    const left = new Map<string, number>();
    return (base) => {
      let places = left.get(base);
      if (places === undefined) {
        const room = fleet.get(base);
        const sent = inFlight.filter((line) => line.base === base);
        places = room
          ? room.places - sent.filter((line) => line.claimedAt!.getTime() > room.asOf).length
          : 1 - sent.length;
      }
      left.set(base, places - 1);
      return places > 0;
    };
  }

  /** Waives the usage of a line's attempt that runs again (meter/waived-usage.ts). */
  async #waive(
    tx: Parameters<typeof waiveUsage>[0],
    line: { batchId: string; line: number; base: string; orgId: string; keyId: string; tier: ClaimTier },
    attempt: number,
  ): Promise<void> {
    await waiveUsage(tx, {
      requestId: lineRequestId(line.batchId, line.line, attempt),
      orgId: line.orgId,
      apiKeyId: line.keyId,
      base: line.base,
      batch: line.tier === "batch",
      at: new Date(this.#options.now()),
    });
  }

  /**
   * Puts a line back to run again as its next attempt, at `at` (null: at once), waiving this attempt's
   * usage in the same transaction; nothing when the line is no longer this runner's to put back.
   */
  async #runAgain(
    line: Claimed & { orgId: string; keyId: string; tier: ClaimTier },
    at: Date | null,
  ): Promise<void> {
    await this.#options.db.transaction(async (tx) => {
      const put = await tx
        .update(batchRequests)
        .set({ status: "pending", claimedBy: null, claimedAt: at, attempts: line.attempts + 1 })
        .where(and(this.#ownLine(line.batchId, line.line), eq(batchRequests.status, "running")))
        .returning({ line: batchRequests.line });
      if (put.length > 0) await this.#waive(tx, line, line.attempts);
    });
  }

  async #runLine(claimed: Claimed): Promise<void> {
    const { batchId, line, customId, body, attempts } = claimed;
    const { db, app } = this.#options;
    const cancelled = this.#cancelLines.signal;
    const [batch] = await db
      .select({ orgId: batches.orgId, keyId: batches.keyId, endpoint: batches.endpoint, kind: batches.kind })
      .from(batches)
      .where(eq(batches.id, batchId));
    if (!batch) return;
    const attempt = { ...claimed, orgId: batch.orgId, keyId: batch.keyId, tier: batch.kind as ClaimTier };
    // A background response's line answers the response created under its custom_id.
    const background = batch.kind === "background" ? responseId(customId) : null;
    if (background) await markBackground(db, background, "in_progress");
    const principal = await principalOfKey(db, batch.keyId);
    let statusCode: number;
    let response: unknown;
    let requestId: string | null = null;
    let retryAfter: string | null = null;
    if (!principal) {
      statusCode = 401;
      response = {
        error: {
          message: "The API key that created this batch was revoked.",
          type: "invalid_request_error",
          param: null,
          code: "invalid_api_key",
        },
      };
    } else if (!(await rerunnable(db, background))) {
      // An earlier run streamed output and its gateway died (its claim ran out): failed below, as a
      // transient failure that cannot be retried.
      statusCode = 503;
      response = new ApiError(503, "server_error", "The gateway running this response stopped while it ran.")
        .body;
    } else {
      // A background response taken again after its runner died runs again (its output did not begin):
      // the dead run's usage is waived, as a batch line's is when it is claimed. Waiving is idempotent.
      if (background && attempts > 0) await db.transaction((tx) => this.#waive(tx, attempt, attempts - 1));
      // A line whose runner was stopped before it could send is not sent: it goes back below.
      const answer = cancelled.aborted
        ? null
        : await app.fetch(
            new Request(`http://batch.internal${batch.endpoint}`, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify(body),
              signal: cancelled,
            }),
            {
              [RUN_AS]: principal,
              [REQUEST_ID]: lineRequestId(batchId, line, attempts),
              ...(background ? { [RESPONSE_KEY]: customId } : {}),
            } satisfies RunEnv,
          );
      response = answer ? await answer.json() : null;
      requestId = answer?.headers.get("x-request-id") ?? null;
      retryAfter = answer?.headers.get("retry-after") ?? null;
      if (answer && !cancelled.aborted) statusCode = answer.status;
      else if (await rerunnable(db, background)) {
        // Cancelled by stop(): not an answer. The line goes back, to run again at once, as a new attempt
        // (this one's usage waived: the line is billed for the attempt that answers).
        await this.#runAgain(attempt, null);
        this.#counted("handed_back");
        return;
      } else {
        // Failed below, as a transient failure it cannot retry.
        statusCode = 503;
        response = new ApiError(
          503,
          "server_error",
          "The gateway running this response shut down while it ran.",
        ).body;
      }
    }
    const where = this.#ownLine(batchId, line);
    if (transient(statusCode, retryAfter)) {
      if (await rerunnable(db, background)) {
        // Each attempt waits twice as long as the one before, up to a minute; this one's usage is waived.
        const delay = Math.min(MAX_RETRY_DELAY_MS, 1_000 * 2 ** attempts);
        await this.#runAgain(attempt, new Date(this.#options.now() + delay));
        this.#counted("retried");
        return;
      }
      const error = (response as { error?: { message?: string } } | null)?.error;
      response = notRunAgain(error?.message ?? `The response's run ended with HTTP ${statusCode}.`);
    }
    await db.update(batchRequests).set({ status: "done", statusCode, response, requestId }).where(where);
    // A background response's run stored the response itself; one that failed says why.
    if (background && statusCode !== 200) {
      const error = (response as { error?: { code?: string | null; message?: string } } | null)?.error;
      await markBackground(db, background, "failed", {
        code: error?.code ?? "server_error",
        message: error?.message ?? `The response's run ended with HTTP ${statusCode}.`,
      });
    }
    this.#counted(statusCode === 200 ? "answered" : "failed");
  }

  #counted(outcome: BatchLineOutcome): void {
    this.#options.metrics?.batchLine(outcome);
  }

  /**
   * Ends a background response's hidden batch. Its response was stored by its run, or marked failed or
   * cancelled; one whose 24 hours passed before it ran is marked failed here, and so is one whose run
   * answered but could not store its answer (logged by the route), so no reader waits for it forever.
   */
  async #endBackground(
    tx: Pick<Db, "select" | "insert" | "update">,
    batch: { id: string; orgId: string; status: string },
    lines: readonly { status: string; statusCode: number | null; customId: string }[],
  ): Promise<void> {
    const { id, status } = batch;
    const [line] = lines;
    if (line?.status === "expired") {
      await markBackground(tx, responseId(line.customId), "failed", {
        code: "expired",
        message: "The response could not be run within 24 hours.",
      });
    }
    if (line?.status === "done") {
      // A no-op for a response its run stored (or that was cancelled): only one not ended is marked.
      await markBackground(tx, responseId(line.customId), "failed", {
        code: "server_error",
        message: "The response was run, but its answer could not be stored.",
      });
    }
    if (line) await this.#responseEnded(tx, batch.orgId, responseId(line.customId));
    const now = new Date(this.#options.now());
    const answered = line?.status === "done" && line.statusCode === 200 ? 1 : 0;
    const ended =
      status === "cancelling" ? "cancelled" : line?.status === "expired" ? "expired" : "completed";
    await tx
      .update(batches)
      .set({
        status: ended,
        completedCount: answered,
        failedCount: lines.length - answered,
        finalizingAt: now,
        endedAt: now,
      })
      .where(eq(batches.id, id));
  }

  /** Queues the webhook event of a background response's end, by the status it ended with. */
  async #responseEnded(tx: Pick<Db, "select" | "insert">, orgId: string, id: string): Promise<void> {
    const [row] = await tx
      .select({ status: sql<string>`${storedResponses.response} ->> 'status'` })
      .from(storedResponses)
      .where(eq(storedResponses.id, id));
    const ended = {
      completed: "response.completed",
      incomplete: "response.incomplete",
      failed: "response.failed",
      cancelled: "response.cancelled",
    } as const;
    const type = row ? ended[row.status as keyof typeof ended] : undefined;
    if (type) await this.#queueEvent(tx, orgId, type, id);
  }

  async #queueEvent(
    tx: Pick<Db, "select" | "insert">,
    orgId: string,
    type: WebhookEventType,
    subject: string,
  ): Promise<void> {
    await queueEvent(tx, orgId, {
      id: `evt_${this.#options.newId()}`,
      type,
      subject,
      at: new Date(this.#options.now()),
    });
  }

  /** The line, while this runner's claim on it holds. */
  #ownLine(batchId: string, line: number) {
    return and(
      eq(batchRequests.batchId, batchId),
      eq(batchRequests.line, line),
      eq(batchRequests.claimedBy, this.#options.runnerId),
    );
  }

  /** Ends every batch with no line left to run: its output and error files, its counts, its status. */
  async #finishEnded(): Promise<void> {
    const { db } = this.#options;
    const unfinished = db
      .select({ line: batchRequests.line })
      .from(batchRequests)
      .where(
        and(eq(batchRequests.batchId, batches.id), inArray(batchRequests.status, ["pending", "running"])),
      );
    const open = await db
      .select({ id: batches.id })
      .from(batches)
      .where(and(inArray(batches.status, ["in_progress", "cancelling"]), notExists(unfinished)));
    for (const { id } of open) await this.#finish(id);
  }

  async #finish(id: string): Promise<void> {
    const { db, newId } = this.#options;
    await db.transaction(async (tx) => {
      const [batch] = await tx
        .select()
        .from(batches)
        .where(and(eq(batches.id, id), inArray(batches.status, ["in_progress", "cancelling"])))
        .for("update", { skipLocked: true });
      if (!batch) return;
      const [left] = await tx
        .select({ line: batchRequests.line })
        .from(batchRequests)
        .where(and(eq(batchRequests.batchId, id), inArray(batchRequests.status, ["pending", "running"])))
        .limit(1);
      if (left) return;
      const lines = await tx
        .select()
        .from(batchRequests)
        .where(eq(batchRequests.batchId, id))
        .orderBy(asc(batchRequests.line));
      if (batch.kind === "background") {
        await this.#endBackground(tx, batch, lines);
        return;
      }
      const outputs: BatchOutputLine[] = [];
      const errors: BatchOutputLine[] = [];
      for (const row of lines) {
        const id = `batch_req_${batch.id.slice("batch_".length)}_${row.line}`;
        if (row.status === "done") {
          const line: BatchOutputLine = {
            id,
            custom_id: row.customId,
            response: { status_code: row.statusCode!, request_id: row.requestId ?? "", body: row.response },
            error: null,
          };
          (row.statusCode === 200 ? outputs : errors).push(line);
        } else {
          const code = row.status === "expired" ? "batch_expired" : "batch_cancelled";
          const message =
            row.status === "expired"
              ? "This request could not be run within the batch's 24h completion window."
              : "The batch was cancelled before this request ran.";
          errors.push({ id, custom_id: row.customId, response: null, error: { code, message } });
        }
      }
      const now = new Date(this.#options.now());
      const write = async (rows: BatchOutputLine[], name: string) =>
        rows.length === 0
          ? null
          : (
              await saveFile(tx, {
                id: `file-${newId()}`,
                orgId: batch.orgId,
                purpose: "batch_output",
                filename: `${batch.id}_${name}.jsonl`,
                content: `${rows.map((row) => JSON.stringify(row)).join("\n")}\n`,
                createdAt: now,
                expiresAt: expiryOf(now, batch.outputExpiresAfterSeconds),
              })
            ).id;
      const status =
        batch.status === "cancelling"
          ? "cancelled"
          : lines.some((row) => row.status === "expired")
            ? "expired"
            : "completed";
      await tx
        .update(batches)
        .set({
          status,
          outputFileId: await write(outputs, "output"),
          errorFileId: await write(errors, "error"),
          completedCount: outputs.length,
          failedCount: errors.length,
          finalizingAt: now,
          endedAt: now,
        })
        .where(eq(batches.id, id));
      await this.#queueEvent(tx, batch.orgId, `batch.${status}`, batch.id);
      this.#options.log.info(
        { batch: batch.id, status, completed: outputs.length, failed: errors.length },
        "batch ended",
      );
      this.#options.metrics?.batchEnded(status);
    });
  }
}
