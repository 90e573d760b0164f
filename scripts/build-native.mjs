#!/usr/bin/env node
/**
 * Builds the native backend (build/Release/knobs.node) with node-gyp. Run at install time
 * (`npm install` → "install" script) and by hand after editing native/.
 *
 * It probes the compiler and the libraries first: OpenBLAS (cblas.h + -lopenblas) and oneDNN
 * (dnnl.h + -ldnnl), and links every one it finds. With both, GEMM runs on oneDNN where it JITs
 * AVX-512 and on OpenBLAS on AVX2-only CPUs (chosen at run time; docs/native.md has the measurements);
 * with one, on that one; with neither, on a built-in kernel. Missing compiler or Node headers are not an
 * error: knobs then runs on its js backend, and this script says so in one line and exits 0 —
 * unless KNOBS_REQUIRE_NATIVE=1, where any failure exits 1.
 *
 * Environment:
 *   KNOBS_REQUIRE_NATIVE=1   fail instead of falling back to js
 *   KNOBS_SKIP_NATIVE=1      do nothing (js backend only)
 *   KNOBS_GEMM=auto|openblas|onednn|builtin
 *                            link only that GEMM library (default: auto = every one found; `both`
 *                            is kept as another name for auto)
 *   KNOBS_NATIVE_VERBOSE=1   show the compiler output
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const required = process.env.KNOBS_REQUIRE_NATIVE === '1';
const verbose = process.env.KNOBS_NATIVE_VERBOSE === '1';

function finish(ok, message) {
  if (ok) {
    console.log(`knobs native: ${message}`);
    process.exit(0);
  }
  if (required) {
    console.error(`knobs native: build failed (KNOBS_REQUIRE_NATIVE=1): ${message}`);
    process.exit(1);
  }
  console.log(`knobs native: not built (${message}); knobs will use its js backend`);
  process.exit(0);
}

if (process.env.KNOBS_SKIP_NATIVE === '1' && !required) finish(false, 'KNOBS_SKIP_NATIVE=1');

const cxx = process.env.CXX || 'c++';

/** Compiles and links a tiny program; true when it builds. */
function probe(source, flags) {
  const dir = mkdtempSync(join(tmpdir(), 'knobs-probe-'));
  try {
    const file = join(dir, 'probe.cpp');
    writeFileSync(file, source);
    const r = spawnSync(cxx, [file, '-o', join(dir, 'probe'), ...flags], { encoding: 'utf8' });
    if (verbose && r.status !== 0) process.stderr.write(r.stderr ?? String(r.error));
    return r.status === 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (!probe('int main() { return 0; }\n', [])) finish(false, `no working C++ compiler (${cxx})`);

/** Node's own headers: node-gyp would otherwise try to download them, and the network may be closed. */
function findNodeDir() {
  const candidates = [process.env.npm_config_nodedir, join(dirname(process.execPath), '..'), '/usr', '/usr/local'];
  for (const dir of candidates) {
    if (
      dir &&
      existsSync(join(dir, 'include', 'node', 'node_api.h')) &&
      existsSync(join(dir, 'include', 'node', 'common.gypi'))
    )
      return dir;
  }
  return undefined;
}
const nodedir = findNodeDir();
if (!nodedir) finish(false, 'Node headers not found (install the nodejs headers or set npm_config_nodedir)');

const haveOpenblas = probe(
  '#include <cblas.h>\nint main() { openblas_set_num_threads(1); float a = 1, c = 0;\n' +
    ' cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 1, 1, 1, 1.f, &a, 1, &a, 1, 0.f, &c, 1); return c == 1 ? 0 : 1; }\n',
  ['-lopenblas'],
);
const haveDnnl = probe(
  '#include <dnnl.h>\nint main() { float a = 1, c = 0;\n' +
    " return dnnl_sgemm('N', 'N', 1, 1, 1, 1.f, &a, 1, &a, 1, 0.f, &c, 1) == dnnl_success ? 0 : 1; }\n",
  ['-ldnnl'],
);

const choice = process.env.KNOBS_GEMM || 'auto';
let useOpenblas = false;
let useDnnl = false;
let prefer = 'onednn';
switch (choice) {
  case 'auto':
  case 'both':
    useDnnl = haveDnnl;
    useOpenblas = haveOpenblas;
    break;
  case 'openblas':
    useOpenblas = haveOpenblas;
    prefer = 'openblas';
    break;
  case 'onednn':
    useDnnl = haveDnnl;
    break;
  case 'builtin':
    break;
  default:
    finish(false, `unknown KNOBS_GEMM=${choice} (auto, openblas, onednn, both, builtin)`);
}
if ((choice === 'openblas' && !haveOpenblas) || (choice === 'onednn' && !haveDnnl)) {
  finish(
    false,
    `KNOBS_GEMM=${choice} but that library was not found (headers + -l${choice === 'openblas' ? 'openblas' : 'dnnl'})`,
  );
}

/** npm's bundled node-gyp (no extra dependency), else one on the PATH. */
function nodeGypCommand() {
  const tries = [
    () => require.resolve('node-gyp/bin/node-gyp.js'),
    () =>
      join(
        dirname(
          require.resolve('npm/package.json', {
            paths: [dirname(process.execPath), '/usr/lib/node_modules', '/usr/local/lib/node_modules'],
          }),
        ),
        'node_modules',
        'node-gyp',
        'bin',
        'node-gyp.js',
      ),
    () =>
      join(
        dirname(process.execPath),
        '..',
        'lib',
        'node_modules',
        'npm',
        'node_modules',
        'node-gyp',
        'bin',
        'node-gyp.js',
      ),
    () => '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
    () => '/usr/share/nodejs/node-gyp/bin/node-gyp.js',
  ];
  for (const t of tries) {
    try {
      const p = t();
      if (existsSync(p)) return [process.execPath, p];
    } catch {
      /* next */
    }
  }
  return undefined;
}
const gyp = nodeGypCommand();
if (!gyp) finish(false, 'node-gyp not found (it ships with npm)');

const args = [
  ...gyp.slice(1),
  'rebuild',
  `--nodedir=${nodedir}`,
  `--jobs=max`,
  '--',
  `-Dknobs_openblas=${useOpenblas ? 1 : 0}`,
  `-Dknobs_dnnl=${useDnnl ? 1 : 0}`,
  `-Dknobs_prefer=${prefer}`,
];
const r = spawnSync(gyp[0], args, { cwd: root, encoding: 'utf8', stdio: verbose ? 'inherit' : 'pipe' });
if (r.status !== 0) {
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (!verbose)
    process.stderr.write(
      out
        .split('\n')
        .filter((l) => /error|Error/.test(l))
        .slice(0, 20)
        .join('\n') + '\n',
    );
  finish(false, `node-gyp failed (exit ${r.status}); rerun with KNOBS_NATIVE_VERBOSE=1 for the full log`);
}
const libs = [useOpenblas && 'OpenBLAS', useDnnl && 'oneDNN'].filter(Boolean);
finish(true, `built build/Release/knobs.node (GEMM: ${libs.length ? libs.join(' + ') : 'built-in kernel'})`);
