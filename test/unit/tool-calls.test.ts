// Function calling's pieces: which tools and choices are taken, the schema a required call is generated
// under, how the conversation reaches a template with and without tools support, which answers are calls
// (in each form instruction templates use), how a required call streams, and OpenAI's custom tools.
import { describe, expect, it } from "vitest";
import { AutoCallStream } from "../../gateway/auto-call-stream.ts";
import type { ApiError } from "../../gateway/errors.ts";
import {
  answerCalls,
  callOrAnswerFormat,
  forcedCallFormat,
  planTools,
  RawInputStream,
  RequiredCallStream,
  type ToolPlan,
  toolCallsIn,
  toolMessages,
} from "../../gateway/tool-calls.ts";
import { type ChatCompletionRequest, ChatCompletionRequest as Request } from "../../schema/api.ts";
import type { SamplingParams } from "../../schema/wire.ts";
import { JsonGrammar } from "../../worker/engine/json-grammar.ts";
import { compileJsonSchema } from "../../worker/engine/json-schema.ts";

const weather = {
  type: "function" as const,
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string" }, unit: { enum: ["c", "f"] } },
      required: ["city"],
    },
  },
};
const time = { type: "function" as const, function: { name: "get_time" } };

const body = (extra: Record<string, unknown>): ChatCompletionRequest =>
  Request.parse({ model: "m", messages: [{ role: "user", content: "hi" }], ...extra });

function refusal(extra: Record<string, unknown>): ApiError {
  try {
    planTools(body(extra));
  } catch (error) {
    return error as ApiError;
  }
  throw new Error("expected a refusal");
}

/** Whether a text is a whole value under a `{json_schema}` format, as the worker's grammar reads it. */
function completesUnder(format: SamplingParams["response_format"]) {
  const schema = (format as { json_schema: Record<string, unknown> }).json_schema;
  return (text: string): boolean => {
    const grammar = new JsonGrammar(compileJsonSchema(schema));
    const bytes = new TextEncoder().encode(text);
    if (!grammar.accepts(bytes)) return false;
    grammar.push(bytes);
    return grammar.complete;
  };
}

/** The same for the format a plan's required call is generated under. */
const grammarOf = (plan: ToolPlan) => completesUnder(forcedCallFormat(plan));

describe("planTools", () => {
  it("takes auto by default, required and a named function, and none or no tools as no plan", () => {
    expect(planTools(body({ tools: [weather, time] }))).toMatchObject({ forced: null, parallel: true });
    expect(planTools(body({ tools: [weather], parallel_tool_calls: false }))).toMatchObject({
      parallel: false,
    });
    expect(planTools(body({ tools: [weather, time], tool_choice: "required" }))?.forced).toEqual([
      "get_weather",
      "get_time",
    ]);
    const named = { type: "function", function: { name: "get_time" } };
    expect(planTools(body({ tools: [weather, time], tool_choice: named }))?.forced).toEqual(["get_time"]);
    // none: shown to the model, never called.
    expect(planTools(body({ tools: [weather], tool_choice: "none" }))).toMatchObject({
      tools: [weather],
      forced: null,
      allowed: new Set(),
    });
    expect(planTools(body({}))).toBeNull();
  });

  it("refuses a choice without tools, an unknown name, a name twice and parameters outside the schema subset", () => {
    expect(refusal({ tool_choice: "required" })).toMatchObject({ param: "tool_choice" });
    const unknown = refusal({
      tools: [weather],
      tool_choice: { type: "function", function: { name: "nope" } },
    });
    expect(unknown.message).toContain('"nope", which is not among the tools');
    expect(refusal({ tools: [weather, weather] })).toMatchObject({ param: "tools.1" });
    const pattern = {
      ...weather,
      function: {
        ...weather.function,
        parameters: { type: "object", properties: { city: { allOf: [{ type: "string" }] } } },
      },
    };
    expect(refusal({ tools: [pattern] })).toMatchObject({ param: "tools.0.function.parameters" });
  });
});

