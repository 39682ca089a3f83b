// sha256 of a text as lowercase hex. node:crypto's hash (Node, and workerd under nodejs_compat) runs inline;
// Web Crypto's digest hopped to a thread per call.
import { createHash } from "node:crypto";

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
