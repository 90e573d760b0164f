/**
 * GPT-2's byte ↔ character table: byte-level BPE works on strings in which every byte is one
 * printable character. Printable Latin-1 bytes map to themselves; the other 68 bytes (controls,
 * space, soft hyphen, …) map to U+0100 onwards, in byte order. Same table as `bytes_char` in
 * Hugging Face tokenizers' pre_tokenizers/byte_level.rs.
 */
function buildTable(): string[] {
  const table = new Array<string>(256);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCharCode(printable ? b : 256 + next++);
  }
  return table;
}

/** BYTE_TO_CHAR[b] is the character byte b becomes. */
export const BYTE_TO_CHAR: readonly string[] = buildTable();

/** The byte of each table character (code units 0x21..0x143). */
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/**
 * The UTF-8 bytes of `text`, each as its table character. Written out by hand because a
 * TextEncoder call per pre-tokenized piece dominated encoding time. A lone surrogate becomes
 * U+FFFD's bytes, as TextEncoder (and Rust's String, which cannot hold one) do.
 */
export function bytesToChars(text: string): string {
  const t = BYTE_TO_CHAR;
  let out = '';
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      out += t[c];
      continue;
    }
    if (c >= 0xd800 && c < 0xe000) {
      const d = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
      if (c < 0xdc00 && d >= 0xdc00 && d < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else c = 0xfffd;
    }
    if (c < 0x800) out += t[0xc0 | (c >> 6)]! + t[0x80 | (c & 63)]!;
    else if (c < 0x10000) out += t[0xe0 | (c >> 12)]! + t[0x80 | ((c >> 6) & 63)]! + t[0x80 | (c & 63)]!;
    else out += t[0xf0 | (c >> 18)]! + t[0x80 | ((c >> 12) & 63)]! + t[0x80 | ((c >> 6) & 63)]! + t[0x80 | (c & 63)]!;
  }
  return out;
}

/** The bytes a token stands for, or null when a character is outside the table. */
export function charsToBytes(token: string): number[] | null {
  const out: number[] = [];
  for (let i = 0; i < token.length; i++) {
    const b = CHAR_TO_BYTE.get(token[i]!);
    if (b === undefined) return null;
    out.push(b);
  }
  return out;
}
