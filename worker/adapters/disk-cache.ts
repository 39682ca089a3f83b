// The local disk tier (NVMe): adapter folders under a byte budget with least-recently-used eviction, each
// named by its key — the caller's digest of what the folder holds (the manager's covers the adapter's blob,
// so two adapters whose weights are the same but whose configs are not never share a folder). A fill is
// written to a temporary folder, the sha256 of its adapter_model.safetensors checked, then renamed into
// place, so a crash never leaves a half-written entry under a real name. The folder's mtime records its last
// use, so a restarted worker finds its entries, and their order, by scanning the folder.
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
  /** Its folder's name: 64 hex digits. */
  key: string;
  /** The sha256 of its adapter_model.safetensors. */
  sha256: string;
  /** The adapter name it was filled for (the heartbeat reports names). */
  name: string;
  bytes: number;
}

/** What a fill writes: the adapter's name and the sha256 its weights must have. */
export interface DiskAdapter {
  sha256: string;
  name: string;
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
const HEX64 = /^[0-9a-f]{64}$/;

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

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** Entries, most recently used first. */
  list(): DiskEntry[] {
    return [...this.entries.values()].reverse().map(({ leases: _, ...entry }) => entry);
  }

  /**
   * The entry's folder, now most recently used and leased: it stays until release(key). Undefined when the
   * cache does not hold it.
   */
  open(key: string): string | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    entry.leases++;
    this.touch(entry);
    return this.folder(key);
  }

  release(key: string): void {
    const entry = this.entries.get(key);
    if (!entry || entry.leases === 0) return;
    entry.leases--;
    if (entry.leases === 0) this.enforceBudget();
  }

  /**
   * Fills the entry `key` through `write(dir)`, which must put both adapter files into the fresh folder it
   * is given; the weights' sha256 is checked before the entry appears. Returns the entry's folder, leased
   * like open(). Concurrent fills of one key share one write. Throws Sha256MismatchError, or whatever
   * `write` throws; nothing is left behind either way.
   */
  async fill(key: string, adapter: DiskAdapter, write: (dir: string) => Promise<void>): Promise<string> {
    if (!HEX64.test(key)) throw new Error(`disk cache key ${JSON.stringify(key)} is not 64 hex digits`);
    const present = this.open(key);
    if (present) return present;
    const filling = this.fills.get(key);
    if (filling) {
      // The fill that writes holds a lease until its caller is done, so the entry is still here.
      await filling;
      const dir = this.open(key);
      if (!dir) throw new Error(`disk cache entry ${key} was discarded while it was being filled`);
      return dir;
    }
    const written = this.write(key, adapter, write).finally(() => this.fills.delete(key));
    this.fills.set(key, written);
    await written;
    return this.folder(key);
  }

  /** Re-reads the entry's weights: true when they still hash to its sha256. */
  async verify(key: string): Promise<boolean> {
    const entry = this.entries.get(key);
    return entry !== undefined && (await sha256OfFile(join(this.folder(key), WEIGHTS_FILE))) === entry.sha256;
  }

  /** Removes an entry now, leased or not: its bytes are corrupt or its adapter was deleted. */
  async discard(key: string): Promise<void> {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.forget(entry);
    await rm(this.folder(key), { recursive: true, force: true });
  }

  /** Writes and checks the entry, which appears leased: the lease is the filling caller's. */
  private async write(
    key: string,
    { sha256, name }: DiskAdapter,
    write: (dir: string) => Promise<void>,
  ): Promise<void> {
    const tmp = join(this.dir, `${TMP_PREFIX}${key}-${randomBytes(4).toString("hex")}`);
    try {
      await mkdir(tmp);
      await write(tmp);
      const actual = await sha256OfFile(join(tmp, WEIGHTS_FILE));
      if (actual === undefined) throw new Error(`the fill wrote no readable ${WEIGHTS_FILE}`);
      if (actual !== sha256) throw new Sha256MismatchError(sha256, actual, WEIGHTS_FILE);
      await writeFile(join(tmp, ENTRY_FILE), `${JSON.stringify({ name, sha256 })}\n`);
      const bytes = folderBytes(tmp);
      // A leftover folder under the real name (a crash between scan and now) gives way to the checked one.
      await rm(this.folder(key), { recursive: true, force: true });
      await rename(tmp, this.folder(key));
      // Leased from the start, so neither its own eviction pass nor another fill's takes it before its
      // caller has read it.
      const entry: Entry = { key, sha256, name, bytes, leases: 1 };
      this.entries.set(key, entry);
      this.total += bytes;
      this.enforceBudget();
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  private folder(key: string): string {
    return join(this.dir, key);
  }

  private touch(entry: Entry): void {
    this.entries.delete(entry.key);
    this.entries.set(entry.key, entry);
    const now = new Date();
    try {
      utimesSync(this.folder(entry.key), now, now);
    } catch {
      // Only the order after a restart depends on it.
    }
  }

  private forget(entry: Entry): void {
    this.entries.delete(entry.key);
    this.total -= entry.bytes;
  }

  /** Evicts unleased entries, least recently used first, until the total fits the budget. */
  private enforceBudget(): void {
    for (const entry of [...this.entries.values()]) {
      if (this.total <= this.budgetBytes) return;
      if (entry.leases > 0) continue;
      this.forget(entry);
      rmSync(this.folder(entry.key), { recursive: true, force: true });
      const { leases: _, ...evicted } = entry;
      this.options.onEvict?.(evicted);
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
      if (!item.isDirectory() || !HEX64.test(item.name)) continue;
      const adapter = readEntryFile(path);
      if (adapter === undefined || !ADAPTER_FILES.every((f) => isFile(join(path, f)))) {
        rmSync(path, { recursive: true, force: true });
        continue;
      }
      found.push({
        entry: { key: item.name, ...adapter, bytes: folderBytes(path), leases: 0 },
        used: statSync(path).mtimeMs,
      });
    }
    found.sort((a, b) => a.used - b.used);
    for (const { entry } of found) {
      this.entries.set(entry.key, entry);
      this.total += entry.bytes;
    }
    this.enforceBudget();
  }
}

/** The adapter an entry was filled for; undefined when its entry file is missing or incomplete. */
function readEntryFile(folder: string): DiskAdapter | undefined {
  try {
    const { name, sha256 } = JSON.parse(readFileSync(join(folder, ENTRY_FILE), "utf8")) as Record<
      string,
      unknown
    >;
    return typeof name === "string" && name.length > 0 && typeof sha256 === "string" && HEX64.test(sha256)
      ? { name, sha256 }
      : undefined;
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
