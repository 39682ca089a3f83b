// The time this process spends compiling requests' grammars, patterns and JSON schemas to check them
// (structured outputs, response formats, tools), charged to whoever is being admitted. Compiling and
// admission are synchronous, so nothing else runs between a request's compiles: the one `charged` call
// around its admission sees exactly its compiles (org-compile-time.ts charges them to its org).

/** The admission running now: asked before each compile (it may refuse), told each compile's time. */
interface Payer {
  beforeCompile(): void;
  spentMs: number;
}

let payer: Payer | null = null;
/** Compiles running inside another (a schema's patterns): only the outermost is timed and asked. */
let depth = 0;

/** Runs a compile, asking and charging the current payer, if any. */
export function timedCompile<T>(compile: () => T): T {
  const outermost = depth === 0;
  if (outermost) payer?.beforeCompile();
  const started = outermost ? performance.now() : 0;
  depth++;
  try {
    return compile();
  } finally {
    depth--;
    if (outermost && payer) payer.spentMs += performance.now() - started;
  }
}

/**
 * Runs `admission` with the compiles inside it asking `beforeCompile` first (which may throw to refuse
 * them), and tells `onSpent` the milliseconds its compiles took, whether it returns or throws.
 */
export function charged<T>(beforeCompile: () => void, onSpent: (ms: number) => void, admission: () => T): T {
  const outer = payer;
  const current: Payer = { beforeCompile, spentMs: 0 };
  payer = current;
  try {
    return admission();
  } finally {
    payer = outer;
    onSpent(current.spentMs);
  }
}
