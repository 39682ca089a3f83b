// A small seeded pseudo-random generator (xoshiro128**, seeded through splitmix64) shared by the sampler
// and the generators of random weights: the same seed gives the same stream on every platform, which
// Math.random cannot promise.
import { randomBytes } from "node:crypto";

const MASK64 = (1n << 64n) - 1n;

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export class Prng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spareNormal: number | null = null;

  /**
   * Any safe integer seeds the generator (negative ones too); null draws a seed from the OS. `stream`
   * picks one of many independent streams of the same seed (one per tensor, say), so what one consumer
   * draws never shifts what another gets.
   */
  constructor(seed: number | null, stream = 0) {
    let x: bigint;
    if (seed === null) {
      x = randomBytes(8).readBigUInt64LE(0);
    } else {
      if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
      if (!Number.isSafeInteger(stream) || stream < 0) {
        throw new RangeError(`stream must be a non-negative safe integer, got ${stream}`);
      }
      x = BigInt.asUintN(64, BigInt(seed) * 0x100000001b3n + BigInt(stream) * 0xd1b54a32d192ed03n);
    }
    // splitmix64 spreads any seed, 0 included, over the whole state so it is never all-zero.
    const words: number[] = [];
    for (let i = 0; i < 2; i++) {
      x = (x + 0x9e3779b97f4a7c15n) & MASK64;
      let z = x;
      z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
      z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
      z ^= z >> 31n;
      words.push(Number(z & 0xffffffffn), Number(z >> 32n));
    }
    this.s0 = words[0]!;
    this.s1 = words[1]!;
    this.s2 = words[2]!;
    this.s3 = words[3]!;
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5;
    const lo = this.nextUint32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Standard normal (Box–Muller; the second value of each pair is kept for the next call). */
  nextNormal(): number {
    if (this.spareNormal !== null) {
      const v = this.spareNormal;
      this.spareNormal = null;
      return v;
    }
    const u = 1 - this.nextFloat();
    const v = this.nextFloat();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}
