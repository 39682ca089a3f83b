// The Batch API's batches: created from an input file whose every line is checked first (a file with a bad
// line is refused whole, naming the line, so a batch never starts half-valid), kept as a row per batch and
// a row per line (schema/db.ts batches, batch_requests) that the batch runner (batch-runner.ts) claims,
// runs and finishes. Functions of the request's database handle, as the Workers entry opens one per request.
import { and, count, desc, eq, inArray } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import {
  type BatchCreateRequest,
  type BatchEndpoint,
  BatchInputLine,
  type BatchObject,
  type BatchStatus,
  type ListPage,
} from "../schema/batch-api.ts";
import { type BatchRow, batches, batchRequests } from "../schema/db.ts";
import { ApiError, invalidRequest } from "./errors.ts";
import { DEFAULT_BATCH_FILE_SECONDS, fileNotFound, loadFile } from "./files.ts";
import { afterRow, listPage } from "./list-page.ts";
import { parseModelId } from "./model-id.ts";

/** Most lines one batch may hold (OpenAI's limit). */
export const MAX_BATCH_LINES = 50_000;
/** How long a batch may run: its completion_window, "24h". */
export const COMPLETION_WINDOW_MS = 24 * 60 * 60_000;
/** Lines inserted per statement when a batch is created. */
const INSERT_CHUNK = 1_000;

export function batchNotFound(id: string): ApiError {
  return new ApiError(404, "invalid_request_error", `No such batch: ${id}`, "batch_not_found", "batch_id");
}

/** The lines of an input file, each checked; throws a 400 naming the first bad line (from 1). */
export function parseBatchInput(content: string, endpoint: BatchEndpoint): BatchInputLine[] {
  const texts = content.split("\n").filter((line) => line.trim() !== "");
  if (texts.length === 0) throw invalidRequest("The input file has no requests.", "input_file_id");
  if (texts.length > MAX_BATCH_LINES) {
    throw invalidRequest(
      `The input file has ${texts.length} requests; a batch takes at most ${MAX_BATCH_LINES}.`,
      "input_file_id",
    );
  }
  const seen = new Set<string>();
  return texts.map((text, i) => {
    const bad = (why: string) => invalidRequest(`Line ${i + 1} of the input file: ${why}`, "input_file_id");
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw bad("not valid JSON.");
    }
    const parsed = BatchInputLine.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw bad(`${issue.path.join(".") || "the line"} ${issue.message}.`);
    }
    const line = parsed.data;
    if (line.url !== endpoint) throw bad(`url ${line.url} is not the batch's endpoint ${endpoint}.`);
    if (seen.has(line.custom_id)) throw bad(`custom_id "${line.custom_id}" is used by an earlier line.`);
    if (line.body.stream === true) throw bad("body.stream cannot be true in a batch.");
    // A batch line is already run later, at the batch price, into the batch's output file.
    if (line.body.background === true) throw bad("body.background cannot be true in a batch.");
    seen.add(line.custom_id);
    return line;
  });
}

export interface BatchCreator {
  orgId: string;
  keyId: string;
}

/** Checks the input file and stores the batch and its lines, ready for a runner. */
export async function createBatch(
  db: Db,
  creator: BatchCreator,
  request: BatchCreateRequest,
  id: string,
  now: Date,
): Promise<BatchObject> {
  const file = await loadFile(db, creator.orgId, request.input_file_id, now);
  if (!file) throw fileNotFound(request.input_file_id);
  if (file.purpose !== "batch") {
    throw invalidRequest(
      `File ${file.id} has purpose "${file.purpose}"; a batch's input needs purpose "batch".`,
      "input_file_id",
    );
  }
  const lines = parseBatchInput(file.content, request.endpoint);
  const row = {
    id,
    orgId: creator.orgId,
    keyId: creator.keyId,
    kind: "batch",
    endpoint: request.endpoint,
    inputFileId: file.id,
    completionWindow: request.completion_window,
    status: "in_progress",
    outputExpiresAfterSeconds: request.output_expires_after?.seconds ?? DEFAULT_BATCH_FILE_SECONDS,
    metadata: request.metadata ?? null,
    createdAt: now,
    expiresAt: new Date(now.getTime() + COMPLETION_WINDOW_MS),
  };
  await db.transaction(async (tx) => {
    await tx.insert(batches).values(row);
    for (let start = 0; start < lines.length; start += INSERT_CHUNK) {
      await tx.insert(batchRequests).values(
        lines.slice(start, start + INSERT_CHUNK).map((line, k) => ({
          batchId: id,
          line: start + k,
          customId: line.custom_id,
          body: line.body,
          base: baseOfBody(line.body),
          status: "pending",
        })),
      );
    }
  });
  return batchObject(
    { ...row, outputFileId: null, errorFileId: null, completedCount: null, failedCount: null },
    { total: lines.length, completed: 0, failed: 0 },
  );
}

