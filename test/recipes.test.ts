/**
 * The recipes in recipes/: every one validates, and the quick-start recipe runs end to end
 * (a few steps on a KJV excerpt) and tells the user how to make kjv.txt when it is missing.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, it } from 'node:test';
import { loadRecipe } from '../src/train/recipe.js';
import { cli } from './harness/cli.js';

const RECIPES = fileURLToPath(new URL('../../recipes/', import.meta.url));
const TEXT = fileURLToPath(new URL('../../test/fixtures/text/genesis-1-4.txt', import.meta.url));

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-recipes-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

it('every recipe in recipes/ is valid', async () => {
  const names = (await readdir(RECIPES)).filter((n) => n.endsWith('.json'));
  assert.ok(names.includes('tiny.json'));
  for (const name of names) assert.equal((await loadRecipe(join(RECIPES, name))).name, name.replace(/\.json$/, ''));
});

it('recipes/tiny.json: a missing kjv.txt says how to make it; with the text it trains and generates', async () => {
  const missing = await cli(['train', join(RECIPES, 'tiny.json'), '--out', 'runs/tiny'], { cwd: dir });
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /\[E_IO\]: .*kjv\.txt.*data\.path.*bible 'Gen1:1-Rev22:21' > kjv\.txt/);

  await copyFile(TEXT, join(dir, 'kjv.txt'));
  const r = await cli(['train', join(RECIPES, 'tiny.json'), '--out', 'runs/tiny', '--steps', '3'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const g = await cli(['generate', 'runs/tiny', '--prompt', 'And God said', '--max-tokens', '5', '--json'], {
    cwd: dir,
  });
  assert.equal(g.code, 0, g.stderr);
  assert.equal(JSON.parse(g.stdout).ids.length, 5);
});