describe("the cost of a request's tool grammars", () => {
  const grammarTool = (name: string, definition: string, syntax: "lark" | "regex" = "lark") => ({
    type: "custom" as const,
    custom: { name, format: { type: "grammar" as const, grammar: { syntax, definition } } },
  });

  it("refuses a grammar or pattern longer than 100,000 characters unread", () => {
    const long = refusal({ tools: [grammarTool("t", `[${"a".repeat(100_000)}]`, "regex")] });
    expect(long).toMatchObject({ status: 400, param: "tools.0.custom.format.grammar.definition" });
    expect(long.message).toContain("the most is 100,000");
  });

  it("stops compiling a request's tools once they took a second together", () => {
    // Each grammar is new to this process (the compile cache would answer a known one at once) and costs
    // a good part of a second; 64 of them take far more than a second on any machine.
    const run = `${process.pid}x${Date.now()}`;
    const grammar = (k: number) =>
      [
        `start: ${Array.from({ length: 10 }, (_, i) => `T${i}`).join(" | ")}`,
        ...Array.from({ length: 10 }, (_, i) => `T${i}: /(a|b)*a(a|b){10}x${run}k${k}n${i}/`),
      ].join("\n");
    const tools = Array.from({ length: 64 }, (_, k) => grammarTool(`t${k}`, grammar(k)));
    const refused = refusal({ tools });
    expect(refused.status).toBe(400);
    expect(refused.message).toContain("took more than 1 s to compile together");
    expect(refused.param).toMatch(/^tools\.\d+\.custom\.format\.grammar\.definition$/);
    // It stopped early: not at the last tool.
    expect(refused.param).not.toBe("tools.63.custom.format.grammar.definition");
  });
});

describe("a required call's format", () => {
  it("is a schema whose instances are exactly {name, arguments} calls of the forced functions", () => {
    const accepts = grammarOf(planTools(body({ tools: [weather, time], tool_choice: "required" }))!);
    expect(accepts('{"name":"get_weather","arguments":{"city":"Oslo","unit":"c"}}')).toBe(true);
    expect(accepts('{"name":"get_time","arguments":{}}')).toBe(true);
    // Declared without parameters: it takes none, as OpenAI defines such a function.
    expect(accepts('{"name":"get_time","arguments":{"zone":"UTC"}}')).toBe(false);
    expect(accepts('{"name":"get_weather","arguments":{"unit":"c"}}')).toBe(false);
    expect(accepts('{"name":"get_news","arguments":{}}')).toBe(false);
    expect(accepts('{"arguments":{},"name":"get_time"}')).toBe(false);
    expect(forcedCallFormat(planTools(body({ tools: [weather] }))!)).toBeUndefined();
  });
});

describe("a strict function's call in an auto answer", () => {
  const strictWeather = {
    type: "function" as const,
    function: {
      name: "get_weather",
      strict: true,
      parameters: {
        type: "object",
        properties: { city: { type: "string" }, unit: { type: "string", enum: ["c", "f"] } },
        required: ["city", "unit"],
        additionalProperties: false,
      },
    },
  };

  it("counts only with arguments of its schema, in any key order; a lenient one's are not checked", () => {
    const plan = planTools(body({ tools: [strictWeather, time] }))!;
    const call = (args: string) => `{"name":"get_weather","arguments":${args}}`;
    expect(toolCallsIn(call('{"unit":"c","city":"Oslo"}'), plan, "call_1")).toMatchObject([
      { function: { name: "get_weather", arguments: '{"unit":"c","city":"Oslo"}' } },
    ]);
    expect(toolCallsIn(call('{"city":5,"unit":"k"}'), plan, "call_1")).toBeNull();
    expect(toolCallsIn(call('{"city":"Oslo"}'), plan, "call_1")).toBeNull();
    const lenient = planTools(body({ tools: [weather] }))!;
    expect(toolCallsIn(call('{"city":5}'), lenient, "call_1")).not.toBeNull();
  });

  it("streams as a whole call at the end, so one whose arguments miss the schema is text, streamed or not", () => {
    const plan = planTools(body({ tools: [strictWeather] }))!;
    const stream = new AutoCallStream(plan, "call_1");
    const pieces = ['{"name":"get_weather",', '"arguments":{"city":', '5,"unit":"k"}}'];
    for (const piece of pieces) expect(stream.push(piece)).toEqual({ text: "", calls: [] });
    expect(stream.end()).toEqual({ text: pieces.join("") });
    const valid = new AutoCallStream(plan, "call_1");
    for (const piece of ['{"name":"get_weather",', '"arguments":{"city":"Oslo","unit":"c"}}'])
      valid.push(piece);
    expect(valid.end()).toMatchObject({
      calls: [{ index: 0, function: { name: "get_weather" } }],
      cut: false,
    });
  });
});

