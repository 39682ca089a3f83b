// Numeric ranges (minimum, maximum, exclusiveMinimum, exclusiveMaximum, multipleOf) in exact decimal
// arithmetic: which finished numbers are accepted, which prefixes can still become one, and which schemas
// are refused. A brute force over every short text pins prefixes to "some completion is accepted", and
// random walks through long numbers never reach a prefix that can neither go on nor end.
import { describe, expect, it } from "vitest";
import { JsonSchemaError } from "../../worker/engine/json-schema.ts";
import {
  compileNumberRange,
  MAX_DIGITS,
  type NumberRange,
  numberPrefixFeasible,
  numberWithin,
} from "../../worker/engine/number-range.ts";
import { Prng } from "../../worker/engine/prng.ts";

function range(schema: Record<string, unknown>, integer = false): NumberRange {
  const compiled = compileNumberRange(schema, integer, "schema");
  if (compiled === null) throw new Error("expected a range");
  return compiled;
}

/** The texts among `texts` that `test` says yes to. */
const which = (texts: string[], test: (text: string) => boolean) => texts.filter(test);

describe("numeric ranges", () => {
  it("a schema without numeric keywords has no range", () => {
    expect(compileNumberRange({ type: "number", description: "any" }, false, "schema")).toBeNull();
    expect(compileNumberRange({ type: "integer" }, true, "schema")).toBeNull();
  });

  it("inclusive bounds take their own values, exclusive bounds refuse them", () => {
    const inclusive = range({ minimum: 1, maximum: 10 });
    const texts = ["0.99", "1", "1.0", "5.5", "10", "10.00", "10.000001", "-1", "0"];
    expect(which(texts, (t) => numberWithin(inclusive, t))).toEqual(["1", "1.0", "5.5", "10", "10.00"]);
    const exclusive = range({ exclusiveMinimum: 1, exclusiveMaximum: 10 });
    const tiny = `1.${"0".repeat(MAX_DIGITS - 1)}1`;
    expect(which(["1", "1.0", tiny, "9.999", "10"], (t) => numberWithin(exclusive, t))).toEqual([
      tiny,
      "9.999",
    ]);
    // Both forms of one bound: the tighter one holds.
    expect(numberWithin(range({ minimum: 2, exclusiveMinimum: 2 }), "2")).toBe(false);
    expect(numberWithin(range({ minimum: 2, exclusiveMinimum: 1 }), "1.5")).toBe(false);
  });

  it("refuses a prefix as soon as no completion of it fits the bounds", () => {
    const teens = range({ minimum: 10, maximum: 20 }, true);
    const prefixes = ["", "-", "0", "1", "2", "3", "9", "10", "15", "20", "21", "100", "1."];
    expect(which(prefixes, (p) => numberPrefixFeasible(teens, p))).toEqual(["", "1", "2", "10", "15", "20"]);
    const unit = range({ exclusiveMinimum: 0, exclusiveMaximum: 1 });
    const texts = ["-", "0", "0.", "0.0", "0.00", "0.9", "0.99", "1", "1.", "2", "-0"];
    expect(which(texts, (p) => numberPrefixFeasible(unit, p))).toEqual([
      "0",
      "0.",
      "0.0",
      "0.00",
      "0.9",
      "0.99",
    ]);
    // "0" and "0.0" can still become 0.01 but are not numbers of the range themselves.
    expect(numberWithin(unit, "0")).toBe(false);
    expect(numberWithin(unit, "0.0")).toBe(false);
  });

  it("negative ranges need the minus sign, and -0 is 0", () => {
    const below = range({ minimum: -20, exclusiveMaximum: -10 });
    const prefixes = [
      "",
      "-",
      "-0",
      "-1",
      "-10",
      "-10.",
      "-10.5",
      "-2",
      "-20",
      "-20.",
      "-21",
      "-3",
      "1",
      "0",
    ];
    expect(which(prefixes, (p) => numberPrefixFeasible(below, p))).toEqual([
      "",
      "-",
      "-1",
      "-10",
      "-10.",
      "-10.5",
      "-2",
      "-20",
      "-20.",
    ]);
    expect(which(["-20", "-20.0", "-20.5", "-15", "-10", "-9.5"], (t) => numberWithin(below, t))).toEqual([
      "-20",
      "-20.0",
      "-15",
    ]);
    const upToZero = range({ minimum: -1, maximum: 0 });
    expect(numberWithin(upToZero, "-0")).toBe(true);
    expect(numberWithin(range({ minimum: 0, maximum: 1 }), "-0")).toBe(true);
    expect(numberPrefixFeasible(range({ minimum: 0, maximum: 1 }), "-")).toBe(true);
    expect(numberPrefixFeasible(range({ exclusiveMinimum: 0 }), "-")).toBe(false);
  });

  it("multipleOf with decimals is exact, where floating point is not", () => {
    const halves = range({ multipleOf: 0.5, minimum: 0, maximum: 3 });
    const texts = ["0", "0.5", "1.25", "1.50", "2.5", "3", "3.5"];
    expect(which(texts, (t) => numberWithin(halves, t))).toEqual(["0", "0.5", "1.50", "2.5", "3"]);
    expect(which(["1.", "1.2", "1.5", "1.50", "1.51", "3."], (p) => numberPrefixFeasible(halves, p))).toEqual(
      ["1.", "1.5", "1.50", "3."],
    );
    const cents = range({ multipleOf: 0.01 });
    expect(which(["0.01", "0.015", "12.34", "0.010000", "-7.07"], (t) => numberWithin(cents, t))).toEqual([
      "0.01",
      "12.34",
      "0.010000",
      "-7.07",
    ]);
    expect(numberPrefixFeasible(cents, "0.015")).toBe(false);
    expect(numberPrefixFeasible(cents, "0.0100")).toBe(true);
    // 0.3 % 0.1 is not 0 in doubles.
    expect(numberWithin(range({ multipleOf: 0.1 }), "0.3")).toBe(true);
    const threes = range({ multipleOf: 3, maximum: 10 });
    expect(which(["3", "3.0", "4.5", "9", "-6", "12"], (t) => numberWithin(threes, t))).toEqual([
      "3",
      "3.0",
      "9",
      "-6",
    ]);
    // "4." spans [4, 5): no multiple of 3; "4" could only grow to 40 and more.
    expect(which(["1", "4", "4.", "6.", "-", "-1"], (p) => numberPrefixFeasible(threes, p))).toEqual([
      "6.",
      "-",
      "-1",
    ]);
  });

  it("integers take no fraction, and their bounds and multipleOf round to integers", () => {
    const fromHalf = range({ minimum: 0.5 }, true);
    expect(which(["0", "1", "1.", "1.0", "-"], (p) => numberPrefixFeasible(fromHalf, p))).toEqual(["1"]);
    expect(which(["0", "1", "1.0", "2"], (t) => numberWithin(fromHalf, t))).toEqual(["1", "2"]);
    // Integers that are multiples of 0.5: all of them.
    const halves = range({ multipleOf: 0.5 }, true);
    expect(which(["7", "-3", "0", "7.5"], (t) => numberWithin(halves, t))).toEqual(["7", "-3", "0"]);
    // Integers that are multiples of 1.5: multiples of 3.
    const threes = range({ multipleOf: 1.5, minimum: 0, maximum: 10 }, true);
    expect(which(["0", "1.5", "3", "4", "6", "9", "12"], (t) => numberWithin(threes, t))).toEqual([
      "0",
      "3",
      "6",
      "9",
    ]);
    // A number range with the same keywords takes the fractions.
    const numbers = range({ multipleOf: 1.5, minimum: 0, maximum: 10 });
    expect(numberWithin(numbers, "1.5")).toBe(true);
    expect(numberPrefixFeasible(numbers, "1.")).toBe(true);
  });

  it("zod's safe-integer bounds are exact at 2^53 - 1", () => {
    const safe = range({ minimum: -9007199254740991, maximum: 9007199254740991 }, true);
    const texts = ["9007199254740991", "9007199254740992", "-9007199254740991", "-9007199254740992", "0"];
    expect(which(texts, (t) => numberWithin(safe, t))).toEqual([
      "9007199254740991",
      "-9007199254740991",
      "0",
    ]);
    const prefixes = [
      "900719925474099",
      "9007199254740992",
      "90071992547409910",
      "99999999999999999",
      "1234567890123456",
    ];
    expect(which(prefixes, (p) => numberPrefixFeasible(safe, p))).toEqual([
      "900719925474099",
      "1234567890123456",
    ]);
    // Just above the bound, where a double rounds back onto it.
    const number = range({ maximum: 9007199254740991 });
    expect(numberWithin(number, "9007199254740991.4")).toBe(false);
    expect(numberPrefixFeasible(number, "9007199254740991.")).toBe(true);
    expect(numberPrefixFeasible(number, "9007199254740991.0")).toBe(true);
    expect(numberPrefixFeasible(number, "9007199254740991.01")).toBe(false);
  });

  it("a number has at most MAX_DIGITS digits on each side of the point, and no exponent", () => {
    const positive = range({ minimum: 0 });
    const nines = "9".repeat(MAX_DIGITS);
    expect(numberPrefixFeasible(positive, nines)).toBe(true);
    expect(numberPrefixFeasible(positive, `${nines}9`)).toBe(false);
    expect(numberWithin(positive, `${nines}.${nines}`)).toBe(true);
    expect(numberPrefixFeasible(positive, `1.${nines}9`)).toBe(false);
    // Above 0 by less than 10^-MAX_DIGITS can only be written at the last digit.
    const tiny = range({ exclusiveMinimum: 0, maximum: 1e-24 });
    const zeros = "0".repeat(MAX_DIGITS - 1);
    expect(numberPrefixFeasible(tiny, `0.${zeros}`)).toBe(true);
    expect(numberPrefixFeasible(tiny, `0.${zeros}0`)).toBe(false);
    expect(numberWithin(tiny, `0.${zeros}1`)).toBe(true);
    // A bound in exponent notation is read exactly; a bound past what can be written leaves no bound.
    const small = range({ minimum: 1e-7 });
    expect(which(["0.0000001", "0.00000009", "0.00000011"], (t) => numberWithin(small, t))).toEqual([
      "0.0000001",
      "0.00000011",
    ]);
    expect(numberPrefixFeasible(range({ maximum: 1e30 }), nines)).toBe(true);
    expect(
      which(["1e", "1E5", "1e5", "+1", ".5", "01", "1.2.3"], (p) => numberPrefixFeasible(positive, p)),
    ).toEqual([]);
    expect(which(["1e5", "1.", "-", "", ".5"], (t) => numberWithin(positive, t))).toEqual([]);
  });

  it("refuses a schema whose numeric keywords are malformed or leave nothing to write, naming why", () => {
    const refused: [Record<string, unknown>, boolean, string][] = [
      [{ minimum: "1" }, false, "schema.minimum: expected a finite number"],
      [{ maximum: Number.POSITIVE_INFINITY }, false, "schema.maximum: expected a finite number"],
      [{ exclusiveMinimum: true }, false, "schema.exclusiveMinimum: expected a finite number"],
      [{ multipleOf: Number.NaN }, false, "schema.multipleOf: expected a finite number"],
      [{ multipleOf: 0 }, false, "schema.multipleOf: expected a number above 0"],
      [{ multipleOf: -2 }, true, "schema.multipleOf: expected a number above 0"],
      [{ minimum: 1e-25 }, false, `schema.minimum: 1e-25 has more than ${MAX_DIGITS} decimals`],
      [{ multipleOf: 3e-25 }, false, `schema.multipleOf: 3e-25 has more than ${MAX_DIGITS} decimals`],
      [{ minimum: 5, maximum: 3 }, false, "schema: no number satisfies minimum 5 and maximum 3"],
      [
        { exclusiveMinimum: 3, maximum: 3 },
        false,
        "schema: no number satisfies exclusiveMinimum 3 and maximum 3",
      ],
      [
        { minimum: -1, exclusiveMaximum: -1 },
        true,
        "schema: no number satisfies minimum -1 and exclusiveMaximum -1",
      ],
      [{ minimum: 0.2, maximum: 0.8 }, true, "schema: no integer satisfies minimum 0.2 and maximum 0.8"],
      [
        { multipleOf: 0.3, minimum: 0.1, maximum: 0.2 },
        false,
        "schema: no multiple of 0.3 satisfies minimum 0.1 and maximum 0.2",
      ],
      [
        { multipleOf: 0.4, minimum: 1, maximum: 1.9 },
        true,
        "schema: no integer multiple of 0.4 satisfies minimum 1 and maximum 1.9",
      ],
      [
        { minimum: 1e30 },
        false,
        `schema: no number satisfies minimum 1e+30 within ${MAX_DIGITS} digits on each side of the point`,
      ],
      [
        { exclusiveMinimum: 0, exclusiveMaximum: 1e-24 },
        false,
        `schema: no number satisfies exclusiveMinimum 0 and exclusiveMaximum 1e-24 within ${MAX_DIGITS} digits on each side of the point`,
      ],
    ];
    for (const [schema, integer, message] of refused) {
      const compile = () => compileNumberRange(schema, integer, "schema");
      expect(compile, JSON.stringify(schema)).toThrow(JsonSchemaError);
      expect(compile, JSON.stringify(schema)).toThrow(message);
    }
  });
});

