// A request's choices (OpenAI's n) read together: each choice is its own run on a worker
// (gateway/generation.ts), and the answer needs all of them. Non-streaming answers wait for every reply;
// streams interleave the choices' chunks as they arrive. Whichever way, one choice's error ends the request
// and cancels the others, so nothing runs on for a client that already got the error.
import type { Final, TokenChunk } from "../schema/wire.ts";
import { type CollectedReply, collectReply, type Generation } from "./generation.ts";

/** One choice of a stream once open: its run, its reply iterator and the reply's first step. */
export interface OpenChoice {
  generation: Generation;
  chunks: AsyncGenerator<TokenChunk, Final, void>;
  first: IteratorResult<TokenChunk, Final>;
}

/** A step of one choice's reply, as interleave yields it. */
export interface ChoiceStep {
  index: number;
  step: IteratorResult<TokenChunk, Final>;
}

/** Cancels every run still going; a finished one is left as it is. */
export function cancelGenerations(generations: readonly Generation[]): void {
  for (const generation of generations) generation.cancel();
}

/** Every choice's whole reply, in choice order; the first failure cancels the rest and is thrown. */
export async function collectChoices(generations: readonly Generation[]): Promise<CollectedReply[]> {
  try {
    // Not streamed: a run that fails reaches its client as nothing but the error.
    return await Promise.all(generations.map((generation) => collectReply(generation.chunks(false))));
  } finally {
    cancelGenerations(generations);
  }
}

/** Opens each run's reply and waits for every first step; the first failure cancels the rest and is thrown. */
export async function openChoices(generations: readonly Generation[]): Promise<OpenChoice[]> {
  try {
    return await Promise.all(
      generations.map(async (generation) => {
        const chunks = generation.chunks();
        return { generation, chunks, first: await chunks.next() };
      }),
    );
  } catch (error) {
    cancelGenerations(generations);
    throw error;
  }
}

/**
 * The choices' reply steps in the order they arrive, each choice's in its own order, ending after every
 * choice's last step (its Final). A failing choice's error is thrown; leaving early or failing cancels
 * every run still going.
 */
export async function* interleave(choices: readonly OpenChoice[]): AsyncGenerator<ChoiceStep, void, void> {
  if (choices.length === 1) {
    // The common case, read straight through: no race, no promise per chunk beyond the reply's own.
    const only = choices[0]!;
    try {
      let step = only.first;
      for (;;) {
        yield { index: 0, step };
        if (step.done) return;
        step = await only.chunks.next();
      }
    } finally {
      only.generation.cancel();
    }
  }
  const pending = new Map<number, Promise<ChoiceStep>>();
  const arm = (index: number, next: Promise<IteratorResult<TokenChunk, Final>>) => {
    const step = next.then((result) => ({ index, step: result }));
    // Raced below, where its failure is seen; this only keeps one not raced again from going unhandled.
    step.catch(() => {});
    pending.set(index, step);
  };
  for (const [index, choice] of choices.entries()) arm(index, Promise.resolve(choice.first));
  try {
    while (pending.size > 0) {
      const next = await Promise.race(pending.values());
      pending.delete(next.index);
      if (!next.step.done) arm(next.index, choices[next.index]!.chunks.next());
      yield next;
    }
  } finally {
    cancelGenerations(choices.map((choice) => choice.generation));
  }
}