describe("tools beside a response format", () => {
  const verdict = {
    type: "object",
    properties: { ok: { type: "boolean" } },
    required: ["ok"],
    additionalProperties: false,
  };
  const accepts = (format: SamplingParams["response_format"]) => completesUnder(format);

  it("under auto, let the answer be a call of a tool or an instance of the format", () => {
    const plan = planTools(body({ tools: [weather, time] }))!;
    const either = accepts(callOrAnswerFormat(plan, { json_schema: verdict }));
    expect(either('{"name":"get_weather","arguments":{"city":"Oslo"}}')).toBe(true);
    expect(either('{"name":"get_time","arguments":{}}')).toBe(true);
    expect(either('{"ok":true}')).toBe(true);
    expect(either('{"name":"get_news","arguments":{}}')).toBe(false);
    expect(either('{"ok":"yes"}')).toBe(false);
    // The call is read as one; the instance is text.
    expect(toolCallsIn('{"name":"get_time","arguments":{}}', plan, "call_1")).toMatchObject([
      { function: { name: "get_time", arguments: "{}" } },
    ]);
    expect(toolCallsIn('{"ok":true}', plan, "call_1")).toBeNull();
  });

  it("leave a required call's format alone, and an auto answer's format without tools it may call", () => {
    const required = planTools(body({ tools: [weather], tool_choice: "required" }))!;
    expect(callOrAnswerFormat(required, { json_schema: verdict })).toEqual({ json_schema: verdict });
    const none = planTools(body({ tools: [weather], tool_choice: "none" }))!;
    expect(callOrAnswerFormat(none, { json_schema: verdict })).toEqual({ json_schema: verdict });
    expect(callOrAnswerFormat(planTools(body({ tools: [weather] }))!, { regex: "a+" })).toEqual({
      regex: "a+",
    });
  });
});

describe("a function's parameters", () => {
  it("keep, when the function is not strict, what the subset can generate, and drop only what it cannot", () => {
    const booking = {
      type: "function" as const,
      function: {
        name: "book",
        parameters: {
          type: "object",
          properties: {
            date: { type: "string", format: "date" },
            guests: { type: "integer", minimum: 1, maximum: 8 },
            kind: { oneOf: [{ const: "table" }, { const: "room" }] },
            // A backreference the subset cannot generate, a keyword it never does: left out, not refused.
            code: { type: "string", pattern: "(a)\\1", minLength: 1, maxLength: 3 },
            tags: { type: "array", items: { type: "string", maxLength: 2 }, uniqueItems: true },
          },
          required: ["date", "guests", "kind", "code", "tags"],
          additionalProperties: true,
        },
      },
    };
    const plan = planTools(body({ tools: [booking], tool_choice: "required" }))!;
    const call = (args: object) => `{"name":"book","arguments":${JSON.stringify(args)}}`;
    const valid = { date: "2024-05-01", guests: 3, kind: "room", code: "xyz", tags: ["a", "a"] };
    expect(grammarOf(plan)(call(valid))).toBe(true);
    expect(grammarOf(plan)(call({ ...valid, date: "soon" }))).toBe(false);
    expect(grammarOf(plan)(call({ ...valid, guests: 12 }))).toBe(false);
    expect(grammarOf(plan)(call({ ...valid, tags: ["abc"] }))).toBe(false);
    const strict = { ...booking, function: { ...booking.function, strict: true } };
    expect(refusal({ tools: [strict] })).toMatchObject({ param: "tools.0.function.parameters" });
  });

  it('recurse at their root with "$ref": "#", meaning the arguments, not the call around them', () => {
    const tree = {
      type: "function" as const,
      function: {
        name: "tree",
        strict: true,
        parameters: {
          type: "object",
          properties: { label: { type: "string" }, kids: { type: "array", items: { $ref: "#" } } },
          required: ["label", "kids"],
          additionalProperties: false,
        },
      },
    };
    const accepts = grammarOf(planTools(body({ tools: [tree], tool_choice: "required" }))!);
    const call = (args: object) => `{"name":"tree","arguments":${JSON.stringify(args)}}`;
    expect(accepts(call({ label: "a", kids: [{ label: "b", kids: [] }] }))).toBe(true);
    expect(accepts(call({ label: "a", kids: [{ name: "tree", arguments: {} }] }))).toBe(false);
  });

  it("keep their own definitions when several functions are forced together", () => {
    const withDefs = (name: string, field: string) => ({
      type: "function" as const,
      function: {
        name,
        parameters: {
          type: "object",
          properties: { list: { type: "array", items: { $ref: "#/$defs/item" } } },
          required: ["list"],
          $defs: {
            item: { type: "object", properties: { [field]: { type: "integer" } }, required: [field] },
          },
        },
      },
    });
    const plan = planTools(
      body({ tools: [withDefs("a", "x"), withDefs("b", "y")], tool_choice: "required" }),
    )!;
    const accepts = grammarOf(plan);
    expect(accepts('{"name":"a","arguments":{"list":[{"x":1}]}}')).toBe(true);
    expect(accepts('{"name":"b","arguments":{"list":[{"y":2},{"y":3}]}}')).toBe(true);
    expect(accepts('{"name":"a","arguments":{"list":[{"y":1}]}}')).toBe(false);
  });
});

