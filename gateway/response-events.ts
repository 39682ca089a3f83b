// A streamed response's events, in the order OpenAI sends them: response.created and .in_progress; per
// output item its .output_item.added, then a reasoning item's or a message's content part and text deltas,
// or a call's argument (a custom tool's input) deltas, then their .done events and .output_item.done; last response.completed (or .incomplete when
// max_output_tokens cut it) carrying the whole response. Every event has the next sequence_number. The
// writer keeps the output so far, so the last event's response is the one a non-streamed request gets.
import type { ChatTokenLogprob } from "../schema/api.ts";
import type {
  CustomToolCallOutput,
  FunctionCallOutput,
  OutputItem,
  OutputMessage,
  OutputText,
  ReasoningOutput,
  ReasoningText,
  ResponseEvent,
  ResponseObject,
} from "../schema/responses-api.ts";
import type { Final } from "../schema/wire.ts";
import {
  finishedResponse,
  itemStatusOf,
  messageItem,
  type ResponseIds,
  reasoningItem,
} from "./response-output.ts";

export type NumberedEvent = ResponseEvent & { sequence_number: number };

interface OpenMessage {
  index: number;
  text: string;
  logprobs: ChatTokenLogprob[];
}

interface OpenCall {
  index: number;
  item: FunctionCallOutput | CustomToolCallOutput;
}

export class ResponseEvents {
  private sequence = 0;
  private readonly output: OutputItem[] = [];
  private message: OpenMessage | null = null;
  private call: OpenCall | null = null;
  /** The reasoning item while its text streams: it closes when the answer begins. */
  private reasoning: { index: number; text: string } | null = null;

  constructor(
    private readonly head: ResponseObject,
    private readonly ids: ResponseIds,
    private readonly wantLogprobs: boolean,
  ) {}

  start(): NumberedEvent[] {
    return [
      this.numbered({ type: "response.created", response: this.head }),
      this.numbered({ type: "response.in_progress", response: this.head }),
    ];
  }

  /** Reasoning text as it comes: the reasoning item opens with its first piece. */
  reasoningText(delta: string): NumberedEvent[] {
    const events: NumberedEvent[] = [];
    if (!this.reasoning) {
      this.reasoning = { index: this.output.length, text: "" };
      events.push(
        ...this.openItem(reasoningItem(this.ids.reasoning, "", "in_progress"), {
          type: "reasoning_text",
          text: "",
        }),
      );
    }
    this.reasoning.text += delta;
    events.push(
      this.numbered({
        type: "response.reasoning_text.delta",
        item_id: this.ids.reasoning,
        output_index: this.reasoning.index,
        content_index: 0,
        delta,
      }),
    );
    return events;
  }

  /** Output text as it comes: the message item opens with its first piece. */
  text(delta: string, logprobs: readonly ChatTokenLogprob[]): NumberedEvent[] {
    const events = this.closeReasoning("completed");
    if (!this.message) events.push(...this.openMessage());
    const message = this.message!;
    message.text += delta;
    if (this.wantLogprobs) message.logprobs.push(...logprobs);
    events.push(
      this.numbered({
        type: "response.output_text.delta",
        item_id: this.ids.message,
        output_index: message.index,
        content_index: 0,
        delta,
        logprobs: this.wantLogprobs ? [...logprobs] : [],
      }),
    );
    return events;
  }

  /**
   * A call streamed as it is generated: its item opens once its name is known (the call before it done); a
   * custom tool's call streams its input.
   */
  callStart(callId: string, name: string, kind: "function" | "custom" = "function"): NumberedEvent[] {
    const closed = [...this.closeReasoning("completed"), ...(this.call ? this.closeCall("completed") : [])];
    const index = this.output.length;
    const item: FunctionCallOutput | CustomToolCallOutput =
      kind === "custom"
        ? {
            type: "custom_tool_call",
            id: this.ids.customToolCall(index),
            call_id: callId,
            name,
            input: "",
            status: "in_progress",
          }
        : {
            type: "function_call",
            id: this.ids.functionCall(index),
            call_id: callId,
            name,
            arguments: "",
            status: "in_progress",
          };
    this.call = { index, item };
    this.output.push(item);
    return [
      ...closed,
      this.numbered({ type: "response.output_item.added", output_index: index, item: { ...item } }),
    ];
  }

