/**
 * Verify before use: the files of a signed bundle, opened for a loader only through their digest.
 * The signature and the list of files are checked when the bundle is opened; each file is then
 * hashed as it is read for loading — read once, whole, through one descriptor, and handed to the
 * loader only when its SHA-256 matches the signed one. What the loader uses is exactly what was
 * hashed: a file swapped or rewritten after `knobs verify`, or after the bundle was opened, is
 * refused, and no file is read twice. The price is memory: a file is held whole while the loader
 * reads it (a model's weights are held whole once loaded anyway).
 */
import { join } from 'node:path';
import { memorySource } from '../io/byte-source.js';
import { type ModelFiles, checkBareName } from '../models/hf/files.js';
import { openBundleFile, readAndHash } from './files.js';
import { loadPublicKey } from './keys.js';
import { type SignedListing, changedError, checkSignedListing } from './verify.js';

export interface VerifiedBundle extends ModelFiles {
  readonly listing: SignedListing;
}

/** Opens the bundle at `dir` for loading, after checking its signature with the public key at `publicKeyPath`. */
export async function openVerifiedBundle(dir: string, publicKeyPath: string): Promise<VerifiedBundle> {
  const key = await loadPublicKey(publicKeyPath);
  const listing = await checkSignedListing(dir, key);
  return {
    label: dir,
    listing,
    async open(name) {
      checkBareName(name, dir, '.');
      const expected = listing.digests.get(name);
      if (expected === undefined) return null; // not signed, so not there (the listing check saw to it)
      const path = join(dir, name);
      const fh = await openBundleFile(path, name);
      try {
        const { bytes, sha256 } = await readAndHash(fh, path);
        if (sha256 !== expected) throw changedError(path, name, expected, sha256);
        return memorySource(bytes, path);
      } finally {
        await fh.close();
      }
    },
  };
}