describe("the conversation a template gets", () => {
  const messages = [
    { role: "user", content: "Weather in Oslo?" },
    {
      role: "assistant",
      content: "",
      tool_calls: [
        {
          id: "c1",
          type: "function" as const,
          function: { name: "get_weather", arguments: { city: "Oslo" } },
        },
      ],
    },
    { role: "tool", content: '{"temp": 3}', tool_call_id: "c1" },
  ];
  const plan: ToolPlan = { tools: [weather], custom: new Map(), forced: null };

  it("is the messages and tools as they are for a template that reads tools", () => {
    expect(toolMessages(messages, plan, true)).toEqual({ messages, tools: [weather] });
  });

  it("describes the functions and writes calls and results as plain turns for one that does not", () => {
    const plain = toolMessages(messages, plan, false);
    expect(plain.tools).toBeUndefined();
    expect(plain.messages[0]).toMatchObject({ role: "system" });
    expect(plain.messages[0]!.content).toContain(
      '{"name": <the function\'s name>, "arguments": <its arguments>}',
    );
    expect(plain.messages[0]!.content).toContain('"name":"get_weather"');
    expect(plain.messages.slice(1)).toEqual([
      messages[0],
      { role: "assistant", content: '{"name":"get_weather","arguments":{"city":"Oslo"}}' },
      { role: "user", content: 'Result of call c1: {"temp": 3}' },
    ]);
    expect(toolMessages(messages, null, false).messages).toHaveLength(3);
  });
});

