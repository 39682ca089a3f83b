// Valid wire messages for tests, each overridable field by field.
import type {
  AdapterControl,
  Final,
  InferenceRequest,
  TokenChunk,
  UsageEvent,
  WorkerHeartbeat,
} from "../../schema/wire.ts";

export const SHA = "a".repeat(64);

export function sampleRequest(overrides: Partial<InferenceRequest> = {}): InferenceRequest {
  return {
    v: 1,
    id: "req-1",
    org: "org-1",
    api_key_id: "key-1",
    base: "meta-llama/Llama-3.1-8B-Instruct",
    adapter: { name: "acme/support-v2", blob_key: "adapters/acme/support-v2", sha256: SHA, rank: 16 },
    prompt_token_ids: [1, 15043, 29892],
    sampling: {
      max_tokens: 64,
      temperature: 0.7,
      top_p: 0.95,
      top_k: 40,
      min_p: 0.05,
      seed: 7,
      presence_penalty: 0,
      frequency_penalty: 0.5,
      repetition_penalty: 1.1,
      min_tokens: 2,
      ignore_eos: false,
      stop: ["\n\n"],
      stop_token_ids: [2],
      logprobs: true,
      top_logprobs: 2,
      prompt_logprobs: null,
    },
    reply: "_INBOX.abc123",
    created_at: 1_700_000_000_000,
    deadline: 1_700_000_060_000,
    ...overrides,
  };
}

export function sampleChunk(overrides: Partial<TokenChunk> = {}): TokenChunk {
  return {
    v: 1,
    type: "chunk",
    request_id: "req-1",
    seq: 0,
    token_ids: [450],
    text: " The",
    logprobs: [
      {
        token: " The",
        token_id: 450,
        bytes: [32, 84, 104, 101],
        logprob: -0.1,
        top: [{ token: " A", bytes: [32, 65], logprob: -2.5 }],
      },
    ],
    ...overrides,
  };
}

export function sampleFinal(overrides: Partial<Final> = {}): Final {
  return {
    v: 1,
    type: "final",
    request_id: "req-1",
    seq: 1,
    finish_reason: "stop",
    usage: { prompt_tokens: 3, completion_tokens: 1 },
    ...overrides,
  };
}

export function sampleUsage(overrides: Partial<UsageEvent> = {}): UsageEvent {
  return {
    v: 1,
    request_id: "req-1",
    org: "org-1",
    api_key_id: "key-1",
    base: "meta-llama/Llama-3.1-8B-Instruct",
    adapter: "acme/support-v2",
    input_tokens: 3,
    output_tokens: 1,
    finish_reason: "stop",
    started_ms: 1_700_000_000_000,
    finished_ms: 1_700_000_000_250,
    ...overrides,
  };
}

export function sampleHeartbeat(overrides: Partial<WorkerHeartbeat> = {}): WorkerHeartbeat {
  return {
    v: 1,
    worker_id: "gpu-host-1:0",
    base: "meta-llama/Llama-3.1-8B-Instruct",
    version: "0.1.0",
    adapters: { slot: ["acme/support-v2"], ram: [], disk: ["acme/legal-v1"] },
    pins: [],
    free_slots: 14,
    queue_depth: 0,
    running: 1,
    tokens_per_s: 812.5,
    at: 1_700_000_000_000,
    ...overrides,
  };
}

export function sampleControl(overrides: Partial<AdapterControl> = {}): AdapterControl {
  return {
    v: 1,
    kind: "pin",
    base: "meta-llama/Llama-3.1-8B-Instruct",
    adapter: "acme/support-v2",
    pinned: true,
    blob: { blob_key: "adapters/acme/support-v2", sha256: SHA, rank: 16 },
    at: 1_700_000_000_000,
    ...overrides,
  };
}
