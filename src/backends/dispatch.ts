/**
 * Backend selection. One backend is current; each kernel call asks it `supports()` and falls back
 * to the js reference backend when it says no. The backends available and the default come from
 * ./registry.ts, on first use.
 */
import type { DType } from '../dtype.js';
import { BackendError } from '../errors.js';
import type { Backend, FusedKernelName, FusedKernels, KernelName, KernelView } from './backend.js';
import { jsBackend } from './js/index.js';
import { profiling, timedBackend, timedFused } from './profile.js';
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
