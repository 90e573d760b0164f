/** `knobs keys create|list|revoke|usage --keys FILE`: the API keys of `knobs serve` (docs/server.md). */
import { UsageError } from '../errors.js';
import { KEY_NAME_PATTERN, type KeyRecord } from '../server/keys.js';
import { SqliteKeyStore } from '../server/sqlite-keys.js';
import { type Command, emit, parse } from './command.js';
import { positiveInt } from './flags.js';

const describe = (k: KeyRecord): string =>
  `${k.name}${k.admin ? ' (admin)' : ''}${k.revokedAt ? ` REVOKED ${k.revokedAt}` : ''}  rpm ${k.rpm ?? '-'}  tokens/day ${k.tokensPerDay ?? '-'}  models ${k.models?.join(',') ?? 'all'}  created ${k.createdAt}`;

export const keysCommand: Command = {
  name: 'keys',
  summary: "create, list and revoke the API keys of 'knobs serve'",
  help: `Usage: knobs keys create --keys FILE --name NAME [--rpm N] [--tokens-per-day N] [--models ID,...] [--admin] [--json]
       knobs keys list   --keys FILE [--json]
       knobs keys revoke --keys FILE NAME [--json]
       knobs keys usage  --keys FILE [--json]

FILE is a SQLite database (made by the first 'create', readable by its owner only). It keeps only
a SHA-256 of each key: 'create' prints the key once, and a lost key cannot be recovered (revoke it
and make another). A revoked key fails on its next request; names stay taken.

  --rpm N             requests per minute (sliding window); default: no limit
  --tokens-per-day N  prompt + completion tokens per UTC day; default: no limit
  --models ID,...     the model ids this key may use; default: all
  --admin             may also read /metrics
  --json              create: {"key","name"}; list: {"keys":[...]}; usage: {"usage":[...]}

Example:
  knobs keys create --keys keys.db --name alice --rpm 60 --tokens-per-day 100000
  knobs keys revoke --keys keys.db alice`,
  async run(argv, io) {
    const [action, ...rest] = argv;
    const { values, positionals } = parse(
      rest,
      {
        keys: { type: 'string' },
        name: { type: 'string' },
        rpm: { type: 'string' },
        'tokens-per-day': { type: 'string' },
        models: { type: 'string' },
        admin: { type: 'boolean' },
        json: { type: 'boolean' },
      },
      'keys',
    );
    if (!['create', 'list', 'revoke', 'usage'].includes(action ?? ''))
      throw new UsageError(`keys needs an action: create, list, revoke or usage; see 'knobs keys --help'`);
    const path = values.keys;
    if (typeof path !== 'string') throw new UsageError(`keys ${action} needs --keys FILE; see 'knobs keys --help'`);
    const json = values.json === true;
    const store = SqliteKeyStore.open(path, { create: action === 'create' });
    try {
      if (action === 'create') {
        const name = values.name;
        if (typeof name !== 'string' || !KEY_NAME_PATTERN.test(name))
          throw new UsageError('keys create needs --name NAME (letters, digits, . _ -, at most 64 characters)');
        const models = typeof values.models === 'string' ? values.models.split(',').filter((m) => m !== '') : null;
        const { key } = await store.create({
          name,
          rpm: values.rpm === undefined ? null : positiveInt(values.rpm, '--rpm'),
          tokensPerDay:
            values['tokens-per-day'] === undefined ? null : positiveInt(values['tokens-per-day'], '--tokens-per-day'),
          models,
          admin: values.admin === true,
        });
        emit(io, json, { key, name }, () => `${key}\n(the key for '${name}': shown once, store it now)\n`);
      } else if (action === 'list') {
        const keys = await store.list();
        emit(io, json, { keys }, () => keys.map((k) => describe(k) + '\n').join(''));
      } else if (action === 'revoke') {
        if (positionals.length !== 1) throw new UsageError('keys revoke takes one NAME');
        const name = positionals[0]!;
        if (!(await store.revoke(name)))
          throw new UsageError(`no live key named '${name}' in ${path}; 'knobs keys list' shows them`);
        emit(io, json, { revoked: name }, () => `revoked ${name}\n`);
      } else {
        const usage = await store.usage();
        emit(io, json, { usage }, () =>
          usage
            .map(
              (u) =>
                `${u.day} ${u.key} ${u.model}: ${u.requests} requests, ${u.promptTokens} prompt + ${u.completionTokens} completion tokens\n`,
            )
            .join(''),
        );
      }
    } finally {
      await store.close();
    }
    return 0;
  },
};
