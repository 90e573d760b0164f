#!/usr/bin/env node
// Reproduces issue 16 defect 1 and issue 8 item 6: writes each hostile safetensors header to a
// temporary file and reads it in a fresh child process, printing outcome, peak RSS above the
// child's baseline (and as a multiple of the header's bytes) and time.
// Needs the build: `npx tsc -p tsconfig.json && node scripts/header-bounds.mjs [--small] [CASE…]`.
// --small divides every count by 10 (quick look); CASE is one of the names below.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const { writeHostileFile, expectedOutcome } = await import(join(root, 'dist/test/harness/hostile-headers.js'));
const probe = join(root, 'dist/test/harness/measure-header.js');

const CASES = {
  'zero-dims-100MB': { kind: 'zero_dims', count: 49_999_950, mode: 'header' },
  'long-number-100M-digits': { kind: 'long_number', count: 99_999_900, mode: 'header' },
  'empty-tensors-1.77M': { kind: 'empty_tensors', count: 1_770_000, mode: 'header' },
  'metadata-keys-8.4M': { kind: 'metadata_keys', count: 8_400_000, mode: 'header' },
  'inspect-300k-tensors': { kind: 'empty_tensors', count: 300_000, mode: 'inspect' },
  'inspect-json-300k-tensors': { kind: 'empty_tensors', count: 300_000, mode: 'inspect-json' },
};

const args = process.argv.slice(2);
const small = args.includes('--small');
const names = args.filter((a) => !a.startsWith('--'));
const dir = mkdtempSync(join(tmpdir(), 'knobs-header-bounds-'));
try {
  for (const name of names.length > 0 ? names : Object.keys(CASES)) {
    const c = CASES[name];
    if (!c) throw new Error(`unknown case ${name}; cases: ${Object.keys(CASES).join(', ')}`);
    const count = small ? Math.floor(c.count / 10) : c.count;
    const path = join(dir, `${name}.safetensors`);
    const bytes = await writeHostileFile(path, { kind: c.kind, count });
    const r = JSON.parse(
      execFileSync(process.execPath, [probe, path, c.mode], { encoding: 'utf8', maxBuffer: 1 << 20 }),
    );
    rmSync(path);
    const extraMB = (r.peakKiB - r.baselineKiB) / 1024;
    console.log(
      JSON.stringify({
        case: name,
        count,
        mode: c.mode,
        fileMB: +(bytes / 1e6).toFixed(1),
        outcome: r.outcome,
        expected: expectedOutcome(c.kind),
        peakAboveBaselineMB: +extraMB.toFixed(0),
        timesHeader: +((extraMB * 1024 * 1024) / bytes).toFixed(2),
        baselineMB: +(r.baselineKiB / 1024).toFixed(0),
        ms: r.ms,
      }),
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
