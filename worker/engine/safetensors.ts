// Safetensors files: a hardened header reader, a sharded weight index that reads single tensors at
// their offsets (multi-GB files are never loaded whole), the same index over a file already in memory
// (an adapter, read once to hash and parse), and a writer that streams tensors to disk.
import {
  closeSync,
  existsSync,
  fstatSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { basename, dirname, isAbsolute, join, relative, resolve } from "node:path";
import { bfloat16ToFloat32, float16ToFloat32 } from "./dtype.ts";

export type SafetensorsDtype = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute path of the .safetensors file holding the tensor. */
  file: string;
  /** Path relative to the folder opened (ONNX external data `location`). */
  relativeFile: string;
  /** Absolute byte offset of the tensor's data in the file (8 + header length + begin). */
  offset: number;
  byteLength: number;
}

export class SafetensorsError extends Error {
  override name = "SafetensorsError";
}

export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

// Real headers are a few MB at most; a larger claim means a corrupt or hostile file.
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
// Node's single read/write is capped near 2 GiB; move data in chunks well under it.
const IO_CHUNK = 256 * 1024 * 1024;

function isDtype(x: unknown): x is SafetensorsDtype {
  return typeof x === "string" && Object.hasOwn(DTYPE_BYTES, x);
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/** Reads `target.length` bytes at `position`, or throws naming `what` where the file ends first. */
export function readFully(
  fd: number,
  target: Uint8Array,
  position: number,
  path: string,
  what: string,
): void {
  let done = 0;
  while (done < target.length) {
    const n = readSync(fd, target, done, Math.min(IO_CHUNK, target.length - done), position + done);
    if (n === 0) throw new SafetensorsError(`${path}: unexpected end of file while reading ${what}`);
    done += n;
  }
}

function writeFully(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) {
    done += writeSync(fd, data, done, Math.min(IO_CHUNK, data.length - done));
  }
}

/** The header's length from a file's first 8 bytes, checked against the cap and the file's size. */
function headerLength(prefix: Uint8Array, file: string, fileSize: number): number {
  const headerLen = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      `${file}: header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte cap`,
    );
  }
  const n = Number(headerLen);
  if (8 + n > fileSize) {
    throw new SafetensorsError(`${file}: header length ${n} runs past the end of the ${fileSize}-byte file`);
  }
  return n;
}

function headerJson(headerBytes: Uint8Array, file: string): unknown {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (err) {
    throw new SafetensorsError(`${file}: header is not valid UTF-8 JSON (${(err as Error).message})`);
  }
}

function checkFileSize(fileSize: number, file: string): void {
  if (fileSize < 8)
    throw new SafetensorsError(`${file}: ${fileSize} bytes is too short for a safetensors file`);
}

export function readSafetensorsHeader(path: string): {
  tensors: TensorInfo[];
  metadata: Record<string, string>;
} {
  const file = resolve(path);
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (err) {
    throw new SafetensorsError(`${file}: cannot open (${(err as Error).message})`);
  }
  try {
    const fileSize = fstatSync(fd).size;
    checkFileSize(fileSize, file);
    const prefix = new Uint8Array(8);
    readFully(fd, prefix, 0, file, "the header length");
    const n = headerLength(prefix, file, fileSize);
    const headerBytes = new Uint8Array(n);
    readFully(fd, headerBytes, 8, file, "the header");
    return parseHeader(headerJson(headerBytes, file), file, 8 + n, fileSize);
  } finally {
    closeSync(fd);
  }
}

