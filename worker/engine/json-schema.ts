// The JSON Schemas Luminet's structured outputs follow (`response_format: {"type": "json_schema"}`),
// compiled into the nodes json-grammar.ts generates from. The subset is OpenAI's strict one: an object's
// keys are its `properties`, written in their order (a key not in `required` may be left out; no other key
// may appear); arrays take one `items` schema with `minItems`/`maxItems`; strings `minLength`/`maxLength`,
// `pattern` (string-automaton.ts) and `format` (string-formats.ts); `integer` and `number` with `minimum`,
// `maximum`, their exclusive forms and `multipleOf` (number-range.ts); `boolean`,
// `null`; `enum` and `const`; `anyOf` and type lists; `$ref` into `$defs`/`definitions` (recursion
// included). Annotations (`description`, `title`, …) are ignored; any other keyword is refused, never
// ignored, so a schema is either kept exactly or refused with the keyword named.
import { compileNumberRange, type NumberRange } from "./number-range.ts";
import { shortestValue } from "./shortest-value.ts";
import { compilePatterns, PatternError, type StringAutomaton } from "./string-automaton.ts";
import { FORMAT_PATTERNS } from "./string-formats.ts";

export type SchemaNode =
  /** Any JSON value. */
  | { kind: "any" }
  /** properties null: any keys with any values (JSON mode's object). */
  | { kind: "object"; properties: PropertyNode[] | null }
  | { kind: "array"; items: SchemaNode; minItems: number; maxItems: number }
  /** pattern: what `pattern` and `format` allow, null without them. */
  | { kind: "string"; minLength: number; maxLength: number; pattern: StringAutomaton | null }
  /** range: what minimum, maximum and multipleOf allow (number-range.ts), null without them. */
  | { kind: "number"; integer: boolean; range: NumberRange | null }
  /** One of these exact JSON texts (enum, const, true/false, null). */
  | { kind: "literals"; values: Uint8Array[] }
  | { kind: "union"; options: SchemaNode[] };

export interface PropertyNode {
  /** The key as it is written: JSON-encoded, quotes included. */
  key: Uint8Array;
  value: SchemaNode;
  required: boolean;
}

/** A schema outside the subset; the message names where and what. */
export class JsonSchemaError extends Error {
  override readonly name = "JsonSchemaError";
}

/** JSON mode: any object. */
export const ANY_OBJECT: SchemaNode = { kind: "object", properties: null };

/** Most nodes one schema may compile to: it is walked for every token each step. */
export const MAX_SCHEMA_NODES = 2_000;

const ANNOTATIONS = new Set(["description", "title", "default", "examples", "$schema", "$id", "$comment"]);
const KEYWORDS = new Set([
  ...ANNOTATIONS,
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "minItems",
  "maxItems",
  "minLength",
  "maxLength",
  "pattern",
  "format",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "multipleOf",
  "enum",
  "const",
  "anyOf",
  "$ref",
  "$defs",
  "definitions",
]);
const TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"] as const;
type TypeName = (typeof TYPES)[number];

/**
 * Narrowing keywords (lenient readings drop them) that constrain values of some types only. One beside
 * none of its types would be ignored by a validator; under strict it is refused, since a strict schema is
 * kept exactly or not at all.
 */
const STRINGS: readonly TypeName[] = ["string"];
const NUMBERS: readonly TypeName[] = ["number", "integer"];
const TYPED_KEYWORDS: readonly [string, readonly TypeName[]][] = [
  ["format", [...STRINGS, ...NUMBERS]],
  ["pattern", STRINGS],
  ["minimum", NUMBERS],
  ["maximum", NUMBERS],
  ["exclusiveMinimum", NUMBERS],
  ["exclusiveMaximum", NUMBERS],
  ["multipleOf", NUMBERS],
];

const utf8 = new TextEncoder();
const utf8Decode = new TextDecoder();
const literal = (value: unknown) => utf8.encode(JSON.stringify(value));

/** Compiles a JSON Schema whose root is an object schema; throws JsonSchemaError for anything else. */
export function compileJsonSchema(schema: unknown): SchemaNode {
  const compiler = new Compiler(schema);
  const root = compiler.root();
  const kinds = root.kind === "union" ? root.options.map((o) => o.kind) : [root.kind];
  if (!kinds.every((kind) => kind === "object")) {
    throw new JsonSchemaError('schema: the root must be an object schema ("type": "object")');
  }
  // A recursion with no way out (a required property of the object's own schema) has no instance: an
  // answer under it would only ever open one more object, to max_tokens.
  if (shortestValue(root) === Number.POSITIVE_INFINITY) {
    throw new JsonSchemaError("schema: no value satisfies it (a recursion that cannot end)");
  }
  return root;
}

