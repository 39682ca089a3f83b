// The Files API, on the caller's own org:
//   POST   /v1/files                 multipart/form-data: `file` (JSONL), `purpose` ("batch") and optionally
//                                    `expires_after[anchor]` ("created_at") and `expires_after[seconds]`
//   GET    /v1/files[?purpose=&limit=&after=]
//   GET    /v1/files/:id
//   GET    /v1/files/:id/content     the file as it was uploaded (or as a batch wrote it)
//   DELETE /v1/files/:id
// Uploads bypass the app's JSON body limit (app.ts mounts this before it) and are capped at maxFileBytes;
// an org's files together at maxOrgFileBytes.
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { z } from "zod";
import { ExpiresAfter, ListQuery, UPLOAD_PURPOSES } from "../../schema/batch-api.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { errorResponse, invalidBody, invalidRequest, payloadTooLarge } from "../errors.ts";
import {
  DEFAULT_BATCH_FILE_SECONDS,
  dropFile,
  expiryOf,
  fileNotFound,
  fileObject,
  listFiles,
  loadFile,
  saveUpload,
} from "../files.ts";

export function fileRoutes(deps: GatewayDeps, maxFileBytes: number): Hono<GatewayEnv> {
  const routes = new Hono<GatewayEnv>();

  routes.post(
    "/",
    // The form's other fields and boundaries take a little more than the file itself.
    bodyLimit({
      maxSize: maxFileBytes + 64 * 1024,
      onError: () => errorResponse(payloadTooLarge(maxFileBytes)),
    }),
    async (c) => {
      if (!c.req.header("content-type")?.startsWith("multipart/form-data")) {
        throw invalidRequest("Upload a file as multipart/form-data with the fields `file` and `purpose`.");
      }
      const form = await c.req.parseBody().catch(() => {
        throw invalidRequest("The multipart/form-data body could not be read: check its boundary and parts.");
      });
      const { file, purpose } = form;
      if (typeof purpose !== "string" || !(UPLOAD_PURPOSES as readonly string[]).includes(purpose)) {
        throw invalidRequest(`purpose must be one of ${UPLOAD_PURPOSES.join(", ")}.`, "purpose");
      }
      if (!(file instanceof File))
        throw invalidRequest("The form needs a `file` field holding the file.", "file");
      if (file.size > maxFileBytes) throw payloadTooLarge(maxFileBytes);
      let content: string;
      try {
        content = new TextDecoder("utf-8", { fatal: true }).decode(await file.arrayBuffer());
      } catch {
        throw invalidRequest("The file is not UTF-8 text; a batch's input is JSONL.", "file");
      }
      if (content.includes("\u0000")) {
        throw invalidRequest(
          "The file holds a NUL byte, which JSONL cannot: inside a JSON string it is written \\u0000.",
          "file",
        );
      }
      const createdAt = new Date(deps.now());
      const seconds = expiresAfterOf(form)?.seconds ?? DEFAULT_BATCH_FILE_SECONDS;
      const saved = await saveUpload(
        deps.db,
        {
          id: `file-${deps.newRequestId()}`,
          orgId: c.get("principal").orgId,
          purpose,
          filename: file.name || "upload.jsonl",
          content,
          createdAt,
          expiresAt: expiryOf(createdAt, seconds),
        },
        deps.limits.maxOrgFileBytes,
      );
      await deps.fileExpiry.afterWrite(deps.db, deps.log, {
        rows: "files",
        expired: "files past their expires_at",
      });
      return c.json(saved);
    },
  );

  routes.get("/", async (c) => {
    const query = ListQuery.safeParse(c.req.query());
    if (!query.success) throw invalidBody(query.error);
    const { limit, after, purpose } = query.data;
    return c.json(
      await listFiles(deps.db, c.get("principal").orgId, {
        limit,
        after: after ?? null,
        purpose: purpose ?? null,
        now: new Date(deps.now()),
      }),
    );
  });

  routes.get("/:id", async (c) => {
    const id = c.req.param("id");
    const row = await loadFile(deps.db, c.get("principal").orgId, id, new Date(deps.now()));
    if (!row) throw fileNotFound(id);
    return c.json(fileObject(row));
  });

  routes.get("/:id/content", async (c) => {
    const id = c.req.param("id");
    const row = await loadFile(deps.db, c.get("principal").orgId, id, new Date(deps.now()));
    if (!row) throw fileNotFound(id);
    return c.body(row.content, 200, { "content-type": "application/jsonl" });
  });

  routes.delete("/:id", async (c) => {
    const id = c.req.param("id");
    if (!(await dropFile(deps.db, c.get("principal").orgId, id, new Date(deps.now()))))
      throw fileNotFound(id);
    return c.json({ id, object: "file", deleted: true });
  });

  return routes;
}

/**
 * The upload's expiration policy: the form fields `expires_after[anchor]` and `expires_after[seconds]`, as
 * the OpenAI SDKs write an object into a form; null without them.
 */
function expiresAfterOf(form: Record<string, string | File | (string | File)[]>): ExpiresAfter | null {
  const anchor = form["expires_after[anchor]"];
  const seconds = form["expires_after[seconds]"];
  if (anchor === undefined && seconds === undefined) return null;
  const parsed = z.object({ expires_after: ExpiresAfter }).safeParse({
    expires_after: {
      anchor,
      // A form field is text: a number written in it is read as one, so "-1" is refused as out of range.
      seconds:
        typeof seconds === "string" && /^-?\d+(\.\d+)?$/.test(seconds.trim()) ? Number(seconds) : seconds,
    },
  });
  if (!parsed.success) throw invalidBody(parsed.error);
  return parsed.data.expires_after;
}
