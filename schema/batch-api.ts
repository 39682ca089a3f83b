// OpenAI's Files and Batch APIs as Luminet serves them: a batch's input file of request lines, the create
// request as zod schemas, and the file and batch objects (the gateway builds them). A batch runs each line
// as the request it names, on the same path as a live request; only /v1/chat/completions, /v1/completions
// and /v1/responses are endpoints here (Luminet has no embeddings).
import { z } from "zod";
import { Metadata, textColumnString } from "./api.ts";

/** The endpoints a batch's lines may call. */
export const BATCH_ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/responses"] as const;
export type BatchEndpoint = (typeof BATCH_ENDPOINTS)[number];

/** Purposes a file may be uploaded with; "batch_output" files are written by batches only. */
export const UPLOAD_PURPOSES = ["batch"] as const;

/** Seconds a file may be kept for, as OpenAI bounds `expires_after`: one hour to 30 days. */
export const MIN_FILE_SECONDS = 3_600;
export const MAX_FILE_SECONDS = 2_592_000;

/**
 * How long a file is kept after it is created: a file's `expires_after`, a batch's
 * `output_expires_after`. Without one, files for batches (their inputs and outputs) are kept 30 days.
 */
export const ExpiresAfter = z.object({
  anchor: z.literal("created_at", { error: 'must be "created_at"' }),
  seconds: z.number().int().min(MIN_FILE_SECONDS).max(MAX_FILE_SECONDS),
});
export type ExpiresAfter = z.infer<typeof ExpiresAfter>;

export const BatchCreateRequest = z.object({
  input_file_id: z.string().min(1),
  endpoint: z.enum(BATCH_ENDPOINTS, { error: `must be one of ${BATCH_ENDPOINTS.join(", ")}` }),
  completion_window: z.literal("24h", { error: 'must be "24h"' }),
  output_expires_after: ExpiresAfter.optional(),
  metadata: Metadata.nullish(),
});
export type BatchCreateRequest = z.infer<typeof BatchCreateRequest>;

/** One line of a batch's input file. */
export const BatchInputLine = z.object({
  custom_id: textColumnString().min(1).max(512),
  method: z.literal("POST", { error: 'must be "POST"' }),
  url: z.enum(BATCH_ENDPOINTS, { error: `must be one of ${BATCH_ENDPOINTS.join(", ")}` }),
  body: z.record(z.string(), z.unknown()),
});
export type BatchInputLine = z.infer<typeof BatchInputLine>;

export type BatchStatus =
  | "validating"
  | "failed"
  | "in_progress"
  | "finalizing"
  | "completed"
  | "expired"
  | "cancelling"
  | "cancelled";

export interface FileObject {
  id: string;
  object: "file";
  bytes: number;
  created_at: number;
  /** When it goes (Unix seconds); null: kept until deleted. */
  expires_at: number | null;
  filename: string;
  purpose: string;
  status: "processed";
  status_details: null;
}

export interface BatchObject {
  id: string;
  object: "batch";
  endpoint: string;
  errors: null;
  input_file_id: string;
  completion_window: string;
  status: BatchStatus;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  in_progress_at: number;
  expires_at: number;
  finalizing_at: number | null;
  completed_at: number | null;
  failed_at: null;
  expired_at: number | null;
  cancelling_at: number | null;
  cancelled_at: number | null;
  request_counts: { total: number; completed: number; failed: number };
  metadata: Record<string, string> | null;
}

/** A line of a batch's output file (status 200) or error file (anything else). */
export interface BatchOutputLine {
  id: string;
  custom_id: string;
  response: { status_code: number; request_id: string; body: unknown } | null;
  error: { code: string; message: string } | null;
}

export interface ListPage<T> {
  object: "list";
  data: T[];
  first_id: string | null;
  last_id: string | null;
  has_more: boolean;
}

/** `limit` and `after` of a list request (files, batches). */
export const ListQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  after: z.string().min(1).optional(),
  purpose: z.string().min(1).optional(),
});