export interface RequestCounts {
  total: number;
  completed: number;
  failed: number;
}

const seconds = (date: Date | null) => (date ? Math.floor(date.getTime() / 1000) : null);

export function batchObject(
  row: Omit<BatchRow, "cancellingAt" | "finalizingAt" | "endedAt"> &
    Partial<Pick<BatchRow, "cancellingAt" | "finalizingAt" | "endedAt">>,
  counts: RequestCounts,
): BatchObject {
  const status = row.status as BatchStatus;
  const ended = seconds(row.endedAt ?? null);
  return {
    id: row.id,
    object: "batch",
    endpoint: row.endpoint,
    errors: null,
    input_file_id: row.inputFileId,
    completion_window: row.completionWindow,
    status,
    output_file_id: row.outputFileId,
    error_file_id: row.errorFileId,
    created_at: seconds(row.createdAt)!,
    in_progress_at: seconds(row.createdAt)!,
    expires_at: seconds(row.expiresAt)!,
    finalizing_at: seconds(row.finalizingAt ?? null),
    completed_at: status === "completed" ? ended : null,
    failed_at: null,
    expired_at: status === "expired" ? ended : null,
    cancelling_at: seconds(row.cancellingAt ?? null),
    cancelled_at: status === "cancelled" ? ended : null,
    request_counts: counts,
    metadata: (row.metadata as Record<string, string> | null) ?? null,
  };
}

/** Each batch's counts: the stored ones of an ended batch, else counted from its lines. */
async function countsOf(db: Db, rows: readonly BatchRow[]): Promise<Map<string, RequestCounts>> {
  const counts = new Map<string, RequestCounts>();
  const running = rows.filter((row) => row.completedCount === null).map((row) => row.id);
  if (running.length > 0) {
    const grouped = await db
      .select({
        batchId: batchRequests.batchId,
        status: batchRequests.status,
        statusCode: batchRequests.statusCode,
        n: count(),
      })
      .from(batchRequests)
      .where(inArray(batchRequests.batchId, running))
      .groupBy(batchRequests.batchId, batchRequests.status, batchRequests.statusCode);
    for (const { batchId, status, statusCode, n } of grouped) {
      const c = counts.get(batchId) ?? { total: 0, completed: 0, failed: 0 };
      c.total += n;
      if (status === "done" && statusCode === 200) c.completed += n;
      else if (status !== "pending" && status !== "running") c.failed += n;
      counts.set(batchId, c);
    }
  }
  for (const row of rows) {
    if (row.completedCount !== null) {
      const completed = row.completedCount;
      const failed = row.failedCount ?? 0;
      counts.set(row.id, { total: completed + failed, completed, failed });
    }
  }
  return counts;
}

export async function loadBatch(db: Db, orgId: string, id: string): Promise<BatchObject | null> {
  const [row] = await db
    .select()
    .from(batches)
    .where(and(eq(batches.orgId, orgId), eq(batches.id, id), eq(batches.kind, "batch")));
  if (!row) return null;
  const counts = await countsOf(db, [row]);
  return batchObject(row, counts.get(row.id) ?? { total: 0, completed: 0, failed: 0 });
}

/** A page of the org's batches, newest first, after the batch `after` when given. */
export async function listBatches(
  db: Db,
  orgId: string,
  options: { limit: number; after: string | null },
): Promise<ListPage<BatchObject>> {
  const conditions = [eq(batches.orgId, orgId), eq(batches.kind, "batch")];
  if (options.after) {
    const later = await afterRow(db, batches, and(...conditions), options.after);
    if (!later) throw invalidRequest(`No such batch: ${options.after}`, "after");
    conditions.push(later);
  }
  const rows = await db
    .select()
    .from(batches)
    .where(and(...conditions))
    .orderBy(desc(batches.createdAt), desc(batches.id))
    .limit(options.limit + 1);
  const counts = await countsOf(db, rows.slice(0, options.limit));
  return listPage(
    rows.map((row) => batchObject(row, counts.get(row.id) ?? { total: 0, completed: 0, failed: 0 })),
    options.limit,
  );
}