function parseHeader(
  parsed: unknown,
  file: string,
  dataStart: number,
  fileSize: number,
): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  if (!isPlainObject(parsed)) throw new SafetensorsError(`${file}: header is not a JSON object`);
  const dataSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  const ranges: { name: string; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(parsed)) {
    if (name === "__metadata__") {
      if (!isPlainObject(entry)) throw new SafetensorsError(`${file}: __metadata__ is not an object`);
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== "string") throw new SafetensorsError(`${file}: __metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `${file}: tensor ${JSON.stringify(name)}`;
    if (!isPlainObject(entry)) throw new SafetensorsError(`${where}: entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (!isDtype(dtype)) throw new SafetensorsError(`${where}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(
        `${where}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`,
      );
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
    ) {
      throw new SafetensorsError(`${where}: data_offsets ${JSON.stringify(offsets)} is not [begin, end]`);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) throw new SafetensorsError(`${where}: data_offsets end ${end} is before begin ${begin}`);
    if (end > dataSize) {
      throw new SafetensorsError(
        `${where}: data_offsets [${begin}, ${end}] run past the ${dataSize}-byte data section`,
      );
    }
    const dims = shape as number[];
    const elements = dims.reduce((a, d) => a * d, 1);
    const expected = elements * DTYPE_BYTES[dtype];
    if (!Number.isSafeInteger(expected) || expected !== end - begin) {
      throw new SafetensorsError(
        `${where}: ${end - begin} data bytes but shape [${dims.join(", ")}] of ${dtype} needs ${expected}`,
      );
    }
    ranges.push({ name, begin, end });
    tensors.push({
      name,
      dtype,
      shape: [...dims],
      file,
      relativeFile: basename(file),
      offset: dataStart + begin,
      byteLength: end - begin,
    });
  }
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let prev: { name: string; end: number } | null = null;
  for (const r of ranges) {
    if (r.end === r.begin) continue;
    if (prev && r.begin < prev.end) {
      throw new SafetensorsError(
        `${file}: tensor ${JSON.stringify(r.name)} overlaps tensor ${JSON.stringify(prev.name)}`,
      );
    }
    prev = r;
  }
  return { tensors, metadata };
}

export interface WeightIndex {
  /** Absolute folder. */
  dir: string;
  names(): string[];
  has(name: string): boolean;
  /** Throws SafetensorsError("no tensor X in <dir>"). */
  info(name: string): TensorInfo;
  /** Reads and converts F16/BF16/F32 (and F64) to float32. */
  readFloat32(name: string): Float32Array;
  readRaw(name: string): Uint8Array;
}

export function openWeights(dir: string, baseName = "model"): WeightIndex {
  const root = resolve(dir);
  const single = join(root, `${baseName}.safetensors`);
  const indexPath = join(root, `${baseName}.safetensors.index.json`);
  const infos = new Map<string, TensorInfo>();
  const add = (t: TensorInfo): void => {
    infos.set(t.name, { ...t, relativeFile: relative(root, t.file) });
  };
  if (existsSync(single)) {
    for (const t of readSafetensorsHeader(single).tensors) add(t);
  } else if (existsSync(indexPath)) {
    for (const t of readShardedIndex(root, indexPath)) add(t);
  } else {
    throw new SafetensorsError(
      `${root}: neither ${baseName}.safetensors nor ${baseName}.safetensors.index.json exists`,
    );
  }
  return weightIndex(root, root, infos, (t) => {
    // A fresh, unpooled buffer: byteOffset 0, so typed views over it are aligned.
    const buf = Buffer.allocUnsafeSlow(t.byteLength);
    const out = new Uint8Array(buf.buffer, buf.byteOffset, t.byteLength);
    const fd = openSync(t.file, "r");
    try {
      readFully(fd, out, t.offset, t.file, `tensor ${t.name}`);
    } finally {
      closeSync(fd);
    }
    return out;
  });
}

/**
 * The index over a whole safetensors file already in `bytes` (read from `path`), checked as
 * readSafetensorsHeader checks a file. Tensors are views of `bytes` (float32 ones too, where aligned), valid
 * while `bytes` is.
 */
export function weightsInMemory(bytes: Uint8Array, path: string): WeightIndex {
  const file = resolve(path);
  checkFileSize(bytes.length, file);
  const n = headerLength(bytes.subarray(0, 8), file, bytes.length);
  const { tensors } = parseHeader(headerJson(bytes.subarray(8, 8 + n), file), file, 8 + n, bytes.length);
  const infos = new Map(tensors.map((t) => [t.name, t]));
  return weightIndex(dirname(file), file, infos, (t) => bytes.subarray(t.offset, t.offset + t.byteLength));
}

/** The index over `infos`, a tensor's bytes read by `bytesOf`; `where` names the weights in errors. */
function weightIndex(
  dir: string,
  where: string,
  infos: ReadonlyMap<string, TensorInfo>,
  bytesOf: (t: TensorInfo) => Uint8Array,
): WeightIndex {
  const info = (name: string): TensorInfo => {
    const t = infos.get(name);
    if (!t) throw new SafetensorsError(`no tensor ${name} in ${where}`);
    return t;
  };
  const readRaw = (name: string): Uint8Array => bytesOf(info(name));
  return {
    dir,
    names: () => [...infos.keys()],
    has: (name) => infos.has(name),
    info,
    readRaw,
    readFloat32: (name) => asFloat32(info(name), readRaw(name)),
  };
}

/** A float tensor's bytes as float32: a view where they are float32 and aligned, else a converted copy. */
function asFloat32(t: TensorInfo, raw: Uint8Array): Float32Array {
  const count = t.byteLength / DTYPE_BYTES[t.dtype];
  // Typed views need their element size's alignment; a copy starts at offset 0 (not raw.slice(): on a
  // Buffer that is a view).
  const aligned = raw.byteOffset % DTYPE_BYTES[t.dtype] === 0 ? raw : new Uint8Array(raw);
  switch (t.dtype) {
    case "F32":
      return new Float32Array(aligned.buffer, aligned.byteOffset, count);
    case "F16":
      return float16ToFloat32(new Uint16Array(aligned.buffer, aligned.byteOffset, count));
    case "BF16":
      return bfloat16ToFloat32(new Uint16Array(aligned.buffer, aligned.byteOffset, count));
    case "F64":
      return Float32Array.from(new Float64Array(aligned.buffer, aligned.byteOffset, count));
    default:
      throw new SafetensorsError(`${t.file}: tensor ${t.name} has dtype ${t.dtype}, not a float dtype`);
  }
}

function readShardedIndex(root: string, indexPath: string): TensorInfo[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(indexPath, "utf8"));
  } catch (err) {
    throw new SafetensorsError(`${indexPath}: not valid JSON (${(err as Error).message})`);
  }
  const weightMap = isPlainObject(parsed) ? parsed.weight_map : undefined;
  if (!isPlainObject(weightMap)) throw new SafetensorsError(`${indexPath}: no "weight_map" object`);
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== "string" || shard === "") {
      throw new SafetensorsError(`${indexPath}: weight_map entry for tensor ${name} is not a file name`);
    }
    const shardPath = resolve(root, shard);
    const rel = relative(root, shardPath);
    if (isAbsolute(rel) || rel.startsWith("..")) {
      throw new SafetensorsError(`${indexPath}: shard ${shard} of tensor ${name} lies outside ${root}`);
    }
    const names = byShard.get(shardPath) ?? [];
    names.push(name);
    byShard.set(shardPath, names);
  }
  const out: TensorInfo[] = [];
  for (const [shardPath, names] of byShard) {
    const { tensors } = readSafetensorsHeader(shardPath);
    const byName = new Map(tensors.map((t) => [t.name, t]));
    for (const name of names) {
      const t = byName.get(name);
      if (!t) throw new SafetensorsError(`${shardPath}: tensor ${name} listed in ${indexPath} is missing`);
      out.push(t);
    }
  }
  return out;
}

/** Tensor bytes given whole, or as a producer of chunks so large tensors never sit in memory at once. */
export type TensorData = ArrayBufferView | (() => Iterable<ArrayBufferView>);

export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  data: TensorData;
}

function bytesOf(v: ArrayBufferView): Uint8Array {
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/**
 * Writes a safetensors file with its data section 8-byte aligned. Tensor data is streamed in order, and
 * the file appears under its name only once complete (written beside it, then renamed).
 */
export function writeSafetensors(
  path: string,
  tensors: TensorToWrite[],
  metadata?: Record<string, string>,
): void {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let cursor = 0;
  for (const t of tensors) {
    if (t.name === "__metadata__" || Object.hasOwn(header, t.name)) {
      throw new SafetensorsError(`${path}: duplicate or reserved tensor name ${t.name}`);
    }
    if (!isDtype(t.dtype))
      throw new SafetensorsError(`${path}: tensor ${t.name} has unknown dtype ${t.dtype}`);
    const bytes = t.shape.reduce((a, d) => a * d, 1) * DTYPE_BYTES[t.dtype];
    if (typeof t.data !== "function" && t.data.byteLength !== bytes) {
      throw new SafetensorsError(
        `${path}: tensor ${t.name} has ${t.data.byteLength} data bytes but shape [${t.shape.join(", ")}] of ${t.dtype} needs ${bytes}`,
      );
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [cursor, cursor + bytes] };
    cursor += bytes;
  }
  let json = JSON.stringify(header);
  const jsonBytes = new TextEncoder().encode(json).length;
  json += " ".repeat((8 - ((8 + jsonBytes) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes.length), true);

  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.partial`);
  const fd = openSync(tmp, "w");
  try {
    writeFully(fd, prefix);
    writeFully(fd, headerBytes);
    for (const t of tensors) {
      const want = t.shape.reduce((a, d) => a * d, 1) * DTYPE_BYTES[t.dtype];
      let written = 0;
      const chunks = typeof t.data === "function" ? t.data() : [t.data];
      for (const chunk of chunks) {
        written += chunk.byteLength;
        if (written > want) break;
        writeFully(fd, bytesOf(chunk));
      }
      if (written !== want) {
        const got = written > want ? `more than ${want}` : `${written}`;
        throw new SafetensorsError(
          `${path}: tensor ${t.name} produced ${got} data bytes, its shape needs ${want}`,
        );
      }
    }
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
}
