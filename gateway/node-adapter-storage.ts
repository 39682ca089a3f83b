// AdapterStorage on node:fs (Node's, or workerd's in-memory /tmp on Workers): an upload streams into a
// private scratch folder (counted against the size cap as it arrives) and is unpacked (a tar of a PEFT
// folder), or a registered source URL is fetched there under the same cap (gateway/adapter-sources.ts); a
// single .safetensors is completed with its config. Either way it is then validated with the worker's own
// loader against the base's shape and the fleet's maximum rank, so what the gateway accepts is exactly what
// a worker will load. Accepted adapters go to the blob store workers read with --blobs: a folder, an S3/R2
// bucket written with signed PUTs, or on Workers an R2 binding (gateway/r2-blob-store.ts).

import { createWriteStream } from "node:fs";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import type { BaseArchitecture } from "../schema/db.ts";
import { ADAPTER_FILES, type WritableBlobStore } from "../worker/adapters/blob-store.ts";
import { AdapterError, loadPeftAdapter } from "../worker/adapters/peft.ts";
import { LINEAR_MODULE_NAMES } from "../worker/adapters/peft-config.ts";
import { architectureOfClass, type ModelConfig, moduleLeafName } from "../worker/engine/model-config.ts";
import { readSafetensorsHeader, SafetensorsError } from "../worker/engine/safetensors.ts";
import { ArchiveError, extractArchive } from "./adapter-archive.ts";
import { AdapterSources } from "./adapter-sources.ts";
import type {
  AdapterDescription,
  AdapterStorage,
  StagedAdapter,
  UploadDescription,
} from "./adapter-storage.ts";
import { ApiError, invalidRequest, payloadTooLarge } from "./errors.ts";

const [CONFIG_FILE, WEIGHTS_FILE] = ADAPTER_FILES;

export interface NodeAdapterStorageOptions {
  /** The blob store workers read (their --blobs): a folder or a bucket. */
  blobs: WritableBlobStore;
  /** Registered URL prefixes adapters may be fetched from; default none (sources are refused). */
  sources?: AdapterSources;
  /** Largest rank a worker's slots hold (the workers' --max-rank). */
  maxRank: number;
  /** Largest upload accepted, in bytes. */
  maxBytes: number;
  /** Where scratch folders are made; default the OS's temporary folder. */
  scratchDir?: string;
}

/**
 * The base's shape as the loader's ModelConfig. Validation reads only the layer count and the module
 * shapes; the rest (rope, norms, special tokens) never reaches an adapter check, so it takes neutral values.
 */
function shapeOf(arch: BaseArchitecture): ModelConfig {
  return {
    architecture: architectureOfClass(arch.family) ?? "llama",
    hiddenSize: arch.hiddenSize,
    intermediateSize: arch.intermediateSize,
    numLayers: arch.layers,
    numHeads: arch.attentionHeads,
    numKvHeads: arch.kvHeads,
    headDim: arch.headDim,
    vocabSize: arch.vocabSize,
    maxPositions: 1,
    rmsNormEps: 1e-6,
    ropeTheta: 10_000,
    ropeScaling: null,
    tieWordEmbeddings: false,
    qkvBias: false,
    qkNorm: false,
    dtype: "F32",
    bosTokenId: null,
    eosTokenIds: [],
  };
}

function tooLarge(limit: number): ApiError {
  const error = payloadTooLarge(limit);
  return new ApiError(
    413,
    error.type,
    `The adapter upload is larger than the cap of ${limit} bytes.`,
    error.code,
  );
}

/** The PEFT config of a single .safetensors: flags first, else its __metadata__. */
function singleFileConfig(weightsPath: string, given: AdapterDescription["config"]): object {
  if (given) {
    return { peft_type: "LORA", r: given.rank, lora_alpha: given.alpha, target_modules: given.targetModules };
  }
  const { metadata } = readSafetensorsHeader(weightsPath);
  if (metadata.adapter_config !== undefined) {
    try {
      return JSON.parse(metadata.adapter_config) as object;
    } catch {
      throw new AdapterError("the safetensors __metadata__ adapter_config is not valid JSON");
    }
  }
  const { r, lora_alpha: alpha, target_modules: targets } = metadata;
  if (r !== undefined && alpha !== undefined && targets !== undefined) {
    return {
      peft_type: "LORA",
      r: Number(r),
      lora_alpha: Number(alpha),
      target_modules: targets.split(",").map((t) => t.trim()),
    };
  }
  throw new AdapterError(
    "a single .safetensors needs its LoRA config: pass rank, alpha and target_modules (--rank, --alpha, --target-modules), or put adapter_config (JSON) or r, lora_alpha and target_modules in the file's __metadata__",
  );
}

/** A staging step: fills the folder `dir` (inside the private folder `scratch`) with the adapter's files. */
type Fill = (scratch: string, dir: string) => Promise<void>;

export class NodeAdapterStorage implements AdapterStorage {
  readonly #sources: AdapterSources;

  constructor(private readonly options: NodeAdapterStorageOptions) {
    this.#sources = options.sources ?? new AdapterSources([]);
  }

  get location(): string {
    return this.options.blobs.location;
  }

