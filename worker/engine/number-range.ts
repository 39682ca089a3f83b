// The numeric keywords of a number or integer schema (minimum, maximum, exclusiveMinimum, exclusiveMaximum,
// multipleOf) for json-grammar.ts: while a number is being written, whether some completion of its bytes so
// far is accepted, so that the grammar never lets a number into a dead end; and whether a finished number
// is. Exact decimal arithmetic throughout: a schema's numbers are read by their shortest decimal form (as
// JSON writes them) and every value is a BigInt count of units of 10^-MAX_DIGITS. Each number the grammar
// writes under a range is a whole count of them (no exponent, at most MAX_DIGITS fraction digits), and so
// is each bound and multipleOf a range keeps; floating point decides nothing.
import { JsonSchemaError } from "./json-schema.ts";

/** Most digits in each part of a number (integer, fraction, exponent) the grammar writes: past any double's precision. */
export const MAX_DIGITS = 24;

/** The magnitudes (absolute values, in units) that numbers of one sign may take and the range accepts. */
interface Magnitudes {
  /** The least and greatest accepted magnitudes, both multiples of the range's step. */
  readonly least: bigint;
  readonly greatest: bigint;
  /**
   * How many digits the integer parts of those two take ("0" one): a number with more or fewer integer
   * digits is out of bounds, so a prefix tries only the digit counts between.
   */
  readonly leastDigits: number;
  readonly greatestDigits: number;
}

/** The numeric keywords of one number/integer schema, in exact decimal arithmetic. */
export interface NumberRange {
  /** An integer schema: no fraction may be written. */
  readonly integer: boolean;
  /**
   * Accepted values are the multiples of this many units: multipleOf, with integers its least common
   * multiple with 1; without multipleOf, 1 unit for numbers and 10^MAX_DIGITS units for integers.
   */
  readonly step: bigint;
  /** What numbers written without a minus sign may take (0 among them); null: none is accepted. */
  readonly positive: Magnitudes | null;
  /** What numbers written with a minus sign may take ("-0" is 0); null: none is accepted. */
  readonly negative: Magnitudes | null;
}

