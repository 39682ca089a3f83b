// Whether a value written without the grammar (a strict function's arguments in an `auto` answer) is an
// instance of its compiled schema: keys in any order, as JSON Schema takes them, and every constraint of
// the subset checked — types, required and unknown keys, enums, lengths, patterns, ranges, items.
import { describe, expect, it } from "vitest";
import { isInstance } from "../../worker/engine/json-instance.ts";
import { compileJsonSchema } from "../../worker/engine/json-schema.ts";

const schema = compileJsonSchema({
  type: "object",
  properties: {
    city: { type: "string", minLength: 2, maxLength: 12, pattern: "^[A-Z]" },
    unit: { enum: ["c", "f"] },
    days: { type: "integer", minimum: 1, maximum: 7 },
    tags: { type: "array", items: { type: "string" }, maxItems: 2 },
    at: { anyOf: [{ type: "string", format: "date" }, { type: "null" }] },
    extra: { type: "object" },
  },
  required: ["city", "unit", "days"],
  additionalProperties: false,
});

describe("isInstance", () => {
  it("takes instances, their keys in any order and optional ones left out", () => {
    for (const value of [
      { city: "Oslo", unit: "c", days: 3 },
      { days: 7, unit: "f", city: "Zürich", tags: ["a", "b"], at: null },
      { city: "Oslo", unit: "c", days: 1, at: "2024-05-01", extra: { anything: [1, { x: null }] } },
    ]) {
      expect(isInstance(schema, value), JSON.stringify(value)).toBe(true);
    }
  });

  it("refuses every way a value can miss the schema", () => {
    const good = { city: "Oslo", unit: "c", days: 3 };
    for (const value of [
      null,
      [good],
      { unit: "c", days: 3 },
      { ...good, weather: "rain" },
      { ...good, city: 5 },
      { ...good, city: "oslo" },
      { ...good, city: "O" },
      { ...good, unit: "k" },
      { ...good, days: 8 },
      { ...good, days: 2.5 },
      { ...good, days: "3" },
      { ...good, tags: ["a", "b", "c"] },
      { ...good, tags: [1] },
      { ...good, at: "soon" },
      { ...good, extra: [] },
    ]) {
      expect(isInstance(schema, value), JSON.stringify(value)).toBe(false);
    }
  });
});
