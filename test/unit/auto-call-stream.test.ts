// A streamed answer under tool_choice "auto": text passes once it cannot be calls; calls stream as OpenAI
// streams them (id and name, then the arguments as they come) in every form toolCallsIn reads, and add up
// to what the unstreamed answer's calls are.
import { describe, expect, it } from "vitest";
import { AutoCallStream } from "../../gateway/auto-call-stream.ts";
import { type ToolCallDelta, type ToolPlan, toolCallsIn } from "../../gateway/tool-calls.ts";

const weather = {
  type: "function" as const,
  function: { name: "get_weather", parameters: { type: "object" } },
};
const time = { type: "function" as const, function: { name: "get_time" } };
const plan: ToolPlan = { tools: [weather, time], custom: new Map(), forced: null };

/** Pushes `pieces` one by one: what each gave, and the end. */
function stream(pieces: readonly string[], p: ToolPlan = plan) {
  const s = new AutoCallStream(p, "c");
  const outs = pieces.map((piece) => s.push(piece));
  return { outs, end: s.end() };
}

/** The calls a stream's deltas add up to, as OpenAI's clients assemble them. */
function assembled(deltas: readonly ToolCallDelta[]) {
  const calls: { id: string; type: "function"; function: { name: string; arguments: string } }[] = [];
  for (const delta of deltas) {
    if (!("function" in delta)) throw new Error("a custom tool's delta among function calls");
    if (delta.id !== undefined) {
      expect(delta.index).toBe(calls.length);
      calls.push({ id: delta.id, type: "function", function: { name: delta.function.name!, arguments: "" } });
    }
    expect(delta.index).toBe(calls.length - 1);
    calls[delta.index]!.function.arguments += delta.function.arguments ?? "";
  }
  return calls;
}

const everyDelta = ({ outs, end }: ReturnType<typeof stream>) => [
  ...outs.flatMap((o) => o.calls),
  ...("calls" in end ? end.calls : []),
];

describe("an auto answer's stream", () => {
  it("passes text on once it cannot be calls, and holds what may be", () => {
    const text = stream([" ", "Hello", " there"]);
    expect(text.outs.map((o) => o.text)).toEqual(["", " Hello", " there"]);
    expect(text.end).toEqual({ text: "" });
    expect(stream(["<to", "p>"]).outs.map((o) => o.text)).toEqual(["", "<top>"]);
    // JSON that is no call is content after all, at the end.
    for (const answer of [["{not json"], ['{"answer":', " 42}"], ['{"name": "get_news", "arguments": {}}']]) {
      const held = stream(answer);
      expect(held.outs.every((o) => o.text === "" && o.calls.length === 0)).toBe(true);
      expect(held.end).toEqual({ text: answer.join("") });
    }
  });

  it("streams a call's id and name once its head is written, then its arguments as they come", () => {
    const { outs, end } = stream([
      "  ",
      '{"name":',
      ' "get_weather", "arguments": ',
      '{"city": ',
      '"Oslo de',
      'l Sur"',
      "}}",
    ]);
    expect(outs.map((o) => o.calls)).toEqual([
      [],
      [],
      [],
      [
        { index: 0, id: "c", type: "function", function: { name: "get_weather", arguments: "" } },
        { index: 0, function: { arguments: '{"city":' } },
      ],
      [{ index: 0, function: { arguments: '"Oslo de' } }],
      [{ index: 0, function: { arguments: 'l Sur"' } }],
      [{ index: 0, function: { arguments: "}" } }],
    ]);
    expect(outs.every((o) => o.text === "")).toBe(true);
    expect(end).toEqual({ calls: [], cut: false });
  });

  it("adds up, streamed a character at a time, to the unstreamed answer's calls in every form", () => {
    const single: ToolPlan = { ...plan, parallel: false };
    const answers: [string, ToolPlan][] = [
      [
        ' {"name": "get_weather", "arguments": {"city": "Oslo", "days": [1, 2], "unit": {"c": true}}}\n',
        plan,
      ],
      ['{"name":"get_time","parameters":{}}', plan],
      // Arguments as JSON text: read whole at the end.
      ['{"name":"get_time","arguments":"{\\"tz\\": 1}"}', plan],
      [
        '[TOOL_CALLS] [{"name":"get_time","arguments":{}},{"name":"get_weather","arguments":{"city":"Rome"}}]',
        plan,
      ],
      [
        '<tool_call>\n{"name":"get_time","arguments":{}}\n</tool_call>\n<tool_call>{"name":"get_weather","arguments":{"q":"a } b"}}</tool_call>',
        plan,
      ],
      // The name after the arguments: read whole at the end.
      ['{"arguments": {"city": "Bergen"}, "name": "get_weather"}', plan],
      ['[{"name":"get_time","arguments":{}},{"name":"get_weather","arguments":{}}]', single],
    ];
    for (const [answer, p] of answers) {
      const streamed = stream([...answer], p);
      expect(
        streamed.outs.every((o) => o.text === ""),
        answer,
      ).toBe(true);
      expect(assembled(everyDelta(streamed)), answer).toEqual(toolCallsIn(answer, p, "c"));
      expect(streamed.end, answer).toMatchObject({ cut: false });
    }
    // All but the two forms read whole went out as they came.
    const early = answers.filter(([answer, p]) =>
      stream([...answer], p).outs.some((o) => o.calls.length > 0),
    );
    expect(early).toHaveLength(answers.length - 2);
  });

  it("says a call cut off by max_tokens was cut, and keeps a call whatever text trails it", () => {
    const cut = stream(['{"name":"get_weather","arguments":{"city": "Os']);
    expect(assembled(everyDelta(cut))).toEqual([
      { id: "c", type: "function", function: { name: "get_weather", arguments: '{"city":"Os' } },
    ]);
    expect(cut.end).toEqual({ calls: [], cut: true });
    const trailed = stream(['{"name":"get_time","arguments":{}}', " Done, I think."]);
    expect(assembled(everyDelta(trailed))).toEqual([
      { id: "c", type: "function", function: { name: "get_time", arguments: "{}" } },
    ]);
    expect(trailed.outs.every((o) => o.text === "")).toBe(true);
    expect(trailed.end).toEqual({ calls: [], cut: false });
  });
});
