// A small builder over the ONNX protobuf messages: add inputs, nodes and initializers by name, get fresh
// names for intermediate values, and reuse one initializer for equal constants.
import {
  type AttributeProto,
  DataType,
  type Dim,
  encodeModel,
  type NodeProto,
  type OperatorSetIdProto,
  type TensorProto,
  type ValueInfoProto,
} from "./onnx-proto.ts";

// Attribute values by JS type: integers become INT(S), other numbers FLOAT(S). Use `floatAttr` to force
// a float for an integral value (an epsilon of 1, a scale of 2).
export type AttrValue =
  | number
  | string
  | readonly number[]
  | { float: number }
  | { floats: readonly number[] };
export type Attrs = Readonly<Record<string, AttrValue>>;

export function floatAttr(value: number): { float: number } {
  return { float: value };
}

function toAttribute(name: string, v: AttrValue): AttributeProto {
  if (typeof v === "string") return { name, type: "string", value: v };
  if (typeof v === "number") {
    return Number.isInteger(v) ? { name, type: "int", value: v } : { name, type: "float", value: v };
  }
  if ("float" in v) return { name, type: "float", value: v.float };
  if ("floats" in v) return { name, type: "floats", value: v.floats };
  return { name, type: "ints", value: v };
}

export interface NodeOptions {
  domain?: string;
  outputs?: number | readonly string[]; // how many fresh outputs, or their exact names ("" = unused)
  name?: string;
}

export class Graph {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  readonly inputs: ValueInfoProto[] = [];
  readonly outputs: ValueInfoProto[] = [];
  readonly valueInfo: ValueInfoProto[] = [];
  private readonly names = new Set<string>();
  // Names handed out by `fresh` and not yet defined: the first definition under such a name is allowed.
  private readonly reserved = new Set<string>();
  private readonly counters = new Map<string, number>();
  private readonly constants = new Map<string, string>();
  private namePrefix = "";

  private claim(name: string): string {
    if (this.reserved.delete(name)) return name;
    if (this.names.has(name)) throw new RangeError(`graph value ${name} is defined twice`);
    this.names.add(name);
    return name;
  }

  fresh(prefix: string): string {
    let n = this.counters.get(prefix) ?? 0;
    let name = `${prefix}_${n}`;
    while (this.names.has(name)) name = `${prefix}_${++n}`;
    this.counters.set(prefix, n + 1);
    this.names.add(name);
    this.reserved.add(name);
    return name;
  }

  input(name: string, elemType: DataType, shape: readonly Dim[]): string {
    this.inputs.push({ name: this.claim(name), elemType, shape });
    return name;
  }

  output(name: string, elemType: DataType, shape: readonly Dim[]): void {
    this.outputs.push({ name, elemType, shape });
  }

  // Declares an intermediate value's shape. onnxruntime's memory planner compares output shapes to reuse
  // freed buffers; a dimension that shape inference leaves unknown (after Slice, Split, Concat, Reshape
  // to a computed shape) matches nothing, and each such output then scans every freed buffer: session
  // creation grows with (such outputs × nodes), minutes for a 16-layer multi-LoRA graph. A truthful
  // symbolic name (equal names only for equal sizes at run time) keeps it linear.
  shaped(name: string, elemType: DataType, shape: readonly Dim[]): string {
    this.valueInfo.push({ name, elemType, shape });
    return name;
  }

  initializer(t: TensorProto): string {
    this.initializers.push({ ...t, name: this.claim(t.name) });
    return t.name;
  }

  // One initializer per distinct constant value: the name is reused across layers.
  constInt64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const key = `i64:${dims.join("x")}:${values.join(",")}`;
    const known = this.constants.get(key);
    if (known !== undefined) return known;
    const raw = new BigInt64Array(values.map((v) => BigInt(v)));
    const name = this.initializer({
      name: this.fresh("const_i64"),
      dataType: DataType.INT64,
      dims,
      rawData: new Uint8Array(raw.buffer),
    });
    this.constants.set(key, name);
    return name;
  }

  // A constant whose bytes the caller supplies; `key` identifies equal constants for reuse.
  constRaw(key: string, dataType: DataType, dims: readonly number[], raw: Uint8Array): string {
    const known = this.constants.get(key);
    if (known !== undefined) return known;
    const name = this.initializer({ name: this.fresh("const"), dataType, dims, rawData: raw });
    this.constants.set(key, name);
    return name;
  }

  /**
   * Runs `build` with every node it adds named `<prefix><OpType>_<n>`, so onnxruntime's per-node profile
   * tells those nodes apart (the multi-LoRA nodes are "lora/...").
   */
  named<T>(prefix: string, build: () => T): T {
    const outer = this.namePrefix;
    this.namePrefix = outer + prefix;
    try {
      return build();
    } finally {
      this.namePrefix = outer;
    }
  }

  node(opType: string, inputs: readonly string[], attrs: Attrs = {}, options: NodeOptions = {}): string[] {
    const spec = options.outputs ?? 1;
    const prefix = opType.toLowerCase();
    const outputs =
      typeof spec === "number"
        ? Array.from({ length: spec }, () => this.fresh(prefix))
        : spec.map((o) => (o === "" ? "" : this.claim(o)));
    const node: NodeProto = {
      opType,
      inputs,
      outputs,
      attributes: Object.entries(attrs).map(([k, v]) => toAttribute(k, v)),
      name: options.name ?? `${this.namePrefix}${opType}_${this.nodes.length}`,
      ...(options.domain === undefined ? {} : { domain: options.domain }),
    };
    this.nodes.push(node);
    return outputs;
  }

  // A node with one output; its name is fresh unless `output` names it.
  op(opType: string, inputs: readonly string[], attrs: Attrs = {}, output?: string, domain?: string): string {
    const [out] = this.node(opType, inputs, attrs, {
      outputs: output === undefined ? 1 : [output],
      ...(domain === undefined ? {} : { domain }),
    });
    return out!;
  }

  encode(opsetImports: readonly OperatorSetIdProto[], metadataProps?: Record<string, string>): Uint8Array {
    return encodeModel({
      irVersion: 10,
      opsetImports,
      producerName: "luminet",
      producerVersion: "1",
      graph: {
        name: "main",
        nodes: this.nodes,
        initializers: this.initializers,
        inputs: this.inputs,
        outputs: this.outputs,
        valueInfo: this.valueInfo,
      },
      ...(metadataProps === undefined ? {} : { metadataProps }),
    });
  }
}
