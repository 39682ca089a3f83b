// Reasoning models: what a chat template says about them, how reasoning_effort is planned against that,
// and how an answer streamed in pieces of any size comes apart into reasoning and content.
import { describe, expect, it } from "vitest";
import { ApiError } from "../../gateway/errors.ts";
import { planReasoning, ReasoningSplit, splitReply } from "../../gateway/reasoning.ts";
import { reasoningTemplate } from "../../worker/engine/reasoning-template.ts";

/** The split of `pieces` pushed one after another (a token each), then ended. */
function splitOf(pieces: readonly string[], opened = false) {
  return splitReply(
    pieces.map((text) => ({ text, tokens: 1 })),
    { opened },
  );
}

/** Every way of cutting `text` in two and in single characters gives the same split. */
function expectSameWhateverTheCuts(text: string, opened = false) {
  const whole = splitOf([text], opened);
  expect(splitOf([...text], opened)).toMatchObject({ reasoning: whole.reasoning, content: whole.content });
  for (let at = 1; at < text.length; at++) {
    expect(splitOf([text.slice(0, at), text.slice(at)], opened)).toMatchObject({
      reasoning: whole.reasoning,
      content: whole.content,
    });
  }
  return whole;
}

describe("ReasoningSplit", () => {
  it("takes the reasoning between the tags, without the whitespace around it, and counts its tokens", () => {
    const tokens = ["<think>", "\n", "Let", " me", " see", ".", "\n", "</think>", "\n\n", "Hi", "!"];
    // The tags, the reasoning and the whitespace after the closing tag: nine of the eleven tokens.
    expect(splitOf(tokens)).toEqual({
      reasoning: "Let me see.",
      content: "Hi!",
      reasoningTokens: 9,
      isReasoning: [...Array(9).fill(true), false, false],
    });
    expect(expectSameWhateverTheCuts(tokens.join(""))).toMatchObject({
      reasoning: "Let me see.",
      content: "Hi!",
    });
  });

  it("sends reasoning as it comes, holding back only what may be the closing tag", () => {
    const split = new ReasoningSplit(false);
    const thinking = { reasoningTokens: true };
    expect(split.push("<think>", 1)).toEqual({ reasoning: "", content: "", ...thinking });
    expect(split.push("one two", 1)).toEqual({ reasoning: "one two", content: "", ...thinking });
    expect(split.push(" </th", 1)).toEqual({ reasoning: "", content: "", ...thinking });
    expect(split.push("ree", 1)).toEqual({ reasoning: " </three", content: "", ...thinking });
    // The token that closes the reasoning and starts the answer counts as reasoning.
    expect(split.push("</think>Done", 1)).toEqual({ reasoning: "", content: "Done", ...thinking });
    expect(split.push(" now", 1)).toEqual({ reasoning: "", content: " now", reasoningTokens: false });
    expect(split.end()).toEqual({ reasoning: "", content: "" });
    expect(split.reasoningTokens).toBe(5);
  });

  it("reads an answer that does not open with <think> as all content", () => {
    expect(expectSameWhateverTheCuts("  Hello <think>x</think> there")).toMatchObject({
      reasoning: "",
      content: "  Hello <think>x</think> there",
    });
    expect(splitOf(["<thin", "g>"])).toMatchObject({ reasoning: "", content: "<thing>", reasoningTokens: 0 });
    expect(splitOf(["  "])).toMatchObject({ reasoning: "", content: "  ", reasoningTokens: 0 });
  });

  it("starts inside the reasoning when the prompt opened it, and keeps a cut-off reasoning as reasoning", () => {
    expect(expectSameWhateverTheCuts("\nHmm, yes.\n</think>\n\nYes.", true)).toMatchObject({
      reasoning: "Hmm, yes.",
      content: "Yes.",
    });
    expect(expectSameWhateverTheCuts("<think>still thinking  ")).toMatchObject({
      reasoning: "still thinking",
      content: "",
    });
    expect(splitOf(["<think>", "\n\n", "</think>", "\n\n", "At once."])).toMatchObject({
      reasoning: "",
      content: "At once.",
    });
  });
});

