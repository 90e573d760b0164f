/** `knobs release MODEL --out BUNDLE --signing-key KEY`: a signed bundle with a model card. */
import { UsageError } from '../errors.js';
import { createRelease } from '../release/release.js';
import { type Command, emit, parse } from './command.js';

export const releaseCommand: Command = {
  name: 'release',
  summary: 'copy a model into a signed bundle (model card + OpenSSF model-signing signature)',
  help: `Usage: knobs release MODEL --out BUNDLE --signing-key KEY [--card FILE] [--license SPDX-ID] [--json]

Copies MODEL — a run directory made by 'knobs train', a Hugging Face model directory, or a GGUF
file — into the new directory BUNDLE, with
  README.md   a model card: YAML front matter (license, architecture, parameter count, training
              recipe, data files with their SHA-256, final metrics, intended use) and text
  model.sig   the signature over every file, in OpenSSF model-signing's v1.0 format (a Sigstore
              bundle holding a DSSE-signed in-toto statement), checkable with 'knobs verify'
              and, for ECDSA keys, with 'python -m model_signing verify key'
Subdirectories (checkpoints/) are left out. BUNDLE must not exist; it appears complete or not at all.

  --signing-key KEY   private key (PEM) from 'knobs signing-key create' or 'openssl genpkey'
  --card FILE         Markdown to start the card from; its YAML front matter (validated) overrides
                      the computed fields, its text becomes the card's text (default: MODEL/README.md)
  --license ID        an SPDX license identifier (apache-2.0, MIT, …); default "unknown"
  --json              one object: {"bundle","model_name","sha256","key_hint","bytes","files":[…]}

Example:
  knobs release runs/kjv-gpt --out releases/kjv-gpt --signing-key keys/release.pem --license MIT`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      {
        out: { type: 'string' },
        'signing-key': { type: 'string' },
        card: { type: 'string' },
        license: { type: 'string' },
        json: { type: 'boolean' },
      },
      'release',
    );
    if (positionals.length !== 1)
      throw new UsageError(`release takes one MODEL, got ${positionals.length}; see 'knobs release --help'`);
    if (typeof values.out !== 'string') throw new UsageError("release needs --out BUNDLE; see 'knobs release --help'");
    if (typeof values['signing-key'] !== 'string')
      throw new UsageError("release needs --signing-key KEY (make one with 'knobs signing-key create')");
    const r = await createRelease({
      model: positionals[0]!,
      out: values.out,
      signingKey: values['signing-key'],
      card: values.card as string | undefined,
      license: values.license as string | undefined,
    });
    emit(
      io,
      values.json === true,
      {
        bundle: r.bundle,
        model_name: r.modelName,
        sha256: r.sha256,
        key_hint: r.keyHint,
        bytes: r.bytes,
        files: r.files,
      },
      () => `released ${r.files.length} files (${r.bytes} bytes) into ${r.bundle}, signed: sha256 ${r.sha256}\n`,
    );
    return 0;
  },
};
