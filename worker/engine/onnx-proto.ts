// A hand-written protobuf encoder for the ONNX messages a graph needs (ModelProto and what it holds).
// Field numbers follow onnx.proto3; only encoding is needed, because onnxruntime is the only reader.

export const DataType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const;
export type DataType = (typeof DataType)[keyof typeof DataType];

export interface ExternalData {
  location: string; // relative to the folder the model's external data is resolved against
  offset: number;
  length: number;
}

export interface TensorProto {
  name: string;
  dataType: DataType;
  dims: readonly number[];
  rawData?: Uint8Array;
  external?: ExternalData;
}

export type AttributeProto =
  | { name: string; type: "float"; value: number }
  | { name: string; type: "int"; value: number }
  | { name: string; type: "string"; value: string }
  | { name: string; type: "tensor"; value: TensorProto }
  | { name: string; type: "floats"; value: readonly number[] }
  | { name: string; type: "ints"; value: readonly number[] };

export interface NodeProto {
  opType: string;
  domain?: string;
  name?: string;
  inputs: readonly string[];
  outputs: readonly string[];
  attributes?: readonly AttributeProto[];
}

// A dimension is a fixed size or a symbolic name (dim_param).
export type Dim = number | string;

export interface ValueInfoProto {
  name: string;
  elemType: DataType;
  shape: readonly Dim[];
}

export interface GraphProto {
  name: string;
  nodes: readonly NodeProto[];
  initializers: readonly TensorProto[];
  inputs: readonly ValueInfoProto[];
  outputs: readonly ValueInfoProto[];
  valueInfo?: readonly ValueInfoProto[];
}

export interface OperatorSetIdProto {
  domain: string;
  version: number;
}

export interface ModelProto {
  irVersion: number;
  opsetImports: readonly OperatorSetIdProto[];
  producerName: string;
  producerVersion: string;
  graph: GraphProto;
  metadataProps?: Readonly<Record<string, string>>;
}

const WIRE_VARINT = 0;
const WIRE_FIXED32 = 5;
const WIRE_LEN = 2;

const ATTRIBUTE_TYPE = { float: 1, int: 2, string: 3, tensor: 4, floats: 6, ints: 7 } as const;

const utf8 = new TextEncoder();

// Collects encoded chunks; nested messages are encoded first and then written length-prefixed, so big
// raw tensor data is referenced, not copied, until the final concatenation.
class Writer {
  private chunks: Uint8Array[] = [];
  private scratch: number[] = [];
  private flushed = 0;

  get length(): number {
    return this.flushed + this.scratch.length;
  }

  private flushScratch(): void {
    if (this.scratch.length === 0) return;
    this.chunks.push(Uint8Array.from(this.scratch));
    this.flushed += this.scratch.length;
    this.scratch = [];
  }

  private byte(b: number): void {
    this.scratch.push(b);
  }