class Compiler {
  private nodes = 0;
  /** Compiled $ref targets; filled in after being stored, so a schema may refer to itself. */
  private readonly refs = new Map<string, SchemaNode>();

  constructor(private readonly schema: unknown) {}

  /** The whole schema, which `"$ref": "#"` names (OpenAI's and zod's recursion at the root). */
  root(): SchemaNode {
    const node = { kind: "any" } as SchemaNode;
    this.refs.set("#", node);
    return Object.assign(node, this.node(this.schema, "schema"));
  }

  node(schema: unknown, at: string): SchemaNode {
    if (++this.nodes > MAX_SCHEMA_NODES) {
      throw new JsonSchemaError(`schema: more than ${MAX_SCHEMA_NODES} subschemas`);
    }
    if (schema === true || (isObject(schema) && Object.keys(schema).every((k) => ANNOTATIONS.has(k)))) {
      return { kind: "any" };
    }
    if (!isObject(schema)) throw new JsonSchemaError(`${at}: expected a schema object`);
    for (const key of Object.keys(schema)) {
      if (!KEYWORDS.has(key)) throw new JsonSchemaError(`${at}: keyword "${key}" is not supported`);
    }
    if (schema.$ref !== undefined) return this.ref(schema, at);
    if (schema.const !== undefined || schema.enum !== undefined) return listed(schema, at);
    if (schema.anyOf !== undefined) {
      if (!Array.isArray(schema.anyOf) || schema.anyOf.length === 0) {
        throw new JsonSchemaError(`${at}.anyOf: expected a non-empty list of schemas`);
      }
      const beside = Object.keys(schema).find((k) => !BESIDE_ANY_OF.has(k));
      if (beside !== undefined) {
        throw new JsonSchemaError(
          `${at}: keyword "${beside}" cannot stand beside anyOf (its branches would not see it): put it in each branch`,
        );
      }
      const options = schema.anyOf.map((s, i) => this.node(s, `${at}.anyOf[${i}]`));
      const union: SchemaNode = { kind: "union", options };
      if (schema.type === undefined) return union;
      const types = typeNames(schema.type, at);
      const within = this.ofTypes(union, types, at);
      if (!within) throw new JsonSchemaError(`${at}: no branch of anyOf allows a value of its type`);
      return within;
    }
    const types = typeNames(schema.type, at);
    for (const [keyword, applies] of TYPED_KEYWORDS) {
      if (schema[keyword] !== undefined && !types.some((type) => applies.includes(type))) {
        throw new JsonSchemaError(
          `${at}: keyword "${keyword}" applies to ${applies.join(" or ")} values; the type here is ${types.join(" or ")}`,
        );
      }
    }
    const options = types.map((type) => this.typed(type, schema, at));
    return options.length === 1 ? options[0]! : { kind: "union", options };
  }

  /** What of `node` is of one of `types` (a `type` beside anyOf), or null when nothing is. */
  private ofTypes(node: SchemaNode, types: readonly TypeName[], at: string): SchemaNode | null {
    switch (node.kind) {
      case "any": {
        const options = types.map((type) => this.typed(type, { type, items: true }, at));
        return options.length === 1 ? options[0]! : { kind: "union", options };
      }
      case "object":
      case "array":
      case "string":
        return types.includes(node.kind) ? node : null;
      case "number":
        return types.includes(node.integer ? "integer" : "number") || types.includes("number") ? node : null;
      case "literals": {
        const values = node.values.filter((bytes) => isOfTypes(JSON.parse(utf8Decode.decode(bytes)), types));
        return values.length > 0 ? { kind: "literals", values } : null;
      }
      case "union": {
        const options = node.options.flatMap((option) => this.ofTypes(option, types, at) ?? []);
        if (options.length === 0) return null;
        return options.length === 1 ? options[0]! : { kind: "union", options };
      }
    }
  }

