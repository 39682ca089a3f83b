// An S3-compatible server for tests, in memory, path-style (/<bucket>/<key>): GetObject, PutObject and
// DeleteObject, each refused with S3's 403 SignatureDoesNotMatch unless its SigV4 signature, re-derived
// here from the request as it arrived (path, host and signed headers), matches; a PUT's body must match
// the sha256 and length it signed. Paths outside buckets go to an optional fallback handler, so one server
// can also play a plain http origin.
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { type AwsCredentials, signRequest } from "../../worker/adapters/sigv4.ts";

export interface S3Request {
  method: string;
  /** The decoded path, e.g. /bucket/prefix/key. */
  path: string;
  signature: "none" | "valid" | "invalid";
  /** The Authorization header names these credentials, date, region and service, and signs the required headers. */
  shape: boolean;
}

export interface S3Server {
  endpoint: string;
  /** Stored objects by decoded path (/bucket/key). */
  objects: Map<string, Buffer>;
  /** Every request since start, in order. */
  requests: S3Request[];
  close(): Promise<void>;
}

export interface S3ServerOptions {
  credentials: AwsCredentials;
  region: string;
  /** Buckets served; other paths go to `fallback` (or 404). */
  buckets: readonly string[];
  /** Answers a request outside the buckets; return false for a 404. */
  fallback?: (req: IncomingMessage, res: ServerResponse, path: string) => boolean;
}

const AUTH_SHAPE =
  /^AWS4-HMAC-SHA256 Credential=([A-Z0-9]+)\/(\d{8})\/([a-z0-9-]+)\/s3\/aws4_request,SignedHeaders=([a-z0-9;-]+),Signature=([0-9a-f]{64})$/;
const ALWAYS_SIGNED = ["host", "x-amz-content-sha256", "x-amz-date"];

function checkSignature(req: IncomingMessage, options: S3ServerOptions): { shape: boolean; valid: boolean } {
  const m = AUTH_SHAPE.exec(req.headers.authorization ?? "");
  const date = req.headers["x-amz-date"];
  if (!m || typeof date !== "string") return { shape: false, valid: false };
  const signed = m[4]!.split(";");
  const shape =
    m[1] === options.credentials.accessKeyId &&
    m[2] === date.slice(0, 8) &&
    m[3] === options.region &&
    ALWAYS_SIGNED.every((h) => signed.includes(h));
  const extra: Record<string, string> = {};
  for (const h of signed) if (!ALWAYS_SIGNED.includes(h)) extra[h] = String(req.headers[h]);
  const at = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(date);
  if (!at) return { shape: false, valid: false };
  const expected = signRequest({
    method: req.method!,
    url: new URL(`http://${req.headers.host}${req.url}`),
    headers: extra,
    payloadSha256: String(req.headers["x-amz-content-sha256"]),
    region: options.region,
    service: "s3",
    credentials: options.credentials,
    date: new Date(Date.UTC(+at[1]!, +at[2]! - 1, +at[3]!, +at[4]!, +at[5]!, +at[6]!)),
  });
  return { shape, valid: expected.authorization === req.headers.authorization };
}

async function bodyOf(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function s3Error(res: ServerResponse, status: number, code: string): void {
  res.writeHead(status, { "content-type": "application/xml" });
  res.end(`<Error><Code>${code}</Code><Message>refused by the test server</Message></Error>`);
}

export async function startS3Server(options: S3ServerOptions): Promise<S3Server> {
  const objects = new Map<string, Buffer>();
  const requests: S3Request[] = [];
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url!, "http://x").pathname);
    const signed = req.headers.authorization !== undefined;
    const check = signed ? checkSignature(req, options) : { shape: false, valid: false };
    requests.push({
      method: req.method!,
      path,
      signature: signed ? (check.valid ? "valid" : "invalid") : "none",
      shape: check.shape,
    });
    if (!options.buckets.some((bucket) => path.startsWith(`/${bucket}/`))) {
      if (!options.fallback?.(req, res, path)) res.writeHead(404).end();
      return;
    }
    if (!check.valid) return s3Error(res, 403, "SignatureDoesNotMatch");
    if (req.method === "PUT") {
      const body = await bodyOf(req);
      const digest = createHash("sha256").update(body).digest("hex");
      if (digest !== req.headers["x-amz-content-sha256"])
        return s3Error(res, 400, "XAmzContentSHA256Mismatch");
      if (body.length !== Number(req.headers["content-length"])) return s3Error(res, 400, "IncompleteBody");
      objects.set(path, body);
      res.writeHead(200).end();
      return;
    }
    if (req.method === "DELETE") {
      objects.delete(path);
      res.writeHead(204).end();
      return;
    }
    const body = objects.get(path);
    if (!body) return s3Error(res, 404, "NoSuchKey");
    res.writeHead(200, { "content-length": body.length }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    objects,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