/**
 * Cancels a running batch: its lines not yet started will not run, those running finish, and a runner
 * then ends it "cancelled" with what was done. A batch that has ended cannot be cancelled (409).
 */
export async function cancelBatch(db: Db, orgId: string, id: string, now: Date): Promise<BatchObject> {
  const [row] = await db
    .update(batches)
    .set({ status: "cancelling", cancellingAt: now })
    .where(
      and(
        eq(batches.orgId, orgId),
        eq(batches.id, id),
        eq(batches.kind, "batch"),
        eq(batches.status, "in_progress"),
      ),
    )
    .returning();
  if (!row) {
    const batch = await loadBatch(db, orgId, id);
    if (!batch) throw batchNotFound(id);
    if (batch.status === "cancelling") return batch;
    throw new ApiError(
      409,
      "invalid_request_error",
      `Cannot cancel a batch with status ${batch.status}.`,
      "batch_not_cancellable",
    );
  }
  await db
    .update(batchRequests)
    .set({ status: "cancelled" })
    .where(and(eq(batchRequests.batchId, id), eq(batchRequests.status, "pending")));
  return (await loadBatch(db, orgId, id))!;
}

/** The hidden one-line batch that runs a background response (kind "background"). */
export const backgroundJobId = (responseKey: string) => `batch_bg_${responseKey}`;

/**
 * Queues a background Responses API response: a hidden batch of one line, the request itself, whose
 * custom_id is the response's id key, for the batch runners to run like any line. `db` may be a
 * transaction's handle (the queued response is stored in the same one).
 */
export async function queueBackgroundResponse(
  db: Pick<Db, "insert">,
  creator: BatchCreator,
  responseKey: string,
  body: object,
  now: Date,
): Promise<void> {
  const id = backgroundJobId(responseKey);
  await db.insert(batches).values({
    id,
    orgId: creator.orgId,
    keyId: creator.keyId,
    kind: "background",
    endpoint: "/v1/responses",
    inputFileId: "",
    completionWindow: "24h",
    status: "in_progress",
    createdAt: now,
    expiresAt: new Date(now.getTime() + COMPLETION_WINDOW_MS),
  });
  await db
    .insert(batchRequests)
    .values({ batchId: id, line: 0, customId: responseKey, body, base: baseOfBody(body), status: "pending" });
}

/** Per base, the lines of running batches not yet sent to a worker (pending, put back ones included). */
export async function batchLinesWaiting(db: Db): Promise<Map<string, number>> {
  const rows = await db
    .select({ base: batchRequests.base, lines: count() })
    .from(batchRequests)
    .innerJoin(batches, eq(batches.id, batchRequests.batchId))
    .where(and(eq(batchRequests.status, "pending"), eq(batches.status, "in_progress")))
    .groupBy(batchRequests.base);
  return new Map(rows.map((row) => [row.base, row.lines]));
}

/** The base model a line's body names ("" without a model: its run refuses it). */
function baseOfBody(body: object): string {
  const model = (body as { model?: unknown }).model;
  return typeof model === "string" ? parseModelId(model).base : "";
}

/**
 * Stops a background response's run: not started, it never will; running, its answer is dropped (the
 * stored response says cancelled, which its run's save leaves as it is). False when there is no such job.
 */
export async function cancelBackgroundJob(db: Db, responseKey: string, now: Date): Promise<boolean> {
  const id = backgroundJobId(responseKey);
  const [row] = await db
    .update(batches)
    .set({ status: "cancelling", cancellingAt: now })
    .where(and(eq(batches.id, id), eq(batches.status, "in_progress")))
    .returning({ id: batches.id });
  if (!row) return false;
  await db
    .update(batchRequests)
    .set({ status: "cancelled" })
    .where(and(eq(batchRequests.batchId, id), eq(batchRequests.status, "pending")));
  return true;
}
