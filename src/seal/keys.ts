/**
 * The master key: 32 random bytes, kept as base64 text (44 characters) in a key file or in
 * KNOBS_MASTER_KEY. It never encrypts data itself: two subkeys are derived from it with HKDF-SHA256,
 * one to wrap each file's data key (AES-256-GCM, bound to the bundle header and the file id) and
 * one for the manifest's MACs (HMAC-SHA256: the key check and the header MAC).
 *
 * Wrapping with AES-256-GCM rather than AES-KW (RFC 3394, node's id-aes256-wrap): GCM takes
 * authenticated data, so a wrapped key only opens under the header and file id it was made for,
 * and the whole format needs one primitive. Its 96-bit random nonces are safe for the handful of
 * wraps a master key ever makes.
 *
 * Messages name where a key came from, never the key: not its text, length in characters, or bytes.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { dirname } from 'node:path';
import { IOError, KeyError } from '../errors.js';
import { asIOError, atomicTempName, syncDir } from '../io/atomic.js';
import { readRegularText } from '../io/regular-file.js';
import { CIPHER, KEY_BYTES, NONCE_BYTES, TAG_BYTES, keyAad } from './format.js';

export const MASTER_KEY_ENV = 'KNOBS_MASTER_KEY';
const BASE64_KEY = /^[A-Za-z0-9+/]{43}=$/;
/** A key file holds 45 bytes; anything far larger is the wrong file and is not read whole. */
const MAX_KEY_FILE_BYTES = 1024;

/** The 32 bytes of a base64 key text (surrounding whitespace ignored); `source` names it in errors. */
export function parseMasterKey(text: string, source: string): Uint8Array {
  const trimmed = text.trim();
  if (!BASE64_KEY.test(trimmed))
    throw new KeyError(
      `${source} does not hold a master key: a key is 32 bytes in base64 (44 characters), as 'knobs seal --gen-key --out FILE' writes`,
      { source },
    );
  return new Uint8Array(Buffer.from(trimmed, 'base64'));
}

/** The master key from a key file (when given) or from KNOBS_MASTER_KEY; null when neither is set. */
export async function readMasterKey(
  file: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): Promise<Uint8Array | null> {
  if (file !== undefined) return parseMasterKey(await readRegularText(file, MAX_KEY_FILE_BYTES, 'key file'), file);
  const text = env[MASTER_KEY_ENV];
  return text === undefined || text === '' ? null : parseMasterKey(text, MASTER_KEY_ENV);
}

/**
 * Writes a new random master key to `path` (mode 0600), refusing to replace an existing file: a
 * lost key is a lost model. The key is complete under its name or absent (written to a temporary
 * name, fsynced, then hard-linked, which fails rather than overwrites).
 */
export async function writeNewKeyFile(path: string): Promise<void> {
  const temp = atomicTempName(path);
  const key = randomBytes(KEY_BYTES);
  try {
    const fh = await fsp.open(temp, 'wx', 0o600);
    try {
      await fh.writeFile(`${key.toString('base64')}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.link(temp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST')
      throw new IOError(
        `${path} already exists; knobs does not overwrite a key file (move it away first if it is no longer needed)`,
        { path, errno: 'EEXIST' },
      );
    throw asIOError(err, path, 'create');
  } finally {
    key.fill(0);
    await fsp.rm(temp, { force: true });
  }
  await syncDir(dirname(path));
}

/** The two subkeys of a master key. */
export interface MasterKeys {
  wrap: Uint8Array;
  mac: Uint8Array;
}

export function deriveKeys(master: Uint8Array): MasterKeys {
  if (master.byteLength !== KEY_BYTES) throw new KeyError(`a master key is ${KEY_BYTES} bytes`);
  const derive = (info: string) => new Uint8Array(hkdfSync('sha256', master, new Uint8Array(0), info, KEY_BYTES));
  return { wrap: derive('knobs-sealed/1 wrap'), mac: derive('knobs-sealed/1 mac') };
}

const mac = (keys: MasterKeys, label: string, data: Uint8Array | string): string =>
  createHmac('sha256', keys.mac).update(label).update(data).digest('hex');

export const keyCheckOf = (keys: MasterKeys, bundle: string): string => mac(keys, 'knobs-sealed/1 key check\0', bundle);
export const headerMacOf = (keys: MasterKeys, digest: Uint8Array): string =>
  mac(keys, 'knobs-sealed/1 header\0', digest);

/** Constant-time comparison of two hex MACs of equal length. */
export function sameMac(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

export function wrapKey(keys: MasterKeys, dataKey: Uint8Array, digest: Uint8Array, id: number): Uint8Array {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv(CIPHER, keys.wrap, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(keyAad(digest, id));
  return Buffer.concat([nonce, cipher.update(dataKey), cipher.final(), cipher.getAuthTag()]);
}

/** The data key, or null when the wrapped key does not authenticate under this master key, header and id. */
export function unwrapKey(keys: MasterKeys, wrapped: Uint8Array, digest: Uint8Array, id: number): Uint8Array | null {
  const nonce = wrapped.subarray(0, NONCE_BYTES);
  const body = wrapped.subarray(NONCE_BYTES, NONCE_BYTES + KEY_BYTES);
  const tag = wrapped.subarray(NONCE_BYTES + KEY_BYTES);
  const decipher = createDecipheriv(CIPHER, keys.wrap, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(keyAad(digest, id));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(body), decipher.final()]);
  } catch {
    return null;
  }
}
