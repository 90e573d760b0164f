/**
 * model.sig as OpenSSF model-signing v1.0 writes it for key-based signing (sigstore/model-transparency
 * at commit e3430730bca924e672b2e59f10524a7ffb5adf79: src/model_signing/_signing/signing.py,
 * sign_ec_key.py and sign_sigstore_pb.py):
 *
 *   {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
 *    "verificationMaterial": {"publicKey": {"hint": hex SHA-256 of the SPKI PEM}, "tlogEntries": []},
 *    "dsseEnvelope": {"payload": base64(statement JSON), "payloadType": "application/vnd.in-toto+json",
 *                     "signatures": [{"sig": base64(signature over PAE(payload)), "keyid": ""}]}}
 *
 * The statement is an in-toto Statement v1 with predicateType https://model_signing/signature/v1.0,
 * one subject {name: the model's name, digest: {sha256: SHA-256 over the raw per-file digests in
 * the order the resources are listed}} and a predicate {serialization, resources}. PAE is DSSE's:
 * "DSSEv1 <len(type)> <type> <len(payload)> <payload>". Older model.sig files carry
 * publicKey.rawBytes instead of a hint; those verify too (the hint check is then skipped, as
 * model-signing does). Reading is strict: every field is checked before anything is trusted.
 */
import { createHash, sign, verify } from 'node:crypto';
import { FormatError } from '../errors.js';
import { type LoadedKey, keyHint } from './keys.js';
import { type FileSerialization, type Manifest, type Resource, badResourceName } from './manifest.js';

export const BUNDLE_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
export const PAYLOAD_TYPE = 'application/vnd.in-toto+json';
export const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
export const PREDICATE_TYPE = 'https://model_signing/signature/v1.0';

/** A signature lists one entry per file; 64 MiB holds hundreds of thousands of them. */
export const MAX_SIGNATURE_BYTES = 64 << 20;

/** DSSE's pre-authentication encoding of `payload` (https://github.com/secure-systems-lab/dsse, protocol.md). */
export function pae(payloadType: string, payload: Uint8Array): Buffer {
  const type = Buffer.from(payloadType, 'utf8');
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${payload.length} `), payload]);
}

/** SHA-256 over the raw bytes of each digest, in the given order: the subject's digest. */
export function rootDigest(resources: readonly Resource[]): string {
  const hash = createHash('sha256');
  for (const r of resources) hash.update(Buffer.from(r.digest, 'hex'));
  return hash.digest('hex');
}

export function statementOf(manifest: Manifest): Record<string, unknown> {
  return {
    _type: STATEMENT_TYPE,
    subject: [{ name: manifest.modelName, digest: { sha256: rootDigest(manifest.resources) } }],
    predicateType: PREDICATE_TYPE,
    predicate: { serialization: manifest.serialization, resources: manifest.resources },
  };
}

/** The model.sig text for `manifest`, signed with `signer`. */
export function signManifest(manifest: Manifest, signer: LoadedKey): string {
  const payload = Buffer.from(JSON.stringify(statementOf(manifest), null, 2), 'utf8');
  const signature = sign(signer.hash, pae(PAYLOAD_TYPE, payload), { key: signer.key, dsaEncoding: 'der' });
  return `${JSON.stringify({
    mediaType: BUNDLE_MEDIA_TYPE,
    verificationMaterial: { publicKey: { hint: keyHint(signer.key) }, tlogEntries: [] },
    dsseEnvelope: {
      payload: payload.toString('base64'),
      payloadType: PAYLOAD_TYPE,
      signatures: [{ sig: signature.toString('base64'), keyid: '' }],
    },
  })}\n`;
}

function invalid(path: string, what: string, details: Record<string, unknown> = {}): FormatError {
  return new FormatError(
    'signature_invalid',
    `${path}: ${what}; it is not a model-signing v1.0 signature, nothing in it is trusted`,
    { path, ...details },
  );
}

function object(value: unknown, path: string, field: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw invalid(path, `${field} must be a JSON object`, { field });
  return value as Record<string, unknown>;
}

function string(value: unknown, path: string, field: string): string {
  if (typeof value !== 'string') throw invalid(path, `${field} must be a string`, { field });
  return value;
}

function base64(value: unknown, path: string, field: string): Buffer {
  const text = string(value, path, field);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0)
    throw invalid(path, `${field} is not base64`, { field });
  return Buffer.from(text, 'base64');
}

/** Parses JSON, naming a truncated or non-JSON file as such. */
function parseJson(text: string, path: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new FormatError(
      'signature_not_json',
      `${path}: ${what} is not valid JSON (${(err as Error).message}); the file is truncated or not a signature`,
      { path },
    );
  }
}

/**
 * Checks model.sig's bytes against `key` and returns the manifest it signs. The signature is
 * checked before the payload is parsed, so nothing unsigned is ever interpreted.
 */
export function verifySignature(bytes: Uint8Array, path: string, key: LoadedKey): Manifest {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new FormatError('signature_not_json', `${path} is not UTF-8 text; it is not a signature`, { path });
  }
  const bundle = object(parseJson(text, path, 'the signature'), path, 'the bundle');
  if (bundle.mediaType !== BUNDLE_MEDIA_TYPE)
    throw invalid(path, `mediaType is ${JSON.stringify(bundle.mediaType)}, not ${BUNDLE_MEDIA_TYPE}`, {
      field: 'mediaType',
    });
  const material = object(bundle.verificationMaterial, path, 'verificationMaterial');
  const publicKey = object(material.publicKey, path, 'verificationMaterial.publicKey (key-based signature)');
  const envelope = object(bundle.dsseEnvelope, path, 'dsseEnvelope');
  if (envelope.payloadType !== PAYLOAD_TYPE)
    throw invalid(path, `dsseEnvelope.payloadType is ${JSON.stringify(envelope.payloadType)}, not ${PAYLOAD_TYPE}`, {
      field: 'dsseEnvelope.payloadType',
    });
  const payload = base64(envelope.payload, path, 'dsseEnvelope.payload');
  const signatures = envelope.signatures;
  if (!Array.isArray(signatures) || signatures.length !== 1)
    throw invalid(path, 'dsseEnvelope.signatures must hold exactly one signature', {
      field: 'dsseEnvelope.signatures',
    });
  const sig = base64(
    object(signatures[0], path, 'dsseEnvelope.signatures[0]').sig,
    path,
    'dsseEnvelope.signatures[0].sig',
  );

  const hint = publicKey.hint;
  if (hint !== undefined && hint !== null && hint !== '') {
    const expected = keyHint(key.key);
    if (hint !== expected) {
      throw new FormatError(
        'signature_wrong_key',
        `${path} was signed by another key: its key hint is ${string(hint, path, 'verificationMaterial.publicKey.hint')}, the SHA-256 of ${key.path} is ${expected}; verify with the publisher's public key`,
        { path, hint, key: key.path },
      );
    }
  }
  const ok = verify(key.hash, pae(PAYLOAD_TYPE, payload), { key: key.key, dsaEncoding: 'der' }, sig);
  if (!ok) {
    throw new FormatError(
      'signature_mismatch',
      `${path}: the signature does not verify with ${key.path}; the statement was changed after signing, or another key signed it`,
      { path, key: key.path },
    );
  }
  return manifestOf(parseJson(payload.toString('utf8'), path, 'the signed statement'), path);
}

