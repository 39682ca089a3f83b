// Shared memory for the parse thread's next adapter, its pages touched ahead of time. A fresh
// SharedArrayBuffer's pages fault in as the parse first writes them, and on a VM those faults were most of
// a load from disk (docs/BENCHMARKS.md, cold-load); a buffer made ready between loads takes them off the
// request's path. Each buffer is handed out once and belongs to its adapter from then on: nothing is ever
// recycled, so no adapter can see another's rows.

/** Pages are at least this large; touching one byte in each faults them all in. */
const PAGE_BYTES = 4096;
/** Bytes touched per turn of the event loop, so that a load asked for meanwhile is not kept waiting. */
const TOUCH_BYTES_PER_TURN = 1024 * 1024;
/** The largest buffer kept ready: a thread holds at most this much beyond the adapters it parsed. */
const MOST_READY_BYTES = 256 * 1024 * 1024;

export class PrefaultedMemory {
  private ready: SharedArrayBuffer | null = null;
  private lastBytes = 0;

  /**
   * Shared memory of `bytes`: the ready buffer when it is that size (adapters of a base usually are),
   * however far its touching got, else a fresh one.
   */
  readonly take = (bytes: number): SharedArrayBuffer => {
    this.lastBytes = bytes;
    const ready = this.ready;
    this.ready = null;
    return ready?.byteLength === bytes ? ready : new SharedArrayBuffer(bytes);
  };

  /** Starts making a buffer of the last size taken ready, a slice of its pages per turn of the event loop. */
  prepare(): void {
    if (this.ready !== null || this.lastBytes === 0 || this.lastBytes > MOST_READY_BYTES) return;
    const ready = new SharedArrayBuffer(this.lastBytes);
    this.ready = ready;
    const bytes = new Uint8Array(ready);
    const touch = (from: number): void => {
      // Taken meanwhile: its load faults in the rest itself.
      if (this.ready !== ready) return;
      const to = Math.min(bytes.length, from + TOUCH_BYTES_PER_TURN);
      for (let i = from; i < to; i += PAGE_BYTES) bytes[i] = 0;
      if (to < bytes.length) setImmediate(touch, to);
    };
    setImmediate(touch, 0);
  }
}
