// One webhook POST over node:http(s) that connects only to public addresses. The connection resolves the
// endpoint's host through `publicOnlyLookup`, which refuses the name if any address it has is private,
// so the address checked is the address connected to: a name that answers a public address to a separate
// check and a private one to the connection (DNS rebinding) cannot slip between the two, as it could
// with a lookup before fetch(). Redirects are not followed.
import { lookup as dnsLookup, type LookupAllOptions, type LookupOneOptions } from "node:dns";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { isIP, type LookupFunction } from "node:net";
import { privateAddress } from "./webhook-address.ts";

/** The endpoint's host is, or resolves to, a private address. */
export class PrivateAddressError extends Error {
  override readonly name = "PrivateAddressError";
  constructor(host: string) {
    super(`refused: ${host} resolves to a private address`);
  }
}

const publicOnlyLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(
    hostname,
    { ...(options as LookupOneOptions), all: true } as LookupAllOptions,
    (error, addresses) => {
      if (error) return callback(error, "", 0);
      if (addresses.length === 0 || addresses.some((a) => privateAddress(a.address))) {
        return callback(new PrivateAddressError(hostname) as NodeJS.ErrnoException, "", 0);
      }
      // Node's connect asks for every address (to try each family in turn) or for one.
      if ((options as LookupAllOptions).all) {
        return (callback as unknown as (e: null, a: typeof addresses) => void)(null, addresses);
      }
      return callback(null, addresses[0]!.address, addresses[0]!.family);
    },
  );
};

export interface WebhookPost {
  url: URL;
  headers: Record<string, string>;
  body: string;
  timeoutMs: number;
  /** Connect to private addresses too (a development stack). */
  allowPrivate: boolean;
}

/** POSTs the body; resolves with the HTTP status (the answer's body is dropped). */
export function postWebhook(post: WebhookPost): Promise<number> {
  const { url, allowPrivate } = post;
  const host = url.hostname.replace(/^\[|\]$/g, "");
  // A literal address is connected to without a lookup: judged here.
  if (!allowPrivate && isIP(host) !== 0 && privateAddress(host)) {
    return Promise.reject(new PrivateAddressError(url.hostname));
  }
  const request = url.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const outgoing = request(
      url,
      {
        method: "POST",
        headers: { ...post.headers, "content-length": String(Buffer.byteLength(post.body)) },
        signal: AbortSignal.timeout(post.timeoutMs),
        ...(allowPrivate ? {} : { lookup: publicOnlyLookup }),
      },
      (response) => {
        response.resume();
        response.once("end", () => resolve(response.statusCode ?? 0));
        response.once("error", reject);
      },
    );
    outgoing.once("error", reject);
    outgoing.end(post.body);
  });
}
