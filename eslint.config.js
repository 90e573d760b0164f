/**
 * ESLint checks the layering of docs/architecture.md: a folder of src/ imports only the layers
 * below it (`no-restricted-imports`, one block per folder). Layers are named by their top-level
 * folder (or file) under src/, so a new file in an existing folder is covered without an edit; a
 * new folder gets a line in ALLOWED. `npm run lint` runs it; formatting is Prettier's job.
 */
import tsParser from '@typescript-eslint/parser';

const CORE = ['errors', 'dtype', 'shape', 'random'];
const ENGINE = [...CORE, 'backends', 'tensor', 'ops', 'autograd'];
/** Everything a training or fine-tuning loop builds on. */
const MODELLING = [...ENGINE, 'io', 'formats', 'tokenizer', 'data', 'nn', 'optim', 'models'];
/** The whole library, below its front ends (the index, the server, the CLI). */
const LIBRARY = [...MODELLING, 'finetune', 'train', 'inspect', 'guard', 'release', 'seal', 'load'];

/** What each layer of src/ may import, besides itself. Anything in LAYERS not listed is forbidden. */
const ALLOWED = {
  errors: CORE,
  dtype: CORE,
  shape: CORE,
  random: CORE,
  io: CORE,
  backends: CORE,
  tensor: ENGINE,
  ops: ENGINE,
  autograd: ENGINE,
  formats: [...CORE, 'io', 'tensor'],
  tokenizer: ['errors', 'io'],
  data: [...ENGINE, 'io', 'formats', 'tokenizer'],
  nn: ENGINE,
  optim: ENGINE,
  models: [...ENGINE, 'nn', 'tokenizer'],
  'models/hf': [...ENGINE, 'nn', 'tokenizer', 'io', 'formats', 'models'],
  'models/gguf': [...ENGINE, 'nn', 'tokenizer', 'io', 'formats', 'models'],
  inspect: [...ENGINE, 'io', 'formats', 'models'],
  guard: [...CORE, 'io', 'formats'],
  seal: [...CORE, 'io'],
  finetune: MODELLING,
  train: [...MODELLING, 'finetune'],
  release: [...CORE, 'io', 'formats', 'models'],
  load: [...MODELLING, 'finetune', 'train', 'inspect', 'guard', 'release', 'seal'],
  index: LIBRARY,
  server: [...LIBRARY, 'index'],
  cli: [...LIBRARY, 'server', 'index'],
};
const LAYERS = Object.keys(ALLOWED).filter((l) => !l.includes('/'));
const FILE_LAYERS = new Set(['errors', 'dtype', 'shape', 'random', 'tensor', 'index']);

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The relative prefix that climbs from a file `depth` folders below src/ back to src/. */
const upTo = (depth) => (depth === 0 ? '\\./' : `(\\.\\./){${depth}}`);

const outsideSrc = (depth) => ({
  regex: `^${upTo(depth)}\\.\\./`,
  message: 'src/ does not import from outside src/ (tests, benches and examples sit on top of it).',
});

/**
 * The rule for a file `depth` folders below src/: a relative import reaches another layer after
 * exactly `depth` `../` (`./` from src/ itself), then names the layer's folder or file.
 */
function layerRule(layer, depth) {
  const up = upTo(depth);
  const own = layer.split('/')[0];
  const forbidden = LAYERS.filter((l) => l !== own && !ALLOWED[layer].includes(l));
  const patterns = [outsideSrc(depth)];
  if (forbidden.length > 0) {
    patterns.push({
      regex: `^${up}(${forbidden.map(escape).join('|')})(/|\\.js$)`,
      message: `${layer}/ may import only ${ALLOWED[layer].join(', ')} and itself: the rest is a layer above or beside it (docs/architecture.md).`,
    });
  }
  return ['error', { patterns }];
}

/** One config block per layer and depth (flat config: the last block that matches a file wins). */
function layerBlocks(layer) {
  if (FILE_LAYERS.has(layer))
    return [{ files: [`src/${layer}.ts`], rules: { 'no-restricted-imports': layerRule(layer, 0) } }];
  const base = layer.split('/').length;
  return [0, 1, 2, 3].map((extra) => ({
    files: [`src/${layer}/${'*/'.repeat(extra)}*.ts`],
    rules: { 'no-restricted-imports': layerRule(layer, base + extra) },
  }));
}

export default [
  { ignores: ['dist/', 'build/', 'node_modules/'] },
  {
    files: ['**/*.ts'],
    languageOptions: { parser: tsParser, ecmaVersion: 2022, sourceType: 'module' },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
  },
  // Any file of src/: nothing from outside src/ (the blocks below refine this per layer).
  ...[0, 1, 2, 3, 4].map((depth) => ({
    files: [`src/${'*/'.repeat(depth)}*.ts`],
    rules: { 'no-restricted-imports': ['error', { patterns: [outsideSrc(depth)] }] },
  })),
  ...Object.keys(ALLOWED).flatMap(layerBlocks),
  // The js reference backend runs anywhere, browsers included: no Node APIs.
  {
    files: ['src/backends/js/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            ...layerRule('backends', 2)[1].patterns,
            { regex: '^node:', message: 'the js backend runs in browsers too: no Node APIs (docs/architecture.md).' },
          ],
        },
      ],
    },
  },
];
