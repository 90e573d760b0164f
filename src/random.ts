/**
 * A seedable random generator (xoshiro128**, seeded through splitmix32). Deterministic across
 * platforms and backends; its whole state is four 32-bit words, so checkpoints can save and
 * restore it exactly. It does not reproduce PyTorch's random streams.
 */
import { ArgumentError } from './errors.js';

export class Generator {
  private s = new Uint32Array(4);
  /** A cached second normal from Box–Muller, or null. Part of the state. */
  private spareNormal: number | null = null;

  constructor(seed: number | bigint = 0) {
    this.manualSeed(seed);
  }

  manualSeed(seed: number | bigint): this {
    let x = Number(BigInt.asUintN(32, BigInt(seed)));
    for (let i = 0; i < 4; i++) {
      // splitmix32: spreads a small seed over the whole state so seeds 0, 1, 2 … give unrelated streams.
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if (this.s.every((w) => w === 0)) this.s[0] = 1;
    this.spareNormal = null;
    return this;
  }

  /** Uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2] = (s[2]! ^ s[0]!) >>> 0;
    s[3] = (s[3]! ^ s[1]!) >>> 0;
    s[1] = (s[1]! ^ s[2]!) >>> 0;
    s[0] = (s[0]! ^ s[3]!) >>> 0;
    s[2] = (s[2]! ^ t) >>> 0;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  random(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Standard normal (Box–Muller, both outputs used). */
  normal(): number {
    if (this.spareNormal !== null) {
      const v = this.spareNormal;
      this.spareNormal = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.random();
    const v = this.random();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** Uniform integer in [0, n). */
  integer(n: number): number {
    return Math.floor(this.random() * n);
  }

  /** The full state, for checkpoints. */
  getState(): { words: number[]; spareNormal: number | null } {
    return { words: Array.from(this.s), spareNormal: this.spareNormal };
  }

  /** Restores a getState() result; anything else (it may come from a file) is an ArgumentError, and nothing changes. */
  setState(state: { words: readonly number[]; spareNormal: number | null }): void {
    const words = state?.words;
    const ok =
      Array.isArray(words) &&
      words.length === 4 &&
      words.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffffffff) &&
      words.some((w) => w !== 0);
    const spare = state?.spareNormal;
    if (!ok || !(spare === null || (typeof spare === 'number' && Number.isFinite(spare)))) {
      throw new ArgumentError(
        'Generator.setState: expected {words: four 32-bit unsigned integers, not all zero, spareNormal: a finite number or null}, as getState() returns',
      );
    }
    this.s.set(words);
    this.spareNormal = spare;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

let defaultGenerator = new Generator(0);

/** The generator used when an op is given none. */
export function getDefaultGenerator(): Generator {
  return defaultGenerator;
}

/** Reseeds the default generator (like torch.manual_seed). */
export function manualSeed(seed: number | bigint): Generator {
  defaultGenerator = new Generator(seed);
  return defaultGenerator;
}