describe("planReasoning", () => {
  // Tags that are not tokens of the vocabulary, and the same models with tags that are (Qwen3's 151667/8).
  const hybrid = { switchable: true, opensInPrompt: false, tagIds: null };
  const alwaysOn = { switchable: false, opensInPrompt: true, tagIds: null };
  const tagIds = { open: 151667, close: 151668 };
  const taggedHybrid = { ...hybrid, tagIds };
  const taggedAlwaysOn = { ...alwaysOn, tagIds };

  function refusal(plan: () => unknown): ApiError {
    try {
      plan();
    } catch (error) {
      if (error instanceof ApiError) return error;
      throw error;
    }
    throw new Error("the plan was not refused");
  }

  it("splits a reasoning model's answers and leaves the rest alone", () => {
    expect(planReasoning(undefined, null, false)).toEqual({ split: null });
    expect(planReasoning("none", null, false)).toEqual({ split: null });
    expect(planReasoning(null, hybrid, false)).toEqual({ split: { opened: false } });
    expect(planReasoning("high", hybrid, false)).toEqual({ split: { opened: false } });
    expect(planReasoning("low", alwaysOn, false)).toEqual({ split: { opened: true } });
  });

  it("turns reasoning off for effort none, and for structured answers of models whose tags are not tokens", () => {
    expect(planReasoning("none", hybrid, false)).toEqual({ enableThinking: false, split: null });
    expect(planReasoning("none", taggedHybrid, true)).toEqual({ enableThinking: false, split: null });
    expect(planReasoning(undefined, hybrid, true)).toEqual({ enableThinking: false, split: null });
    // A model that always reasons still answers a grammar whole: the grammar holds from the first token.
    expect(planReasoning(undefined, alwaysOn, true)).toEqual({ split: null });
  });

  it("lets a structured answer reason first where the tags are tokens, the grammar holding after the close", () => {
    // A hybrid model is told to reason and its opening tag is forced; a prompt that opens the block needs none.
    expect(planReasoning(undefined, taggedHybrid, true)).toEqual({
      enableThinking: true,
      split: { opened: false },
      tags: { open: 151667, close: 151668 },
    });
    expect(planReasoning("high", taggedAlwaysOn, true)).toEqual({
      split: { opened: true },
      tags: { open: null, close: 151668 },
    });
    // Text answers are planned as before: the tags change nothing.
    expect(planReasoning(undefined, taggedHybrid, false)).toEqual({ split: { opened: false } });
  });

  it("refuses what the model cannot do, naming the parameter", () => {
    expect(refusal(() => planReasoning("high", null, false)).message).toMatch(/does not reason/);
    expect(refusal(() => planReasoning("none", alwaysOn, false)).message).toMatch(/always reasons/);
    const bad = refusal(() => planReasoning("extreme", hybrid, false, "reasoning.effort"));
    expect(bad.param).toBe("reasoning.effort");
    expect(bad.message).toMatch(/must be one of none, minimal, low, medium, high, xhigh/);
  });
});

describe("reasoningTemplate", () => {
  it("reads from a template whether the model reasons, can be switched off and opens the block itself", () => {
    const notTokens = () => null;
    expect(reasoningTemplate(null, () => "", notTokens)).toBeNull();
    expect(reasoningTemplate("{{ messages[0].content }}", () => "", notTokens)).toBeNull();
    const hybrid =
      "{% if enable_thinking is defined and enable_thinking is false %}<think></think>{% endif %}";
    expect(reasoningTemplate(hybrid, () => "<|assistant|>\n", notTokens)).toEqual({
      switchable: true,
      opensInPrompt: false,
      tagIds: null,
    });
    expect(reasoningTemplate("{{ '<think>\\n' }}", () => "<|assistant|><think>\n", notTokens)).toEqual({
      switchable: false,
      opensInPrompt: true,
      tagIds: null,
    });
    // Tags that are tokens of the vocabulary (both must be).
    const qwen = (text: string) => ({ "<think>": 151667, "</think>": 151668 })[text] ?? null;
    expect(reasoningTemplate(hybrid, () => "", qwen)?.tagIds).toEqual({ open: 151667, close: 151668 });
    const openOnly = (text: string) => (text === "<think>" ? 5 : null);
    expect(reasoningTemplate(hybrid, () => "", openOnly)?.tagIds).toBeNull();
    // A template that cannot render a plain conversation is taken not to open the block.
    expect(
      reasoningTemplate(
        "<think>",
        () => {
          throw new Error("no");
        },
        notTokens,
      ),
    ).toEqual({ switchable: false, opensInPrompt: false, tagIds: null });
  });
});
