// The local disk tier (NVMe): adapter folders named by the sha256 of their adapter_model.safetensors, under
// a byte budget with least-recently-used eviction. A fill is written to a temporary folder, its sha256
// checked, then renamed into place, so a crash never leaves a half-written entry under a real name. The
// folder's mtime records its last use, so a restarted worker finds its entries, and their order, by
// scanning the folder.
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ADAPTER_FILES } from "./blob-store.ts";
import { sha256OfFile } from "./file-hash.ts";

// Callers that check an adapter's weights by hash find it beside the tier that does.
export { sha256OfFile };

export interface DiskCacheOptions {
  dir: string;
  budgetBytes: number;
  onEvict?(entry: DiskEntry): void;
}

export interface DiskEntry {
  sha256: string;
  /** The adapter name it was filled for (the heartbeat reports names). */
  name: string;
  bytes: number;
}

/** The bytes under a key are not the ones its sha256 names. */
export class Sha256MismatchError extends Error {
  override name = "Sha256MismatchError";
  constructor(
    readonly expected: string,
    readonly actual: string,
    what: string,
  ) {
    super(`${what} has sha256 ${actual}, expected ${expected}`);
  }
}

const WEIGHTS_FILE = "adapter_model.safetensors";
const ENTRY_FILE = "entry.json";
const TMP_PREFIX = ".fill-";
const SHA256 = /^[0-9a-f]{64}$/;

interface Entry extends DiskEntry {
  /** Readers holding the folder open: never evicted while > 0. */
  leases: number;
}

export class DiskCache {
  readonly dir: string;
  readonly budgetBytes: number;
  /** Least recently used first (Map order). */
  private readonly entries = new Map<string, Entry>();
  private readonly fills = new Map<string, Promise<void>>();
  private total = 0;

  constructor(private readonly options: DiskCacheOptions) {
    this.dir = options.dir;
    this.budgetBytes = options.budgetBytes;
    mkdirSync(this.dir, { recursive: true });
    this.scan();
  }

  /** Bytes on disk across entries. */
  get bytes(): number {
    return this.total;
  }

  has(sha256: string): boolean {
    return this.entries.has(sha256);
  }

  /** Entries, most recently used first. */
  list(): DiskEntry[] {
    return [...this.entries.values()].reverse().map(({ sha256, name, bytes }) => ({ sha256, name, bytes }));
  }

  /**
   * The entry's folder, now most recently used and leased: it stays until release(sha256). Undefined when
   * the cache does not hold it.
   */
  open(sha256: string): string | undefined {
    const entry = this.entries.get(sha256);
    if (!entry) return undefined;
    entry.leases++;
    this.touch(entry);
    return this.folder(sha256);
  }

  release(sha256: string): void {
    const entry = this.entries.get(sha256);
    if (!entry || entry.leases === 0) return;
    entry.leases--;
    if (entry.leases === 0) this.enforceBudget();
  }

  /**
   * Fills the entry for `sha256` through `write(dir)`, which must put both adapter files into the fresh
   * folder it is given; the weights' sha256 is checked before the entry appears. Returns the entry's folder,
   * leased like open(). Concurrent fills of one sha256 share one write. Throws Sha256MismatchError, or
   * whatever `write` throws; nothing is left behind either way.
   */
  async fill(sha256: string, name: string, write: (dir: string) => Promise<void>): Promise<string> {
    if (!SHA256.test(sha256)) throw new Error(`disk cache key ${JSON.stringify(sha256)} is not a sha256`);
    const present = this.open(sha256);
    if (present) return present;
    let filling = this.fills.get(sha256);
    if (!filling) {
      filling = this.write(sha256, name, write).finally(() => this.fills.delete(sha256));
      this.fills.set(sha256, filling);
    }
    await filling;
    // The fresh entry may already be gone (discarded meanwhile); a later fill writes it again.
    const dir = this.open(sha256);
    if (!dir) throw new Error(`disk cache entry ${sha256} was discarded while it was being filled`);
    return dir;
  }

  /** Re-reads the entry's weights: true when they still hash to its name. */
  async verify(sha256: string): Promise<boolean> {
    return (await sha256OfFile(join(this.folder(sha256), WEIGHTS_FILE))) === sha256;
  }

