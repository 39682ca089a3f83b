// The gateway's errors as typed values, and the one place that turns any failure into OpenAI's error body
// `{"error": {"message", "type", "param", "code"}}` with its status. Handlers throw; app.ts's onError calls
// toApiError and errorResponse; nothing else builds an error response.
import type { z } from "zod";
import { BusUnavailableError } from "../bus/bus.ts";
import { WorkerLostError } from "../bus/reply-inbox.ts";
import { isDatabaseUnavailable } from "../db/unavailable.ts";
import { isUnstorableText } from "../db/unstorable-text.ts";
import type { ErrorBody, ErrorType } from "../schema/api.ts";
import type { WireErrorBody } from "../schema/wire.ts";
import { ApiKeyError } from "./api-keys.ts";

export type ErrorStatus = 400 | 401 | 403 | 404 | 405 | 409 | 413 | 429 | 500 | 502 | 503 | 504;

export class ApiError extends Error {
  override readonly name = "ApiError";
  constructor(
    readonly status: ErrorStatus,
    readonly type: ErrorType,
    message: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
    /** Extra response headers, e.g. Retry-After. */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }

  get body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export function invalidRequest(message: string, param: string | null = null, code: string | null = null) {
  return new ApiError(400, "invalid_request_error", message, code, param);
}

export function invalidApiKey(message: string): ApiError {
  return new ApiError(401, "invalid_request_error", message, "invalid_api_key");
}

export function permissionDenied(message: string): ApiError {
  return new ApiError(403, "permission_error", message, "insufficient_permissions");
}

/** The same answer for a model that does not exist and one another org owns: existence is not revealed. */
/** `param`: the parameter that named it (a base in GET /v1/fleet/scale's `base`). */
export function modelNotFound(model: string, param = "model"): ApiError {
  return new ApiError(
    404,
    "invalid_request_error",
    `The model \`${model}\` does not exist or you do not have access to it.`,
    "model_not_found",
    param,
  );
}

/**
 * An alias of the caller's org whose versions are all at traffic weight 0: it exists, so saying it does not
 * would mislead; still model_not_found, as no model runs under that id until a version takes traffic.
 */
export function aliasWithoutTraffic(model: string, alias: string, versions: readonly string[]): ApiError {
  const example = versions.at(-1) ?? "ORG/NAME";
  return new ApiError(
    404,
    "invalid_request_error",
    `The model \`${model}\` is the alias ${alias}, but none of its versions (${versions.join(", ")}) takes traffic: every one has traffic weight 0. Give one a weight above 0 (luminet adapters set-traffic ${example} --weight 100, or PATCH /v1/adapters/${example} with {"traffic_weight": 100}), or request a version by its own model id.`,
    "model_not_found",
    "model",
  );
}

export function routeNotFound(method: string, path: string): ApiError {
  return new ApiError(404, "invalid_request_error", `Unknown request URL: ${method} ${path}.`, "unknown_url");
}

export function payloadTooLarge(limitBytes: number): ApiError {
  return new ApiError(
    413,
    "invalid_request_error",
    `The request body is larger than the limit of ${limitBytes} bytes.`,
    "request_too_large",
  );
}

export function noWorker(base: string, retryAfterSeconds: number): ApiError {
  return new ApiError(
    503,
    "server_error",
    `No worker is serving the base model \`${base}\` right now; retry in ${retryAfterSeconds} s.`,
    "no_worker",
    null,
    { "retry-after": String(retryAfterSeconds) },
  );
}

/** A request for a base with no worker waited in the base's queue for one to start; none claimed it in time. */
export function noWorkerStarted(base: string, waitedSeconds: number, retryAfterSeconds: number): ApiError {
  return new ApiError(
    503,
    "server_error",
    `No worker for the base model \`${base}\` started within ${waitedSeconds} s; retry in ${retryAfterSeconds} s.`,
    "no_worker",
    null,
    { "retry-after": String(retryAfterSeconds) },
  );
}

/** The gateway's NATS connection is down (it keeps reconnecting): nothing can reach a worker meanwhile. */
export function busUnavailable(): ApiError {
  return new ApiError(
    503,
    "server_error",
    "The gateway has lost its connection to the workers' message bus (NATS); retry in a few seconds.",
    "bus_unavailable",
  );
}

/** A conversation the caller's org does not have (another org's is not found either). */
export function conversationNotFound(id: string, param = "conversation_id"): ApiError {
  return new ApiError(
    404,
    "invalid_request_error",
    `Conversation with id '${id}' not found.`,
    "not_found",
    param,
  );
}

export function databaseUnavailable(): ApiError {
  return new ApiError(
    503,
    "server_error",
    "The gateway cannot reach its database right now; retry in a few seconds.",
    "database_unavailable",
  );
}

export function upstreamTimeout(seconds: number): ApiError {
  return new ApiError(504, "server_error", `No reply from a worker within ${seconds} s.`, "timeout");
}

export function internalError(message = "The server had an error while processing your request."): ApiError {
  return new ApiError(500, "server_error", message, "internal_error");
}

/** A body that failed its schema: the first problem, naming the field, as OpenAI reports one at a time. */
export function invalidBody(error: z.ZodError): ApiError {
  const issue = error.issues[0];
  if (!issue) return invalidRequest("The request body is invalid.");
  // A field the body may not have: its message names it; the param does too.
  if (issue.code === "unrecognized_keys") {
    return invalidRequest(issue.message, [...issue.path, issue.keys[0]!].map(String).join("."));
  }
  const param = issue.path.length > 0 ? issue.path.map(String).join(".") : null;
  return invalidRequest(param ? `Invalid value for '${param}': ${issue.message}` : issue.message, param);
}

/**
 * A worker's error (the Final of a failed request) as an API error. The worker's codes that mean "the
 * caller asked for something impossible" keep their meaning; anything else is the server's fault.
 */
export function fromWireError(error: WireErrorBody): ApiError {
  switch (error.code) {
    case "model_not_found":
    case "adapter_not_found":
      return new ApiError(404, "invalid_request_error", error.message, "model_not_found", "model");
    case "context_length_exceeded":
    case "invalid_request":
      return invalidRequest(error.message, null, error.code);
    default:
      return new ApiError(502, "server_error", `The worker failed: ${error.message}`, error.code);
  }
}

/**
 * Whether reading a request's pattern, grammar or schema overflowed the stack: the parsers recurse per
 * nesting level and per repeated element, so only input that nests or repeats far past any real use gets
 * here, and it is the caller's to shorten (TOO_DEEP says so).
 */
export function isTooDeep(error: unknown): boolean {
  return error instanceof RangeError && error.message.includes("call stack");
}
export const TOO_DEEP = "too long or too deeply nested to compile";

/** Anything thrown while serving a request, as the error the client sees. */
export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof BusUnavailableError) return busUnavailable();
  if (isDatabaseUnavailable(error)) return databaseUnavailable();
  // Hono decodes a path's %XX escapes when a route reads a parameter; one that is not UTF-8 throws.
  if (error instanceof URIError) {
    return invalidRequest(
      "The request's URL holds a malformed percent-escape (a %XX sequence that is not UTF-8).",
    );
  }
  if (isUnstorableText(error)) {
    return invalidRequest(
      "The request holds a NUL character (U+0000) where none can be kept: in an id, a name or a path.",
    );
  }
  if (error instanceof ApiKeyError) {
    return error.kind === "not_found"
      ? new ApiError(404, "invalid_request_error", error.message, "key_not_found", "prefix")
      : invalidRequest(error.message);
  }
  if (error instanceof WorkerLostError) {
    return new ApiError(
      502,
      "server_error",
      "The worker serving this request was lost after it began generating; the request was not restarted.",
      "worker_lost",
    );
  }
  return internalError();
}

export function errorResponse(error: ApiError, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(error.body), {
    status: error.status,
    headers: { "content-type": "application/json", ...error.headers, ...headers },
  });
}