describe("an answer that is calls", () => {
  const plan: ToolPlan = { tools: [weather, time], custom: new Map(), forced: null };
  const call = (name: string, args: string, id = "c") => ({
    id,
    type: "function",
    function: { name, arguments: args },
  });

  it("is only calls of the tools, in the JSON forms instruction templates teach", () => {
    expect(toolCallsIn(' {"name": "get_weather", "arguments": {"city": "Oslo"}}\n', plan, "call_1")).toEqual([
      call("get_weather", '{"city":"Oslo"}', "call_1"),
    ]);
    // Llama 3.1's "parameters", arguments as JSON text, Mistral's list, Hermes and Qwen's tags.
    expect(toolCallsIn('{"name":"get_time","parameters":{}}', plan, "c")).toEqual([call("get_time", "{}")]);
    expect(toolCallsIn('{"name":"get_time","arguments":"{\\"tz\\": 1}"}', plan, "c")).toEqual([
      call("get_time", '{"tz":1}'),
    ]);
    expect(
      toolCallsIn(
        '[TOOL_CALLS] [{"name":"get_time","arguments":{}},{"name":"get_weather","arguments":{"city":"Rome"}}]',
        plan,
        "c",
      ),
    ).toEqual([call("get_time", "{}"), call("get_weather", '{"city":"Rome"}', "c_1")]);
    expect(
      toolCallsIn(
        '<tool_call>\n{"name":"get_time","arguments":{}}\n</tool_call>\n<tool_call>{"name":"get_time","arguments":{}}</tool_call>',
        plan,
        "c",
      ),
    ).toEqual([call("get_time", "{}"), call("get_time", "{}", "c_1")]);
    const single: ToolPlan = { ...plan, parallel: false };
    expect(
      toolCallsIn('[{"name":"get_time","arguments":{}},{"name":"get_weather","arguments":{}}]', single, "c"),
    ).toEqual([call("get_time", "{}")]);
    for (const text of [
      '{"name":"get_news","arguments":{}}',
      '{"name":"get_time"}',
      'Sure: {"name":"get_time","arguments":{}}',
      '{"name":"get_time","arguments":[1]}',
      '<tool_call>{"name":"get_time","arguments":{}}</tool_call> and some words',
      "[]",
      "[1, 2]",
    ]) {
      expect(toolCallsIn(text, plan, "c"), text).toBeNull();
    }
  });
});

describe("a required call's stream", () => {
  it("sends the id and name once the name is written, then the arguments as they come, compact, never the call's brace", () => {
    const text = ' {"name": "get_weather",\r"arguments" :\t{\n"city": "a} b",\r\n"unit":\t"c\\" d"}\t}\n';
    const compact = '{"city":"a} b","unit":"c\\" d"}';
    for (const cut of [1, 3, 7, text.length]) {
      const stream = new RequiredCallStream("call_9");
      const pushes = [];
      for (let at = 0; at < text.length; at += cut) pushes.push(stream.push(text.slice(at, at + cut)));
      pushes.push(stream.end());
      // One entry per push at most, as OpenAI sends one per index per chunk.
      expect(pushes.every((deltas) => deltas.length <= 1)).toBe(true);
      const deltas = pushes.flat();
      expect(deltas[0]).toMatchObject({
        index: 0,
        id: "call_9",
        type: "function",
        function: { name: "get_weather" },
      });
      const args = deltas.map((d) => ("function" in d ? d.function.arguments : "")).join("");
      expect(args).toBe(compact);
      expect(
        deltas.slice(1).every((d) => d.id === undefined && "function" in d && d.function.name === undefined),
      ).toBe(true);
      // The unstreamed answer reads the same call.
      expect(stream.call()).toEqual([
        { id: "call_9", type: "function", function: { name: "get_weather", arguments: compact } },
      ]);
    }
    const forced: ToolPlan = {
      tools: [weather, time],
      custom: new Map(),
      forced: ["get_weather", "get_time"],
    };
    expect(answerCalls(forced, text, "call_9")).toEqual([
      { id: "call_9", type: "function", function: { name: "get_weather", arguments: compact } },
    ]);
  });

  it("sends nothing before the name is whole, and what was written of a call cut short", () => {
    const stream = new RequiredCallStream("c");
    expect(stream.push('{"name":"get_')).toEqual([]);
    expect(stream.call()).toEqual([]);
    expect(stream.push('time","arguments":{"tz":')).toEqual([
      { index: 0, id: "c", type: "function", function: { name: "get_time", arguments: '{"tz":' } },
    ]);
    expect(stream.end()).toEqual([]);
    const forced: ToolPlan = { tools: [weather, time], custom: new Map(), forced: ["get_time"] };
    // Cut by max_tokens: the call with its arguments so far, or none where its name was not reached; never
    // the call's JSON as text (null would make the answer text).
    expect(answerCalls(forced, '{"name":"get_time","arguments":{"tz": "U', "c")).toEqual([
      { id: "c", type: "function", function: { name: "get_time", arguments: '{"tz":"U' } },
    ]);
    expect(answerCalls(forced, '{\n"name" :\r"get_ti', "c")).toEqual([]);
  });
});

