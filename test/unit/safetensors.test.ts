import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  bfloat16ToFloat32,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToFloat16,
} from "../../worker/engine/dtype.ts";
import {
  openWeights,
  readSafetensorsHeader,
  SafetensorsError,
  weightsInMemory,
  writeSafetensors,
} from "../../worker/engine/safetensors.ts";

const root = mkdtempSync(join(tmpdir(), "luminet-safetensors-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
function freshDir(): string {
  const dir = join(root, `case-${counter++}`);
  mkdirSync(dir);
  return dir;
}

/** A file with the given header object and data bytes, laid out by hand (no writer involved). */
function craft(header: unknown, dataBytes: number, rawHeader?: string): string {
  const path = join(freshDir(), "model.safetensors");
  const json = Buffer.from(rawHeader ?? JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([prefix, json, Buffer.alloc(dataBytes)]));
  return path;
}

function bits16(values: number[], convert: (f: Float32Array) => Uint16Array): number[] {
  return [...convert(new Float32Array(values))];
}

describe("float16 and bfloat16 conversion", () => {
  it("round-trips every float16 bit pattern through float32", () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = float32ToFloat16(float16ToFloat32(all));
    const wrong = [...all].filter((i) => {
      const isNan = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
      return isNan ? (back[i]! & 0x7c00) !== 0x7c00 || (back[i]! & 0x3ff) === 0 : back[i] !== i;
    });
    expect(wrong).toEqual([]);
  });

  it("round-trips every bfloat16 bit pattern through float32", () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = float32ToBfloat16(bfloat16ToFloat32(all));
    const wrong = [...all].filter((i) => {
      const isNan = (i & 0x7f80) === 0x7f80 && (i & 0x7f) !== 0;
      return isNan ? (back[i]! & 0x7f80) !== 0x7f80 || (back[i]! & 0x7f) === 0 : back[i] !== i;
    });
    expect(wrong).toEqual([]);
  });

  it("rounds float32 to float16 to nearest, ties to even, keeping inf and nan", () => {
    expect(bits16([1, 65504, 65519, 65520, -0, -Infinity], float32ToFloat16)).toEqual([
      0x3c00, 0x7bff, 0x7bff, 0x7c00, 0x8000, 0xfc00,
    ]);
    // Halfway cases: 1 + 2^-11 goes down to the even 1.0, 1 + 3·2^-11 up to the even 1 + 2^-9.
    expect(bits16([1 + 2 ** -11, 1 + 3 * 2 ** -11], float32ToFloat16)).toEqual([0x3c00, 0x3c02]);
    // Subnormals: 2^-24 is the smallest; 2^-25 ties to zero; 1.5·2^-25 rounds up to 2^-24.
    expect(bits16([2 ** -24, 2 ** -25, 1.5 * 2 ** -25, 2 ** -30], float32ToFloat16)).toEqual([1, 0, 1, 0]);
    const nan = float32ToFloat16(new Float32Array([Number.NaN]))[0]!;
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x3ff).not.toBe(0);
  });

  it("rounds float32 to bfloat16 to nearest, ties to even", () => {
    expect(bits16([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -2, Infinity], float32ToBfloat16)).toEqual([
      0x3f80, 0x3f80, 0x3f82, 0xc000, 0x7f80,
    ]);
    expect(Number.isNaN(bfloat16ToFloat32(float32ToBfloat16(new Float32Array([Number.NaN])))[0])).toBe(true);
  });
});