  varint(value: number | bigint): void {
    if (typeof value === "number" && !Number.isInteger(value)) {
      throw new RangeError(`protobuf varint must be an integer, got ${value}`);
    }
    // Negative int64 values take the 64-bit two's complement form (ten bytes), as protobuf requires.
    if (typeof value === "bigint" || value < 0 || !Number.isSafeInteger(value)) {
      let v = BigInt.asUintN(64, BigInt(value));
      while (v >= 0x80n) {
        this.byte(Number(v & 0x7fn) | 0x80);
        v >>= 7n;
      }
      this.byte(Number(v));
      return;
    }
    let v = value;
    while (v >= 0x80) {
      this.byte((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.byte(v);
  }

  tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  bytes(field: number, data: Uint8Array): void {
    this.tag(field, WIRE_LEN);
    this.varint(data.length);
    this.flushScratch();
    if (data.length > 0) this.chunks.push(data);
    this.flushed += data.length;
  }

  message(field: number, sub: Writer): void {
    this.tag(field, WIRE_LEN);
    const length = sub.length;
    this.varint(length);
    this.flushScratch();
    for (const c of sub.finishChunks()) this.chunks.push(c);
    this.flushed += length;
  }

  string(field: number, s: string): void {
    this.bytes(field, utf8.encode(s));
  }

  int(field: number, value: number): void {
    this.tag(field, WIRE_VARINT);
    this.varint(value);
  }

  float(field: number, value: number): void {
    this.tag(field, WIRE_FIXED32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    for (const x of b) this.byte(x);
  }

  packedInts(field: number, values: readonly number[]): void {
    const sub = new Writer();
    for (const v of values) sub.varint(v);
    this.message(field, sub);
  }

  packedFloats(field: number, values: readonly number[]): void {
    const b = new Uint8Array(values.length * 4);
    const view = new DataView(b.buffer);
    values.forEach((v, i) => {
      view.setFloat32(i * 4, v, true);
    });
    this.bytes(field, b);
  }

  finishChunks(): Uint8Array[] {
    this.flushScratch();
    return this.chunks;
  }

  finish(): Uint8Array {
    const chunks = this.finishChunks();
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

function stringEntry(key: string, value: string): Writer {
  const w = new Writer();
  w.string(1, key);
  w.string(2, value);
  return w;
}

function tensor(t: TensorProto): Writer {
  const w = new Writer();
  if (t.dims.length > 0) w.packedInts(1, t.dims);
  w.int(2, t.dataType);
  w.string(8, t.name);
  if (t.rawData !== undefined && t.external !== undefined) {
    throw new RangeError(`tensor ${t.name} has both raw data and external data`);
  }
  if (t.rawData !== undefined) w.bytes(9, t.rawData);
  if (t.external !== undefined) {
    w.message(13, stringEntry("location", t.external.location));
    w.message(13, stringEntry("offset", String(t.external.offset)));
    w.message(13, stringEntry("length", String(t.external.length)));
    w.int(14, 1); // data_location = EXTERNAL
  }
  return w;
}

function attribute(a: AttributeProto): Writer {
  const w = new Writer();
  w.string(1, a.name);
  w.int(20, ATTRIBUTE_TYPE[a.type]);
  switch (a.type) {
    case "float":
      w.float(2, a.value);
      break;
    case "int":
      w.int(3, a.value);
      break;
    case "string":
      w.string(4, a.value);
      break;
    case "tensor":
      w.message(5, tensor(a.value));
      break;
    case "floats":
      w.packedFloats(7, a.value);
      break;
    case "ints":
      w.packedInts(8, a.value);
      break;
  }
  return w;
}

function node(n: NodeProto): Writer {
  const w = new Writer();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  if (n.name !== undefined) w.string(3, n.name);
  w.string(4, n.opType);
  for (const a of n.attributes ?? []) w.message(5, attribute(a));
  if (n.domain !== undefined && n.domain !== "") w.string(7, n.domain);
  return w;
}

function valueInfo(v: ValueInfoProto): Writer {
  const shape = new Writer();
  for (const d of v.shape) {
    const dim = new Writer();
    if (typeof d === "number") dim.int(1, d);
    else dim.string(2, d);
    shape.message(1, dim);
  }
  const tensorType = new Writer();
  tensorType.int(1, v.elemType);
  tensorType.message(2, shape);
  const type = new Writer();
  type.message(1, tensorType);
  const w = new Writer();
  w.string(1, v.name);
  w.message(2, type);
  return w;
}

function graph(g: GraphProto): Writer {
  const w = new Writer();
  for (const n of g.nodes) w.message(1, node(n));
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, tensor(t));
  for (const v of g.inputs) w.message(11, valueInfo(v));
  for (const v of g.outputs) w.message(12, valueInfo(v));
  for (const v of g.valueInfo ?? []) w.message(13, valueInfo(v));
  return w;
}

export function encodeModel(m: ModelProto): Uint8Array {
  const w = new Writer();
  w.int(1, m.irVersion);
  w.string(2, m.producerName);
  w.string(3, m.producerVersion);
  w.message(7, graph(m.graph));
  for (const o of m.opsetImports) {
    const op = new Writer();
    if (o.domain !== "") op.string(1, o.domain);
    op.int(2, o.version);
    w.message(8, op);
  }
  for (const [k, v] of Object.entries(m.metadataProps ?? {})) w.message(14, stringEntry(k, v));
  return w.finish();
}
