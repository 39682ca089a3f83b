// A gateway whose adapter storage is a blob folder of its own, and a real PEFT adapter (rank 4, all seven
// projections) of the harness's tiny model to upload: what the adapter upload tests start from.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NodeAdapterStorage } from "../../gateway/node-adapter-storage.ts";
import { writeRandomAdapter } from "../../scripts/random-adapter.ts";
import { FolderBlobStore } from "../../worker/adapters/blob-store.ts";
import { loadModelConfig } from "../../worker/engine/model-config.ts";
import { createGatewayHarness, type GatewayHarness } from "./gateway-harness.ts";

export interface UploadGateway {
  harness: GatewayHarness;
  app: ReturnType<GatewayHarness["appWith"]>;
  /** A scratch folder of the test's own. */
  root: string;
  /** Where uploaded adapters are stored: empty while nothing was. */
  blobsDir: string;
  /** The adapter's folder: adapter_config.json and adapter_model.safetensors. */
  source: string;
  close(): Promise<void>;
}

export async function uploadGateway(name: string, maxBytes: number): Promise<UploadGateway> {
  const harness = await createGatewayHarness();
  const root = mkdtempSync(join(tmpdir(), `luminet-${name}-`));
  const blobsDir = join(root, "blobs");
  mkdirSync(blobsDir);
  const adapterStorage = new NodeAdapterStorage({
    blobs: new FolderBlobStore(blobsDir),
    maxRank: 8,
    maxBytes,
  });
  const source = join(root, "source");
  mkdirSync(source);
  writeRandomAdapter(source, loadModelConfig(harness.modelDir), { rank: 4, seed: 3 });
  return {
    harness,
    app: harness.appWith({ adapterStorage }),
    root,
    blobsDir,
    source,
    async close() {
      await harness.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
}
