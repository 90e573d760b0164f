/**
 * Backend selection. One backend is current; each kernel call asks it `supports()` and falls back
 * to the js reference backend when it says no. The backends available and the default come from
 * ./registry.ts, on first use.
 */
import type { DType } from '../dtype.js';
import { BackendError } from '../errors.js';
import type {
  Backend,
  DecodeKernels,
  FusedKernelName,
  FusedKernels,
  KernelName,
  KernelView,
  MatmulPrecision,
} from './backend.js';
import { jsBackend } from './js/index.js';
import { profiling, timedBackend, timedDecode, timedFused } from './profile.js';
import { discoverBackends } from './registry.js';

const registered = new Map<string, Backend>();
let current: Backend | undefined;

/** Loads the default backends once (lazily, so importing knobs does no work). */
function ready(): Backend {
  if (current) return current;
  const { available, preferred } = discoverBackends();
  for (const b of available) registered.set(b.name, b);
  current = preferred;
  return current;
}

export function registerBackend(backend: Backend): void {
  ready();
  registered.set(backend.name, backend);
}

/** Names of the backends available in this process, js first. */
export function backends(): string[] {
  ready();
  return [...registered.keys()];
}

export function getBackend(name?: string): Backend {
  const active = ready();
  if (name === undefined) return active;
  const b = registered.get(name);
  if (!b) {
    throw new BackendError(
      `backend '${name}' is not available here (available: ${backends().join(', ')}); 'knobs info' says why`,
      { name },
    );
  }
  return b;
}

/** Makes `name` the current backend for every op that follows. */
export function setBackend(name: string): void {
  current = getBackend(name);
}

/** Runs `fn` with `name` as the current backend, then restores the previous one. */
export function withBackend<T>(name: string, fn: () => T): T {
  const previous = ready();
  current = getBackend(name);
  try {
    return fn();
  } finally {
    current = previous;
  }
}

let precision: MatmulPrecision = 'f32';

/** The precision f32 matmuls run in now ('f32' unless set). */
export function getMatmulPrecision(): MatmulPrecision {
  return precision;
}

/**
 * Makes f32 matmuls (forward and backward) run in `p`: 'bf16' = mixed precision (bf16 operands,
 * f32 accumulation and results; everything else stays f32). 'bf16' is refused unless the current
 * backend runs it natively here (native backend, oneDNN, a CPU with AVX512_BF16 or AMX).
 */
export function setMatmulPrecision(p: MatmulPrecision): void {
  if (p !== 'f32' && p !== 'bf16')
    throw new BackendError(`matmul precision must be 'f32' or 'bf16', got '${String(p)}'`, { precision: p });
  if (p === 'bf16') {
    const active = ready();
    if (!(active.matmulPrecisions?.() ?? ['f32']).includes('bf16')) {
      const d = active.describe();
      throw new BackendError(
        `bf16 precision needs bf16 matrix instructions (AVX512_BF16 or AMX) through the native backend's oneDNN; here the backend is '${active.name}'${d.onednnIsa ? ` and oneDNN's ISA is ${String(d.onednnIsa)}` : ''}. Use precision f32 ('knobs info' shows the ISA)`,
        { precision: p, backend: active.name, isa: d.onednnIsa ?? null },
      );
    }
  }
  precision = p;
}

/** Runs `fn` with matmul precision `p` (checked as setMatmulPrecision), then restores the previous one. */
export function withMatmulPrecision<T>(p: MatmulPrecision, fn: () => T): T {
  const previous = precision;
  setMatmulPrecision(p);
  try {
    return fn();
  } finally {
    precision = previous;
  }
}

/** One kernel dispatch: which kernel, on which dtypes, which backend was current and which ran it. */
export interface KernelRun {
  readonly kernel: KernelName;
  readonly dtypes: readonly DType[];
  readonly current: string;
  readonly ran: string;
}

let tracing: KernelRun[] | null = null;

/**
 * Runs `fn` and lists every kernel dispatch it made, so a test can prove which backend did the
 * work (a fallback to js is otherwise invisible: the answer is still right). Nesting is not
 * supported: an inner trace would hide its runs from the outer one, so it throws.
 */
export function traceKernels<T>(fn: () => T): { result: T; runs: KernelRun[] } {
  if (tracing) throw new Error('traceKernels: already tracing (traces do not nest)');
  const runs: KernelRun[] = [];
  tracing = runs;
  try {
    return { result: fn(), runs };
  } finally {
    tracing = null;
  }
}

function record(kernel: KernelName, inputs: readonly KernelView[], active: Backend, ran: Backend): void {
  tracing!.push({ kernel, dtypes: inputs.map((v) => v.dtype), current: active.name, ran: ran.name });
}

/**
 * The backend that runs `kernel` on `inputs`: the current one if it supports them, else js.
 * `outDtype` is the result's dtype where it is not the inputs' (cast).
 */
export function kernelFor(kernel: KernelName, inputs: readonly KernelView[], outDtype?: DType): Backend {
  const active = current ?? ready();
  const chosen = active === jsBackend || active.supports(kernel, inputs, outDtype) ? active : jsBackend;
  if (tracing) record(kernel, inputs, active, chosen);
  return profiling() ? timedBackend(chosen) : chosen;
}

/**
 * The current backend's fused kernels when it has `kernel` and supports these inputs, else null
 * (then the ops layer runs the composite, or a gradient rule its composite formula).
 */
export function fusedFor(kernel: FusedKernelName, inputs: readonly KernelView[]): FusedKernels | null {
  const active = current ?? ready();
  const fused = active.fused && active.supports(kernel, inputs) ? active.fused : null;
  // A fused kernel declined is no fallback: the composite's primitives then dispatch (and are traced) one by one.
  if (fused && tracing) record(kernel, inputs, active, active);
  return fused && profiling() ? timedFused(fused) : fused;
}

/** The current backend's batch-1 decode kernels, or null when it has none (then models decode through the ops). */
export function decodeKernels(): DecodeKernels | null {
  const decode = (current ?? ready()).decode ?? null;
  return decode && profiling() ? timedDecode(decode) : decode;
}