  private ref(schema: Record<string, unknown>, at: string): SchemaNode {
    const ref = schema.$ref;
    if (Object.keys(schema).some((k) => k !== "$ref" && !ANNOTATIONS.has(k))) {
      throw new JsonSchemaError(`${at}: "$ref" cannot stand beside other keywords`);
    }
    const known = typeof ref === "string" ? this.refs.get(ref) : undefined;
    if (known) return known;
    const match = typeof ref === "string" ? /^#\/(\$defs|definitions)\/([^/]+)$/.exec(ref) : null;
    if (!match) {
      throw new JsonSchemaError(
        `${at}.$ref: only "#" (the whole schema), "#/$defs/NAME" and "#/definitions/NAME" are supported`,
      );
    }
    const defs = isObject(this.schema) ? this.schema[match[1]!] : undefined;
    const target = isObject(defs) ? defs[match[2]!] : undefined;
    if (target === undefined) throw new JsonSchemaError(`${at}.$ref: ${ref} is not defined`);
    const node = { kind: "any" } as SchemaNode;
    this.refs.set(ref as string, node);
    Object.assign(node, this.node(target, ref as string));
    return node;
  }

  private typed(type: TypeName, schema: Record<string, unknown>, at: string): SchemaNode {
    switch (type) {
      case "object":
        return this.object(schema, at);
      case "array": {
        if (schema.items === undefined) throw new JsonSchemaError(`${at}: an array schema needs "items"`);
        const minItems = count(schema.minItems, `${at}.minItems`, 0);
        const maxItems = count(schema.maxItems, `${at}.maxItems`, Number.POSITIVE_INFINITY);
        if (minItems > maxItems) throw new JsonSchemaError(`${at}: minItems is above maxItems`);
        return { kind: "array", items: this.node(schema.items, `${at}.items`), minItems, maxItems };
      }
      case "string":
        return stringNode(schema, at);
      case "number":
      case "integer": {
        const integer = type === "integer";
        return {
          kind: "number",
          integer,
          range: compileNumberRange(withNumberFormat(schema, at), integer, at),
        };
      }
      case "boolean":
        return { kind: "literals", values: [literal(true), literal(false)] };
      case "null":
        return { kind: "literals", values: [literal(null)] };
    }
  }

  private object(schema: Record<string, unknown>, at: string): SchemaNode {
    const { properties, required = [], additionalProperties } = schema;
    if (properties === undefined) {
      return additionalProperties === false ? { kind: "object", properties: [] } : ANY_OBJECT;
    }
    if (!isObject(properties)) throw new JsonSchemaError(`${at}.properties: expected an object`);
    if (additionalProperties !== undefined && additionalProperties !== false) {
      throw new JsonSchemaError(
        `${at}.additionalProperties: only false is supported (an object's keys are its properties)`,
      );
    }
    if (!Array.isArray(required) || !required.every((k) => typeof k === "string" && k in properties)) {
      throw new JsonSchemaError(`${at}.required: expected a list of names among its properties`);
    }
    return {
      kind: "object",
      properties: Object.entries(properties).map(([name, value]) => ({
        key: literal(name),
        value: this.node(value, `${at}.properties.${name}`),
        required: required.includes(name),
      })),
    };
  }
}

/**
 * The ranges of the numeric formats OpenAPI tools write (`"type": "integer", "format": "int64"`): kept as
 * bounds. int64 and uint64 stop a little short of 2^63 and 2^64 (bounds are read as a double prints them),
 * so a few values are never generated, none outside the type. float and double take any number.
 */
const NUMBER_FORMATS: Readonly<Record<string, readonly [number, number] | null>> = {
  int32: [-2_147_483_648, 2_147_483_647],
  uint32: [0, 4_294_967_295],
  int64: [-9_223_372_036_854_775_000, 9_223_372_036_854_775_000],
  uint64: [0, 18_446_744_073_709_550_000],
  float: null,
  double: null,
};

/** The schema with its numeric `format`'s bounds added to its own; refuses a format it does not know. */
function withNumberFormat(schema: Record<string, unknown>, at: string): Record<string, unknown> {
  if (schema.format === undefined) return schema;
  const format = typeof schema.format === "string" ? schema.format : "";
  if (!(format in NUMBER_FORMATS)) {
    const known = Object.keys(NUMBER_FORMATS).join(", ");
    throw new JsonSchemaError(
      `${at}.format: ${JSON.stringify(schema.format)} is not a number format (${known})`,
    );
  }
  const bounds = NUMBER_FORMATS[format];
  if (!bounds) return schema;
  const [lo, hi] = bounds;
  const minimum = typeof schema.minimum === "number" ? Math.max(schema.minimum, lo) : lo;
  const maximum = typeof schema.maximum === "number" ? Math.min(schema.maximum, hi) : hi;
  return { ...schema, minimum, maximum };
}

