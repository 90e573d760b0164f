/**
 * Loading the PyTorch golden fixtures (test/fixtures/goldens/*.json, written by
 * scripts/gen_goldens.py, whose docstring defines the format). Fixtures are read from the source
 * tree, found by walking up from this file to the repository root, so the compiled suite in dist/
 * reads the committed files.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ToleranceFamily } from './tolerance.js';

export type Encoded = number | 'nan' | 'inf' | '-inf';

export interface ViewSpec {
  kind: 'transpose' | 'permute' | 'slice' | 'expand';
  base_shape: number[];
  dims?: number[];
  axis?: number;
  start?: number;
  end?: number;
  step?: number;
  shape?: number[];
}

export interface CaseInput {
  shape: number[];
  dtype: 'float' | 'i32' | 'bool';
  /** Absent when `same_as` is set. */
  data?: Encoded[];
  requires_grad: boolean;
  view?: ViewSpec;
  /** This input reuses input `same_as`'s leaf (through its own view, if any). */
  same_as?: number;
}

export interface CaseOutput {
  shape: number[];
  dtype: 'float' | 'i32' | 'bool';
  data: Encoded[];
  data64?: Encoded[];
}

export interface GoldenCase {
  id: string;
  op: string;
  attrs: Record<string, unknown>;
  tol: Exclude<ToleranceFamily, 'gradient'>;
  tags: string[];
  gradcheck?: boolean;
  gradcheck_why?: string;
  inputs: CaseInput[];
  outputs: CaseOutput[];
  upstream: (Encoded[] | null)[];
  grads: (Encoded[] | null)[];
  grads64: (Encoded[] | null)[];
}

export interface GoldenFile {
  format: number;
  generator: string;
  command: string;
  torch_version: string;
  seed: number;
  family: string;
  cases: GoldenCase[];
}

/** The repository root: the nearest ancestor of this file holding package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'test', 'fixtures'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('conformance: cannot find the repository root (package.json + test/fixtures)');
    dir = up;
  }
}

export const GOLDENS_DIR = (): string => join(repoRoot(), 'test', 'fixtures', 'goldens');

let cache: GoldenFile[] | null = null;

/** Every golden file, sorted by family name. */
export function loadGoldenFiles(): GoldenFile[] {
  if (cache) return cache;
  const dir = GOLDENS_DIR();
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort();
  cache = files.map((f) => {
    const parsed = JSON.parse(readFileSync(join(dir, f), 'utf8')) as GoldenFile;
    if (parsed.format !== 1) throw new Error(`${f}: unknown golden format ${parsed.format}`);
    return parsed;
  });
  return cache;
}

export function loadCases(): GoldenCase[] {
  return loadGoldenFiles().flatMap((f) => f.cases);
}

/** A stored value as a JS number (f64 exactly as stored). */
export function decode(v: Encoded): number {
  if (typeof v === 'number') return v;
  if (v === 'nan') return NaN;
  if (v === 'inf') return Infinity;
  if (v === '-inf') return -Infinity;
  throw new Error(`golden: bad encoded value ${JSON.stringify(v)}`);
}

export const decodeAll = (vs: readonly Encoded[]): number[] => vs.map(decode);
/** Float32 values are stored as the shortest decimal that rounds to them: fround recovers them exactly. */
export const decodeF32 = (vs: readonly Encoded[]): number[] => vs.map((v) => Math.fround(decode(v)));
