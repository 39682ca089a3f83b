import { describe, expect, it } from "vitest";
import type { z } from "zod";
import {
  AdapterControl,
  Cancel,
  controlSubject,
  decode,
  decodeToken,
  encode,
  encodeToken,
  Final,
  heartbeatKey,
  InferenceRequest,
  inferSubject,
  Reply,
  SubjectTokenError,
  TokenChunk,
  UsageEvent,
  WireFormatError,
  WireVersionError,
  WorkerHeartbeat,
  workerOfInferQueue,
} from "../../schema/wire.ts";
import {
  sampleChunk,
  sampleControl,
  sampleFinal,
  sampleHeartbeat,
  sampleRequest,
  sampleUsage,
} from "../contract/wire-samples.ts";

const bytesOf = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

describe("wire messages", () => {
  it("round-trip every message type unchanged", () => {
    const roundTrip = <T>(schema: z.ZodType<T>, message: T) =>
      expect(decode(schema, encode(schema, message))).toEqual(message);
    roundTrip(InferenceRequest, sampleRequest());
    roundTrip(InferenceRequest, sampleRequest({ adapter: null }));
    roundTrip(TokenChunk, sampleChunk());
    roundTrip(Final, sampleFinal());
    roundTrip(
      Final,
      sampleFinal({ finish_reason: "error", error: { code: "oom", message: "out of memory" } }),
    );
    roundTrip(Reply, sampleChunk({ seq: 3 }));
    roundTrip(Reply, sampleFinal());
    roundTrip(Cancel, { v: 1, request_id: "req-9" });
    roundTrip(UsageEvent, sampleUsage());
    roundTrip(WorkerHeartbeat, sampleHeartbeat());
    roundTrip(AdapterControl, sampleControl());
    roundTrip(AdapterControl, sampleControl({ kind: "delete", pinned: false, blob: null }));
    roundTrip(AdapterControl, sampleControl({ kind: "create", pinned: false }));
  });

  it("a reply decodes as the chunk or final it is", () => {
    expect(decode(Reply, encode(Reply, sampleFinal())).type).toBe("final");
    expect(decode(Reply, encode(Reply, sampleChunk())).type).toBe("chunk");
  });

  it("rejects an unknown wire version with a message naming it and the type", () => {
    const future = { ...sampleChunk(), v: 2 };
    expect(() => decode(TokenChunk, bytesOf(future))).toThrow(WireVersionError);
    expect(() => decode(TokenChunk, bytesOf(future))).toThrow(
      "unsupported wire version 2 for TokenChunk; this build speaks 1",
    );
    expect(() => decode(UsageEvent, bytesOf({ ...sampleUsage(), v: 2 }))).toThrow(
      "unsupported wire version 2 for UsageEvent; this build speaks 1",
    );
  });

  it("rejects a message without a version", () => {
    const { v: _, ...unversioned } = sampleRequest();
    expect(() => decode(InferenceRequest, bytesOf(unversioned))).toThrow(
      "invalid InferenceRequest: v: missing wire version",
    );
  });

  it("rejects invalid fields, naming each one", () => {
    const bad = sampleRequest({
      prompt_token_ids: [],
      sampling: { ...sampleRequest().sampling, top_p: 0, top_k: -1 },
    });
    const error = (() => {
      try {
        decode(InferenceRequest, bytesOf(bad));
      } catch (e) {
        return e as WireFormatError;
      }
    })();
    expect(error).toBeInstanceOf(WireFormatError);
    expect(error?.message).toMatch(/^invalid InferenceRequest: /);
    expect(error?.problems.map((p) => p.split(":")[0]).sort()).toEqual([
      "prompt_token_ids",
      "sampling.top_k",
      "sampling.top_p",
    ]);
  });

  it("rejects a wrong-typed field and a bad digest", () => {
    expect(() => decode(TokenChunk, bytesOf({ ...sampleChunk(), seq: "3" }))).toThrow(/seq:/);
    expect(() =>
      decode(
        InferenceRequest,
        bytesOf(sampleRequest({ adapter: { ...sampleRequest().adapter!, sha256: "xyz" } })),
      ),
    ).toThrow(/adapter\.sha256: expected 64 lowercase hex digits/);
  });

  it("ties a Final's error to finish_reason error", () => {
    expect(() => encode(Final, sampleFinal({ finish_reason: "error" }))).toThrow(/error: error is required/);
    expect(() => encode(Final, sampleFinal({ error: { code: "x", message: "y" } }))).toThrow(/error:/);
  });

  it("keeps control events consistent with the adapter state they carry", () => {
    expect(() => encode(AdapterControl, sampleControl({ kind: "delete", pinned: false }))).toThrow(/blob:/);
    expect(() => encode(AdapterControl, sampleControl({ kind: "pin", pinned: false }))).toThrow(/pinned:/);
    expect(() => encode(AdapterControl, sampleControl({ kind: "create", pinned: true }))).toThrow(/pinned:/);
    expect(() =>
      encode(AdapterControl, sampleControl({ kind: "create", pinned: false, blob: null })),
    ).toThrow(/blob:/);
    expect(() => encode(AdapterControl, sampleControl({ kind: "update", blob: null }))).toThrow(/blob:/);
  });

  it("refuses to encode an invalid message, so a producer bug fails at the producer", () => {
    expect(() => encode(UsageEvent, sampleUsage({ output_tokens: -1 }))).toThrow(
      /^invalid UsageEvent: output_tokens:/,
    );
    expect(() => encode(UsageEvent, sampleUsage({ finished_ms: 1 }))).toThrow(
      /finished_ms is before started_ms/,
    );
  });

  it("rejects bytes that are not a JSON object", () => {
    expect(() => decode(Cancel, new TextEncoder().encode("{not json"))).toThrow(
      /^invalid Cancel: not UTF-8 JSON/,
    );
    expect(() => decode(Cancel, bytesOf([1, 2]))).toThrow("invalid Cancel: (root): expected a JSON object");
    expect(() => decode(Cancel, new Uint8Array([0xff, 0xfe]))).toThrow(/not UTF-8 JSON/);
  });
});

