// Float dtypes of model weights and the bit-exact conversions between them and float32.
// Conversions work on raw 16-bit patterns so that weights read from safetensors need no copy first.

export type FloatDtype = "F32" | "F16" | "BF16";

export function float16ToFloat32(h: Uint16Array): Float32Array {
  const out = new Float32Array(h.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < h.length; i++) {
    const x = h[i]!;
    const sign = (x & 0x8000) << 16;
    const exp = (x >> 10) & 0x1f;
    const mant = x & 0x3ff;
    if (exp === 0x1f) {
      bits[i] = sign | 0x7f800000 | (mant << 13);
    } else if (exp !== 0) {
      bits[i] = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant === 0) {
      bits[i] = sign;
    } else {
      // Subnormal half: exact as a normal float32.
      out[i] = (sign ? -1 : 1) * mant * 2 ** -24;
    }
  }
  return out;
}

export function float32ToFloat16(f: Float32Array): Uint16Array {
  const out = new Uint16Array(f.length);
  const bits = new Uint32Array(f.buffer, f.byteOffset, f.length);
  for (let i = 0; i < f.length; i++) {
    const x = bits[i]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    const mant = x & 0x7fffff;
    if (exp === 0xff) {
      // Keep NaN a NaN even when its payload sits only in the low mantissa bits.
      out[i] = sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      // Subnormal half: shift the full 24-bit significand and round to nearest even.
      const m = mant | 0x800000;
      const shift = 14 - e;
      const half = 1 << (shift - 1);
      const rem = m & ((1 << shift) - 1);
      let r = m >>> shift;
      if (rem > half || (rem === half && (r & 1) === 1)) r++;
      out[i] = sign | r;
      continue;
    }
    let r = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    if (rem > 0x1000 || (rem === 0x1000 && (r & 1) === 1)) r++;
    out[i] = sign | r;
  }
  return out;
}

export function bfloat16ToFloat32(b: Uint16Array): Float32Array {
  const out = new Float32Array(b.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < b.length; i++) bits[i] = b[i]! << 16;
  return out;
}

export function float32ToBfloat16(f: Float32Array): Uint16Array {
  const out = new Uint16Array(f.length);
  const bits = new Uint32Array(f.buffer, f.byteOffset, f.length);
  for (let i = 0; i < f.length; i++) {
    const x = bits[i]!;
    if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) {
      out[i] = (x >>> 16) | 0x40;
      continue;
    }
    const rounded = x + 0x7fff + ((x >>> 16) & 1);
    out[i] = rounded >>> 16;
  }
  return out;
}