/** The manifest of a verified statement, checked field by field. */
function manifestOf(value: unknown, path: string): Manifest {
  const statement = object(value, path, 'the statement');
  if (statement._type !== STATEMENT_TYPE)
    throw invalid(path, `the statement's _type is ${JSON.stringify(statement._type)}, not ${STATEMENT_TYPE}`);
  if (statement.predicateType !== PREDICATE_TYPE)
    throw invalid(path, `predicateType is ${JSON.stringify(statement.predicateType)}, not ${PREDICATE_TYPE}`);
  const subjects = statement.subject;
  if (!Array.isArray(subjects) || subjects.length !== 1)
    throw invalid(path, 'the statement must have exactly one subject');
  const subject = object(subjects[0], path, 'subject[0]');
  const modelName = string(subject.name, path, 'subject[0].name');
  const subjectDigest = string(
    object(subject.digest, path, 'subject[0].digest').sha256,
    path,
    'subject[0].digest.sha256',
  );
  const predicate = object(statement.predicate, path, 'predicate');
  const serialization = serializationOf(object(predicate.serialization, path, 'predicate.serialization'), path);
  if (!Array.isArray(predicate.resources)) throw invalid(path, 'predicate.resources must be an array');
  const seen = new Set<string>();
  const resources = predicate.resources.map((r: unknown, i: number): Resource => {
    const field = `predicate.resources[${i}]`;
    const entry = object(r, path, field);
    const name = string(entry.name, path, `${field}.name`);
    if (entry.algorithm !== 'sha256')
      throw invalid(path, `${field}.algorithm is ${JSON.stringify(entry.algorithm)}; knobs verifies sha256`, { field });
    const digest = string(entry.digest, path, `${field}.digest`);
    if (!/^[0-9a-f]{64}$/.test(digest)) throw invalid(path, `${field}.digest is not 64 hex digits`, { field });
    const bad = badResourceName(name);
    if (bad) {
      throw new FormatError(
        'bundle_bad_path',
        `${path}: ${field}.name ${JSON.stringify(name)} ${bad}; it could name a file outside the bundle`,
        {
          path,
          file: name,
        },
      );
    }
    if (seen.has(name)) {
      throw new FormatError(
        'manifest_duplicate',
        `${path}: ${JSON.stringify(name)} is listed twice in predicate.resources; a manifest names each file once`,
        {
          path,
          file: name,
        },
      );
    }
    seen.add(name);
    return { name, algorithm: 'sha256', digest };
  });
  const computed = rootDigest(resources);
  if (computed !== subjectDigest) {
    throw invalid(
      path,
      `the subject's digest ${subjectDigest} is not the SHA-256 of the listed digests (${computed})`,
      {
        field: 'subject[0].digest.sha256',
      },
    );
  }
  return { modelName, resources, serialization };
}

function serializationOf(s: Record<string, unknown>, path: string): FileSerialization {
  if (s.method !== 'files')
    throw invalid(
      path,
      `serialization method ${JSON.stringify(s.method)} is not supported; knobs verifies the "files" method`,
      {
        field: 'predicate.serialization.method',
      },
    );
  if (s.hash_type !== 'sha256')
    throw invalid(path, `hash_type ${JSON.stringify(s.hash_type)} is not supported; knobs verifies sha256`, {
      field: 'predicate.serialization.hash_type',
    });
  if (s.allow_symlinks !== false)
    throw invalid(path, 'allow_symlinks must be false: knobs never follows links in a bundle', {
      field: 'predicate.serialization.allow_symlinks',
    });
  const ignore = s.ignore_paths ?? [];
  if (!Array.isArray(ignore) || ignore.some((p) => typeof p !== 'string'))
    throw invalid(path, 'ignore_paths must be a list of strings', { field: 'predicate.serialization.ignore_paths' });
  return { method: 'files', hash_type: 'sha256', allow_symlinks: false, ignore_paths: ignore as string[] };
}
