/**
 * Did the backend under test really run a conformance case? A backend that declines a kernel
 * (`supports()` says no) is silently replaced by js, and the case still passes — so a passing
 * "native" case proves nothing unless we also know native ran it. Each case is traced
 * (src/backends/dispatch.ts `traceKernels`) and every kernel js ran in the backend's place must
 * match an entry of that backend's fallback list, which states why; anything else fails the case.
 */
import type { KernelRun } from '../../src/backends/dispatch.js';
import type { RunDType } from './tolerance.js';

export interface AllowedFallback {
  /** Short name, shown in the coverage report. */
  readonly name: string;
  /** Why the backend does not run these kernels. */
  readonly reason: string;
  /** Whether a kernel run in a case of this run dtype is one this entry allows to fall back. */
  matches(run: KernelRun, dtype: RunDType): boolean;
}

const isFloat = (d: string): boolean => d === 'f32' || d === 'f64';

/** Per backend (js needs none: it is the fallback). */
export const ALLOWED_FALLBACKS: Readonly<Record<string, readonly AllowedFallback[]>> = {
  native: [
    {
      name: 'f64',
      reason: 'the native backend computes in f32 only (src/backends/native/index.ts); f64 cases run on js',
      matches: (run, dtype) => dtype === 'f64' && run.dtypes.some((d) => d === 'f64'),
    },
    {
      name: 'integer/bool binary',
      reason:
        'native binary kernels are f32-only; integer and bool masks (triu/tril/causal index comparisons, logicalAnd) run on js',
      matches: (run) => run.kernel === 'binary' && !run.dtypes.some(isFloat),
    },
  ],
};

/** How one case went on one backend. */
export type CaseCoverage =
  | { kind: 'ran'; kernels: number }
  | { kind: 'no-kernels' }
  | { kind: 'fell-back'; because: readonly AllowedFallback[] };

/**
 * Classifies a traced case; throws (naming the kernels) when `backend` did not run a kernel and no
 * allowed fallback explains it.
 */
export function coverageOf(id: string, backend: string, dtype: RunDType, runs: readonly KernelRun[]): CaseCoverage {
  if (runs.length === 0) return { kind: 'no-kernels' };
  const allowed = ALLOWED_FALLBACKS[backend] ?? [];
  const because = new Set<AllowedFallback>();
  const silent: KernelRun[] = [];
  for (const run of runs) {
    if (run.ran === backend) continue;
    const entry = allowed.find((a) => a.matches(run, dtype));
    if (entry) because.add(entry);
    else silent.push(run);
  }
  if (silent.length > 0) {
    const what = [...new Set(silent.map((r) => `${r.kernel}(${r.dtypes.join(', ')}) ran on ${r.ran}`))].join('; ');
    throw new Error(
      `${id} [${dtype}]: ${backend} did not run it: ${what}. Make ${backend} support the kernel, or add an entry with a reason ` +
        'to ALLOWED_FALLBACKS in test/harness/coverage.ts',
    );
  }
  return because.size === 0 ? { kind: 'ran', kernels: runs.length } : { kind: 'fell-back', because: [...because] };
}

/** Tallies of one backend's run, for the report. */
export class CoverageReport {
  private ran = 0;
  private noKernels = 0;
  private readonly fellBack = new Map<AllowedFallback, number>();
  private total = 0;

  add(c: CaseCoverage): void {
    this.total++;
    if (c.kind === 'ran') this.ran++;
    else if (c.kind === 'no-kernels') this.noKernels++;
    else for (const f of c.because) this.fellBack.set(f, (this.fellBack.get(f) ?? 0) + 1);
  }

  /** Allowed fallbacks that no case needed (a stale entry hides nothing, but misleads). */
  unused(backend: string): AllowedFallback[] {
    return (ALLOWED_FALLBACKS[backend] ?? []).filter((f) => !this.fellBack.has(f));
  }

  lines(backend: string): string[] {
    const out = [
      `coverage on ${backend}: ${this.ran}/${this.total} case runs entirely on ${backend}, ${this.noKernels} ran no kernel (views only)`,
    ];
    for (const [f, n] of this.fellBack)
      out.push(`  ${n} case runs partly or wholly on js, allowed (${f.name}): ${f.reason}`);
    return out;
  }
}