/** Every text up to `length` characters over the alphabet of numbers, valid or not. */
function allTexts(length: number): string[] {
  const texts = [""];
  for (let i = 0; texts[i]!.length < length; i++) for (const c of "-0123456789.") texts.push(texts[i] + c);
  return texts;
}

/** A range with its numbers as decimal texts, which the brute force reads without floating point. */
interface Spec {
  schema: Record<string, string>;
  integer: boolean;
}

/** Counts of 10^-30: finer than any number here. */
const PLACES = 30;

/** A plain decimal text ("-12.5", "0.00000000000000000001") in counts of 10^-PLACES. */
function exact(text: string): bigint {
  const [whole, fraction = ""] = text.replace("-", "").split(".");
  const magnitude = BigInt(whole! + fraction.padEnd(PLACES, "0"));
  return text.startsWith("-") ? -magnitude : magnitude;
}

const compileSpec = ({ schema, integer }: Spec) =>
  range(Object.fromEntries(Object.entries(schema).map(([key, value]) => [key, Number(value)])), integer);

/** Whether a text is a number the grammar writes under the range and its value is in it: a plain reading. */
function bruteForce({ schema, integer }: Spec): (text: string) => boolean {
  const written = integer ? /^-?(0|[1-9]\d{0,23})$/ : /^-?(0|[1-9]\d{0,23})(\.\d{1,24})?$/;
  const bound = (key: string) => (schema[key] === undefined ? undefined : exact(schema[key]));
  const [min, exMin, max, exMax] = ["minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"].map(bound);
  const step = bound("multipleOf") ?? 1n;
  const one = exact("1");
  return (text) => {
    if (!written.test(text)) return false;
    const value = exact(text);
    return (
      (min === undefined || value >= min) &&
      (exMin === undefined || value > exMin) &&
      (max === undefined || value <= max) &&
      (exMax === undefined || value < exMax) &&
      value % step === 0n &&
      (!integer || value % one === 0n)
    );
  };
}