function stringNode(schema: Record<string, unknown>, at: string): SchemaNode {
  let minLength = count(schema.minLength, `${at}.minLength`, 0);
  let maxLength = count(schema.maxLength, `${at}.maxLength`, Number.POSITIVE_INFINITY);
  if (minLength > maxLength) throw new JsonSchemaError(`${at}: minLength is above maxLength`);
  const patterns: string[] = [];
  if (schema.format !== undefined) {
    const pattern = typeof schema.format === "string" ? FORMAT_PATTERNS[schema.format] : undefined;
    if (pattern === undefined) {
      const known = Object.keys(FORMAT_PATTERNS).join(", ");
      throw new JsonSchemaError(`${at}.format: ${JSON.stringify(schema.format)} is not supported (${known})`);
    }
    patterns.push(pattern);
  }
  if (schema.pattern !== undefined) {
    if (typeof schema.pattern !== "string") throw new JsonSchemaError(`${at}.pattern: expected a string`);
    patterns.push(schema.pattern);
  }
  if (patterns.length === 0) return { kind: "string", minLength, maxLength, pattern: null };
  let pattern: StringAutomaton;
  try {
    pattern = compilePatterns(patterns);
  } catch (error) {
    if (error instanceof PatternError) throw new JsonSchemaError(`${at}: ${error.message}`);
    throw error;
  }
  minLength = Math.max(minLength, pattern.minLength);
  maxLength = Math.min(maxLength, pattern.maxLength);
  if (pattern.minRemaining[0]! > maxLength || pattern.maxRemaining[0]! < minLength || minLength > maxLength) {
    throw new JsonSchemaError(`${at}: no string of the lengths allowed matches the pattern`);
  }
  return { kind: "string", minLength, maxLength, pattern };
}

/**
 * What may stand beside anyOf: `type`, which keeps what of each branch is of that type; no other keyword,
 * since a branch would not see it.
 */
const BESIDE_ANY_OF = new Set([...ANNOTATIONS, "anyOf", "type", "$defs", "definitions"]);
/** What may stand beside const and enum: `type`, which the listed values are then checked against. */
const BESIDE_LISTED = new Set([...ANNOTATIONS, "const", "enum", "type", "$defs", "definitions"]);
/** The same beside a lenient schema's choice of branches, which may still be written `oneOf`. */
const BESIDE_ONE_OF = new Set([...BESIDE_ANY_OF, "oneOf"]);

/** A JSON value's type as `type` names it: "integer" for a whole number. */
function typeOfValue(value: unknown): TypeName {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value as TypeName;
}

/** Whether a JSON value is of one of `types` (a whole number is a "number" too). */
function isOfTypes(value: unknown, types: readonly TypeName[]): boolean {
  const type = typeOfValue(value);
  return types.includes(type) || (type === "integer" && types.includes("number"));
}

/**
 * The values `const` and `enum` list (both: those in each), those of its `type` only where one is given,
 * as a validator reads them together; none left is a schema no value satisfies.
 */
function listed(schema: Record<string, unknown>, at: string): SchemaNode {
  const beside = Object.keys(schema).find((k) => !BESIDE_LISTED.has(k));
  const which = schema.const !== undefined ? "const" : "enum";
  if (beside !== undefined) {
    throw new JsonSchemaError(
      `${at}: keyword "${beside}" cannot stand beside ${which}: the values listed are all the schema allows`,
    );
  }
  if (schema.enum !== undefined && (!Array.isArray(schema.enum) || schema.enum.length === 0)) {
    throw new JsonSchemaError(`${at}.enum: expected a non-empty list`);
  }
  let values: unknown[] = schema.enum !== undefined ? (schema.enum as unknown[]) : [schema.const];
  if (schema.const !== undefined && schema.enum !== undefined) {
    const only = JSON.stringify(schema.const);
    values = values.filter((v) => JSON.stringify(v) === only);
  }
  if (schema.type !== undefined) {
    const types = typeNames(schema.type, at);
    values = values.filter((v) => isOfTypes(v, types));
  }
  if (values.length === 0) {
    throw new JsonSchemaError(
      `${at}: no value ${which} lists is of the schema's type (or in both const and enum)`,
    );
  }
  return { kind: "literals", values: values.map(literal) };
}

/** A JSON object: not null, not an array. */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function typeNames(type: unknown, at: string): TypeName[] {
  const names = Array.isArray(type) ? type : [type];
  if (type === undefined)
    throw new JsonSchemaError(`${at}: a schema needs "type" (or enum, const, anyOf, $ref)`);
  for (const name of names) {
    if (!TYPES.includes(name as TypeName)) {
      throw new JsonSchemaError(`${at}.type: ${JSON.stringify(name)} is not a JSON Schema type`);
    }
  }
  return names as TypeName[];
}