  async stage(body: ReadableStream<Uint8Array>, upload: UploadDescription): Promise<StagedAdapter> {
    const { maxBytes } = this.options;
    if (upload.contentLength !== null && upload.contentLength > maxBytes) {
      await body.cancel().catch(() => {});
      throw tooLarge(maxBytes);
    }
    return this.#staged(upload, (scratch, dir) => this.#unpack(scratch, dir, body, upload));
  }

  stageSource(source: string, adapter: AdapterDescription): Promise<StagedAdapter> {
    return this.#staged(adapter, async (_scratch, dir) => {
      const layout = await this.#sources.fetchInto(source, dir, this.options.maxBytes);
      if (layout === "folder" && adapter.config) {
        throw new AdapterError(
          `the source is a PEFT folder with ${CONFIG_FILE}; rank, alpha and target_modules are only for a single .safetensors`,
        );
      }
      if (layout === "file") {
        const config = singleFileConfig(join(dir, WEIGHTS_FILE), adapter.config);
        await writeFile(join(dir, CONFIG_FILE), JSON.stringify(config));
      }
    });
  }

  /** Runs `fill` in a fresh scratch folder, then validates what it left; on any failure keeps nothing. */
  async #staged(adapter: AdapterDescription, fill: Fill): Promise<StagedAdapter> {
    const scratch = await mkdtemp(join(this.options.scratchDir ?? tmpdir(), "luminet-upload-"));
    const discard = () => rm(scratch, { recursive: true, force: true });
    try {
      const dir = join(scratch, "adapter");
      await mkdir(dir);
      await fill(scratch, dir);
      return await this.#validated(dir, adapter, discard);
    } catch (error) {
      await discard();
      if (
        error instanceof AdapterError ||
        error instanceof SafetensorsError ||
        error instanceof ArchiveError
      ) {
        // The loader names the scratch folder; the caller knows the adapter by its files.
        const message = error.message.replaceAll(`${scratch}/`, "").replaceAll(scratch, "the upload");
        throw invalidRequest(`Invalid adapter: ${message}`, "file", "invalid_adapter");
      }
      throw error;
    }
  }

  /** Streams the body into scratch under the size cap and unpacks it into `dir`. */
  async #unpack(
    scratch: string,
    dir: string,
    body: ReadableStream<Uint8Array>,
    upload: UploadDescription,
  ): Promise<void> {
    const { maxBytes } = this.options;
    const received = join(scratch, "upload");
    let seen = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        seen += chunk.length;
        done(seen > maxBytes ? tooLarge(maxBytes) : null, chunk);
      },
    });
    await pipeline(
      Readable.fromWeb(body as WebReadableStream<Uint8Array>),
      counter,
      createWriteStream(received),
    );

    const type = upload.contentType.split(";")[0]!.trim().toLowerCase();
    if (type === "application/x-tar") {
      const names = await extractArchive(received, dir);
      const pickle = names.find((n) => /\.(bin|pt|pth|pkl)$/.test(n));
      if (pickle && !names.includes(WEIGHTS_FILE)) {
        throw new AdapterError(
          `${pickle}: pickled weights are never loaded; convert the adapter to safetensors`,
        );
      }
      if (upload.config && names.includes(CONFIG_FILE)) {
        throw new AdapterError(
          `the folder has ${CONFIG_FILE}; rank, alpha and target_modules are only for a single .safetensors`,
        );
      }
      if (upload.config && !names.includes(CONFIG_FILE)) {
        await writeFile(join(dir, CONFIG_FILE), JSON.stringify(singleFileConfig("", upload.config)));
      }
    } else if (type === "application/octet-stream") {
      await cp(received, join(dir, WEIGHTS_FILE));
      await writeFile(
        join(dir, CONFIG_FILE),
        JSON.stringify(singleFileConfig(join(dir, WEIGHTS_FILE), upload.config)),
      );
    } else {
      throw invalidRequest(
        `Content-Type must be application/x-tar (a PEFT folder) or application/octet-stream (one .safetensors), got '${upload.contentType}'.`,
        "content-type",
      );
    }
    await rm(received);
  }

  /** Loads the adapter in `dir` as a worker would; it stays there until committed or discarded. */
  async #validated(
    dir: string,
    adapter: AdapterDescription,
    discard: () => Promise<void>,
  ): Promise<StagedAdapter> {
    const loaded = loadPeftAdapter(dir, shapeOf(adapter.architecture), { maxRank: this.options.maxRank });
    const present = new Set(loaded.modules.map((m) => moduleLeafName(m.kind)));
    const configText = await readFile(join(dir, CONFIG_FILE), "utf8");
    const config = JSON.parse(configText) as { lora_alpha?: unknown };
    const { blobs } = this.options;
    return {
      rank: loaded.maxRank,
      alpha: typeof config.lora_alpha === "number" ? config.lora_alpha : 8,
      targetModules: LINEAR_MODULE_NAMES.filter((name) => present.has(name)),
      // What the blob store holds of it, both files: the org's adapter storage counts these bytes.
      bytes: loaded.bytes + Buffer.byteLength(configText),
      sha256: loaded.sha256,
      async commit(blobKey) {
        try {
          await blobs.putAdapter(blobKey, dir);
        } catch (error) {
          // A half-written blob would never be read (no row names it), but it would cost storage.
          await blobs.removeAdapter(blobKey).catch(() => {});
          throw error;
        }
      },
      discard,
    };
  }

  remove(blobKey: string): Promise<void> {
    return this.options.blobs.removeAdapter(blobKey);
  }
}
