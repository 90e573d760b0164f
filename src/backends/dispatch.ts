/**
 * Backend selection. One backend is current; each kernel call asks it `supports()` and falls back
 * to the js reference backend when it says no. Backends register here by name; the native one
 * registers itself from the loader in src/backends/registry.ts.
 */
import { BackendError } from '../errors.js';
import type { Backend, KernelName, KernelView } from './backend.js';
import { jsBackend } from './js/index.js';

const registered = new Map<string, Backend>([[jsBackend.name, jsBackend]]);
let current: Backend = jsBackend;

export function registerBackend(backend: Backend): void {
  registered.set(backend.name, backend);
}

/** Names of the backends available in this process, js first. */
export function backends(): string[] {
  return [...registered.keys()];
}

export function getBackend(name?: string): Backend {
  if (name === undefined) return current;
  const b = registered.get(name);
  if (!b) {
    throw new BackendError(`backend '${name}' is not available here (available: ${backends().join(', ')})`, { name });
  }
  return b;
}

/** Makes `name` the current backend for every op that follows. */
export function setBackend(name: string): void {
  current = getBackend(name);
}

/** Runs `fn` with `name` as the current backend, then restores the previous one. */
export function withBackend<T>(name: string, fn: () => T): T {
  const previous = current;
  current = getBackend(name);
  try {
    return fn();
  } finally {
    current = previous;
  }
}

/** The backend that runs `kernel` on `inputs`: the current one if it supports them, else js. */
export function kernelFor(kernel: KernelName, inputs: readonly KernelView[]): Backend {
  return current === jsBackend || current.supports(kernel, inputs) ? current : jsBackend;
}