  /** A piece of the open call: its arguments', or a custom tool's input's. */
  callArguments(delta: string): NumberedEvent[] {
    const { index, item } = this.call!;
    if (item.type === "custom_tool_call") {
      item.input += delta;
      return [
        this.numbered({
          type: "response.custom_tool_call_input.delta",
          item_id: item.id,
          output_index: index,
          delta,
        }),
      ];
    }
    item.arguments += delta;
    return [
      this.numbered({
        type: "response.function_call_arguments.delta",
        item_id: item.id,
        output_index: index,
        delta,
      }),
    ];
  }

  /**
   * The end: open items closed (an answer that never began after its reasoning gets an empty message),
   * then the whole response. Returns the events and the finished response.
   */
  finish(
    final: Final,
    nowSeconds: number,
    reasoningTokens = 0,
  ): { events: NumberedEvent[]; response: ResponseObject } {
    const itemStatus = itemStatusOf(final);
    const events = this.closeReasoning(itemStatus);
    if (this.call) events.push(...this.closeCall(itemStatus));
    if (!this.output.some((item) => item.type !== "reasoning")) events.push(...this.openMessage());
    if (this.message) events.push(...this.closeMessage(itemStatus));
    const response = finishedResponse(this.head, [...this.output], final, nowSeconds, reasoningTokens);
    const type = response.status === "incomplete" ? "response.incomplete" : "response.completed";
    events.push(this.numbered({ type, response }));
    return { events, response };
  }

  private openMessage(): NumberedEvent[] {
    this.message = { index: this.output.length, text: "", logprobs: [] };
    const item = messageItem(this.ids.message, "", null, "in_progress");
    return this.openItem(item, { type: "output_text", text: "", annotations: [] });
  }

  private closeMessage(status: "completed" | "incomplete"): NumberedEvent[] {
    const { index, text, logprobs } = this.message!;
    this.message = null;
    const item = messageItem(this.ids.message, text, this.wantLogprobs ? logprobs : null, status);
    const textDone = {
      type: "response.output_text.done" as const,
      item_id: item.id,
      output_index: index,
      content_index: 0,
      text,
      logprobs: this.wantLogprobs ? logprobs : [],
    };
    return this.closeItem(index, item, textDone);
  }

  private closeReasoning(status: "completed" | "incomplete"): NumberedEvent[] {
    if (!this.reasoning) return [];
    const { index, text } = this.reasoning;
    this.reasoning = null;
    const item = reasoningItem(this.ids.reasoning, text, status);
    const textDone = {
      type: "response.reasoning_text.done" as const,
      item_id: item.id,
      output_index: index,
      content_index: 0,
      text,
    };
    return this.closeItem(index, item, textDone);
  }

  /** A message or reasoning item added with no content yet, and its one text part opened. */
  private openItem(item: OutputMessage | ReasoningOutput, part: OutputText | ReasoningText): NumberedEvent[] {
    const index = this.output.length;
    item.content = [];
    this.output.push(item);
    return [
      this.numbered({ type: "response.output_item.added", output_index: index, item }),
      this.numbered({
        type: "response.content_part.added",
        item_id: item.id,
        output_index: index,
        content_index: 0,
        part,
      }),
    ];
  }

  /** A message or reasoning item finished: its text's done event, then its part's and its own. */
  private closeItem(
    index: number,
    item: OutputMessage | ReasoningOutput,
    textDone: ResponseEvent,
  ): NumberedEvent[] {
    this.output[index] = item;
    const common = { item_id: item.id, output_index: index, content_index: 0 };
    return [
      this.numbered(textDone),
      this.numbered({ type: "response.content_part.done", ...common, part: item.content[0]! }),
      this.numbered({ type: "response.output_item.done", output_index: index, item }),
    ];
  }

  private closeCall(status: "completed" | "incomplete"): NumberedEvent[] {
    const { index, item } = this.call!;
    this.call = null;
    item.status = status;
    return [
      this.numbered(
        item.type === "custom_tool_call"
          ? {
              type: "response.custom_tool_call_input.done",
              item_id: item.id,
              output_index: index,
              input: item.input,
            }
          : {
              type: "response.function_call_arguments.done",
              item_id: item.id,
              output_index: index,
              name: item.name,
              arguments: item.arguments,
            },
      ),
      this.numbered({ type: "response.output_item.done", output_index: index, item: { ...item } }),
    ];
  }

  private numbered(event: ResponseEvent): NumberedEvent {
    return { ...event, sequence_number: this.sequence++ };
  }
}
