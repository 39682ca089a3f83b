// The upload format of a PEFT adapter folder: a plain POSIX tar (ustar) of its files, which `luminet adapters
// create` writes as a stream and the gateway unpacks from its scratch file. Only regular files are taken,
// by their base name; links, devices and names that climb out of the folder are refused. Kept to the
// ustar subset both ends need, so no dependency.
import { closeSync, createReadStream, createWriteStream, openSync, readSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

const BLOCK = 512;

export class ArchiveError extends Error {
  override name = "ArchiveError";
}

/** One file to pack: its name inside the archive and where it is read from. */
export interface ArchiveFile {
  name: string;
  path: string;
}

const padding = (size: number) => (BLOCK - (size % BLOCK)) % BLOCK;

/** The archive's exact length, so the upload can carry Content-Length and show progress. */
export function archiveSize(files: readonly ArchiveFile[]): number {
  let total = 2 * BLOCK;
  for (const file of files) {
    const size = statSync(file.path).size;
    total += BLOCK + size + padding(size);
  }
  return total;
}

function header(name: string, size: number): Buffer {
  if (Buffer.byteLength(name) > 100) throw new ArchiveError(`archive entry name ${name} is over 100 bytes`);
  const block = Buffer.alloc(BLOCK);
  block.write(name, 0, 100, "utf8");
  block.write("0000644\0", 100, "ascii");
  block.write("0000000\0", 108, "ascii");
  block.write("0000000\0", 116, "ascii");
  block.write(`${size.toString(8).padStart(11, "0")}\0`, 124, "ascii");
  block.write(
    `${Math.floor(Date.now() / 1000)
      .toString(8)
      .padStart(11, "0")}\0`,
    136,
    "ascii",
  );
  block.write("        ", 148, "ascii");
  block.write("0", 156, "ascii");
  block.write("ustar\0", 257, "ascii");
  block.write("00", 263, "ascii");
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
  return block;
}

/** The archive of `files`, streamed: file contents are read as they are sent, never held whole. */
export function archiveStream(files: readonly ArchiveFile[]): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    for (const file of files) {
      const size = statSync(file.path).size;
      yield header(file.name, size);
      for await (const chunk of createReadStream(file.path)) yield chunk as Buffer;
      if (padding(size) > 0) yield Buffer.alloc(padding(size));
    }
    yield Buffer.alloc(2 * BLOCK);
  }
  return Readable.from(chunks());
}

function field(block: Buffer, offset: number, length: number): string {
  const raw = block.subarray(offset, offset + length);
  const end = raw.indexOf(0);
  return raw.subarray(0, end === -1 ? length : end).toString("utf8");
}

function octal(block: Buffer, offset: number, length: number, what: string): number {
  const text = field(block, offset, length).trim();
  if (!/^[0-7]+$/.test(text)) throw new ArchiveError(`not a tar archive: ${what} field is "${text}"`);
  return Number.parseInt(text, 8);
}

function checksumOk(block: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : block[i]!;
  return sum === octal(block, 148, 8, "checksum");
}

/**
 * The most headers of any kind, and of files, an adapter's archive may hold. A PEFT folder has a handful
 * of files; the bounds keep a crafted archive of millions of empty entries from holding the gateway's
 * event loop (each header is read synchronously) and from creating a file per entry.
 */
const MAX_ENTRIES = 1024;
const MAX_FILES = 64;

/**
 * Unpacks the regular files of the tar at `archivePath` into `dir` by base name and returns the names.
 * Directory entries and pax/GNU extended headers are skipped; anything else that is not a regular file, a
 * name that leaves the folder, the same file twice, or more entries than MAX_ENTRIES or files than
 * MAX_FILES is an ArchiveError.
 */
export async function extractArchive(archivePath: string, dir: string): Promise<string[]> {
  const total = statSync(archivePath).size;
  const fd = openSync(archivePath, "r");
  const names = new Set<string>();
  try {
    const block = Buffer.alloc(BLOCK);
    let at = 0;
    for (let entries = 0; at + BLOCK <= total; entries++) {
      if (entries === MAX_ENTRIES) {
        throw new ArchiveError(
          `the archive holds more than ${MAX_ENTRIES} entries: an adapter folder has a few files`,
        );
      }
      readSync(fd, block, 0, BLOCK, at);
      if (block.every((b) => b === 0)) break;
      if (!checksumOk(block)) throw new ArchiveError(`not a tar archive: bad header checksum at byte ${at}`);
      const prefix = block.subarray(257, 262).toString("ascii") === "ustar" ? field(block, 345, 155) : "";
      const name = prefix ? `${prefix}/${field(block, 0, 100)}` : field(block, 0, 100);
      const size = octal(block, 124, 12, "size");
      const type = String.fromCharCode(block[156]!);
      const start = at + BLOCK;
      at = start + size + padding(size);
      if (at - padding(size) > total) throw new ArchiveError(`the archive ends inside ${name}`);
      if (type === "5" || type === "x" || type === "g" || type === "L" || type === "K") continue;
      if (type !== "0" && type !== "\0") {
        throw new ArchiveError(`archive entry ${name} is not a regular file (tar type ${type})`);
      }
      if (name.split("/").includes("..") || name.startsWith("/")) {
        throw new ArchiveError(`archive entry ${name} points outside the adapter folder`);
      }
      const file = basename(name);
      if (file === "" || file === ".") throw new ArchiveError(`archive entry "${name}" names no file`);
      if (names.has(file)) throw new ArchiveError(`the archive holds ${file} twice`);
      if (names.size === MAX_FILES) {
        throw new ArchiveError(`the archive holds more than ${MAX_FILES} files: an adapter folder has a few`);
      }
      names.add(file);
      if (size === 0) {
        closeSync(openSync(join(dir, file), "w"));
        continue;
      }
      await pipeline(
        createReadStream(archivePath, { start, end: start + size - 1 }),
        createWriteStream(join(dir, file)),
      );
    }
  } finally {
    closeSync(fd);
  }
  return [...names];
}