  /** Removes an entry now, leased or not: its bytes are corrupt or its adapter was deleted. */
  async discard(sha256: string): Promise<void> {
    const entry = this.entries.get(sha256);
    if (!entry) return;
    this.forget(entry);
    await rm(this.folder(sha256), { recursive: true, force: true });
  }

  private async write(sha256: string, name: string, write: (dir: string) => Promise<void>): Promise<void> {
    const tmp = join(this.dir, `${TMP_PREFIX}${sha256}-${randomBytes(4).toString("hex")}`);
    try {
      await mkdir(tmp);
      await write(tmp);
      const actual = await sha256OfFile(join(tmp, WEIGHTS_FILE));
      if (actual === undefined) throw new Error(`the fill wrote no readable ${WEIGHTS_FILE}`);
      if (actual !== sha256) throw new Sha256MismatchError(sha256, actual, WEIGHTS_FILE);
      await writeFile(join(tmp, ENTRY_FILE), `${JSON.stringify({ name })}\n`);
      const bytes = folderBytes(tmp);
      // A leftover folder under the real name (a crash between scan and now) gives way to the checked one.
      await rm(this.folder(sha256), { recursive: true, force: true });
      await rename(tmp, this.folder(sha256));
      const entry: Entry = { sha256, name, bytes, leases: 0 };
      this.entries.set(sha256, entry);
      this.total += bytes;
      // Lease it while evicting, so the newest entry is never the one that goes to make room for itself.
      entry.leases++;
      this.enforceBudget();
      entry.leases--;
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  private folder(sha256: string): string {
    return join(this.dir, sha256);
  }

  private touch(entry: Entry): void {
    this.entries.delete(entry.sha256);
    this.entries.set(entry.sha256, entry);
    const now = new Date();
    try {
      utimesSync(this.folder(entry.sha256), now, now);
    } catch {
      // Only the order after a restart depends on it.
    }
  }

  private forget(entry: Entry): void {
    this.entries.delete(entry.sha256);
    this.total -= entry.bytes;
  }

  /** Evicts unleased entries, least recently used first, until the total fits the budget. */
  private enforceBudget(): void {
    for (const entry of [...this.entries.values()]) {
      if (this.total <= this.budgetBytes) return;
      if (entry.leases > 0) continue;
      this.forget(entry);
      rmSync(this.folder(entry.sha256), { recursive: true, force: true });
      this.options.onEvict?.({ sha256: entry.sha256, name: entry.name, bytes: entry.bytes });
    }
  }

  /** Rebuilds the table from the folder: complete entries by last use; leftovers of interrupted fills go. */
  private scan(): void {
    const found: { entry: Entry; used: number }[] = [];
    for (const item of readdirSync(this.dir, { withFileTypes: true })) {
      const path = join(this.dir, item.name);
      if (item.name.startsWith(TMP_PREFIX)) {
        rmSync(path, { recursive: true, force: true });
        continue;
      }
      if (!item.isDirectory() || !SHA256.test(item.name)) continue;
      const name = readEntryName(path);
      if (name === undefined || !ADAPTER_FILES.every((f) => isFile(join(path, f)))) {
        rmSync(path, { recursive: true, force: true });
        continue;
      }
      found.push({
        entry: { sha256: item.name, name, bytes: folderBytes(path), leases: 0 },
        used: statSync(path).mtimeMs,
      });
    }
    found.sort((a, b) => a.used - b.used);
    for (const { entry } of found) {
      this.entries.set(entry.sha256, entry);
      this.total += entry.bytes;
    }
    this.enforceBudget();
  }
}

function readEntryName(folder: string): string | undefined {
  try {
    const parsed: unknown = JSON.parse(readFileSync(join(folder, ENTRY_FILE), "utf8"));
    const name = (parsed as { name?: unknown }).name;
    return typeof name === "string" && name.length > 0 ? name : undefined;
  } catch {
    return undefined;
  }
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function folderBytes(folder: string): number {
  let bytes = 0;
  for (const file of readdirSync(folder)) bytes += statSync(join(folder, file)).size;
  return bytes;
}
