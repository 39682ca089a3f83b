// vLLM's (and transformers') continue_final_message: the prompt ends inside the conversation's last message,
// an assistant turn the model goes on writing (a prefill: "{" to begin JSON, a sentence begun) instead of
// after it. The chat template renders the conversation without a generation prompt, and the text is cut
// right after the final message's content: as given, else trimmed, since templates such as Llama 3's trim
// every message.

/** The rendered conversation cut right after the final message's content; null where it does not appear. */
export function cutAfterFinalMessage(rendered: string, content: string): string | null {
  for (const written of [content, content.trim()]) {
    if (written === "") continue;
    const at = rendered.lastIndexOf(written);
    if (at >= 0) return rendered.slice(0, at + written.length);
  }
  return null;
}
