// Whether a parsed JSON value is an instance of a compiled schema (json-schema.ts): the check for what was
// written without the grammar — a strict function's arguments in an `auto` answer, which the model wrote
// freely. Unlike the grammar, which generates keys in the schema's order, it takes keys in any order, as
// JSON Schema does.
import { isObject, type SchemaNode } from "./json-schema.ts";
import { numberWithin } from "./number-range.ts";
import { matchesWhole } from "./string-automaton.ts";

const decoder = new TextDecoder();

export function isInstance(node: SchemaNode, value: unknown): boolean {
  switch (node.kind) {
    case "any":
      return true;
    case "union":
      return node.options.some((option) => isInstance(option, value));
    case "literals": {
      const text = JSON.stringify(value);
      return node.values.some((literal) => decoder.decode(literal) === text);
    }
    case "string": {
      if (typeof value !== "string") return false;
      const length = [...value].length;
      if (length < node.minLength || length > node.maxLength) return false;
      return node.pattern === null || matchesWhole(node.pattern, value);
    }
    case "number": {
      if (typeof value !== "number" || !Number.isFinite(value)) return false;
      if (node.integer && !Number.isInteger(value)) return false;
      if (!node.range) return true;
      // A range is checked on a plain decimal; a value JavaScript writes with an exponent is not taken.
      const text = String(value);
      return !/e/i.test(text) && numberWithin(node.range, text);
    }
    case "array":
      return (
        Array.isArray(value) &&
        value.length >= node.minItems &&
        value.length <= node.maxItems &&
        value.every((item) => isInstance(node.items, item))
      );
    case "object": {
      if (!isObject(value)) return false;
      if (node.properties === null) return true;
      const byKey = new Map(node.properties.map((p) => [JSON.parse(decoder.decode(p.key)) as string, p]));
      for (const key of Object.keys(value)) if (!byKey.has(key)) return false;
      for (const [key, property] of byKey) {
        // Its own keys only: "toString" is no argument of a call that did not write it.
        if (!Object.hasOwn(value, key)) {
          if (property.required) return false;
          continue;
        }
        if (!isInstance(property.value, value[key])) return false;
      }
      return true;
    }
  }
}
