// An adapter's tar archive (gateway/adapter-archive.ts): what archiveStream writes extracts to the same
// files, and an archive of more files, or more entries of any kind, than an adapter folder has is refused
// before it creates a file per entry.
import { execFileSync } from "node:child_process";
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { afterAll, describe, expect, it } from "vitest";
import { ArchiveError, archiveStream, extractArchive } from "../../gateway/adapter-archive.ts";

const root = mkdtempSync(join(tmpdir(), "luminet-archive-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The archive archiveStream makes of `count` small files, written to a file; the files' names. */
async function archiveOf(name: string, count: number): Promise<{ path: string; names: string[] }> {
  const dir = join(root, `${name}-files`);
  mkdirSync(dir);
  const names = Array.from({ length: count }, (_, k) => `file-${k}.json`);
  for (const [k, file] of names.entries()) writeFileSync(join(dir, file), `{"k": ${k}}`);
  const path = join(root, `${name}.tar`);
  await pipeline(
    archiveStream(names.map((file) => ({ name: file, path: join(dir, file) }))),
    createWriteStream(path),
  );
  return { path, names };
}

describe("extractArchive", () => {
  it("gives back the files archiveStream packed", async () => {
    const { path, names } = await archiveOf("small", 3);
    const out = mkdtempSync(join(root, "out-"));
    expect((await extractArchive(path, out)).sort()).toEqual(names.sort());
    expect(readFileSync(join(out, "file-2.json"), "utf8")).toBe('{"k": 2}');
  });

  it("refuses more files than an adapter folder has, and more entries of any kind", async () => {
    const many = await archiveOf("many", 65);
    const out = mkdtempSync(join(root, "out-"));
    await expect(extractArchive(many.path, out)).rejects.toThrow(
      new ArchiveError("the archive holds more than 64 files: an adapter folder has a few"),
    );
    // Directory entries create nothing, but each is a header to read.
    const tree = join(root, "tree");
    for (let k = 0; k < 1100; k++) mkdirSync(join(tree, `d${k}`), { recursive: true });
    const dirs = join(root, "dirs.tar");
    execFileSync("tar", ["-cf", dirs, "-C", tree, "."]);
    await expect(extractArchive(dirs, mkdtempSync(join(root, "out-")))).rejects.toThrow(
      "the archive holds more than 1024 entries",
    );
  });
});
