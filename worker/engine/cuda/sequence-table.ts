// The CUDA engine's running sequences: each owns one cache row of the native KV cache (0..cacheRows-1)
// from its prefill until it is released, an adapter slot, and its length (tokens in the cache). A row may
// also leave the table with its cache intact (detach: the prefix cache keeps it) until it is freed. A
// parked sequence keeps its row but takes no part in steps until it is resumed.
import { EngineError } from "../engine.ts";

export interface RunningSequence {
  readonly cacheRow: number;
  slot: number;
  /** Tokens in the cache; 0 until its prefill has run. */
  length: number;
  /** Its prompt is still being prefilled chunk by chunk, or it is parked: it does not decode. */
  partial: boolean;
  /** Taken out of the batch by park, its row kept as it is, until resume. */
  parked: boolean;
  /**
   * The tokens in its row — its prompt so far, then each decoded token — kept only where a prefix cache may
   * store them when it is released.
   */
  prompt: number[];
  /** Prompt tokens its row held from a stored prefix (copied in) when it was admitted: not prefilled. */
  reused: number;
  /** Where a prefix cache files its prompt when it is released: the scope (PrefixScopes) it ran in. */
  prefixKey?: string;
}

export class SequenceTable {
  private readonly sequences = new Map<string, RunningSequence>();
  /** Free rows, lowest last, so rows are taken in order 0, 1, 2 ... and reused lowest first. */
  private readonly freeRows: number[];

  constructor(readonly cacheRows: number) {
    this.freeRows = Array.from({ length: cacheRows }, (_, i) => cacheRows - 1 - i);
  }

  /** Takes a free cache row for a new sequence whose first `reused` tokens the caller puts in its cache. */
  admit(id: string, slot: number, reused = 0): RunningSequence {
    if (this.sequences.has(id)) throw new EngineError(`sequence ${id} is already running`);
    const cacheRow = this.freeRows.pop();
    if (cacheRow === undefined) {
      throw new EngineError(
        `no free cache row for sequence ${id}: ${this.cacheRows} sequences are running, the most this engine holds (maxBatch)`,
      );
    }
    const sequence = { cacheRow, slot, length: reused, partial: false, parked: false, prompt: [], reused };
    this.sequences.set(id, sequence);
    return sequence;
  }

  /** Frees the sequence's cache row; unknown ids are ignored, as the CPU engine ignores them. */
  release(id: string): void {
    const sequence = this.sequences.get(id);
    if (!sequence) return;
    this.sequences.delete(id);
    this.freeRow(sequence.cacheRow);
  }

  /** Removes the sequence but keeps its row out of the free rows, its cache as it is; returns the row. */
  detach(id: string): number {
    const sequence = this.sequences.get(id);
    if (!sequence) throw new EngineError(`sequence ${id} is not running`);
    this.sequences.delete(id);
    return sequence.cacheRow;
  }

  /** Gives a detached row back to the free rows. */
  freeRow(row: number): void {
    this.freeRows.push(row);
    this.freeRows.sort((a, b) => b - a);
  }

  get(id: string): RunningSequence | undefined {
    return this.sequences.get(id);
  }

  /** The running sequences by id, in admission order. */
  get all(): ReadonlyMap<string, RunningSequence> {
    return this.sequences;
  }

  get size(): number {
    return this.sequences.size;
  }

  /** The sequences parked now. */
  get parked(): number {
    let count = 0;
    for (const sequence of this.sequences.values()) if (sequence.parked) count++;
    return count;
  }

  /** A row no sequence holds (the lowest), if any. */
  lowestFreeRow(): number | undefined {
    return this.freeRows.at(-1);
  }
}
