// What checking a request's grammars and patterns may cost the gateway's event loop. Admission compiles each
// (the worker's compile cache keeps it) so that a bad one is a 400 rather than a failed run; each compile has
// its own work limits, but a request may carry many custom tools, and one source may be megabytes long. So a
// source past MAX_SOURCE_CHARS is refused unread, and a request's tools stop compiling with a 400 once they
// took COMPILE_BUDGET_MS together (at most one compile past it).
import { invalidRequest } from "./errors.ts";

export const MAX_SOURCE_CHARS = 100_000;
export const COMPILE_BUDGET_MS = 1_000;

/** Refuses a grammar or pattern (`what`) longer than MAX_SOURCE_CHARS, naming `param`. */
export function refuseLongSource(source: string, what: string, param: string): void {
  if (source.length > MAX_SOURCE_CHARS) {
    throw invalidRequest(
      `${what} is ${source.length} characters long; the most is ${MAX_SOURCE_CHARS.toLocaleString("en-US")}.`,
      param,
    );
  }
}

/** The time one request's compiles have taken; check() after each. */
export class CompileBudget {
  readonly #started: number;

  constructor(private readonly now: () => number = () => performance.now()) {
    this.#started = now();
  }

  /** Refuses the request, naming `param` (the last source compiled), once the budget is spent. */
  check(param: string): void {
    if (this.now() - this.#started > COMPILE_BUDGET_MS) {
      throw invalidRequest(
        `The request's tool grammars took more than ${COMPILE_BUDGET_MS / 1000} s to compile together (stopped at ${param}): send fewer or simpler ones.`,
        param,
      );
    }
  }
}
