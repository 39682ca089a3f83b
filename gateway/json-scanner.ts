// Reads a JSON value as it streams in, a piece at a time: the value's characters with whitespace outside
// strings dropped, and when its outermost object or array has closed. Streamed tool calls' arguments are
// read so (tool-calls.ts, auto-call-stream.ts), compact as an unstreamed answer's.

const JSON_SPACE = new Set([" ", "\n", "\r", "\t"]);

export class JsonScanner {
  /** Objects and arrays open; a reader that starts inside one sets it. */
  depth = 0;
  #inString = false;
  #escaped = false;

  /** Reads `text` from `at` until the nesting closes or the text ends: what it read, compact, and where it stopped. */
  scan(text: string, at: number): { read: string; at: number } {
    let read = "";
    while (at < text.length) {
      const c = text[at++]!;
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (c === "\\") this.#escaped = true;
        else if (c === '"') this.#inString = false;
      } else if (c === '"') this.#inString = true;
      else if (c === "{" || c === "[") this.depth++;
      else if (c === "}" || c === "]") this.depth--;
      else if (JSON_SPACE.has(c)) continue;
      read += c;
      if (this.depth === 0) break;
    }
    return { read, at };
  }
}
