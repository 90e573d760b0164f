/** `knobs signing-key create --out KEY`: a key pair for signing releases. */
import { UsageError } from '../errors.js';
import { KEY_TYPES, type KeyType, writeSigningKey } from '../release/keys.js';
import { type Command, emit, parse } from './command.js';

export const signingKeyCommand: Command = {
  name: 'signing-key',
  summary: 'create a key pair for signing releases (ECDSA P-256 by default)',
  help: `Usage: knobs signing-key create --out KEY [--type p256|p384|ed25519] [--json]

Writes a new private key to KEY (PKCS#8 PEM, readable by you only: mode 0600) and its public key
to KEY.pub (SPKI PEM). Give KEY to 'knobs release --signing-key'; publish KEY.pub so that others
can check your releases with 'knobs verify --public-key KEY.pub'. Existing files are never
overwritten. Keys made by 'openssl genpkey' work the same.

  --type T   p256 (ECDSA on NIST P-256, the default), p384 (ECDSA on P-384), or ed25519.
             OpenSSF model-signing verifies ECDSA keys only: a release signed with an Ed25519 key
             is verified by knobs, not by model-signing.
  --json     one object: {"private_key","public_key","type","hint"} (hint: the SHA-256 of the
             public key's PEM, as model.sig records it)

Example:
  knobs signing-key create --out keys/release.pem
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out release.pem   # the same, by openssl`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      { out: { type: 'string' }, type: { type: 'string' }, json: { type: 'boolean' } },
      'signing-key',
    );
    if (positionals.length !== 1 || positionals[0] !== 'create')
      throw new UsageError("signing-key takes one action, 'create'; see 'knobs signing-key --help'");
    if (typeof values.out !== 'string')
      throw new UsageError("signing-key create needs --out KEY; see 'knobs signing-key --help'");
    const type = (values.type ?? 'p256') as string;
    if (!(KEY_TYPES as readonly string[]).includes(type))
      throw new UsageError(`--type ${type} is not one of ${KEY_TYPES.join(', ')}`);
    const written = await writeSigningKey(values.out, type as KeyType);
    emit(
      io,
      values.json === true,
      { private_key: written.privateKey, public_key: written.publicKey, type, hint: written.hint },
      () => `wrote ${written.privateKey} (private, keep it secret) and ${written.publicKey} (public, publish it)\n`,
    );
    return 0;
  },
};
