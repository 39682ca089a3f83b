// Uniform random values fast enough for a billion weights: the generators of random models and adapters
// draw every value through it. A Prng (one stream per tensor) seeds an xorshift128 whose state lives in
// locals while a buffer fills, several times faster than a method call per value.
import type { Prng } from "../worker/engine/prng.ts";

export class UniformStream {
  private readonly state: Uint32Array;

  constructor(prng: Prng) {
    this.state = new Uint32Array([
      prng.nextUint32() | 1,
      prng.nextUint32(),
      prng.nextUint32(),
      prng.nextUint32(),
    ]);
  }

  /** Fills values with draws uniform in center ± half (so their std is half / √3). */
  fill(values: Float32Array, center: number, half: number): void {
    let s0 = this.state[0]!;
    let s1 = this.state[1]!;
    let s2 = this.state[2]!;
    let s3 = this.state[3]!;
    const scale = (2 * half) / 4294967296;
    const base = center - half;
    for (let i = 0; i < values.length; i++) {
      const t = s0 ^ (s0 << 11);
      s0 = s1;
      s1 = s2;
      s2 = s3;
      s3 = (s3 ^ (s3 >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
      values[i] = base + s3 * scale;
    }
    this.state.set([s0, s1, s2, s3]);
  }
}
