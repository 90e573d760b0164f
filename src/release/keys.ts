/**
 * Signing keys: ECDSA on P-256 (the default), P-384 or P-521 — the curves OpenSSF model-signing's
 * key mode accepts (`_check_supported_ec_key` in src/model_signing/_signing/sign_ec_key.py) — and
 * Ed25519, which knobs signs and verifies but model-signing does not. Private keys are PKCS#8 PEM,
 * public keys SPKI PEM; keys made by `openssl genpkey` read the same.
 *
 * ECDSA hashes with the curve's size (SHA-256 / SHA-384 / SHA-512, model-signing's
 * `get_ec_key_hash`) and encodes signatures as DER, as Python's `cryptography` does. Ed25519
 * signs the message itself.
 */
import { type KeyObject, createHash, createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { FormatError, UsageError } from '../errors.js';
import { nodeWriteFs, writeFileAtomic } from '../io/atomic.js';
import { readRegularFile } from '../io/regular-file.js';

export const KEY_TYPES = ['p256', 'p384', 'ed25519'] as const;
export type KeyType = (typeof KEY_TYPES)[number];

/** A PEM key file is a few hundred bytes; anything larger is not one. */
const MAX_KEY_FILE_BYTES = 64 * 1024;

/** The digest a key signs with: null for Ed25519 (it hashes internally). */
export type SignatureHash = 'sha256' | 'sha384' | 'sha512' | null;

const CURVE_HASH: Readonly<Record<string, SignatureHash>> = {
  prime256v1: 'sha256',
  secp384r1: 'sha384',
  secp521r1: 'sha512',
};

/** The digest `key` signs with; a key of any other type is refused, naming the type. */
export function signatureHash(key: KeyObject, path: string): SignatureHash {
  if (key.asymmetricKeyType === 'ed25519') return null;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (key.asymmetricKeyType === 'ec' && curve !== undefined && Object.hasOwn(CURVE_HASH, curve))
    return CURVE_HASH[curve]!;
  const what =
    key.asymmetricKeyType === 'ec'
      ? `an EC key on ${curve ?? 'an unnamed curve'}`
      : `a ${key.asymmetricKeyType ?? 'unknown'} key`;
  throw new FormatError(
    'key_unsupported',
    `${path} is ${what}; knobs signs with ECDSA on P-256, P-384 or P-521, or with Ed25519 (make one with 'knobs signing-key create')`,
    { path, type: key.asymmetricKeyType ?? null, curve: curve ?? null },
  );
}

async function readPem(path: string): Promise<string> {
  return new TextDecoder().decode(await readRegularFile(path, MAX_KEY_FILE_BYTES, 'key file'));
}

function keyError(path: string, expected: string, err: unknown): FormatError {
  return new FormatError(
    'key_invalid',
    `${path} is not ${expected} (${(err as Error).message}); give the PEM file 'knobs signing-key create' or 'openssl genpkey' wrote`,
    { path },
  );
}

export interface LoadedKey {
  key: KeyObject;
  hash: SignatureHash;
  path: string;
}

/** A PKCS#8 PEM private key (unencrypted), checked to be a supported type. */
export async function loadPrivateKey(path: string): Promise<LoadedKey> {
  const pem = await readPem(path);
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw keyError(path, 'an unencrypted PEM private key', err);
  }
  return { key, hash: signatureHash(key, path), path };
}

/** An SPKI PEM public key (a private key's file works too: its public half is used). */
export async function loadPublicKey(path: string): Promise<LoadedKey> {
  const pem = await readPem(path);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw keyError(path, 'a PEM public key', err);
  }
  return { key, hash: signatureHash(key, path), path };
}

/** The public key as SPKI PEM, byte for byte as Python's `cryptography` writes it. */
export function publicKeyPem(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return pub.export({ type: 'spki', format: 'pem' }) as string;
}

/**
 * `verificationMaterial.publicKey.hint`: the hex SHA-256 of the public key's SPKI PEM, as
 * model-signing computes it (`_get_verification_material` in sign_ec_key.py).
 */
export function keyHint(key: KeyObject): string {
  return createHash('sha256').update(publicKeyPem(key)).digest('hex');
}

/** A new key pair as PEM: the private key in PKCS#8, the public key in SPKI. */
export function createKeyPair(type: KeyType): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } =
    type === 'ed25519'
      ? generateKeyPairSync('ed25519')
      : generateKeyPairSync('ec', { namedCurve: type === 'p256' ? 'prime256v1' : 'secp384r1' });
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }) as string,
  };
}

/** Private keys are created readable by their owner only (mode 0600), from the first byte on. */
const ownerOnly = { ...nodeWriteFs, create: (path: string) => fsp.open(path, 'wx', 0o600) };

/**
 * Writes a new key pair: the private key at `out` (PKCS#8 PEM, mode 0600) and the public key at
 * `out`.pub (SPKI PEM). Existing files are never overwritten: a lost private key cannot be remade.
 */
export async function writeSigningKey(
  out: string,
  type: KeyType,
): Promise<{ privateKey: string; publicKey: string; hint: string }> {
  const publicPath = `${out}.pub`;
  for (const path of [out, publicPath]) {
    if (
      await fsp.lstat(path).then(
        () => true,
        () => false,
      )
    )
      throw new UsageError(
        `${path} exists; knobs does not overwrite keys (choose another --out, or move the old key away)`,
      );
  }
  const { privatePem, publicPem } = createKeyPair(type);
  await writeFileAtomic(out, privatePem, { fs: ownerOnly });
  await writeFileAtomic(publicPath, publicPem);
  return { privateKey: out, publicKey: publicPath, hint: createHash('sha256').update(publicPem).digest('hex') };
}
