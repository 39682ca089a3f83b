// A base's sampling defaults as its generation_config.json states them.
import { describe, expect, it } from "vitest";
import { SamplingDefaultsError, samplingDefaultsOf } from "../../gateway/sampling-defaults.ts";

const SOURCE = "base qwen: generation_config.json";

describe("sampling defaults from generation_config.json", () => {
  it("take the values the file states, as Qwen3's and Llama 3.1's do, and nothing it leaves out", () => {
    const qwen3 = {
      bos_token_id: 151643,
      do_sample: true,
      eos_token_id: [151645, 151643],
      pad_token_id: 151643,
      temperature: 0.6,
      top_k: 20,
      top_p: 0.95,
      transformers_version: "4.51.0",
    };
    expect(samplingDefaultsOf(JSON.stringify(qwen3), SOURCE)).toEqual({
      temperature: 0.6,
      top_k: 20,
      top_p: 0.95,
    });
    const llama = {
      bos_token_id: 128000,
      do_sample: true,
      eos_token_id: [128001, 128009],
      temperature: 0.6,
      top_p: 0.9,
    };
    expect(samplingDefaultsOf(llama, SOURCE)).toEqual({ temperature: 0.6, top_p: 0.9 });
    expect(samplingDefaultsOf({ bos_token_id: 1, eos_token_id: 2 }, SOURCE)).toEqual({});
    expect(samplingDefaultsOf(undefined, SOURCE)).toEqual({});
  });

  it("read min_p, repetition_penalty and max_new_tokens, top_k's -1 as off, and null as unset", () => {
    const config = {
      min_p: 0.05,
      repetition_penalty: 1.05,
      max_new_tokens: 2048,
      top_k: -1,
      temperature: null,
    };
    expect(samplingDefaultsOf(config, SOURCE)).toEqual({
      min_p: 0.05,
      repetition_penalty: 1.05,
      max_tokens: 2048,
      top_k: 0,
    });
  });

  it("refuse a value outside the API's range, or a file that is not JSON, naming the file and the key", () => {
    const bad: [unknown, string][] = [
      [{ temperature: 3 }, `${SOURCE}: temperature`],
      [{ top_p: 0 }, `${SOURCE}: top_p`],
      [{ top_k: 1.5 }, `${SOURCE}: top_k`],
      [{ min_p: -0.1 }, `${SOURCE}: min_p`],
      [{ repetition_penalty: 0 }, `${SOURCE}: repetition_penalty`],
      [{ max_new_tokens: "long" }, `${SOURCE}: max_new_tokens`],
    ];
    for (const [config, message] of bad) {
      expect(() => samplingDefaultsOf(config as object, SOURCE)).toThrow(SamplingDefaultsError);
      expect(() => samplingDefaultsOf(config as object, SOURCE)).toThrow(message);
    }
    expect(() => samplingDefaultsOf("{temperature: 0.6", SOURCE)).toThrow(`${SOURCE}: not JSON`);
  });
});
