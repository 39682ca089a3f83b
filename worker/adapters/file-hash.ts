// The sha256 of a file, streamed: what workers check an adapter's weights by and what a signed S3 PUT
// declares as its payload.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";

/** Streams a file through sha256 (hex); undefined when it cannot be read. */
export async function sha256OfFile(path: string): Promise<string | undefined> {
  const hash = createHash("sha256");
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk);
  } catch {
    return undefined;
  }
  return hash.digest("hex");
}
