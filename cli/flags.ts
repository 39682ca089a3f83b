// Numeric command-line flags, parsed the same way by every command: a bad value is refused with the flag's
// name and what it takes, before anything starts.
import { CliError } from "./run-command.ts";

/** An integer flag of at least `min` (and at most `max`). */
export function count(flag: string, value: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
    throw new CliError(`${flag} must be an integer ${range}, got "${value}"`);
  }
  return n;
}

const UNITS: Record<string, number> = {
  "": 1,
  k: 1e3,
  m: 1e6,
  g: 1e9,
  t: 1e12,
  ki: 2 ** 10,
  mi: 2 ** 20,
  gi: 2 ** 30,
  ti: 2 ** 40,
};

/** A TCP port to listen on; 0 lets the system choose a free one. */
/** --quantize: "q4" (4-bit projection weights on CPU, EngineOptions.quantize), or undefined when not given. */
export function quantize(value: string | undefined): "q4" | undefined {
  if (value === undefined) return undefined;
  if (value !== "q4") throw new CliError(`--quantize must be q4, got "${value}"`);
  return value;
}

/** The help text of --quantize, the same wherever an engine is started. */
export const QUANTIZE_HELP =
  "q4: 4-bit projection and lm_head weights on --device cpu (about a sixth of the float32 bytes, int8 activations)";

export function port(flag: string, value: string): number {
  return count(flag, value, 0, 65535);
}

/** A duration in seconds, 0 or more, fractions allowed. */
export function seconds(flag: string, value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0) {
    throw new CliError(`${flag} must be a number of seconds (0 or more), got "${value}"`);
  }
  return n;
}

/** Bytes as an integer or with a unit: 512MiB, 4GiB, 20GB; at least `min`. */
export function bytes(flag: string, value: string, min = 0): number {
  const match = /^(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?$/i.exec(value.trim());
  const unit = UNITS[(match?.[2] ?? "").toLowerCase()];
  const n = match && unit !== undefined ? Math.floor(Number(match[1]) * unit) : Number.NaN;
  if (!(n >= min)) {
    throw new CliError(
      `${flag} must be a byte count of at least ${min}, such as 1073741824, 512MiB or 4GB, got "${value}"`,
    );
  }
  return n;
}