describe("safetensors files", () => {
  const values = new Float32Array([0.5, -1.25, 3, 1024, -0.001, 7.75]);

  it("round-trips every float dtype, integers and metadata, with the data start 8-byte aligned", () => {
    const dir = freshDir();
    const path = join(dir, "model.safetensors");
    writeSafetensors(
      path,
      [
        { name: "f32", dtype: "F32", shape: [2, 3], data: values },
        { name: "f16", dtype: "F16", shape: [6], data: float32ToFloat16(values) },
        { name: "bf16", dtype: "BF16", shape: [3, 2], data: float32ToBfloat16(values) },
        { name: "f64", dtype: "F64", shape: [6], data: Float64Array.from(values) },
        { name: "i64", dtype: "I64", shape: [2], data: new BigInt64Array([-1n, 2n ** 40n]) },
        { name: "u8", dtype: "U8", shape: [3], data: new Uint8Array([1, 2, 255]) },
        { name: "empty", dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
      ],
      { format: "pt" },
    );
    const headerLen = Number(readFileSync(path).readBigUInt64LE(0));
    expect((8 + headerLen) % 8).toBe(0);
    const { tensors, metadata } = readSafetensorsHeader(path);
    expect(metadata).toEqual({ format: "pt" });
    expect(tensors.map((t) => t.name)).toEqual(["f32", "f16", "bf16", "f64", "i64", "u8", "empty"]);
    for (const t of tensors) expect(t.offset % (t.dtype === "F64" || t.dtype === "I64" ? 8 : 1)).toBe(0);

    const w = openWeights(dir);
    expect(w.info("bf16")).toMatchObject({
      dtype: "BF16",
      shape: [3, 2],
      byteLength: 12,
      relativeFile: "model.safetensors",
    });
    // Each value here is exact in f16 and bf16.
    expect([...w.readFloat32("f32")]).toEqual([...values]);
    expect([...w.readFloat32("f16")]).toEqual([...float16ToFloat32(float32ToFloat16(values))]);
    expect([...w.readFloat32("bf16")]).toEqual([...bfloat16ToFloat32(float32ToBfloat16(values))]);
    expect([...w.readFloat32("bf16")].slice(0, 4)).toEqual([0.5, -1.25, 3, 1024]);
    expect([...w.readFloat32("f64")]).toEqual([...values]);
    expect([...new BigInt64Array(w.readRaw("i64").slice().buffer)]).toEqual([-1n, 2n ** 40n]);
    expect([...w.readRaw("u8")]).toEqual([1, 2, 255]);
    expect(w.readFloat32("empty").length).toBe(0);
    expect(() => w.readFloat32("u8")).toThrow(/u8.*not a float dtype/);
    expect(() => w.info("missing")).toThrow(`no tensor missing in ${dir}`);
    expect(w.has("f32")).toBe(true);
    expect(w.has("missing")).toBe(false);
  });

  it("reads the same tensors from a file already in memory, at any alignment, checked the same way", () => {
    const dir = freshDir();
    const path = join(dir, "model.safetensors");
    writeSafetensors(path, [
      { name: "f32", dtype: "F32", shape: [2, 3], data: values },
      { name: "bf16", dtype: "BF16", shape: [6], data: float32ToBfloat16(values) },
      { name: "f64", dtype: "F64", shape: [6], data: Float64Array.from(values) },
    ]);
    const onDisk = openWeights(dir);
    const bytes = readFileSync(path);
    // At offset 1 of its buffer no float32 view can be aligned: the reads copy.
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    for (const inMemory of [weightsInMemory(bytes, path), weightsInMemory(shifted.subarray(1), path)]) {
      expect(inMemory.names()).toEqual(onDisk.names());
      for (const name of ["f32", "bf16", "f64"]) {
        expect([...inMemory.readFloat32(name)]).toEqual([...onDisk.readFloat32(name)]);
      }
      expect(inMemory.info("f32")).toMatchObject({ dtype: "F32", shape: [2, 3], byteLength: 24 });
      expect(() => inMemory.info("missing")).toThrow(`no tensor missing in ${path}`);
    }
    const long = readFileSync(craft({ w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, 8));
    expect(() => weightsInMemory(long, path)).toThrow(
      /data_offsets \[0, 16\] run past the 8-byte data section/,
    );
    expect(() => weightsInMemory(bytes.subarray(0, 5), path)).toThrow(/5 bytes is too short/);
  });

  it("streams tensors given as chunk producers and leaves no file when a producer comes up short", () => {
    const dir = freshDir();
    const path = join(dir, "model.safetensors");
    writeSafetensors(path, [
      {
        name: "chunked",
        dtype: "F32",
        shape: [6],
        *data() {
          yield values.subarray(0, 4);
          yield values.subarray(4);
        },
      },
    ]);
    expect([...openWeights(dir).readFloat32("chunked")]).toEqual([...values]);

    const bad = join(dir, "short.safetensors");
    expect(() =>
      writeSafetensors(bad, [
        {
          name: "short",
          dtype: "F32",
          shape: [6],
          *data() {
            yield values.subarray(0, 2);
          },
        },
      ]),
    ).toThrow(/tensor short produced 8 data bytes, its shape needs 24/);
    expect(readdirSync(dir)).toEqual(["model.safetensors"]);
  });

  it("refuses to write data whose size does not match the shape", () => {
    expect(() =>
      writeSafetensors(join(freshDir(), "x.safetensors"), [
        { name: "w", dtype: "F16", shape: [4], data: values },
      ]),
    ).toThrow(/tensor w has 24 data bytes but shape \[4\] of F16 needs 8/);
  });
});

describe("the safetensors reader refuses bad files, naming the file and tensor", () => {
  const ok = { dtype: "F32", shape: [2], data_offsets: [0, 8] };

  it("accepts a well-formed crafted file", () => {
    const path = craft({ __metadata__: { a: "b" }, w: ok }, 8);
    expect(readSafetensorsHeader(path).tensors).toHaveLength(1);
  });

  it.each([
    [
      "a file shorter than the length prefix",
      () => {
        const path = join(freshDir(), "model.safetensors");
        writeFileSync(path, Buffer.alloc(4));
        return path;
      },
      /too short/,
    ],
    [
      "a header length over the cap",
      () => {
        const path = join(freshDir(), "model.safetensors");
        const prefix = Buffer.alloc(16);
        prefix.writeBigUInt64LE(2n ** 40n);
        writeFileSync(path, prefix);
        return path;
      },
      /exceeds the 104857600-byte cap/,
    ],
  ])("%s", (_, make, message) => {
    const path = make();
    expect(() => readSafetensorsHeader(path)).toThrow(message);
  });

  it("a header that claims more bytes than the file has", () => {
    const path = join(freshDir(), "model.safetensors");
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(100n);
    writeFileSync(path, Buffer.concat([prefix, Buffer.from("{}")]));
    expect(() => readSafetensorsHeader(path)).toThrow(
      `${path}: header length 100 runs past the end of the 10-byte file`,
    );
  });

  it("a header that is not JSON, or not an object", () => {
    expect(() => readSafetensorsHeader(craft(null, 0, "{not json"))).toThrow(
      /header is not valid UTF-8 JSON/,
    );
    expect(() => readSafetensorsHeader(craft([1, 2], 0))).toThrow(/header is not a JSON object/);
  });

  it("metadata that is not a map of strings", () => {
    expect(() => readSafetensorsHeader(craft({ __metadata__: { n: 1 } }, 0))).toThrow(
      /__metadata__\.n is not a string/,
    );
  });

  it.each([
    ["an unknown dtype", { w: { ...ok, dtype: "F8_E4M3" } }, 8, /tensor "w": unknown dtype "F8_E4M3"/],
    ["a bad shape", { w: { ...ok, shape: [2, -1] } }, 8, /tensor "w": shape \[2,-1\] is not a list/],
    [
      "bad data_offsets",
      { w: { ...ok, data_offsets: [0] } },
      8,
      /tensor "w": data_offsets \[0\] is not \[begin, end\]/,
    ],
    [
      "reversed offsets",
      { w: { ...ok, data_offsets: [8, 0] } },
      8,
      /tensor "w": data_offsets end 0 is before begin 8/,
    ],
    [
      "offsets past the data",
      { w: { ...ok, data_offsets: [4, 12] } },
      8,
      /tensor "w": data_offsets \[4, 12\] run past the 8-byte data section/,
    ],
    [
      "a size that does not match the shape",
      { w: { ...ok, shape: [3] } },
      8,
      /tensor "w": 8 data bytes but shape \[3\] of F32 needs 12/,
    ],
    [
      "overlapping tensors",
      { a: ok, b: { dtype: "F16", shape: [2], data_offsets: [6, 10] } },
      16,
      /tensor "b" overlaps tensor "a"/,
    ],
    ["an entry that is not an object", { w: 5 }, 0, /tensor "w": entry is not an object/],
  ])("%s", (_, header, dataBytes, message) => {
    const path = craft(header, dataBytes);
    let error: unknown;
    try {
      readSafetensorsHeader(path);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(SafetensorsError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).toContain(path);
  });
});

describe("sharded weights", () => {
  function shardedModel(weightMap: Record<string, string>): string {
    const dir = freshDir();
    mkdirSync(join(dir, "shards"));
    writeSafetensors(join(dir, "shards", "model-00001-of-00002.safetensors"), [
      { name: "a", dtype: "F32", shape: [2], data: new Float32Array([1, 2]) },
      { name: "b", dtype: "F32", shape: [1], data: new Float32Array([3]) },
    ]);
    writeSafetensors(join(dir, "model-00002-of-00002.safetensors"), [
      { name: "c", dtype: "F16", shape: [2], data: float32ToFloat16(new Float32Array([4, 5])) },
    ]);
    writeFileSync(
      join(dir, "model.safetensors.index.json"),
      JSON.stringify({ metadata: { total_size: 16 }, weight_map: weightMap }),
    );
    return dir;
  }

  it("opens every tensor of every shard listed in the index, with paths relative to the folder", () => {
    const dir = shardedModel({
      a: "shards/model-00001-of-00002.safetensors",
      b: "shards/model-00001-of-00002.safetensors",
      c: "model-00002-of-00002.safetensors",
    });
    const w = openWeights(dir);
    expect(w.names().sort()).toEqual(["a", "b", "c"]);
    expect(w.info("a").relativeFile).toBe(join("shards", "model-00001-of-00002.safetensors"));
    expect(w.info("c").file).toBe(join(dir, "model-00002-of-00002.safetensors"));
    expect([...w.readFloat32("b")]).toEqual([3]);
    expect([...w.readFloat32("c")]).toEqual([4, 5]);
  });

  it("names a tensor the index lists but its shard lacks", () => {
    const dir = shardedModel({
      a: "shards/model-00001-of-00002.safetensors",
      z: "model-00002-of-00002.safetensors",
    });
    expect(() => openWeights(dir)).toThrow(/tensor z listed in .*model\.safetensors\.index\.json is missing/);
  });

  it("refuses a shard outside the model folder", () => {
    const dir = shardedModel({ a: "../elsewhere.safetensors" });
    expect(() => openWeights(dir)).toThrow(/shard \.\.\/elsewhere\.safetensors of tensor a lies outside/);
  });

  it("opens adapter files by base name and says when neither layout exists", () => {
    const dir = freshDir();
    writeSafetensors(join(dir, "adapter_model.safetensors"), [
      { name: "x", dtype: "F32", shape: [1], data: new Float32Array([9]) },
    ]);
    expect([...openWeights(dir, "adapter_model").readFloat32("x")]).toEqual([9]);
    expect(() => openWeights(dir)).toThrow(
      /neither model\.safetensors nor model\.safetensors\.index\.json exists/,
    );
  });
});
