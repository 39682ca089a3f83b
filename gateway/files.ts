// The Files API's files: rows of the gateway's database (schema/db.ts files), scoped to their org, holding
// the whole text, so every gateway — on Node or on Workers — serves them. Functions of the request's
// database handle, as the Workers entry opens one per request. A file past its expires_at is gone from the
// API at once, and its row is deleted by the next sweep (sweepFiles, run by a DueSweep).
import { and, desc, eq, gt, isNull, or, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import type { FileObject, ListPage } from "../schema/batch-api.ts";
import { type FileRow, files } from "../schema/db.ts";
import { expiredRows } from "./due-sweep.ts";
import { ApiError, invalidRequest } from "./errors.ts";
import { afterRow, listPage } from "./list-page.ts";
import { orgStorageLimit } from "./org-storage-limit.ts";

/** Largest file accepted by default (OpenAI takes up to 200 MB for a batch; a file is one database row). */
export const DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024;

/**
 * What an org's files may hold together by default, its batches' output and error files included: OpenAI's
 * 100 GB per organization.
 */
export const DEFAULT_MAX_ORG_FILE_BYTES = 100 * 1024 ** 3;

/** Files uploaded for batches, and batches' output files, are kept this long unless asked otherwise. */
export const DEFAULT_BATCH_FILE_SECONDS = 30 * 24 * 60 * 60;

const unixSeconds = (date: Date) => Math.floor(date.getTime() / 1000);

export function fileObject(
  row: Pick<FileRow, "id" | "bytes" | "createdAt" | "filename" | "purpose" | "expiresAt">,
): FileObject {
  return {
    id: row.id,
    object: "file",
    bytes: row.bytes,
    created_at: unixSeconds(row.createdAt),
    expires_at: row.expiresAt ? unixSeconds(row.expiresAt) : null,
    filename: row.filename,
    purpose: row.purpose,
    status: "processed",
    status_details: null,
  };
}

export function fileNotFound(id: string): ApiError {
  return new ApiError(
    404,
    "invalid_request_error",
    `No such File object: ${id}`,
    "file_not_found",
    "file_id",
  );
}

export interface NewFile {
  id: string;
  orgId: string;
  purpose: string;
  filename: string;
  content: string;
  createdAt: Date;
  /** null: kept until deleted. */
  expiresAt: Date | null;
}

/** When a file created at `createdAt` and kept `seconds` expires. */
export function expiryOf(createdAt: Date, seconds: number): Date {
  return new Date(createdAt.getTime() + seconds * 1000);
}

/** Not expired at `now`. */
export const live = (now: Date) => or(isNull(files.expiresAt), gt(files.expiresAt, now));

/**
 * Stores an uploaded file unless the org's live files and it would hold more than their limit together
 * (the org's own, else `maxOrgBytes`, the gateway's; org-storage-limit.ts): a 400 then, as OpenAI answers
 * an organization over its file storage. Uploads of one org are counted one at a time (a
 * transaction-scoped advisory lock), so two at once cannot both fit into the last room. Output files a
 * batch writes are not refused (the batch must end), but they count.
 */
export async function saveUpload(db: Db, file: NewFile, maxOrgBytes: number): Promise<FileObject> {
  return db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${`luminet-files:${file.orgId}`}))`);
    const [row] = await tx
      .select({ used: sql<number>`coalesce(sum(${files.bytes}), 0)`.mapWith(Number) })
      .from(files)
      .where(and(eq(files.orgId, file.orgId), live(file.createdAt)));
    const used = row?.used ?? 0;
    const bytes = new TextEncoder().encode(file.content).length;
    const limit = await orgStorageLimit(tx, file.orgId, "files", maxOrgBytes);
    if (used + bytes > limit) {
      throw new ApiError(
        400,
        "invalid_request_error",
        `You have exceeded your file storage quota: your organization's files hold ${used} bytes, this one ` +
          `${bytes}, and together they may hold ${limit}. Please delete old files (DELETE /v1/files/{id}) ` +
          "or upload a smaller file.",
        "file_storage_limit_exceeded",
        "file",
      );
    }
    return saveFile(tx, file, bytes);
  });
}

/** Stores a file; `db` may be a transaction's handle; `bytes`: its content's UTF-8 length, if known. */
export async function saveFile(
  db: Pick<Db, "insert">,
  file: NewFile,
  bytes = new TextEncoder().encode(file.content).length,
): Promise<FileObject> {
  await db.insert(files).values({ ...file, bytes });
  return fileObject({ ...file, bytes });
}

/**
 * The org's file with this id, content included; null when there is none at `now` (expired, or another
 * org's).
 */
export async function loadFile(db: Db, orgId: string, id: string, now: Date): Promise<FileRow | null> {
  const [row] = await db
    .select()
    .from(files)
    .where(and(eq(files.orgId, orgId), eq(files.id, id), live(now)));
  return row ?? null;
}

/** False when the org has no file with this id at `now`. */
export async function dropFile(db: Db, orgId: string, id: string, now: Date): Promise<boolean> {
  const deleted = await db
    .delete(files)
    .where(and(eq(files.orgId, orgId), eq(files.id, id), live(now)))
    .returning({ id: files.id });
  return deleted.length > 0;
}

/** Deletes up to `limit` files expired at `now` (ms); returns how many. */
export const sweepFiles = expiredRows(files, files.id, files.expiresAt);

/**
 * A page of the org's files at `now`, newest first, after the file `after` when given, of one purpose if
 * given.
 */
export async function listFiles(
  db: Db,
  orgId: string,
  options: { limit: number; after: string | null; purpose: string | null; now: Date },
): Promise<ListPage<FileObject>> {
  const conditions = [eq(files.orgId, orgId), live(options.now)!];
  if (options.purpose) conditions.push(eq(files.purpose, options.purpose));
  if (options.after) {
    const later = await afterRow(db, files, eq(files.orgId, orgId), options.after);
    if (!later) throw invalidRequest(`No such File object: ${options.after}`, "after");
    conditions.push(later);
  }
  const rows = await db
    .select({
      id: files.id,
      bytes: files.bytes,
      createdAt: files.createdAt,
      filename: files.filename,
      purpose: files.purpose,
      expiresAt: files.expiresAt,
    })
    .from(files)
    .where(and(...conditions))
    .orderBy(desc(files.createdAt), desc(files.id))
    .limit(options.limit + 1);
  return listPage(rows.map(fileObject), options.limit);
}