describe("numeric ranges against a brute force", () => {
  it("a prefix can go on exactly when some accepted number extends it, and numbers are accepted alike", () => {
    // Each range has, for every prefix of up to four characters that can go on, a completion of at most five.
    const specs: Spec[] = [
      { schema: { minimum: "-12.5", maximum: "40", multipleOf: "0.5" }, integer: false },
      { schema: { exclusiveMinimum: "-3", exclusiveMaximum: "250", multipleOf: "7" }, integer: true },
      { schema: { exclusiveMinimum: "0", maximum: "0.02" }, integer: false },
      { schema: { minimum: "-1", exclusiveMaximum: "1.5", multipleOf: "0.01" }, integer: false },
      { schema: { minimum: "0.5", maximum: "999", multipleOf: "1.5" }, integer: true },
      { schema: { multipleOf: "3" }, integer: false },
      { schema: { exclusiveMinimum: "-30", maximum: "-0.25" }, integer: false },
      { schema: { minimum: "-9", maximum: "-9" }, integer: true },
      { schema: { exclusiveMinimum: "-0.001", exclusiveMaximum: "0.001" }, integer: false },
    ];
    // In length order: the first ones, up to four characters, are the prefixes tried.
    const texts = allTexts(5);
    const prefixes = texts.filter((text) => text.length <= 4);
    for (const spec of specs) {
      const compiled = compileSpec(spec);
      const accepts = bruteForce(spec);
      const label = JSON.stringify(spec);
      const extendable = new Set<string>();
      for (const text of texts) {
        const accepted = accepts(text);
        if (numberWithin(compiled, text) !== accepted) expect.fail(`${label}: numberWithin("${text}")`);
        if (accepted) for (let end = 0; end <= text.length; end++) extendable.add(text.slice(0, end));
      }
      for (const prefix of prefixes) {
        if (numberPrefixFeasible(compiled, prefix) !== extendable.has(prefix)) {
          expect.fail(`${label}: numberPrefixFeasible("${prefix}") should be ${extendable.has(prefix)}`);
        }
      }
    }
  });

  it("a number that can go on always has a next byte or may end: random walks never get stuck", () => {
    // Wide and narrow ranges with long numbers, which the short brute force above cannot reach.
    const specs: Spec[] = [
      { schema: { minimum: "-9007199254740991", maximum: "9007199254740991" }, integer: true },
      { schema: { minimum: "0.00000000000000000001", maximum: "0.00000000000000000002" }, integer: false },
      {
        schema: { exclusiveMinimum: "123456.789", exclusiveMaximum: "123456.79", multipleOf: "0.000001" },
        integer: false,
      },
      { schema: { minimum: "100000000000000000000", multipleOf: "7" }, integer: true },
      { schema: { maximum: "-1000000000000000", multipleOf: "0.25" }, integer: false },
      { schema: { exclusiveMinimum: "0", exclusiveMaximum: "0.00000000000000000000001" }, integer: false },
      { schema: { minimum: "-5", maximum: "5", multipleOf: "2.5" }, integer: true },
    ];
    const prng = new Prng(5, 0);
    for (const spec of specs) {
      const compiled = compileSpec(spec);
      const accepts = bruteForce(spec);
      for (let walk = 0; walk < 200; walk++) {
        let text = "";
        for (;;) {
          const label = `${JSON.stringify(spec)} after "${text}"`;
          const next = [..."-0123456789."].filter((c) => numberPrefixFeasible(compiled, text + c));
          const mayEnd = numberWithin(compiled, text);
          if (next.length === 0 && !mayEnd) expect.fail(`${label}: stuck`);
          if (mayEnd && (next.length === 0 || prng.nextFloat() < 0.2)) break;
          text += next[Math.floor(prng.nextFloat() * next.length)];
        }
        if (!accepts(text)) expect.fail(`${JSON.stringify(spec)}: ended at "${text}"`);
      }
    }
  });
});
