// The jsonb encoding that lets stored responses, conversation items and chat completions hold U+0000:
// every JSON value comes back as it went in, Postgres never sees a NUL, and ordinary values are untouched.
import { describe, expect, it } from "vitest";
import { restoredJson, storableJson } from "../../schema/text-safe-jsonb.ts";

const roundTrip = (value: unknown) => restoredJson(JSON.parse(storableJson(value)));

describe("text-safe jsonb", () => {
  it("stores a value without U+0000 or U+FFFF exactly as JSON.stringify writes it", () => {
    const value = { text: 'a "quoted" \\u0000 \n line', list: [1, null, true, "é😀"] };
    expect(storableJson(value)).toBe(JSON.stringify(value));
  });

  it("writes no NUL or lone surrogate that Postgres jsonb would refuse", () => {
    const text = storableJson({ "k\u0000ey": ["\u0000", "x\u0000\u0000y", "\ud800", "\udfff a"] });
    expect(text).not.toContain("\\u0000");
    expect(text).not.toContain("\u0000");
    expect(text).not.toMatch(/\\ud[89a-f]/);
    expect(text).not.toMatch(/[\ud800-\udfff]/);
  });

  it("gives back every string as it was, NULs, lone surrogates, U+FFFF and look-alikes of the encoding included", () => {
    const strings = [
      "\u0000",
      "a\u0000b",
      "\uffff",
      "\uffff0",
      "\uffff\uffff",
      "\u0000\uffff0\uffff",
      "\\u0000",
      "\\\u0000",
      "\\\\u0000\u0000",
      "\ud800",
      "x\udc00y\ud83d",
      "\ud83d\ude00 a whole pair",
      "\uffffsd800",
      "\\ud800",
      "plain",
      "",
    ];
    for (const s of strings) expect(roundTrip(s)).toBe(s);
    const nested = { [`key\u0000${"\uffff"}`]: { deep: [strings, { again: "\u0000" }] }, n: 1.5, none: null };
    expect(roundTrip(nested)).toEqual(nested);
  });

  it("leaves a lone U+FFFF that the encoding did not write as it is", () => {
    expect(restoredJson("a\uffffb")).toBe("a\uffffb");
  });
});
