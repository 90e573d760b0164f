/**
 * Builds GGUF bytes field by field, independently of src/formats/gguf-write.ts, so tests can write
 * files the writer never would (wrong counts, bad offsets, unknown types) and check the reader on
 * bytes it did not produce.
 */
export class GgufBytes {
  private parts: number[] = [];

  get length(): number {
    return this.parts.length;
  }
  u8(v: number): this {
    this.parts.push(v & 0xff);
    return this;
  }
  u32(v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    return this.raw(b);
  }
  u64(v: number | bigint): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
    return this.raw(b);
  }
  raw(bytes: ArrayLike<number>): this {
    for (let i = 0; i < bytes.length; i++) this.parts.push(bytes[i]!);
    return this;
  }
  /** A GGUF string: u64 length then UTF-8 bytes (or the given raw bytes). */
  str(s: string | Uint8Array): this {
    const b = typeof s === 'string' ? new TextEncoder().encode(s) : s;
    return this.u64(b.length).raw(b);
  }
  /** magic, version, n_tensors, n_kv. */
  header(nTensors: number | bigint, nKv: number | bigint, version = 3): this {
    return this.raw([0x47, 0x47, 0x55, 0x46]).u32(version).u64(nTensors).u64(nKv);
  }
  kvU32(key: string, v: number): this {
    return this.str(key).u32(4).u32(v);
  }
  kvString(key: string, v: string): this {
    return this.str(key).u32(8).str(v);
  }
  tensorInfo(name: string, dims: readonly (number | bigint)[], type: number, offset: number | bigint): this {
    this.str(name).u32(dims.length);
    for (const d of dims) this.u64(d);
    return this.u32(type).u64(offset);
  }
  /** Zeros up to a multiple of `alignment`. */
  pad(alignment = 32): this {
    while (this.parts.length % alignment !== 0) this.parts.push(0);
    return this;
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}