describe("custom tools", () => {
  const sql = {
    type: "custom" as const,
    custom: {
      name: "run_sql",
      description: "Runs a query",
      format: {
        type: "grammar" as const,
        grammar: { syntax: "lark" as const, definition: 'start: "SELECT " /[a-z]+/ ";"' },
      },
    },
  };
  const ticket = {
    type: "custom" as const,
    custom: {
      name: "ticket",
      format: { type: "grammar" as const, grammar: { syntax: "regex" as const, definition: "T-\\d{2}" } },
    },
  };
  const note = { type: "custom" as const, custom: { name: "note" } };

  it("reach the template as functions of one string, input, their grammar in the description", () => {
    const plan = planTools(body({ tools: [sql, weather] }))!;
    expect(plan.tools[0]).toMatchObject({
      type: "function",
      function: {
        name: "run_sql",
        parameters: { type: "object", properties: { input: { type: "string" } }, required: ["input"] },
      },
    });
    expect(plan.tools[0]!.function.description).toContain('start: "SELECT " /[a-z]+/ ";"');
    // A long grammar is not quoted into the prompt.
    const long = 'start: "a"'.concat(' | "b"'.repeat(500));
    const big = {
      type: "custom",
      custom: { name: "big", format: { type: "grammar", grammar: { syntax: "lark", definition: long } } },
    };
    const described = planTools(body({ tools: [big] }))!.tools[0]!.function.description!;
    expect(described).toBe("Its input is text in a Lark grammar");
    expect(plan.tools[1]).toEqual(weather);
    expect([...plan.custom.keys()]).toEqual(["run_sql"]);
    expect(plan.forced).toBeNull();
  });

  it("named, or the only tool required, make the whole answer the input, generated under its format", () => {
    const named = planTools(
      body({ tools: [sql, weather], tool_choice: { type: "custom", custom: { name: "run_sql" } } }),
    )!;
    expect(named.rawInput).toBe("run_sql");
    expect(forcedCallFormat(named)).toEqual({ grammar: 'start: "SELECT " /[a-z]+/ ";"', syntax: "lark" });
    const only = planTools(body({ tools: [ticket], tool_choice: "required" }))!;
    expect(forcedCallFormat(only)).toEqual({ regex: "T-\\d{2}" });
    // Free text: no format at all.
    const free = planTools(
      body({ tools: [note], tool_choice: { type: "custom", custom: { name: "note" } } }),
    )!;
    expect(free.rawInput).toBe("note");
    expect(forcedCallFormat(free)).toBeUndefined();
    // Among several required tools, a free-text one is a function of one string.
    const several = planTools(body({ tools: [note, time], tool_choice: "required" }))!;
    expect(several.rawInput).toBeUndefined();
    expect(JSON.stringify(forcedCallFormat(several))).toContain('"input":{"type":"string"}');
  });

  it("refuse a grammar that cannot run, a choice of the wrong kind, and a grammar that required cannot hold", () => {
    const bad = {
      type: "custom",
      custom: {
        name: "bad",
        format: { type: "grammar", grammar: { syntax: "lark", definition: "start: nope" } },
      },
    };
    expect(refusal({ tools: [bad] })).toMatchObject({
      status: 400,
      param: "tools.0.custom.format.grammar.definition",
    });
    expect(refusal({ tools: [bad] }).message).toMatch(
      /custom tool "bad": its lark format: .*rule nope is used but not defined/,
    );
    const badRegex = {
      type: "custom",
      custom: { name: "r", format: { type: "grammar", grammar: { syntax: "regex", definition: "a(?=b)" } } },
    };
    expect(refusal({ tools: [badRegex] })).toMatchObject({
      param: "tools.0.custom.format.grammar.definition",
    });
    expect(
      refusal({ tools: [note], tool_choice: { type: "function", function: { name: "note" } } }),
    ).toMatchObject({
      param: "tool_choice",
      message: expect.stringContaining("it is a custom tool"),
    });
    expect(
      refusal({ tools: [weather], tool_choice: { type: "custom", custom: { name: "get_weather" } } }),
    ).toMatchObject({
      param: "tool_choice",
    });
    expect(refusal({ tools: [sql, weather], tool_choice: "required" }).message).toContain(
      'cannot hold custom tool "run_sql" to its grammar',
    );
  });

  it("are called under auto only with an input in their format; else the answer is text", () => {
    const plan = planTools(body({ tools: [sql, ticket, weather] }))!;
    const call = (name: string, input: unknown) => JSON.stringify({ name, arguments: { input } });
    expect(toolCallsIn(call("run_sql", "SELECT users;"), plan, "c")).toEqual([
      { id: "c", type: "custom", custom: { name: "run_sql", input: "SELECT users;" } },
    ]);
    expect(toolCallsIn(call("run_sql", "DROP users;"), plan, "c")).toBeNull();
    expect(toolCallsIn(call("ticket", "T-42"), plan, "c")).toEqual([
      { id: "c", type: "custom", custom: { name: "ticket", input: "T-42" } },
    ]);
    expect(toolCallsIn(call("ticket", "T-420"), plan, "c")).toBeNull();
    expect(toolCallsIn(call("ticket", 42), plan, "c")).toBeNull();
    // Beside a function call, in a list.
    const both = `[${call("ticket", "T-07")}, {"name": "get_weather", "arguments": {"city": "Oslo"}}]`;
    expect(toolCallsIn(both, plan, "c")).toEqual([
      { id: "c", type: "custom", custom: { name: "ticket", input: "T-07" } },
      { id: "c_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } },
    ]);
  });

  it("stream a forced answer as the call's input, and hold an auto answer that may be calls until it ends", () => {
    const plan = planTools(body({ tools: [ticket], tool_choice: "required" }))!;
    const raw = new RawInputStream(plan, "call_1");
    // One entry per chunk, as OpenAI sends: the head carries the first piece.
    expect(raw.push("T-")).toEqual([
      { index: 0, id: "call_1", type: "custom", custom: { name: "ticket", input: "T-" } },
    ]);
    expect(raw.push("42")).toEqual([{ index: 0, custom: { input: "42" } }]);
    expect(raw.end()).toEqual([]);
    const auto = new AutoCallStream(planTools(body({ tools: [ticket, weather] }))!, "c");
    expect(auto.push('{"name": "ticket", "arguments": {')).toEqual({ text: "", calls: [] });
    expect(auto.push('"input": "T-01"}}')).toEqual({ text: "", calls: [] });
    expect(auto.end()).toEqual({
      calls: [{ index: 0, id: "c", type: "custom", custom: { name: "ticket", input: "T-01" } }],
      cut: false,
    });
  });
});

describe("allowed_tools", () => {
  const allowed = (mode: "auto" | "required", ...names: string[]) => ({
    type: "allowed_tools",
    allowed_tools: { mode, tools: names.map((name) => ({ type: "function", function: { name } })) },
  });

  it("shows every tool to the template but lets an auto answer call only the allowed ones", () => {
    const plan = planTools(body({ tools: [weather, time], tool_choice: allowed("auto", "get_time") }))!;
    expect(plan.tools).toEqual([weather, time]);
    expect(plan.forced).toBeNull();
    expect(toolCallsIn('{"name": "get_time", "arguments": {}}', plan, "c")).toHaveLength(1);
    expect(toolCallsIn('{"name": "get_weather", "arguments": {"city": "Oslo"}}', plan, "c")).toBeNull();
  });

  it("requires a call of one of the allowed tools in required mode", () => {
    const plan = planTools(
      body({ tools: [weather, time], tool_choice: allowed("required", "get_weather") }),
    )!;
    expect(plan.forced).toEqual(["get_weather"]);
    expect(JSON.stringify(forcedCallFormat(plan))).toContain('"const":"get_weather"');
    expect(JSON.stringify(forcedCallFormat(plan))).not.toContain("get_time");
  });

  it("refuses a name that is not among the tools, or none at all", () => {
    expect(refusal({ tools: [weather], tool_choice: allowed("auto", "nope") })).toMatchObject({
      param: "tool_choice",
      message: expect.stringContaining('"nope", which is not among the tools'),
    });
    expect(() => body({ tools: [weather], tool_choice: allowed("auto") })).toThrow(/at least one tool/);
  });
});
