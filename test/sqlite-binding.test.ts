/**
 * better-sqlite3 without its compiled binding (what `npm ci --ignore-scripts` leaves, as the quick
 * start installs): the real library, copied without its build/ folder, fails as it does on such an
 * install, and knobs turns that failure into a typed E_BACKEND error saying how to build it.
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BackendError } from '../src/errors.js';
import { missingSqliteBinding } from '../src/server/sqlite-keys.js';

const MODULES = fileURLToPath(new URL('../../node_modules/', import.meta.url));

describe('SQLite binding missing', () => {
  it('is a typed error naming the fix, and other errors are left alone', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'knobs-sqlite-'));
    try {
      for (const pkg of ['better-sqlite3', 'bindings', 'file-uri-to-path']) {
        await cp(join(MODULES, pkg), join(dir, 'node_modules', pkg), {
          recursive: true,
          filter: (src) => !src.includes(`${pkg}/build`) && !src.includes(`${pkg}/deps`),
        });
      }
      const Database = createRequire(join(dir, 'index.js'))('better-sqlite3') as new (path: string) => unknown;
      let failure: unknown;
      try {
        new Database(':memory:');
      } catch (err) {
        failure = err;
      }
      const typed = missingSqliteBinding(failure);
      assert.ok(typed instanceof BackendError, `not recognized: ${String(failure)}`);
      assert.equal(typed.code, 'E_BACKEND');
      assert.match(typed.message, /npm rebuild better-sqlite3/);
      assert.equal(missingSqliteBinding(new Error('SQLITE_CANTOPEN')), undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
