/** `knobs seal`: encrypts a model directory at rest, rotates its master key, or makes a new key file. */
import { UsageError } from '../errors.js';
import { DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from '../seal/format.js';
import { MASTER_KEY_ENV, readMasterKey, writeNewKeyFile } from '../seal/keys.js';
import { rewrapSealed, sealModel } from '../seal/seal.js';
import { type Command, emit, parse } from './command.js';
import { positiveInt } from './flags.js';

export const sealCommand: Command = {
  name: 'seal',
  summary: 'encrypt a model directory at rest (AES-256-GCM), rotate its master key, or make a key',
  help: `Usage: knobs seal MODEL --out SEALED [--master-key-file F] [--chunk-size BYTES] [--json]
       knobs seal --rewrap SEALED --new-master-key-file F2 [--master-key-file F] [--json]
       knobs seal --gen-key --out F

The first form encrypts every file at the top of the model directory MODEL (a run directory or a
Hugging Face one; subdirectories such as checkpoints/ and hidden files are left out and listed)
into the new directory SEALED: per-file data keys wrapped by the master key, AES-256-GCM chunks
bound to their file, index and place (docs/sealing.md). SEALED appears whole or not at all.
'knobs generate', 'knobs eval' and 'knobs serve' open SEALED with the same master key, decrypting
into memory only.

  --master-key-file F      the master key: 32 bytes in base64 (else the environment variable
                           ${MASTER_KEY_ENV})
  --chunk-size BYTES       plaintext bytes per chunk, ${MIN_CHUNK_SIZE} to ${MAX_CHUNK_SIZE} (default ${DEFAULT_CHUNK_SIZE})
  --rewrap SEALED          re-wrap SEALED's data keys under the key in --new-master-key-file; the
                           encrypted data is not touched and the old key stops opening it
  --gen-key                write a new random master key to --out F (mode 0600; never overwrites)
  --json                   one object: {"out","sealed","skipped"}, {"rewrapped"} or {"key_file"}

Examples:
  knobs seal --gen-key --out ~/.knobs/master.key
  knobs seal models/gpt2 --out sealed/gpt2 --master-key-file ~/.knobs/master.key
  knobs seal --rewrap sealed/gpt2 --master-key-file ~/.knobs/master.key --new-master-key-file new.key`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      {
        out: { type: 'string' },
        'master-key-file': { type: 'string' },
        'new-master-key-file': { type: 'string' },
        'chunk-size': { type: 'string' },
        rewrap: { type: 'string' },
        'gen-key': { type: 'boolean' },
        json: { type: 'boolean' },
      },
      'seal',
    );
    const json = values.json === true;
    const out = values.out as string | undefined;
    const keyFile = values['master-key-file'] as string | undefined;
    const newKeyFile = values['new-master-key-file'] as string | undefined;
    const rewrap = values.rewrap as string | undefined;
    const misuse = (what: string) => new UsageError(`${what}; see 'knobs seal --help'`);

    if (values['gen-key'] === true) {
      if (out === undefined) throw misuse('--gen-key needs --out FILE');
      if (positionals.length > 0 || rewrap !== undefined || keyFile !== undefined || newKeyFile !== undefined)
        throw misuse('--gen-key takes only --out FILE');
      await writeNewKeyFile(out);
      emit(
        io,
        json,
        { key_file: out },
        () => `wrote a new master key to ${out} (mode 0600); keep a copy somewhere safe\n`,
      );
      return 0;
    }
    if (rewrap !== undefined) {
      if (positionals.length > 0 || out !== undefined || values['chunk-size'] !== undefined)
        throw misuse('--rewrap SEALED takes no MODEL, --out or --chunk-size');
      if (newKeyFile === undefined) throw misuse('--rewrap needs --new-master-key-file F');
      const oldKey = await requireKey(keyFile);
      const newKey = (await readMasterKey(newKeyFile, {}))!;
      await rewrapSealed(rewrap, oldKey, newKey);
      emit(io, json, { rewrapped: rewrap }, () => `${rewrap} now opens with the key in ${newKeyFile} only\n`);
      return 0;
    }
    if (positionals.length !== 1) throw misuse(`seal takes one MODEL directory, got ${positionals.length}`);
    if (out === undefined) throw misuse('seal needs --out SEALED');
    if (newKeyFile !== undefined) throw misuse('--new-master-key-file goes with --rewrap');
    const chunkSize =
      values['chunk-size'] === undefined
        ? undefined
        : positiveInt(values['chunk-size'], '--chunk-size', MIN_CHUNK_SIZE, {
            value: MAX_CHUNK_SIZE,
            why: 'a chunk is decrypted whole in memory',
          });
    const key = await requireKey(keyFile);
    const result = await sealModel(positionals[0]!, out, key, { chunkSize });
    emit(io, json, { out, sealed: result.sealed, skipped: result.skipped }, () => {
      const left = result.skipped.length > 0 ? `; left out: ${result.skipped.join(', ')}` : '';
      return `sealed ${result.sealed.length} files of ${positionals[0]!} into ${out}${left}\n`;
    });
    return 0;
  },
};

async function requireKey(file: string | undefined): Promise<Uint8Array> {
  const key = await readMasterKey(file, process.env);
  if (!key)
    throw new UsageError(
      `knobs seal needs the master key: --master-key-file F or ${MASTER_KEY_ENV} (make one with 'knobs seal --gen-key --out F')`,
    );
  return key;
}
