// The CLI's side of the gateway's API: which gateway and key a command uses, and one HTTP call that
// returns the API's JSON or fails with the API's own message (or, when a server answers something else,
// with the URL it called). Flags win over the environment: --gateway over LUMINET_GATEWAY (default
// http://127.0.0.1:8080), --api-key over LUMINET_API_KEY; an empty value counts as unset.
import type { Command } from "commander";
import { CliError } from "./run-command.ts";

export interface GatewayFlags {
  gateway?: string;
  apiKey?: string;
}

const DEFAULT_GATEWAY = "http://127.0.0.1:8080";

/** A refusal from the API: its message, and its HTTP status for callers that tell refusals apart. */
export class GatewayError extends CliError {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** The rule of the commands that work either way (`luminet keys`, `luminet usage`), for their --help. */
export const GATEWAY_OR_DATABASE = `
Through the gateway when one is named (--gateway or LUMINET_GATEWAY) or an API key is given (--api-key or
LUMINET_API_KEY); flags win over the environment. Otherwise straight on DATABASE_URL: the operator's
way.`;

/** Adds --gateway and --api-key to a command; `key` says which key it needs. */
export function gatewayOptions(command: Command, key: string): Command {
  return command
    .option("--gateway <url>", `the gateway's URL (LUMINET_GATEWAY; default ${DEFAULT_GATEWAY})`)
    .option("--api-key <key>", `${key} (LUMINET_API_KEY)`);
}

/**
 * Whether a command that can also work on DATABASE_URL goes through the gateway: when a gateway or an API
 * key is named, by flag or environment.
 */
export function gatewayNamed(flags: GatewayFlags): boolean {
  return Boolean(flags.gateway || process.env.LUMINET_GATEWAY || flags.apiKey || process.env.LUMINET_API_KEY);
}

/** The key a command calls the gateway with, or undefined when none is named. */
export function apiKeyOf(flags: GatewayFlags): string | undefined {
  return flags.apiKey || process.env.LUMINET_API_KEY || undefined;
}

function connection(flags: GatewayFlags): { url: string; key: string } {
  const url = (flags.gateway || process.env.LUMINET_GATEWAY || DEFAULT_GATEWAY).replace(/\/+$/, "");
  const key = apiKeyOf(flags);
  if (!key) throw new CliError("no API key: pass --api-key or set LUMINET_API_KEY");
  return { url, key };
}

/** Calls the gateway with the command's key: the answer's text, or a GatewayError with the API's message. */
export async function callGatewayText(
  flags: GatewayFlags,
  method: string,
  path: string,
  init: { body?: string | ReadableStream<Uint8Array> | FormData; headers?: Record<string, string> } = {},
): Promise<string> {
  const { url, key } = connection(flags);
  let response: Response;
  try {
    response = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...init.headers },
      ...(init.body !== undefined ? { body: init.body, duplex: "half" } : {}),
    } as RequestInit);
  } catch (error) {
    const cause = (error as Error & { cause?: Error }).cause;
    throw new CliError(`cannot reach the gateway at ${url}: ${cause?.message ?? (error as Error).message}`);
  }
  const text = await response.text();
  if (!response.ok) {
    let message: string | undefined;
    try {
      message = (JSON.parse(text) as { error?: { message?: string } }).error?.message;
    } catch {
      message = undefined;
    }
    throw new GatewayError(
      message ?? `${method} ${path}: HTTP ${response.status} ${text.slice(0, 200)}`,
      response.status,
    );
  }
  return text;
}

/**
 * Calls the gateway with the command's key: the API's JSON, a GatewayError with the API's message, or a
 * CliError naming the URL when a 2xx answer is not JSON.
 */
export async function callGateway(
  flags: GatewayFlags,
  method: string,
  path: string,
  init: { body?: string | ReadableStream<Uint8Array> | FormData; headers?: Record<string, string> } = {},
): Promise<unknown> {
  const text = await callGatewayText(flags, method, path, init);
  try {
    return JSON.parse(text);
  } catch {
    // A 2xx page, e.g. a --gateway that names some other server or a path of this one.
    throw new CliError(
      `${connection(flags).url}${path} did not answer JSON (is --gateway the gateway's URL?)`,
    );
  }
}

/** A JSON body for callGateway. */
export function jsonBody(value: unknown): { body: string; headers: Record<string, string> } {
  return { body: JSON.stringify(value), headers: { "content-type": "application/json" } };
}
