// How much of a gateway process's event loop one org's requests may spend compiling grammars, patterns and
// JSON schemas (compile-clock.ts). A compile runs on the event loop, where every other request of the
// process waits for it; each has work limits and a request's tools share one second (compile-budget.ts),
// but an org sending a new costly schema with every request could still hold the process for most of each
// second. So each org has a budget of compile time per minute in each process; once its requests have spent
// it, those that ask for a compile (a structured output, a JSON schema, tools) get a 429 until the minute is
// over, while its other requests go on. Counted per process, in memory: the budget bounds what one org
// takes from that process.
import { charged } from "./compile-clock.ts";
import { ApiError } from "./errors.ts";

/** The default budget: an org's requests may spend 5 s of each minute of a process compiling. */
export const DEFAULT_ORG_COMPILE_MS_PER_MINUTE = 5_000;
const WINDOW_MS = 60_000;
/** Orgs whose current window is remembered; more than this, the one charged longest ago is dropped. */
const MAX_ORGS = 10_000;

export class OrgCompileTime {
  readonly #windows = new Map<string, { start: number; spentMs: number }>();

  constructor(
    readonly msPerMinute: number = DEFAULT_ORG_COMPILE_MS_PER_MINUTE,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Runs `admission` (synchronous: reading a request, compiling what it asks to constrain) and charges the
   * org what its compiles took, whether it succeeded or not; its first compile throws a 429 instead when
   * the org's budget for this minute is spent.
   */
  admit<T>(orgId: string, admission: () => T): T {
    const now = this.now();
    const start = Math.floor(now / WINDOW_MS) * WINDOW_MS;
    const known = this.#windows.get(orgId);
    const window = known?.start === start ? known : { start, spentMs: 0 };
    return charged(
      () => {
        if (window.spentMs >= this.msPerMinute) throw this.#spent(start + WINDOW_MS - now);
      },
      (ms) => {
        if (ms === 0 && !known) return;
        window.spentMs += ms;
        this.#windows.delete(orgId);
        this.#windows.set(orgId, window);
        if (this.#windows.size > MAX_ORGS) this.#windows.delete(this.#windows.keys().next().value!);
      },
      admission,
    );
  }

  #spent(untilResetMs: number): ApiError {
    const wait = Math.max(1, Math.ceil(untilResetMs / 1000));
    return new ApiError(
      429,
      "rate_limit_error",
      `Your organization's requests have spent their ${this.msPerMinute / 1000} s of this gateway's time ` +
        "for compiling grammars, patterns and JSON schemas this minute: requests with structured outputs, " +
        `response formats or tools can be sent again in ${wait}s. Send fewer new or simpler ones.`,
      "rate_limit_exceeded",
      null,
      { "retry-after": String(wait) },
    );
  }
}