const KEYWORDS = ["minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "multipleOf"] as const;
const MINUS = 0x2d;
const DOT = 0x2e;
const ZERO = 0x30;

/** 10^0 … 10^(2·MAX_DIGITS). */
const POWERS: readonly bigint[] = Array.from({ length: 2 * MAX_DIGITS + 1 }, (_, k) => 10n ** BigInt(k));

/**
 * null when the schema has none of the five keywords. Throws JsonSchemaError (message starting with `at`)
 * for a keyword that is not a finite number, multipleOf <= 0, a bound or multipleOf with more than
 * MAX_DIGITS decimals, and a range that no number the grammar can write satisfies: empty bounds, no
 * multiple of multipleOf (no integer, for `integer`) between them, or all of it beyond MAX_DIGITS integer
 * digits.
 */
export function compileNumberRange(
  schema: Record<string, unknown>,
  integer: boolean,
  at: string,
): NumberRange | null {
  if (KEYWORDS.every((key) => schema[key] === undefined)) return null;
  const units = (key: (typeof KEYWORDS)[number]): bigint | null => {
    const value = schema[key];
    if (value === undefined) return null;
    if (typeof value !== "number" || !Number.isFinite(value)) {
      throw new JsonSchemaError(`${at}.${key}: expected a finite number`);
    }
    if (key === "multipleOf" && value <= 0)
      throw new JsonSchemaError(`${at}.multipleOf: expected a number above 0`);
    return toUnits(value, `${at}.${key}`);
  };
  const minimum = units("minimum");
  const exclusiveMinimum = units("exclusiveMinimum");
  const maximum = units("maximum");
  const exclusiveMaximum = units("exclusiveMaximum");
  const multipleOf = units("multipleOf");

  const one = POWERS[MAX_DIGITS]!;
  // Beyond this no number can be written: MAX_DIGITS nines on each side of the point.
  const writable = POWERS[2 * MAX_DIGITS]! - 1n;
  const bounds = KEYWORDS.slice(0, 4)
    .filter((key) => schema[key] !== undefined)
    .map((key) => `${key} ${schema[key]}`)
    .join(" and ");
  const [lowest, lowOpen] = tighter(minimum, exclusiveMinimum, true);
  const [highest, highOpen] = tighter(maximum, exclusiveMaximum, false);
  if (
    lowest !== null &&
    highest !== null &&
    (lowest > highest || (lowest === highest && (lowOpen || highOpen)))
  ) {
    throw new JsonSchemaError(`${at}: no number satisfies ${bounds}`);
  }
  // Inclusive bounds in units: every written value is a whole unit, so "above x" is "at least x + 1 unit".
  const low = lowest === null ? -writable : lowest + (lowOpen ? 1n : 0n);
  const high = highest === null ? writable : highest - (highOpen ? 1n : 0n);

  let step = multipleOf ?? (integer ? one : 1n);
  if (integer && multipleOf !== null) step = (multipleOf / gcd(multipleOf, one)) * one;
  const positive =
    high < 0n ? null : multiplesWithin(low > 0n ? low : 0n, high < writable ? high : writable, step);
  const negative =
    low > 0n ? null : multiplesWithin(high < 0n ? -high : 0n, -low < writable ? -low : writable, step);
  if (positive === null && negative === null) {
    const plain = integer ? "integer" : "number";
    const kind = multipleOf === null ? plain : `${integer ? "integer " : ""}multiple of ${schema.multipleOf}`;
    // Where the cause is what can be written (too far out, or between two bounds a unit apart), say so.
    const unwritable = low < -writable || high > writable || low > high;
    const within = unwritable ? ` within ${MAX_DIGITS} digits on each side of the point` : "";
    throw new JsonSchemaError(`${at}: no ${kind} satisfies ${bounds}${within}`);
  }
  return { integer, step, positive, negative };
}

/**
 * Whether `text`, a JSON number being written ("", "-", "12", "12.", "12.5", "-0", "0."), can still be
 * completed into a number `range` accepts under the grammar's rules: no exponent, at most MAX_DIGITS digits
 * before and after the point, no leading zeros, no fraction for integers. False for anything else.
 */
export function numberPrefixFeasible(range: NumberRange, text: string): boolean {
  const negative = text.charCodeAt(0) === MINUS;
  const start = negative ? 1 : 0;
  // A compiled range accepts some number, so nothing written yet can always go on.
  if (text.length === start) return !negative || range.negative !== null;
  const side = negative ? range.negative : range.positive;
  const intEnd = scan(text, start, range.integer);
  if (side === null || intEnd < 0) return false;
  const whole = digitsValue(text, start, intEnd);
  if (intEnd === text.length) {
    // k more integer digits, then any fraction: the magnitudes [whole·10^k, (whole + 1)·10^k), which have
    // n + k integer digits; "0" takes no more digits.
    const n = intEnd - start;
    const zero = text.charCodeAt(start) === ZERO;
    const first = zero ? 0 : Math.max(0, side.leastDigits - n);
    const last = zero ? 0 : side.greatestDigits - n;
    for (let k = first; k <= last; k++) {
      const size = POWERS[MAX_DIGITS + k]!;
      const least = whole * size;
      if (holdsMultiple(side, range.step, least, least + size - 1n)) return true;
    }
    return false;
  }
  // In the fraction, d digits so far ("12." needs one more, which 0 … 9 span alike): the magnitudes from
  // what is written up to the last unit below it plus 10^-d.
  const digits = text.length - intEnd - 1;
  const size = POWERS[MAX_DIGITS - digits]!;
  const fraction = digits === 0 ? 0n : digitsValue(text, intEnd + 1, text.length) * size;
  const least = whole * POWERS[MAX_DIGITS]! + fraction;
  return holdsMultiple(side, range.step, least, least + size - 1n);
}

/**
 * Whether the complete number `text` ("12.50", "-0", "7") is accepted: written as numberPrefixFeasible
 * describes, within the bounds and an exact multiple of multipleOf.
 */
export function numberWithin(range: NumberRange, text: string): boolean {
  const negative = text.charCodeAt(0) === MINUS;
  const start = negative ? 1 : 0;
  const side = negative ? range.negative : range.positive;
  const intEnd = scan(text, start, range.integer);
  if (side === null || intEnd < 0 || intEnd === text.length - 1) return false;
  let value = digitsValue(text, start, intEnd) * POWERS[MAX_DIGITS]!;
  if (intEnd < text.length) {
    value += digitsValue(text, intEnd + 1, text.length) * POWERS[MAX_DIGITS - (text.length - intEnd - 1)]!;
  }
  return value >= side.least && value <= side.greatest && value % range.step === 0n;
}

/**
 * Where the integer part of `text` from `start` ends (its length when there is no point), or -1 when the
 * text is not the start of a number the grammar writes: one digit at least, no leading zero, no more than
 * MAX_DIGITS digits in either part, a point only in a number schema and only digits after it.
 */
function scan(text: string, start: number, integer: boolean): number {
  let end = start;
  while (end < text.length && isDigit(text.charCodeAt(end))) end++;
  const digits = end - start;
  if (digits === 0 || digits > MAX_DIGITS || (digits > 1 && text.charCodeAt(start) === ZERO)) return -1;
  if (end === text.length) return end;
  if (integer || text.charCodeAt(end) !== DOT || text.length - end - 1 > MAX_DIGITS) return -1;
  for (let i = end + 1; i < text.length; i++) if (!isDigit(text.charCodeAt(i))) return -1;
  return end;
}

/** The digits text[from, to) as a BigInt; through a double while that is exact, which is cheaper. */
function digitsValue(text: string, from: number, to: number): bigint {
  if (to - from > 15) return BigInt(text.slice(from, to));
  let value = 0;
  for (let i = from; i < to; i++) value = value * 10 + text.charCodeAt(i) - ZERO;
  return BigInt(value);
}

function isDigit(b: number): boolean {
  return b >= ZERO && b <= ZERO + 9;
}

/** Whether the magnitudes [least, greatest] hold one that `side` accepts: in its bounds, a multiple of `step`. */
function holdsMultiple(side: Magnitudes, step: bigint, least: bigint, greatest: bigint): boolean {
  const low = least > side.least ? least : side.least;
  const high = greatest < side.greatest ? greatest : side.greatest;
  if (low > high) return false;
  const over = low % step;
  return over === 0n || low - over + step <= high;
}

/** The least and greatest multiples of `step` in the magnitudes [least, greatest] (least >= 0), or null. */
function multiplesWithin(least: bigint, greatest: bigint, step: bigint): Magnitudes | null {
  const over = least % step;
  const first = over === 0n ? least : least - over + step;
  const last = greatest - (greatest % step);
  if (first > last) return null;
  const one = POWERS[MAX_DIGITS]!;
  return {
    least: first,
    greatest: last,
    leastDigits: digitCount(first / one),
    greatestDigits: digitCount(last / one),
  };
}

/** A schema's number in units, read by its shortest decimal form ("0.1", "1e-7", "1.5e+21"). */
function toUnits(value: number, at: string): bigint {
  const [, sign, whole, fraction = "", exponent = "0"] = /^(-?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(
    String(value),
  )!;
  const digits = BigInt(whole + fraction);
  const shift = Number(exponent) - fraction.length + MAX_DIGITS;
  let units = digits * 10n ** BigInt(Math.max(shift, 0));
  if (shift < 0) {
    const divisor = 10n ** BigInt(-shift);
    if (digits % divisor !== 0n)
      throw new JsonSchemaError(`${at}: ${value} has more than ${MAX_DIGITS} decimals`);
    units = digits / divisor;
  }
  return sign ? -units : units;
}

/**
 * Of a bound and its exclusive form (either may be absent), the one that admits less, and whether it is the
 * exclusive one; `lower` for minimum and exclusiveMinimum.
 */
function tighter(
  inclusive: bigint | null,
  exclusive: bigint | null,
  lower: boolean,
): [bigint | null, boolean] {
  if (exclusive === null) return [inclusive, false];
  if (inclusive === null) return [exclusive, true];
  const inclusiveAdmitsLess = lower ? inclusive > exclusive : inclusive < exclusive;
  return inclusiveAdmitsLess ? [inclusive, false] : [exclusive, true];
}

function digitCount(whole: bigint): number {
  return whole.toString().length;
}

function gcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

/** Most prefixes fewestCharsToEnd carries from one length to the next. */
const SEARCH_WIDTH = 64;

/**
 * The fewest characters that complete `text` (a number being written, "" for none yet) into one `range`
 * accepts; Infinity when none can. A breadth-first search over what may be appended, pruned by
 * numberPrefixFeasible and at most SEARCH_WIDTH prefixes wide: exact for the bounds and steps schemas use,
 * an overestimate at worst.
 */
export function fewestCharsToEnd(range: NumberRange, text: string): number {
  let frontier = [text];
  for (let added = 0; frontier.length > 0; added++) {
    if (frontier.some((t) => numberWithin(range, t))) return added;
    const next: string[] = [];
    for (const t of frontier) {
      for (const c of t === "" ? "-0123456789" : "0123456789.") {
        if (next.length < SEARCH_WIDTH && numberPrefixFeasible(range, t + c)) next.push(t + c);
      }
    }
    frontier = next;
  }
  return Number.POSITIVE_INFINITY;
}