describe("subject tokens", () => {
  const names = [
    "meta-llama/Llama-3.1-8B-Instruct",
    "hf:Qwen/Qwen2.5-0.5B",
    "a/b",
    "a_2Fb",
    "a b*>",
    "modèle-ü",
    "plain-name-42",
  ];

  it("encode base, worker and adapter names into safe tokens and back", () => {
    for (const name of names) {
      const token = encodeToken(name);
      expect(token).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(decodeToken(token)).toBe(name);
    }
    expect(encodeToken("meta-llama/Llama-3.1-8B")).toBe("meta-llama_2FLlama-3_2E1-8B");
  });

  it("give distinct names distinct tokens, even names that look encoded", () => {
    const tokens = names.map(encodeToken);
    expect(new Set(tokens).size).toBe(names.length);
  });

  it("build subjects with exactly one token per name", () => {
    expect(inferSubject("meta-llama/Llama-3.1-8B", "any")).toBe("infer.meta-llama_2FLlama-3_2E1-8B.any");
    expect(inferSubject("hf:a/b", "gpu.host:1")).toBe("infer.hf_3Aa_2Fb.gpu_2Ehost_3A1");
    expect(inferSubject("hf:a/b", "gpu.host:1", true)).toBe("infer.hf_3Aa_2Fb.gpu_2Ehost_3A1.priority");
    // A worker may be called "priority": its queue's tail is still read by position.
    expect(workerOfInferQueue("priority")).toBe("priority");
    expect(workerOfInferQueue("priority.priority")).toBe("priority");
    expect(workerOfInferQueue("any.priority")).toBeNull();
    expect(workerOfInferQueue("gpu_2Ehost_3A1.priority")).toBe("gpu.host:1");
    expect(controlSubject("b.1", "acme/x").split(".")).toHaveLength(3);
  });

  it("reserve the worker id any and reject empty names", () => {
    expect(() => heartbeatKey("base", "any")).toThrow(SubjectTokenError);
    expect(() => encodeToken("")).toThrow(SubjectTokenError);
    expect(() => decodeToken("a.b")).toThrow(SubjectTokenError);
    expect(() => encode(WorkerHeartbeat, sampleHeartbeat({ worker_id: "any" }))).toThrow(/worker_id:/);
  });
});
