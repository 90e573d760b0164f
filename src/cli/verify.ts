/** `knobs verify BUNDLE --public-key KEY.pub`: checks a signed model, every byte of it. */
import { UsageError } from '../errors.js';
import { verifyModel } from '../release/verify.js';
import { type Command, emit, parse } from './command.js';

export const verifyCommand: Command = {
  name: 'verify',
  summary: 'check a signed model (knobs release or OpenSSF model-signing) against a public key',
  help: `Usage: knobs verify BUNDLE --public-key KEY.pub [--signature FILE] [--ignore-paths PATH]... [--json]

Checks BUNDLE/model.sig with the publisher's public key, then re-hashes every file (streaming:
files of any size are hashed in constant memory; several large files at once, one per CPU, up to
the global --threads N). Fails, naming the file, on a changed, missing or
extra file, a symbolic link, a path that escapes the bundle, a wrong key or a malformed signature.
Signatures made by OpenSSF model-signing with an elliptic-curve key ('model_signing sign key')
verify too.

  --public-key KEY.pub   the publisher's public key (SPKI PEM)
  --signature FILE       the signature, if not BUNDLE/model.sig (needed when BUNDLE is one file)
  --ignore-paths PATH    leave PATH (relative to BUNDLE) out, as model-signing's flag of that name
  --json                 one object: {"verified":true,"model_name","signature","bytes","files":[…]}

Example:
  knobs verify releases/kjv-gpt --public-key keys/release.pem.pub`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      {
        'public-key': { type: 'string' },
        signature: { type: 'string' },
        'ignore-paths': { type: 'string', multiple: true },
        json: { type: 'boolean' },
      },
      'verify',
    );
    if (positionals.length !== 1)
      throw new UsageError(`verify takes one BUNDLE, got ${positionals.length}; see 'knobs verify --help'`);
    if (typeof values['public-key'] !== 'string')
      throw new UsageError("verify needs --public-key KEY.pub; see 'knobs verify --help'");
    const r = await verifyModel(positionals[0]!, values['public-key'], {
      signature: values.signature as string | undefined,
      ignorePaths: values['ignore-paths'] as string[] | undefined,
      // main.ts has checked the global --threads (or KNOBS_THREADS) and put it here.
      threads: process.env.KNOBS_THREADS ? Number(process.env.KNOBS_THREADS) : undefined,
    });
    emit(
      io,
      values.json === true,
      { verified: true, model_name: r.modelName, signature: r.signature, bytes: r.bytes, files: r.files },
      () => `verified ${r.files.length} files (${r.bytes} bytes) of ${r.model} against ${r.signature}\n`,
    );
    return 0;
  },
};
