// AWS Signature Version 4 for the S3-compatible blob store (AWS S3, Cloudflare R2, MinIO): the headers
// that authorize one request. A few lines of HMAC chaining, so no SDK; checked against AWS's own example.
import { createHash, createHmac } from "node:crypto";

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  /** Temporary credentials (STS) also carry a session token. */
  sessionToken?: string;
}

export interface SignableRequest {
  method: string;
  /** Its path must already be encoded with encodeS3Path: SigV4 signs the path exactly as sent. */
  url: URL;
  /** Headers to send and sign besides host, x-amz-date and x-amz-content-sha256. */
  headers?: Record<string, string>;
  /** Hex sha256 of the body; GETs sign the empty body's. */
  payloadSha256?: string;
  region: string;
  service: string;
  credentials: AwsCredentials;
  date?: Date;
}

export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** RFC 3986 percent-encoding as SigV4 wants it: everything but A-Z a-z 0-9 - . _ ~ is escaped. */
export function awsEncode(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/** An object key as a URL path: each segment encoded, the slashes kept (S3 does not normalize paths). */
export function encodeS3Path(segments: readonly string[]): string {
  return `/${segments.map(awsEncode).join("/")}`;
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac("sha256", key).update(data, "utf8").digest();
}

function sha256Hex(data: string): string {
  return createHash("sha256").update(data, "utf8").digest("hex");
}

/** 20130524T000000Z */
function amzDate(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}/, "");
}

function canonicalQuery(url: URL): string {
  const pairs = [...url.searchParams].map(([k, v]) => [awsEncode(k), awsEncode(v)] as const);
  pairs.sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join("&");
}

/** The headers to send with the request, `authorization` included. */
export function signRequest(request: SignableRequest): Record<string, string> {
  const date = request.date ?? new Date();
  const stamp = amzDate(date);
  const day = stamp.slice(0, 8);
  const payload = request.payloadSha256 ?? EMPTY_SHA256;
  const headers: Record<string, string> = {
    ...request.headers,
    host: request.url.host,
    "x-amz-content-sha256": payload,
    "x-amz-date": stamp,
  };
  if (request.credentials.sessionToken) headers["x-amz-security-token"] = request.credentials.sessionToken;

  const canonical = Object.entries(headers)
    .map(([name, value]) => [name.toLowerCase(), value.trim().replace(/\s+/g, " ")] as const)
    .sort(([a], [b]) => (a < b ? -1 : 1));
  const signedHeaders = canonical.map(([name]) => name).join(";");
  const canonicalRequest = [
    request.method.toUpperCase(),
    request.url.pathname,
    canonicalQuery(request.url),
    ...canonical.map(([name, value]) => `${name}:${value}`),
    "",
    signedHeaders,
    payload,
  ].join("\n");

  const scope = `${day}/${request.region}/${request.service}/aws4_request`;
  const stringToSign = ["AWS4-HMAC-SHA256", stamp, scope, sha256Hex(canonicalRequest)].join("\n");
  let key = hmac(`AWS4${request.credentials.secretAccessKey}`, day);
  for (const part of [request.region, request.service, "aws4_request"]) key = hmac(key, part);
  const signature = createHmac("sha256", key).update(stringToSign, "utf8").digest("hex");

  const { host: _host, ...sent } = headers;
  return {
    ...sent,
    authorization: `AWS4-HMAC-SHA256 Credential=${request.credentials.accessKeyId}/${scope},SignedHeaders=${signedHeaders},Signature=${signature}`,
  };
}