function count(value: unknown, at: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || (value as number) < 0) {
    throw new JsonSchemaError(`${at}: expected a non-negative integer`);
  }
  return value as number;
}

/**
 * Keywords the subset never generates under and a non-strict schema may still carry (Pydantic, OpenAPI
 * tools): its lenient reading leaves them out. An output generated without them is an instance of the
 * schema's wider reading, which is all OpenAI promises for a schema that is not `strict`.
 */
const NOT_GENERATED = new Set([
  "minProperties",
  "maxProperties",
  "uniqueItems",
  "contentEncoding",
  "contentMediaType",
  "readOnly",
  "writeOnly",
  "deprecated",
]);
const NUMERIC = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"] as const;

/**
 * Which of a non-strict schema's narrowing keywords the subset can keep: a `pattern` that compiles, a
 * `format` it knows for the schema's types, numeric bounds that make a range. The others are left out
 * rather than refused — the lenient reading's promise — and the kept ones are generated exactly, as
 * vLLM's guided_json keeps what its backend supports.
 */
function keepsNarrowing(schema: Record<string, unknown>): (key: string) => boolean {
  const types: unknown[] =
    schema.type === undefined ? [] : Array.isArray(schema.type) ? schema.type : [schema.type];
  // As under strict, a keyword counts only beside a type it constrains.
  const allows = (kinds: readonly TypeName[]) => kinds.some((kind) => types.includes(kind));
  let numbers: boolean | undefined;
  return (key) => {
    const value = schema[key];
    if (key === "pattern") {
      if (typeof value !== "string" || !allows(STRINGS)) return false;
      try {
        compilePatterns([value]);
        return true;
      } catch (error) {
        if (error instanceof PatternError) return false;
        throw error;
      }
    }
    if (key === "format") {
      const strings = allows(STRINGS);
      const numeric = allows(NUMBERS);
      return (
        typeof value === "string" &&
        (strings || numeric) &&
        (!strings || value in FORMAT_PATTERNS) &&
        (!numeric || value in NUMBER_FORMATS)
      );
    }
    if ((NUMERIC as readonly string[]).includes(key)) {
      if (numbers === undefined) {
        try {
          const bounds = Object.fromEntries(NUMERIC.map((k) => [k, schema[k]]));
          numbers = allows(NUMBERS) && compileNumberRange(bounds, !allows(["number"]), "schema") !== null;
        } catch (error) {
          if (!(error instanceof JsonSchemaError)) throw error;
          numbers = false;
        }
      }
      return numbers;
    }
    return true;
  };
}

/**
 * A non-strict schema (a function's parameters, a response format) as a schema of the subset: keywords it
 * never generates and narrowing keywords it cannot keep (keepsNarrowing) dropped, `oneOf` read as `anyOf`,
 * and an `additionalProperties` other than false dropped where the object has `properties` (only those are
 * generated, which every reading of the schema allows). What the subset cannot keep otherwise is still
 * refused when the result is compiled.
 */
export function lenientJsonSchema(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(lenientJsonSchema);
  if (!isObject(schema)) return schema;
  const keeps = keepsNarrowing(schema);
  // Beside a list of values or a choice of branches, the rest constrains nothing the subset generates.
  const alongside =
    schema.const !== undefined || schema.enum !== undefined
      ? BESIDE_LISTED
      : schema.anyOf !== undefined || schema.oneOf !== undefined
        ? BESIDE_ONE_OF
        : null;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) {
    if (NOT_GENERATED.has(key) || !keeps(key) || (alongside && !alongside.has(key))) continue;
    if (key === "additionalProperties" && value !== false && schema.properties !== undefined) continue;
    // Values of these are data, not schemas.
    if (key === "enum" || key === "const" || ANNOTATIONS.has(key) || key === "required") out[key] = value;
    else if (key === "properties" || key === "$defs" || key === "definitions") {
      out[key] = isObject(value)
        ? Object.fromEntries(Object.entries(value).map(([name, sub]) => [name, lenientJsonSchema(sub)]))
        : value;
    } else out[key === "oneOf" ? "anyOf" : key] = lenientJsonSchema(value);
  }
  return out;
}

/**
 * A schema as Luminet generates under it: as given when `strict` is true, else its lenient reading
 * (lenientJsonSchema), as OpenAI enforces only strict schemas. One rule for response formats, functions'
 * parameters and `luminet generate`.
 */
export function schemaAsRead(
  schema: Record<string, unknown>,
  strict: boolean | null | undefined,
): Record<string, unknown> {
  return strict === true ? schema : (lenientJsonSchema(schema) as Record<string, unknown>);
}
