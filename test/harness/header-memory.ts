/**
 * Measures how much memory reading a hostile safetensors header takes: writes the file, reads it
 * in a fresh child process (test/harness/measure-header.ts) and reports the child's peak RSS
 * above its own baseline. A child per file keeps one measurement's peak out of the next.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type HostileCase, writeHostileFile } from './hostile-headers.js';

const PROBE = fileURLToPath(new URL('./measure-header.js', import.meta.url));
const run = promisify(execFile);

/**
 * What a process needs beyond the header's own multiple whatever the header: V8's young
 * generation (up to 3 × 16 MiB semispaces) and allocator slack.
 */
export const FIXED_ALLOWANCE = 64 * 1024 * 1024;
/** The bound issue 16 sets: peak memory within ~8× the header's bytes plus the baseline. */
export const BYTES_PER_HEADER_BYTE = 8;

export interface Measured {
  outcome: string;
  fileBytes: number;
  /** Peak RSS minus the RSS after startup, in bytes. */
  extraBytes: number;
  /** What the bound allows for this file. */
  allowedBytes: number;
}

export async function measureHeader(
  c: HostileCase,
  mode: 'header' | 'inspect' | 'inspect-json' = 'header',
): Promise<Measured> {
  const dir = await mkdtemp(join(tmpdir(), 'knobs-header-memory-'));
  try {
    const path = join(dir, 'hostile.safetensors');
    const fileBytes = await writeHostileFile(path, c);
    const { stdout } = await run(process.execPath, [PROBE, path, mode], { maxBuffer: 1 << 20 });
    const r = JSON.parse(stdout) as { outcome: string; peakKiB: number; baselineKiB: number };
    return {
      outcome: r.outcome,
      fileBytes,
      extraBytes: (r.peakKiB - r.baselineKiB) * 1024,
      allowedBytes: BYTES_PER_HEADER_BYTE * fileBytes + FIXED_ALLOWANCE,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function describeMeasured(c: HostileCase, m: Measured): string {
  const mb = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
  return `${c.kind} × ${c.count}: ${m.outcome}, ${mb(m.extraBytes)} above baseline for a ${mb(m.fileBytes)} file (allowed ${mb(m.allowedBytes)})`;
}
