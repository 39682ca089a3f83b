// The disk tier: fills checked by sha256 and atomic, least-recently-used eviction under a byte budget
// that spares leased entries, corruption found by re-reading, and a restart that finds its entries again.
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DiskCache, type DiskEntry, Sha256MismatchError } from "../../worker/adapters/disk-cache.ts";

let root: string;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-disk-cache-"));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

/** A fake adapter of `size` weight bytes: what it writes and the sha256 naming it. */
function blob(seed: number, size = 1000): { sha256: string; write: (dir: string) => Promise<void> } {
  const weights = Buffer.alloc(size, seed);
  const sha256 = createHash("sha256").update(weights).digest("hex");
  return {
    sha256,
    write: async (dir) => {
      writeFileSync(join(dir, "adapter_config.json"), "{}");
      writeFileSync(join(dir, "adapter_model.safetensors"), weights);
    },
  };
}

describe("DiskCache", () => {
  it("fills an entry, checks its sha256 and leases its folder to the caller", async () => {
    const cache = new DiskCache({ dir: join(root, "cache"), budgetBytes: 1e6 });
    const a = blob(1);
    const dir = await cache.fill(a.sha256, { sha256: a.sha256, name: "org/a" }, a.write);
    expect(dir).toBe(join(root, "cache", a.sha256));
    expect(existsSync(join(dir, "adapter_model.safetensors"))).toBe(true);
    expect(cache.has(a.sha256)).toBe(true);
    expect(cache.list()).toEqual([{ key: a.sha256, sha256: a.sha256, name: "org/a", bytes: cache.bytes }]);
    expect(cache.bytes).toBeGreaterThan(1000);
    cache.release(a.sha256);
  });

  it("refuses a fill whose weights do not match the sha256 and leaves nothing behind", async () => {
    const cache = new DiskCache({ dir: join(root, "cache"), budgetBytes: 1e6 });
    const expected = blob(1).sha256;
    const wrong = blob(2);
    const fill = cache.fill(expected, { sha256: expected, name: "org/a" }, wrong.write);
    await expect(fill).rejects.toThrow(Sha256MismatchError);
    await expect(cache.fill(expected, { sha256: expected, name: "org/a" }, wrong.write)).rejects.toThrow(
      `adapter_model.safetensors has sha256 ${wrong.sha256}, expected ${expected}`,
    );
    expect(cache.has(expected)).toBe(false);
    expect(readdirSync(join(root, "cache"))).toEqual([]);
    expect(cache.bytes).toBe(0);
  });

  it("passes a failing write's error through and leaves nothing behind", async () => {
    const cache = new DiskCache({ dir: join(root, "cache"), budgetBytes: 1e6 });
    const a = blob(1);
    const fill = cache.fill(a.sha256, { sha256: a.sha256, name: "org/a" }, async () => {
      throw new Error("blob went away");
    });
    await expect(fill).rejects.toThrow("blob went away");
    expect(readdirSync(join(root, "cache"))).toEqual([]);
  });

  it("shares one write between concurrent fills of the same key", async () => {
    const cache = new DiskCache({ dir: join(root, "cache"), budgetBytes: 1e6 });
    const a = blob(1);
    let writes = 0;
    const write = async (dir: string) => {
      writes++;
      await a.write(dir);
    };
    const dirs = await Promise.all(
      [1, 2, 3].map(() => cache.fill(a.sha256, { sha256: a.sha256, name: "org/a" }, write)),
    );
    expect(writes).toBe(1);
    expect(new Set(dirs).size).toBe(1);
  });

  it("keeps adapters whose weights are the same under their own keys, each with its own config", async () => {
    const cache = new DiskCache({ dir: join(root, "cache"), budgetBytes: 1e6 });
    const a = blob(1);
    const withConfig = (config: string) => async (dir: string) => {
      await a.write(dir);
      writeFileSync(join(dir, "adapter_config.json"), config);
    };
    const [one, two] = ["1".repeat(64), "2".repeat(64)];
    const first = await cache.fill(one, { sha256: a.sha256, name: "acme/x" }, withConfig('{"lora_alpha":8}'));
    const second = await cache.fill(
      two,
      { sha256: a.sha256, name: "beta/x" },
      withConfig('{"lora_alpha":32}'),
    );
    expect(first).not.toBe(second);
    expect(readFileSync(join(first, "adapter_config.json"), "utf8")).toBe('{"lora_alpha":8}');
    expect(readFileSync(join(second, "adapter_config.json"), "utf8")).toBe('{"lora_alpha":32}');
    expect(cache.list().map((e) => [e.key, e.sha256, e.name])).toEqual([
      [two, a.sha256, "beta/x"],
      [one, a.sha256, "acme/x"],
    ]);
  });

  it("hands each of many concurrent fills its entry, leased, though together they do not fit", async () => {
    // Room for about two entries; six fills at once each need theirs until their caller releases it.
    const cache = new DiskCache({ dir: join(root, "cache"), budgetBytes: 2500 });
    const blobs = [1, 2, 3, 4, 5, 6].map((seed) => blob(seed));
    const dirs = await Promise.all(
      blobs.map((x, i) => cache.fill(x.sha256, { sha256: x.sha256, name: `org/${i}` }, x.write)),
    );
    for (const dir of dirs) expect(existsSync(join(dir, "adapter_model.safetensors"))).toBe(true);
    for (const x of blobs) cache.release(x.sha256);
    expect(cache.bytes).toBeLessThanOrEqual(2500);
  });

  it("evicts the least recently used entries to stay within its byte budget", async () => {
    const evicted: DiskEntry[] = [];
    // Three entries of ~1 kB do not fit in 2.5 kB.
    const cache = new DiskCache({
      dir: join(root, "cache"),
      budgetBytes: 2500,
      onEvict: (e) => evicted.push(e),
    });
    const [a, b, c] = [blob(1), blob(2), blob(3)];
    for (const [x, name] of [
      [a, "org/a"],
      [b, "org/b"],
    ] as const) {
      await cache.fill(x.sha256, { sha256: x.sha256, name: name }, x.write);
      cache.release(x.sha256);
    }
    cache.open(a.sha256);
    cache.release(a.sha256);
    await cache.fill(c.sha256, { sha256: c.sha256, name: "org/c" }, c.write);
    cache.release(c.sha256);
    expect(evicted.map((e) => e.name)).toEqual(["org/b"]);
    expect(cache.list().map((e) => e.name)).toEqual(["org/c", "org/a"]);
    expect(existsSync(join(root, "cache", b.sha256))).toBe(false);
    expect(cache.bytes).toBeLessThanOrEqual(2500);
  });

  it("keeps a leased entry past its budget until it is released", async () => {
    const cache = new DiskCache({ dir: join(root, "cache"), budgetBytes: 1500 });
    const [a, b] = [blob(1), blob(2)];
    await cache.fill(a.sha256, { sha256: a.sha256, name: "org/a" }, a.write);
    await cache.fill(b.sha256, { sha256: b.sha256, name: "org/b" }, b.write);
    expect(cache.has(a.sha256) && cache.has(b.sha256)).toBe(true);
    cache.release(a.sha256);
    expect(cache.has(a.sha256)).toBe(false);
    expect(cache.has(b.sha256)).toBe(true);
    cache.release(b.sha256);
    expect(cache.has(b.sha256)).toBe(true);
  });

  it("finds a corrupt entry by re-reading it, and fills it again after a discard", async () => {
    const cache = new DiskCache({ dir: join(root, "cache"), budgetBytes: 1e6 });
    const a = blob(1);
    const dir = await cache.fill(a.sha256, { sha256: a.sha256, name: "org/a" }, a.write);
    cache.release(a.sha256);
    expect(await cache.verify(a.sha256)).toBe(true);
    writeFileSync(join(dir, "adapter_model.safetensors"), Buffer.alloc(1000, 9));
    expect(await cache.verify(a.sha256)).toBe(false);
    await cache.discard(a.sha256);
    expect(cache.has(a.sha256)).toBe(false);
    expect(cache.bytes).toBe(0);
    await cache.fill(a.sha256, { sha256: a.sha256, name: "org/a" }, a.write);
    expect(await cache.verify(a.sha256)).toBe(true);
  });

  it("finds its entries again after a restart, in the order they were last used", async () => {
    const dir = join(root, "cache");
    const first = new DiskCache({ dir, budgetBytes: 1e6 });
    const [a, b, c] = [blob(1), blob(2), blob(3)];
    for (const [x, name, at] of [
      [a, "org/a", 3000],
      [b, "org/b", 1000],
      [c, "org/c", 2000],
    ] as const) {
      await first.fill(x.sha256, { sha256: x.sha256, name: name }, x.write);
      first.release(x.sha256);
      const when = new Date(Date.UTC(2025, 0, 1) + at * 1000);
      utimesSync(join(dir, x.sha256), when, when);
    }
    // Leftovers of a crash: an interrupted fill and an entry missing its weights.
    mkdirSync(join(dir, ".fill-deadbeef-0000"));
    const broken = "f".repeat(64);
    mkdirSync(join(dir, broken));
    writeFileSync(join(dir, broken, "adapter_config.json"), "{}");

    const evicted: DiskEntry[] = [];
    const second = new DiskCache({ dir, budgetBytes: 2500, onEvict: (e) => evicted.push(e) });
    expect(evicted.map((e) => e.name)).toEqual(["org/b"]);
    expect(second.list().map((e) => e.name)).toEqual(["org/a", "org/c"]);
    expect(second.bytes).toBe(first.list()[0]!.bytes * 2);
    expect(readdirSync(dir).sort()).toEqual([a.sha256, c.sha256].sort());
  });
});
